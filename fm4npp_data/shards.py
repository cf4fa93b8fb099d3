"""Writing Parquet shards: event tables -> shards of a fixed number of events, and rejected spacepoints.

Everything is written under a temporary name (`.NAME.partial`, see fm4npp_data.files) and renamed into place only
on `commit`, so a killed run leaves no file that looks complete; `abort` removes what was written. Every file carries
Parquet page checksums (fm4npp_data.integrity.WRITE_OPTIONS), which the project's readers verify.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .files import partial_path, sha256_file
from .integrity import WRITE_OPTIONS
from .schema import REJECTS_SCHEMA

COMPRESSION = "zstd"
#: Default events per shard and per row group of every Parquet set fm4npp writes (convert, import-release, build).
SHARD_EVENTS, ROW_GROUP_EVENTS = 10_000, 1_000


class ShardWriter:
    """Event tables -> shards `<stem>-NNNNN.parquet` of `shard_events` events, row groups of `row_group_events`."""

    def __init__(self, out: Path, stem: str, schema: pa.Schema, shard_events: int, row_group_events: int) -> None:
        self.out, self.stem, self.schema = Path(out), stem, schema
        self.shard_events, self.row_group_events = shard_events, row_group_events
        self.pending: list[pa.Table] = []
        self.pending_events = 0
        self.writer: pq.ParquetWriter | None = None
        self.shards: list[dict] = []  # finished, not yet committed
        self.current: dict | None = None

    def _open(self) -> None:
        name = f"{self.stem}-{len(self.shards):05d}.parquet"
        tmp = partial_path(self.out / name)
        self.writer = pq.ParquetWriter(tmp, self.schema, compression=COMPRESSION, **WRITE_OPTIONS)
        self.current = {"path": name, "tmp": tmp, "events": 0, "spacepoints": 0}

    def _flush(self, table: pa.Table) -> None:
        if self.writer is None:
            self._open()
        self.writer.write_table(table, row_group_size=self.row_group_events)
        self.current["events"] += table.num_rows
        self.current["spacepoints"] += int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0)
        if self.current["events"] >= self.shard_events:
            self._close_shard()

    def _close_shard(self) -> None:
        self.writer.close()
        self.writer = None
        self.shards.append(self.current)
        self.current = None

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            room = self.shard_events - (self.current["events"] if self.current else 0) - self.pending_events
            take = min(table.num_rows, room, self.row_group_events - self.pending_events)
            self.pending.append(table.slice(0, take))
            self.pending_events += take
            table = table.slice(take)
            room -= take
            if self.pending_events >= self.row_group_events or room == 0:
                self._flush(pa.concat_tables(self.pending))
                self.pending, self.pending_events = [], 0

    def finish(self) -> None:
        if self.pending:
            self._flush(pa.concat_tables(self.pending))
            self.pending, self.pending_events = [], 0
        if self.writer is not None:
            self._close_shard()

    @property
    def events(self) -> int:
        return sum(s["events"] for s in self.shards)

    @property
    def spacepoints(self) -> int:
        return sum(s["spacepoints"] for s in self.shards)

    def commit(self) -> list[dict]:
        """Rename the finished shards into place; their descriptions (path, events, spacepoints, bytes, sha256)."""
        out = []
        for shard in self.shards:
            tmp = shard.pop("tmp")
            shard["sha256"] = sha256_file(tmp)
            shard["bytes"] = tmp.stat().st_size
            os.replace(tmp, self.out / shard["path"])
            out.append(shard)
        self.shards = []
        return out

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for shard in [*self.shards, *([self.current] if self.current else [])]:
            if shard.get("tmp") is not None:
                Path(shard["tmp"]).unlink(missing_ok=True)


class RejectsWriter:
    """Rejected spacepoints of one input -> `path` (created only when there is one)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, rejects: pa.Table) -> None:
        if not rejects.num_rows:
            return
        if self.writer is None:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, REJECTS_SCHEMA, compression=COMPRESSION, **WRITE_OPTIONS)
        self.writer.write_table(rejects)
        self.rows += rejects.num_rows

    def commit(self) -> Path | None:
        """Rename the file into place; its path, or None when nothing was rejected."""
        if self.writer is None:
            return None
        self.writer.close()
        self.writer = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.tmp.unlink(missing_ok=True)
