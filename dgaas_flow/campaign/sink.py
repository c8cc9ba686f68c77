"""results.jsonl, the campaign's record: one line per item, appended as chunks complete, what
summary.json counts of it, and on a rerun the set of items already done. That set is kept as
sorted 16-byte digests of the ids, 16 bytes an item instead of the hundred or so of a Python string
in a set, so resuming a campaign of millions of items costs the driver tens of megabytes, not
gigabytes."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DIGEST = np.dtype("S16")


def digest(item_id: str) -> bytes:
    # surrogatepass: an id made of a file name that is not valid UTF-8 (os gives its bytes as surrogates)
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST.itemsize).digest()


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


@dataclass
class Tally:
    """What summary.json counts of results.jsonl: the lines kept from earlier runs (read once,
    when resuming) plus the chunks appended, each counted by the task that wrote it."""

    ok: int = 0
    failed: int = 0
    labelled: int = 0
    correct: int = 0
    pilots: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add_success(self, record: dict[str, Any]) -> None:
        self.ok += 1
        self.pilots[record.get("pilot") or "?"] += 1
        if "correct" in record:
            self.labelled += 1
            self.correct += bool(record["correct"])

    def add_chunk(self, outcome: dict[str, Any]) -> None:
        """A chunk's counts, as `records.ChunkRecords.outcome` gives them."""
        self.ok += outcome["items"] - outcome["failed"]
        self.failed += outcome["failed"]
        self.labelled += outcome["labelled"]
        self.correct += outcome["correct"]
        self.pilots.update(outcome["pilots"])
        self.reasons.update(outcome["reasons"])


class ResultsFile:
    """Resuming keeps each successful item once, drops recorded errors (so they are tried again)
    and a partly written last line left by a killed run."""

    def __init__(self, path: Path):
        self.path = path
        self.tally = Tally()
        self.done = self._compact() if path.exists() else DoneIds(np.empty(0, DIGEST))
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the campaign's lifetime

    def _successes(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(line, record) of every complete line that records a success, in file order."""
        with open(self.path, errors="replace") as src:
            for line in src:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if line.endswith("\n") and isinstance(record, dict) and record.get("ok") \
                        and isinstance(record.get("id"), str):
                    yield line, record

    def _compact(self) -> DoneIds:
        """Two passes, so memory holds digests, not lines or ids: the first collects the done
        items' digests (sorted in place), the second keeps each id's first success."""
        digests = np.fromiter((digest(r["id"]) for _, r in self._successes()), dtype=DIGEST)
        digests.sort()
        done = DoneIds(digests[np.concatenate(([True], digests[1:] != digests[:-1]))] if len(digests) else digests)
        del digests
        written = np.zeros(len(done), dtype=bool)
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as dst:
            for line, record in self._successes():
                k = done.index(record["id"])
                if not written[k]:
                    written[k] = True
                    dst.write(line)
                    self.tally.add_success(record)
        os.replace(tmp, self.path)
        return done

    def append(self, outcome: dict[str, Any]) -> None:
        """A chunk's lines (bytes, each line ending in a newline) and their counts."""
        self._file.write(outcome["jsonl"])
        self._file.flush()
        self.tally.add_chunk(outcome)

    def close(self) -> None:
        self._file.close()
