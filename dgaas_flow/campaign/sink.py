"""results.jsonl, the campaign's record: one line per item, appended as chunks complete, what
summary.json counts of it, and on a rerun the set of items already done (and the same for
`outputs.format: parquet`'s results/ folder of parts: ResultsParts). That set is kept as
sorted 16-byte digests of the ids, 16 bytes an item instead of the hundred or so of a Python string
in a set, so resuming a campaign of millions of items costs the driver tens of megabytes, not
gigabytes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dgaas_flow.campaign.files import MANIFEST

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------
# outputs.format: parquet


PART_GLOB = "part-*.parquet"


class ResultsParts:
    """results/ for `outputs.format: parquet`: each chunk's table (see records.ChunkColumns) is a row
    group of the open part, a part is closed at `part_rows` rows (and when the campaign ends), and
    results/manifest.json lists the closed parts with their rows, rewritten (atomically) as each
    closes. Only the listed parts count: a part a killed run left open, or any other part file, is
    removed when the folder is resumed. Resuming keeps each successful item once and drops recorded
    errors (rewriting only the parts that hold one), so they are tried again; the done ids are read
    from the parts' id column. Memory holds one chunk's table, never the results."""

    def __init__(self, folder: Path, part_rows: int = 1_000_000):
        self.folder, self.part_rows = folder, part_rows
        self.manifest_path = folder / MANIFEST
        self.tally = Tally()
        self.parts: list[dict[str, Any]] = []
        folder.mkdir(parents=True, exist_ok=True)
        self.done = self._resume() if self.manifest_path.exists() else DoneIds(np.empty(0, DIGEST))
        for stray in sorted(set(folder.glob(PART_GLOB)) - {folder / p["file"] for p in self.parts}):
            logger.warning("%s is not a complete part of the manifest (a killed run's?): removed", stray)
            stray.unlink()
        self._next = 1 + max((int(p["file"][5:10]) for p in self.parts), default=-1)
        self._writer: Any = None
        self._open: Path | None = None
        self._rows = 0
        self._pending: list[Any] = []  # tables of failures only, held until a success gives the columns
        self._pending_rows = 0

    # -- resume

    def _listed(self) -> list[dict[str, Any]]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
            parts = [p for p in manifest["parts"] if (self.folder / p["file"]).is_file()]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s cannot be read (%s): its parts are not resumed", self.manifest_path, exc)
            return []
        return parts

    def _resume(self) -> DoneIds:
        """The done ids of the listed parts (digests, sorted), each part rewritten without its errors and
        repeated ids if it has any, and the tally of what is kept."""
        import pyarrow.parquet as pq

        parts = self._listed()
        digests = []
        for part in parts:
            for batch in pq.ParquetFile(self.folder / part["file"]).iter_batches(columns=["id", "ok"]):
                ids, ok = batch.column(0).to_pylist(), batch.column(1).to_numpy(zero_copy_only=False)
                digests.append(np.fromiter((digest(i) for i, good in zip(ids, ok, strict=True) if good),
                                           dtype=DIGEST))
        every = np.concatenate(digests) if digests else np.empty(0, DIGEST)
        every.sort()
        done = DoneIds(every[np.concatenate(([True], every[1:] != every[:-1]))] if len(every) else every)
        del every, digests
        written = np.zeros(len(done), dtype=bool)
        for part in parts:
            part["rows"] = self._keep_first_successes(self.folder / part["file"], done, written)
        self.parts = [p for p in parts if p["rows"]]
        self._write_manifest()
        return done

    def _keep_first_successes(self, path: Path, done: DoneIds, written: np.ndarray) -> int:
        """Rewrite the part with only each id's first success, if it holds anything else; its rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = pq.ParquetFile(path)
        keep_masks, total = [], 0
        for batch in source.iter_batches(columns=["id", "ok"]):
            ids, ok = batch.column(0).to_pylist(), batch.column(1).to_numpy(zero_copy_only=False)
            keep = np.zeros(len(ids), dtype=bool)
            for r, (item_id, good) in enumerate(zip(ids, ok, strict=True)):
                if good:
                    k = done.index(item_id)
                    if k is not None and not written[k]:
                        written[k] = keep[r] = True
            keep_masks.append(keep)
            total += len(ids)
        kept = int(sum(int(m.sum()) for m in keep_masks))
        if kept < total:
            tmp = path.with_suffix(".tmp")
            with pq.ParquetWriter(tmp, source.schema_arrow) as writer:
                for batch, keep in zip(source.iter_batches(), keep_masks, strict=True):
                    if keep.any():
                        writer.write_table(pa.Table.from_batches([batch.filter(pa.array(keep))]))
            source.close()
            if kept:
                os.replace(tmp, path)
            else:
                tmp.unlink()
                path.unlink()
        for batch in pq.ParquetFile(path).iter_batches(columns=self._tally_columns(path)) if kept else ():
            self._tally_batch(batch)
        return kept

    @staticmethod
    def _tally_columns(path: Path) -> list[str]:
        import pyarrow.parquet as pq

        names = pq.ParquetFile(path).schema_arrow.names
        return [c for c in ("pilot", "correct") if c in names]

    def _tally_batch(self, batch: Any) -> None:
        n = batch.num_rows
        self.tally.ok += n
        names = batch.schema.names
        pilots = batch.column(names.index("pilot")).to_pylist() if "pilot" in names else [None] * n
        self.tally.pilots.update(p or "?" for p in pilots)
        if "correct" in names:
            correct = [c for c in batch.column(names.index("correct")).to_pylist() if c is not None]
            self.tally.labelled += len(correct)
            self.tally.correct += sum(correct)

    # -- writing

    def _write_manifest(self) -> None:
        manifest = {"format": "parquet", "rows": sum(p["rows"] for p in self.parts), "parts": self.parts}
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, self.manifest_path)

    def _start(self, schema: Any) -> None:
        import pyarrow.parquet as pq

        self._open = self.folder / f"part-{self._next:05d}.parquet"
        self._next += 1
        self._writer = pq.ParquetWriter(self._open, schema)
        self._rows = 0

    def _finish(self) -> None:
        """Close the open part and list it in the manifest."""
        if self._writer is None:
            return
        self._writer.close()
        assert self._open is not None
        self.parts.append({"file": self._open.name, "rows": self._rows})
        self._write_manifest()
        self._writer, self._open = None, None

    def _write(self, table: Any) -> None:
        """A table into the open part: conformed to its schema (a column it lacks is null), or, when it
        cannot be (a new column, another type), into a new part of its own schema."""
        if self._writer is not None and table.schema != self._writer.schema:
            conformed = _conform(table, self._writer.schema)
            if conformed is None:
                self._finish()
            else:
                table = conformed
        if self._writer is None:
            self._start(table.schema)
        self._writer.write_table(table)
        self._rows += table.num_rows
        if self._rows >= self.part_rows:
            self._finish()

    def _flush_pending(self, schema: Any | None) -> None:
        import pyarrow as pa

        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        if schema is None:
            schema = pa.unify_schemas([t.schema for t in pending])
        for table in pending:
            self._write(_conform(table, schema) or table)

    def append(self, outcome: dict[str, Any]) -> None:
        """A chunk's table (the "arrow" bytes of records.ChunkColumns.outcome) and its counts."""
        from dgaas_flow.campaign.records import read_arrow

        table = read_arrow(outcome["arrow"])
        if self._writer is None and not pa_any(table.column("ok")):
            self._pending.append(table)  # failures only: their table lacks the output columns
            self._pending_rows += table.num_rows
            if self._pending_rows >= self.part_rows:
                self._flush_pending(None)
        else:
            if self._pending:
                self._flush_pending(table.schema)
            self._write(table)
        self.tally.add_chunk(outcome)

    def close(self) -> None:
        self._flush_pending(None)
        self._finish()


def pa_any(column: Any) -> bool:
    import pyarrow.compute as pc

    return bool(pc.any(column).as_py())


def _conform(table: Any, schema: Any) -> Any | None:
    """The table with the schema's columns, in its order, its own cast to their types and those it
    lacks as nulls; None when it has a column the schema has not, or a value that does not cast."""
    import pyarrow as pa

    if set(table.schema.names) - set(schema.names):
        return None
    try:
        columns = [table.column(f.name).cast(f.type) if f.name in table.schema.names
                   else pa.nulls(table.num_rows, f.type) for f in schema]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return pa.table(columns, schema=schema)


def read_parts(folder: Path, columns: list[str] | None = None) -> Any:
    """Every listed part of results/ as one table (parts whose columns differ are unified, a column a
    part lacks read as nulls): for tests and scripts that want all results in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = json.loads((folder / MANIFEST).read_text())
    tables = [pq.read_table(folder / p["file"], columns=columns) for p in manifest["parts"]]
    if not tables:
        return pa.table({"id": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")
