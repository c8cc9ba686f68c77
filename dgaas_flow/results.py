"""results.jsonl, the campaign's record: one line per item, appended as chunks complete, and on a
rerun the set of items already done. That set is kept as sorted 16-byte digests of the ids, 16
bytes an item instead of the hundred or so of a Python string in a set, so resuming a campaign of
millions of items costs the driver tens of megabytes, not gigabytes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DIGEST = np.dtype("S16")


def digest(item_id: str) -> bytes:
    return hashlib.blake2b(item_id.encode(), digest_size=DIGEST.itemsize).digest()


class DoneIds:
    """Membership of item ids by digest (a collision needs about 2**64 items)."""

    def __init__(self, sorted_unique: np.ndarray):
        self._sorted = sorted_unique

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.index(item_id) is not None

    def index(self, item_id: str) -> int | None:
        """The id's place among the done ids, or None."""
        d = np.array(digest(item_id), dtype=DIGEST)
        i = int(np.searchsorted(self._sorted, d))
        return i if i < len(self._sorted) and self._sorted[i] == d else None

    def __len__(self) -> int:
        return len(self._sorted)


class ResultsFile:
    """Resuming keeps each successful item once, drops recorded errors (so they are tried again)
    and a partly written last line left by a killed run."""

    def __init__(self, path: Path):
        self.path = path
        self.done = self._compact() if path.exists() else DoneIds(np.empty(0, DIGEST))
        self._file = open(path, "a")  # noqa: SIM115 - held open for the campaign's lifetime

    def _successes(self) -> Iterator[tuple[str, str]]:
        """(line, id) of every complete line that records a success, in file order."""
        with open(self.path, errors="replace") as src:
            for line in src:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if line.endswith("\n") and isinstance(record, dict) and record.get("ok") \
                        and isinstance(record.get("id"), str):
                    yield line, record["id"]

    def _compact(self) -> DoneIds:
        """Two passes, so memory holds digests, not lines or ids: the first collects the done
        items' digests (sorted in place), the second keeps each id's first success."""
        digests = np.fromiter((digest(i) for _, i in self._successes()), dtype=DIGEST)
        digests.sort()
        done = DoneIds(digests[np.concatenate(([True], digests[1:] != digests[:-1]))] if len(digests) else digests)
        del digests
        written = np.zeros(len(done), dtype=bool)
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as dst:
            for line, item_id in self._successes():
                k = done.index(item_id)
                if not written[k]:
                    written[k] = True
                    dst.write(line)
        os.replace(tmp, self.path)
        return done

    def write(self, jsonl: str) -> None:
        """Append complete lines (each ending in a newline)."""
        self._file.write(jsonl)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
