"""`fm4npp-data import-release`: the published TPCpp-10M npz release -> Parquet events, keeping its splits.

Each part of the release (`labeled/train`, `labeled/validation`, `labeled/test`, and any unlabeled folder) becomes
one set of shards with its own manifest under `OUT/<part>/`, written in a hidden staging folder and renamed into
place when complete; `--resume` keeps the parts already imported. Events are numbered from 0 across the shards of a
part, in the release's order; the run number says the part (1 train, 2 validation, 3 test; see
fm4npp_data.layouts.release.PART_RUNS). The release's labels are kept as they are: `track_id` (uint16 in the
release), `pid` (class indices) and `noise` (the release's p_T < 60 MeV/c rule).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..dataset import REJECTS_DIR, InputEntry, Manifest, ShardEntry
from ..errors import ConvertError, DatasetError, LayoutError
from ..files import FolderLock, clear_leftovers, is_partial, sha256_file
from ..layouts import release as rel
from ..schema import events_schema
from ..shards import RejectsWriter, ShardWriter
from .assemble import Counts
from .convert import ConvertOptions
from .ingest import conservation_problems, pump


@dataclass
class ImportSummary:
    out: Path
    imported: list[Manifest] = field(default_factory=list)  # part manifests
    skipped: list[Manifest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _identity(source: rel.Source, member: str) -> dict:
    """A member's size and CRC32 (from the zip directory: free), or a file's size and sha256 (extracted folder)."""
    identity = source.identity(member)
    if "crc32" not in identity:
        identity["sha256"] = sha256_file(source.path / member)
    return identity


def _options(shard_events: int, row_group_events: int) -> dict:
    return {"layout": rel.LAYOUT.name, "shard_events": shard_events, "row_group_events": row_group_events}


def _import_part(
    source: rel.Source, part: rel.Part, final: Path, options: dict, events_per_chunk: int, progress
) -> Manifest:
    stage = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    truth = rel.LAYOUT.truth if part.labeled else "none"
    writer = ShardWriter(
        stage, part.split or "events", events_schema(truth), options["shard_events"], options["row_group_events"]
    )
    rejects = RejectsWriter(stage / REJECTS_DIR / "rejects.parquet")
    try:
        pumped = pump(
            rel.part_chunks(source, part, events_per_chunk),
            truth,
            writer,
            rejects,
            str(source.path),
            on_events=progress,
        )
        problems = conservation_problems(pumped.total, writer)
        if problems:
            raise ConvertError(f"{source.path}: part {part.name}: counts are not conserved: {'; '.join(problems)}")
        rejects_path = rejects.commit()
        shards = [ShardEntry(input=part.name, **s) for s in writer.commit()]
        inputs = []
        for i, member in enumerate(part.shards):
            members = [member, *(part.labels[i].values() if part.labels else [])]
            counts = pumped.counts.get(member)
            inputs.append(
                InputEntry(
                    path=f"{source.path}::{member}",
                    name=member,
                    counts=counts if counts is not None else Counts(),
                    layout=rel.LAYOUT.name,
                    truth=truth,
                    energy_units=rel.LAYOUT.energy_units,
                    members={m: _identity(source, m) for m in members},
                )
            )
        manifest = Manifest.build(
            options,
            inputs,
            shards,
            source=str(source.path),
            part=part.name,
            split=part.split,
            run=part.run,
            rejects=f"{REJECTS_DIR}/{rejects_path.name}" if rejects_path else None,
        )
        manifest.save(stage)
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
        return manifest
    except BaseException:
        writer.abort()
        rejects.abort()
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _kept(final: Path, source: rel.Source, part: rel.Part, options: dict) -> bool:
    """Whether the part in `final` was imported from these very members (same size, and CRC32 in a zip) with these
    options, so that resume keeps it."""
    try:
        manifest = Manifest.load(final)
    except DatasetError:
        return False  # damaged or absent: imported again
    recorded = {m: ident for e in manifest.inputs for m, ident in (e.members or {}).items()}
    wanted = [
        m for i, shard in enumerate(part.shards) for m in (shard, *(part.labels[i].values() if part.labels else []))
    ]

    def same(member: str) -> bool:
        return all(recorded.get(member, {}).get(k) == v for k, v in source.identity(member).items())

    return manifest.options == options and len(recorded) == len(wanted) and all(same(m) for m in wanted)


@dataclass(frozen=True)
class ImportOptions:
    """The defaults of `import_release` (and of `fm4npp-data import-release`): a conversion's shard sizes, and the
    release's events read at a time."""

    shard_events: int = ConvertOptions.shard_events
    row_group_events: int = ConvertOptions.row_group_events
    events_per_chunk: int = 20_000


def import_release(
    src: str | Path,
    out: str | Path,
    shard_events: int = ImportOptions.shard_events,
    row_group_events: int = ImportOptions.row_group_events,
    events_per_chunk: int = ImportOptions.events_per_chunk,
    resume: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import every part of the release at `src` (the zip or its extracted folder) into `out`."""
    start = time.perf_counter()
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a directory")
    created = not out.exists()
    if not created and not resume and [p for p in out.iterdir() if not is_partial(p.name)]:
        raise ConvertError(f"{out} is not empty; pass --resume to continue an import, or choose another --out")
    source = rel.Source(Path(os.path.abspath(src)))
    summary = ImportSummary(out=out)
    options = _options(shard_events, row_group_events)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with FolderLock(out, ConvertError):
            clear_leftovers(out)
            for part in rel.find_parts(source):
                final = out / (part.name or "all")
                if resume and _kept(final, source, part, options):
                    summary.skipped.append(Manifest.load(final))
                    continue
                try:
                    summary.imported.append(_import_part(source, part, final, options, events_per_chunk, progress))
                except (LayoutError, ConvertError) as exc:
                    summary.errors.append(str(exc))
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        source.close()
    if created and not summary.imported and not summary.skipped and out.is_dir():
        shutil.rmtree(out, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary
