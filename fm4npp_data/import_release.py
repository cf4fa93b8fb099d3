"""`fm4npp-data import-release`: the published TPCpp-10M npz release -> Parquet events, keeping its splits.

Each part of the release (`labeled/train`, `labeled/validation`, `labeled/test`, and any unlabeled folder) becomes
one set of shards with its own manifest under `OUT/<part>/`, written in a hidden staging folder and renamed into
place when complete; `--resume` keeps the parts already imported. Events are numbered from 0 across the shards of a
part, in the release's order; the run number says the part (1 train, 2 validation, 3 test; see
fm4npp_data.layouts.release.PART_RUNS). The release's labels are kept as they are: `track_id` (uint16 in the
release), `pid` (class indices) and `noise` (the release's p_T < 60 MeV/c rule).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from .assemble import REJECT_REASONS, Counts, assemble
from .convert import COMPRESSION, FORMAT, MANIFEST, REJECTS_DIR, ConvertError, ShardWriter, tool_version
from .files import sha256_file, write_json
from .layouts import LayoutError
from .layouts import release as rel
from .schema import REJECTS_SCHEMA, SCHEMA_VERSION, events_schema


@dataclass
class ImportSummary:
    out: Path
    imported: list[dict] = field(default_factory=list)  # part manifests
    skipped: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _identity(source: rel.Source, member: str) -> dict:
    """A member's size and CRC32 (from the zip directory: free), or a file's size and sha256 (extracted folder)."""
    identity = source.identity(member)
    if "crc32" not in identity:
        identity["sha256"] = sha256_file(source.path / member)
    return identity


def _options(shard_events: int, row_group_events: int) -> dict:
    return {"layout": rel.NAME, "shard_events": shard_events, "row_group_events": row_group_events}


def _import_part(
    source: rel.Source, part: rel.Part, final: Path, options: dict, events_per_chunk: int, progress
) -> dict:
    stage = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    truth = rel.TRUTH if part.labeled else "none"
    writer = ShardWriter(stage, part.split or "events", events_schema(truth), options["shard_events"],
                         options["row_group_events"])  # fmt: skip
    rejects_writer = None
    total = Counts()
    per_member: dict[str, Counts] = {}
    try:
        for member, chunk in rel.part_chunks(source, part, events_per_chunk):
            table, rejects, counts = assemble(chunk, truth, f"{source.path}::{member}")
            total.add(counts)
            per_member.setdefault(member, Counts()).add(counts)
            writer.add(table)
            if rejects.num_rows:
                if rejects_writer is None:
                    (stage / REJECTS_DIR).mkdir()
                    rejects_writer = pq.ParquetWriter(stage / REJECTS_DIR / "rejects.parquet", REJECTS_SCHEMA,
                                                      compression=COMPRESSION)  # fmt: skip
                rejects_writer.write_table(rejects)
            if progress:
                progress(chunk.n_events)
        writer.finish()
        if rejects_writer is not None:
            rejects_writer.close()
            rejects_writer = None
        shards = writer.commit()
        if (
            total.spacepoints_in != total.spacepoints_out + sum(total.rejected.values())
            or sum(s["spacepoints"] for s in shards) != total.spacepoints_out
        ):
            raise ConvertError(f"{source.path}: part {part.name}: counts are not conserved ({total.as_dict()})")
        inputs = []
        for i, member in enumerate(part.shards):
            members = [member, *(part.labels[i].values() if part.labels else [])]
            inputs.append(
                {
                    "path": f"{source.path}::{member}",
                    "name": member,
                    "members": {m: _identity(source, m) for m in members},
                    "counts": per_member.get(member, Counts()).as_dict(),
                }
            )
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "tool_version": tool_version(),
            "source": str(source.path),
            "part": part.name,
            "split": part.split,
            "run": part.run,
            "options": options,
            "layouts": [rel.NAME],
            "truth": [truth],
            "energy_units": [rel.ENERGY_UNITS],
            "reject_reasons": list(REJECT_REASONS),
            "totals": total.as_dict(),
            "inputs": inputs,
            "shards": [dict(s, source=part.name) for s in shards],
            "rejects": f"{REJECTS_DIR}/rejects.parquet" if (stage / REJECTS_DIR).is_dir() else None,
        }
        write_json(stage / MANIFEST, manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
        return manifest
    except BaseException:
        writer.abort()
        if rejects_writer is not None:
            rejects_writer.close()
        shutil.rmtree(stage, ignore_errors=True)
        raise


def import_release(
    src: str | Path,
    out: str | Path,
    shard_events: int = 10_000,
    row_group_events: int = 1_000,
    events_per_chunk: int = 20_000,
    resume: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import every part of the release at `src` (the zip or its extracted folder) into `out`."""
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a directory")
    created = not out.exists()
    if not created and any(out.iterdir()) and not resume:
        raise ConvertError(f"{out} is not empty; pass --resume to continue an import, or choose another --out")
    try:
        source = rel.Source(src)
    except LayoutError as exc:
        raise ConvertError(str(exc)) from exc
    summary = ImportSummary(out=out)
    options = _options(shard_events, row_group_events)
    try:
        try:
            parts = rel.find_parts(source)
        except LayoutError as exc:
            raise ConvertError(str(exc)) from exc
        for part in parts:
            final = out / (part.name or "all")
            done = final / MANIFEST
            if resume and done.is_file():
                manifest = json.loads(done.read_text())
                if manifest.get("options") == options and manifest.get("source") == str(source.path):
                    summary.skipped.append(manifest)
                    continue
            try:
                summary.imported.append(_import_part(source, part, final, options, events_per_chunk, progress))
            except (LayoutError, ConvertError) as exc:
                summary.errors.append(str(exc))
    finally:
        source.close()
    if created and not summary.imported and not summary.skipped and out.is_dir():
        shutil.rmtree(out, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary
