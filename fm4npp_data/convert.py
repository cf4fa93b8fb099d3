"""Input files -> Parquet event shards + one manifest (DESIGN.md §3): streaming, atomic, resumable, parallel.

Each input converts on its own (in this process, in worker processes, or on a Dask cluster) into ZSTD Parquet
shards named `<stem>-<sha8>-NNNNN.parquet`, written under hidden temporary names and renamed only when the whole
input converted; its rejected spacepoints go to `rejects/<stem>-<sha8>.parquet`. The manifest
(`manifest.json`, rewritten atomically after every input) records every input's sha256, layout and counts in and
out, and every shard's sha256 and counts; `resume` skips inputs already converted with the same sha256 and options.
Inputs without a run number (svtx-evaluator files count events from 0 per file) get a run number derived from
their sha256, so that the same file always gives the same (run, event) and a duplicated file is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import uproot

from . import geometry as g
from .assemble import REJECT_REASONS, Counts, assemble
from .files import sha256_file, write_json
from .layouts import LayoutError, SourceInfo, detect, resolve
from .schema import REJECTS_SCHEMA, SCHEMA_VERSION, events_schema

MANIFEST = "manifest.json"
REJECTS_DIR = "rejects"
FORMAT = "fm4npp-events"
COMPRESSION = "zstd"
_SHARD_RE = re.compile(r".+-[0-9a-f]{8}-\d{5}\.parquet$")


class ConvertError(RuntimeError):
    """An input could not be converted, or the output cannot be written; the message says which and why."""


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fm4npp")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides what a conversion writes (its identity is recorded in the manifest)."""

    layout: str | None = None  # a layout name, a TOML file, or None for detection
    noise_cut: float = g.NOISE_CUT
    noise_variable: str = "pt"
    shard_events: int = 10_000
    row_group_events: int = 1_000
    step_size: str = "64 MB"  # uproot.iterate chunk: bounds the memory of one conversion

    def check(self) -> None:
        if self.noise_variable not in ("pt", "p"):
            raise ConvertError(f"--noise-variable must be pt or p, not {self.noise_variable!r}")
        if not (self.noise_cut >= 0):
            raise ConvertError(f"--noise-cut must be a non-negative momentum in GeV/c, not {self.noise_cut}")
        if self.shard_events < 1 or self.row_group_events < 1:
            raise ConvertError("--shard-events and --row-group-events must be at least 1")
        resolve(self.layout)  # raises LayoutError for an unknown name or a bad TOML file

    def identity(self) -> dict:
        """The options that change the output, with a TOML layout by its content."""
        layout = self.layout
        if layout is not None and str(layout).endswith(".toml"):
            layout = "toml:" + hashlib.sha256(Path(layout).read_bytes()).hexdigest()[:16]
        return {
            "layout": layout,
            "noise_cut": self.noise_cut,
            "noise_variable": self.noise_variable,
            "shard_events": self.shard_events,
            "row_group_events": self.row_group_events,
            "schema_version": SCHEMA_VERSION,
        }

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def run_from_sha(sha: str) -> int:
    """A run number for an input that has none: 31 bits of its sha256 (stable, and distinct with high probability)."""
    return int(sha[:8], 16) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------------------------
# Shards
# ------------------------------------------------------------------------------------------------------------


class ShardWriter:
    """Event tables -> shards of `shard_events` events, row groups of `row_group_events`; committed atomically."""

    def __init__(self, out: Path, stem: str, schema: pa.Schema, shard_events: int, row_group_events: int) -> None:
        self.out, self.stem, self.schema = out, stem, schema
        self.shard_events, self.row_group_events = shard_events, row_group_events
        self.pending: list[pa.Table] = []
        self.pending_events = 0
        self.writer: pq.ParquetWriter | None = None
        self.shard_events_written = 0
        self.shards: list[dict] = []  # finished, not yet committed
        self.current: dict | None = None

    def _name(self, index: int) -> str:
        return f"{self.stem}-{index:05d}.parquet"

    def _open(self) -> None:
        name = self._name(len(self.shards))
        tmp = self.out / f".{name}.partial"
        self.writer = pq.ParquetWriter(tmp, self.schema, compression=COMPRESSION)
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

    def commit(self) -> list[dict]:
        """Rename the finished shards into place; their descriptions for the manifest."""
        out = []
        for shard in self.shards:
            tmp = shard.pop("tmp")
            final = self.out / shard["path"]
            shard["sha256"] = sha256_file(tmp)
            shard["bytes"] = tmp.stat().st_size
            os.replace(tmp, final)
            out.append(shard)
        self.shards = []
        return out

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for shard in [*self.shards, *([self.current] if self.current else [])]:
            if shard.get("tmp") is not None:
                Path(shard["tmp"]).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------------
# One input
# ------------------------------------------------------------------------------------------------------------


def _safe_stem(path: Path) -> str:
    stem = path.name.removesuffix(".root")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:80] or "input"


def open_root(path: Path):
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ConvertError(f"{path}: the file is empty (0 bytes); was it written completely?")
    try:
        return uproot.open(path)
    except Exception as exc:  # uproot raises several types for files that are not (complete) ROOT files
        raise ConvertError(
            f"{path}: cannot be read as a ROOT file ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupt: copy it again, or check that the job that wrote it finished."
        ) from exc


def convert_input(
    path: str | Path, out: str | Path, options: ConvertOptions, on_events: Callable[[int], None] | None = None
) -> dict:
    """Convert one input file into committed shards in `out`; returns its manifest entry (raises ConvertError).

    `on_events(n)` is called after each chunk of n events (progress within a large file)."""
    start = time.perf_counter()
    path, out = Path(path), Path(out)
    sha = sha256_file(path) if path.is_file() else ""
    file = open_root(path)
    writer = rejects_writer = None
    stem = f"{_safe_stem(path)}-{sha[:8]}"
    rejects_tmp = out / REJECTS_DIR / f".{stem}.parquet.partial"
    try:
        with file:
            layout = detect(file, path, resolve(options.layout))
            info = SourceInfo(path=path, default_run=run_from_sha(sha), step_size=options.step_size)
            writer = ShardWriter(
                out, stem, events_schema(layout.TRUTH), options.shard_events, options.row_group_events
            )  # fmt: skip
            counts = Counts()
            keys = []
            for chunk in layout.chunks(file, info):
                table, rejects, c = assemble(chunk, layout.TRUTH, str(path), options.noise_cut, options.noise_variable)
                counts.add(c)
                keys.append((chunk.run.astype(np.int64) << 40) | chunk.event)
                writer.add(table)
                if rejects.num_rows:
                    if rejects_writer is None:
                        rejects_tmp.parent.mkdir(exist_ok=True)
                        rejects_writer = pq.ParquetWriter(rejects_tmp, REJECTS_SCHEMA, compression=COMPRESSION)
                    rejects_writer.write_table(rejects)
                if on_events is not None:
                    on_events(chunk.n_events)
            writer.finish()
            _check_counts(path, file, layout, counts, writer)
            _check_unique_keys(path, keys)
    except BaseException as exc:
        _abort(writer, rejects_writer, out, path)
        if isinstance(exc, ConvertError):
            raise
        if isinstance(exc, LayoutError):
            raise ConvertError(str(exc)) from exc
        if isinstance(exc, Exception):  # uproot's decompression and deserialization errors of a damaged file
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConvertError(
                f"{path}: reading failed ({type(exc).__name__}: {first_line}); the file may be truncated or corrupt: "
                "copy it again, or check that the job that wrote it finished"
            ) from exc
        raise
    rejects_name = None
    if rejects_writer is not None:
        rejects_writer.close()
        rejects_name = f"{REJECTS_DIR}/{stem}.parquet"
        os.replace(rejects_tmp, out / rejects_name)
    shards = writer.commit()
    return {
        "path": str(path),
        "name": path.name,
        "sha256": sha,
        "bytes": path.stat().st_size,
        "layout": layout.NAME,
        "truth": layout.TRUTH,
        "energy_units": layout.ENERGY_UNITS,
        "default_run": info.default_run,
        "notes": info.notes,
        "counts": counts.as_dict(),
        "shards": shards,
        "rejects": rejects_name,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _abort(writer, rejects_writer, out: Path, path: Path) -> None:
    if writer is not None:
        writer.abort()
    if rejects_writer is not None:
        rejects_writer.close()
    for tmp in (out / REJECTS_DIR).glob(f".{_safe_stem(path)}-*.parquet.partial"):
        tmp.unlink(missing_ok=True)


def _check_counts(path: Path, file, layout, counts: Counts, writer: ShardWriter) -> None:
    """Counts are conserved: rows in the file = spacepoints + other layers; spacepoints = written + rejected."""
    rejected = sum(counts.rejected.values())
    written_sp = sum(s["spacepoints"] for s in writer.shards)
    written_ev = sum(s["events"] for s in writer.shards)
    problems = []
    if counts.spacepoints_in != counts.spacepoints_out + rejected:
        problems.append(f"spacepoints in {counts.spacepoints_in} != out {counts.spacepoints_out} + rejected {rejected}")
    if written_sp != counts.spacepoints_out or written_ev != counts.events:
        problems.append(
            f"shards hold {written_ev} events / {written_sp} spacepoints, "
            f"expected {counts.events} / {counts.spacepoints_out}"
        )
    row_tree = getattr(layout, "ROW_TREE", None)
    if row_tree is not None:
        rows = file[row_tree].num_entries
        if rows != counts.spacepoints_in + counts.skipped_other_layers:
            problems.append(
                f"{row_tree} has {rows} rows but {counts.spacepoints_in + counts.skipped_other_layers} were read"
            )
    particle_tree = getattr(layout, "PARTICLE_ROW_TREE", None)
    if particle_tree is not None and particle_tree in file and counts.particles_in:
        rows = file[particle_tree].num_entries
        if rows != counts.particles_out:
            problems.append(f"{particle_tree} has {rows} rows but {counts.particles_out} particles were written")
    if problems:
        raise ConvertError(f"{path}: counts are not conserved: {'; '.join(problems)}")


def _check_unique_keys(path: Path, keys: list[np.ndarray]) -> None:
    if not keys:
        return
    all_keys = np.concatenate(keys)
    uniq, counts = np.unique(all_keys, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        raise ConvertError(
            f"{path}: (run {dup >> 40}, event {dup & ((1 << 40) - 1)}) appears in two separate blocks of rows; "
            "rows of one event must be consecutive"
        )


def _convert_safely(path: str, out: str, options: ConvertOptions, on_events=None) -> dict:
    """convert_input for pools and clusters: failures come back as {"path", "error"} instead of exceptions."""
    try:
        return convert_input(path, out, options, on_events)
    except ConvertError as exc:
        return {"path": str(path), "error": str(exc)}
    except Exception as exc:  # report, do not lose the other inputs
        return {"path": str(path), "error": f"{path}: unexpected error ({type(exc).__name__}: {exc})"}


# ------------------------------------------------------------------------------------------------------------
# Many inputs
# ------------------------------------------------------------------------------------------------------------


@dataclass
class ConvertSummary:
    out: Path
    converted: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # already converted (--resume)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> Counts:
        return Counts.total(entry["counts"] for entry in [*self.converted, *self.skipped])


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the `*.root` files of directories named (sorted); a missing path is an error."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.root"))
            if not found:
                raise ConvertError(f"{p}: directory holds no *.root files")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise ConvertError(f"{p}: no such file or directory")
    seen: dict[Path, Path] = {}
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen[key] = f
            unique.append(f)
    return unique


def _run_local(inputs: list[Path], out: Path, options: ConvertOptions, workers: int, on_events=None) -> Iterator[dict]:
    if workers <= 1 or len(inputs) == 1:
        for path in inputs:
            yield _convert_safely(str(path), str(out), options, on_events)
        return
    with ProcessPoolExecutor(min(workers, len(inputs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_convert_safely, str(p), str(out), options) for p in inputs]
        for future in as_completed(futures):
            yield future.result()


def _run_dask(inputs: list[Path], out: Path, options: ConvertOptions, scheduler: str) -> Iterator[dict]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError as exc:
        raise ConvertError("--scheduler needs dask.distributed: pip install 'fm4npp[dask]'") from exc
    try:
        client = Client(scheduler, timeout="20s")
    except Exception as exc:
        raise ConvertError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc
    try:
        futures = client.map(_convert_safely, [str(p) for p in inputs], out=str(out), options=options, pure=False)
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()


def _load_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{path}: unreadable manifest ({exc}); remove {out} or choose another --out") from exc
    if manifest.get("format") != FORMAT:
        raise ConvertError(f"{path}: not an fm4npp conversion manifest")
    return manifest


def build_manifest(out: Path, options: ConvertOptions, entries: list[dict]) -> dict:
    entries = sorted(entries, key=lambda e: (e["name"], e["sha256"]))
    total = Counts.total(e["counts"] for e in entries)
    shards = [dict(s, source=e["name"]) for e in entries for s in e["shards"]]
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "tool_version": tool_version(),
        "options": options.identity(),
        "options_key": options.key(),
        "layouts": sorted({e["layout"] for e in entries}),
        "truth": sorted({e["truth"] for e in entries}),
        "energy_units": sorted({e["energy_units"] for e in entries}),
        "reject_reasons": list(REJECT_REASONS),
        "totals": total.as_dict(),
        "inputs": entries,
        "shards": shards,
    }


def _read_keys(out: Path, entry: dict) -> np.ndarray:
    keys = []
    for shard in entry["shards"]:
        table = pq.read_table(out / shard["path"], columns=["run", "event"])
        keys.append((table["run"].to_numpy().astype(np.int64) << 40) | table["event"].to_numpy())
    return np.concatenate(keys) if keys else np.zeros(0, np.int64)


def _remove_entry_files(out: Path, entry: dict) -> None:
    for shard in entry["shards"]:
        (out / shard["path"]).unlink(missing_ok=True)
    if entry.get("rejects"):
        (out / entry["rejects"]).unlink(missing_ok=True)


def convert(
    inputs: Iterable[str | Path],
    out: str | Path,
    options: ConvertOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    on_events: Callable[[int], None] | None = None,
) -> ConvertSummary:
    """Convert inputs into shards + manifest in `out`. Bad inputs are reported in the summary, the others finish.

    `progress(entry)` is called as each input ends; `on_events(n)` as chunks of events convert in this process."""
    options = options or ConvertOptions()
    start = time.perf_counter()
    try:
        options.check()
    except LayoutError as exc:
        raise ConvertError(str(exc)) from exc
    files = expand_inputs(inputs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a directory")
    created = not out.exists()
    previous = _load_manifest(out) if not created else None
    if previous is not None and not resume:
        raise ConvertError(f"{out} already holds a conversion; pass --resume to continue it, or choose another --out")
    leftovers = [*out.glob(".*.partial"), *(out / REJECTS_DIR).glob(".*.partial")] if not created else []
    if previous is None and not created and not resume:
        others = [p for p in out.iterdir() if p not in leftovers and not (p.name == REJECTS_DIR and p.is_dir()
                                                                            and not any(p.iterdir()))]  # fmt: skip
        if others:
            raise ConvertError(f"{out} is not empty; choose a new or empty --out")
    if previous is not None and previous["options_key"] != options.key():
        raise ConvertError(
            f"{out} was converted with other options ({previous['options']}); resume with the same options, "
            "or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    summary = ConvertSummary(out=out)
    done: dict[str, dict] = {}  # sha256 -> entry
    if previous is not None:
        for entry in previous["inputs"]:
            if all(
                (out / s["path"]).is_file() and (out / s["path"]).stat().st_size == s["bytes"] for s in entry["shards"]
            ):
                done[entry["sha256"]] = entry
    # leftovers of an interrupted run: temporary files, and shards no manifest entry names
    known = {s["path"] for e in done.values() for s in e["shards"]}
    for f in out.glob(".*.partial"):
        f.unlink()
    for f in out.glob("*.parquet"):
        if _SHARD_RE.match(f.name) and f.name not in known:
            f.unlink()
    if (out / REJECTS_DIR).is_dir():
        for f in (out / REJECTS_DIR).glob(".*.partial"):
            f.unlink()

    todo = []
    entries = dict(done)
    for path in files:
        sha = sha256_file(path) if path.is_file() and resume else None
        if sha is not None and sha in done:
            summary.skipped.append(done[sha])
            if progress:
                progress(done[sha])
        else:
            todo.append(path)

    if scheduler:
        runner = _run_dask(todo, out, options, scheduler)
    else:
        runner = _run_local(todo, out, options, workers, on_events)
    for result in runner:
        if "error" in result:
            summary.errors.append(result["error"])
        else:
            if result["sha256"] in entries:  # the same content twice among the inputs
                summary.errors.append(
                    f"{result['path']}: same content (sha256 {result['sha256'][:12]}...) as "
                    f"{entries[result['sha256']]['path']}; converted once"
                )
                continue
            entries[result["sha256"]] = result
            summary.converted.append(result)
            write_json(out / MANIFEST, build_manifest(out, options, list(entries.values())))
        if progress:
            progress(result)

    # (run, event) must be unique across the whole output: a later input that repeats one is rejected
    order = {str(p): i for i, p in enumerate(files)}
    ranked = sorted(entries.values(), key=lambda e: (order.get(e["path"], -1), e["name"]))
    owners: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    for i, entry in enumerate(ranked):
        k = _read_keys(out, entry)
        keys.append(k)
        owners.append(np.full(k.shape[0], i))
    if keys:
        all_keys, all_owners = np.concatenate(keys), np.concatenate(owners)
        sort = np.argsort(all_keys, kind="stable")
        k_sorted, o_sorted = all_keys[sort], all_owners[sort]
        dup = np.flatnonzero(k_sorted[1:] == k_sorted[:-1])
        bad: dict[int, tuple[int, int]] = {}
        for d in dup:
            first, second = int(o_sorted[d]), int(o_sorted[d + 1])
            if first != second and second not in bad:
                bad[second] = (first, int(k_sorted[d]))
        for second, (first, key) in sorted(bad.items()):
            entry, other = ranked[second], ranked[first]
            n_dup = int(np.isin(keys[second], keys[first]).sum())
            summary.errors.append(
                f"{entry['path']}: {n_dup} (run, event) pairs already come from {other['path']}, e.g. "
                f"(run {key >> 40}, event {key & ((1 << 40) - 1)}); not converted. Two files hold the same events: "
                "convert only one of them, or give them distinct run numbers"
            )
            _remove_entry_files(out, entry)
            entries.pop(entry["sha256"])
            summary.converted = [e for e in summary.converted if e["sha256"] != entry["sha256"]]
            summary.skipped = [e for e in summary.skipped if e["sha256"] != entry["sha256"]]
    if entries:
        write_json(out / MANIFEST, build_manifest(out, options, list(entries.values())))
    else:
        (out / MANIFEST).unlink(missing_ok=True)
        if created:
            _rmtree_empty(out)
    summary.seconds = time.perf_counter() - start
    return summary


def _rmtree_empty(path: Path) -> None:
    """Remove a directory this run created if nothing of value is in it."""
    rej = path / REJECTS_DIR
    if rej.is_dir() and not any(rej.iterdir()):
        rej.rmdir()
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


__all__ = ["ConvertError", "ConvertOptions", "ConvertSummary", "convert", "convert_input"]
