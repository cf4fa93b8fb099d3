"""`fm4npp-data convert`: input files -> Parquet event shards + one manifest (docs/data-format.md).

Orchestration only: each input converts on its own (`convert_input`: its chunks through fm4npp_data.conversion.ingest
into fm4npp_data.shards), in this process, in worker processes or on a Dask cluster (fm4npp_data.parallel), into ZSTD
Parquet shards named `<stem>-<sha8>-NNNNN.parquet`, written under temporary names and renamed only when the whole input
converted; its rejected spacepoints go to `rejects/<stem>-<sha8>.parquet`. The manifest (rewritten atomically after
every input) records every input's sha256, layout and counts in and out, and every shard's sha256 and counts; `resume`
skips inputs already converted with the same sha256 and options. Leftovers of an interrupted run (temporary files,
shards and rejects no manifest names) are recognized and cleared. Inputs without a run number (svtx-evaluator files
count events from 0 per file) get one derived from their sha256, so that the same file always gives the same (run,
event) and a duplicated file is caught."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .. import geometry as g
from ..dataset import MANIFEST, REJECTS_DIR, InputEntry, Manifest, ShardEntry
from ..errors import ConvertError, DatasetError, Fm4nppError
from ..files import LOCK, FolderLock, clear_leftovers, is_partial, sha256_file
from ..layouts import SourceInfo, detect, resolve
from ..parallel import Failed, parallel_map
from ..schema import SCHEMA_VERSION, events_schema
from ..shards import ROW_GROUP_EVENTS, SHARD_EVENTS, RejectsWriter, ShardWriter
from .assemble import Counts
from .ingest import (
    chunks_of,
    conservation_problems,
    first_repeated_pair,
    open_root,
    pump,
    read_failure,
    run_from_sha,
    tree_problems,
)

_SHARD_RE = re.compile(r".+-[0-9a-f]{8}-\d{5}\.parquet$")


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides what a conversion writes (its identity is recorded in the manifest)."""

    layout: str | None = None  # a layout name, a TOML file, or None for detection
    noise_cut: float = g.NOISE_CUT
    noise_variable: str = "pt"
    shard_events: int = SHARD_EVENTS
    row_group_events: int = ROW_GROUP_EVENTS
    step_size: str = "64 MB"  # uproot.iterate chunk: bounds the memory of one conversion

    def check(self) -> None:
        if self.noise_variable not in ("pt", "p"):
            raise ConvertError(f"--noise-variable must be pt or p, not {self.noise_variable!r}")
        if not (self.noise_cut >= 0):
            raise ConvertError(f"--noise-cut must be a non-negative momentum in GeV/c, not {self.noise_cut}")
        if self.shard_events < 1 or self.row_group_events < 1:
            raise ConvertError("--shard-events and --row-group-events must be at least 1")
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([kMG]i?B|B)?\s*", str(self.step_size)):
            raise ConvertError(
                f"--step-size must be a size such as '64 MB' or a number of bytes, not {self.step_size!r}"
            )
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


# ------------------------------------------------------------------------------------------------------------
# One input
# ------------------------------------------------------------------------------------------------------------


def _safe_stem(path: Path) -> str:
    stem = path.name.removesuffix(".root")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:80] or "input"


@dataclass
class Converted:
    """One input converted: its manifest entry and its committed shards."""

    entry: InputEntry
    shards: list[ShardEntry]


def convert_input(
    path: str | Path, out: str | Path, options: ConvertOptions, on_events: Callable[[int], None] | None = None
) -> Converted:
    """Convert one input file into committed shards in `out` (raises ConvertError / LayoutError naming the file).

    `on_events(n)` is called after each chunk of n events (progress within a large file)."""
    start = time.perf_counter()
    path, out = Path(path), Path(out)
    file = open_root(path)
    sha = sha256_file(path)
    stem = f"{_safe_stem(path)}-{sha[:8]}"
    writer = rejects = None
    try:
        with file:
            layout = detect(file, path, resolve(options.layout))
            info = SourceInfo(path=path, default_run=run_from_sha(sha), step_size=options.step_size)
            writer = ShardWriter(out, stem, events_schema(layout.truth), options.shard_events, options.row_group_events)
            rejects = RejectsWriter(out / REJECTS_DIR / f"{stem}.parquet")
            pumped = pump(
                chunks_of(layout, file, info),
                layout.truth,
                writer,
                rejects,
                str(path),
                options.noise_cut,
                options.noise_variable,
                on_events,
            )
            counts = pumped.total
            problems = conservation_problems(counts, writer) + tree_problems(file, layout, counts)
            if problems:
                raise ConvertError(f"{path}: counts are not conserved: {'; '.join(problems)}")
            repeated = first_repeated_pair(pumped.run, pumped.event)  # one entry per block of rows
            if repeated is not None:
                raise ConvertError(
                    f"{path}: (run {repeated[0]}, event {repeated[1]}) appears in two separate blocks of rows; "
                    "rows of one event must be consecutive"
                )
    except BaseException as exc:
        for w in (writer, rejects):
            if w is not None:
                w.abort()
        if isinstance(exc, Exception) and not isinstance(exc, Fm4nppError):
            raise read_failure(path, exc) from exc
        raise
    rejects_path = rejects.commit()
    shards = [ShardEntry(input=sha, **s) for s in writer.commit()]
    entry = InputEntry(
        path=str(path),
        name=path.name,
        counts=counts,
        sha256=sha,
        bytes=path.stat().st_size,
        layout=layout.name,
        truth=layout.truth,
        energy_units=layout.energy_units,
        default_run=info.default_run,
        notes=info.notes,
        rejects=f"{REJECTS_DIR}/{rejects_path.name}" if rejects_path else None,
        seconds=round(time.perf_counter() - start, 3),
    )
    return Converted(entry, shards)


# ------------------------------------------------------------------------------------------------------------
# Many inputs
# ------------------------------------------------------------------------------------------------------------


@dataclass
class ConvertSummary:
    out: Path
    converted: list[InputEntry] = field(default_factory=list)
    skipped: list[InputEntry] = field(default_factory=list)  # already converted (--resume)
    errors: list[str] = field(default_factory=list)
    cleared: list[Path] = field(default_factory=list)  # leftovers of an interrupted run, removed
    replaced: list[str] = field(default_factory=list)  # inputs whose content changed since they were converted
    in_set: Counts | None = None  # the whole set after this run (this run's inputs and the earlier ones)
    seconds: float = 0.0

    def totals(self) -> Counts:
        """What this run's inputs hold (converted now or already there)."""
        return Counts.total(e.counts.as_dict() for e in [*self.converted, *self.skipped])


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the `*.root` files of directories named (sorted), as absolute paths (so that workers on
    other machines or folders find them); a missing path is an error."""
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
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), Path(os.path.abspath(f)))
    return list(unique.values())


def _previous(out: Path) -> Manifest | None:
    if not (out / MANIFEST).exists():
        return None
    try:
        return Manifest.load(out)
    except DatasetError as exc:
        raise ConvertError(f"{exc}; or choose another --out") from exc


def _foreign(out: Path) -> list[Path]:
    """What a folder without a manifest holds that no fm4npp run left there (a user's files)."""
    found = []
    for path in out.iterdir():
        if is_partial(path.name) or path.name == LOCK:
            continue
        if path.name == REJECTS_DIR and path.is_dir() and all(is_partial(q.name) for q in path.iterdir()):
            continue
        found.append(path)
    return found


def _clear_leftovers(out: Path, manifest: Manifest) -> list[Path]:
    """Remove what an interrupted run left: temporary files anywhere, and shards and rejects the manifest does not
    name (a run killed after renaming an input's files and before recording them)."""
    removed = clear_leftovers(out)
    shards = {s.path for s in manifest.shards}
    rejects = {e.rejects for e in manifest.inputs if e.rejects}
    for f in out.glob("*.parquet"):
        if _SHARD_RE.match(f.name) and f.name not in shards:
            f.unlink()
            removed.append(f)
    for f in (out / REJECTS_DIR).glob("*.parquet"):
        if f"{REJECTS_DIR}/{f.name}" not in rejects:
            f.unlink()
            removed.append(f)
    return removed


def _complete(out: Path, manifest: Manifest, entry: InputEntry) -> bool:
    shards = [s for s in manifest.shards if s.input == entry.sha256]
    return all((out / s.path).is_file() and (out / s.path).stat().st_size == s.bytes for s in shards)


def _remove(out: Path, shards: list[ShardEntry], entry: InputEntry) -> None:
    for shard in shards:
        (out / shard.path).unlink(missing_ok=True)
    if entry.rejects:
        (out / entry.rejects).unlink(missing_ok=True)


def _keys(out: Path, shards: list[ShardEntry]) -> tuple[np.ndarray, np.ndarray]:
    runs, events = [], []
    for shard in shards:
        table = pq.read_table(out / shard.path, columns=["run", "event"])
        runs.append(table["run"].to_numpy())
        events.append(table["event"].to_numpy())
    if not runs:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(runs), np.concatenate(events)


def duplicate_owners(keys: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, tuple[int, int, int, int]]:
    """Inputs (by index) that repeat a (run, event) of an earlier input: index -> (earlier index, run, event, n).

    The pairs are compared exactly (int32 run, int64 event), however large the run numbers are."""
    if not keys:
        return {}
    run = np.concatenate([k[0] for k in keys]).astype(np.int64)
    event = np.concatenate([k[1] for k in keys]).astype(np.int64)
    owner = np.concatenate([np.full(k[0].shape[0], i) for i, k in enumerate(keys)])
    order = np.lexsort((owner, event, run))  # by run, then event, then owner: earlier inputs first
    r, e, o = run[order], event[order], owner[order]
    same = np.flatnonzero((r[1:] == r[:-1]) & (e[1:] == e[:-1]) & (o[1:] != o[:-1]))
    bad: dict[int, tuple[int, int, int, int]] = {}
    counts: dict[int, int] = {}
    for d in same:
        later = int(o[d + 1])
        counts[later] = counts.get(later, 0) + 1
        bad.setdefault(later, (int(o[d]), int(r[d]), int(e[d]), 0))
    return {i: (*bad[i][:3], counts[i]) for i in bad}


def _same_content(files: list[Path], shas: dict[Path, str]) -> dict[Path, Path]:
    """Inputs whose bytes equal an earlier input's: later -> earlier. Only files of equal size are hashed."""
    by_size: dict[int, list[Path]] = {}
    for f in files:
        by_size.setdefault(f.stat().st_size, []).append(f)
    first: dict[str, Path] = {}
    later: dict[Path, Path] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        for f in group:
            sha = shas.setdefault(f, sha256_file(f))
            if sha in first:
                later[f] = first[sha]
            else:
                first[sha] = f
    return later


def convert(
    inputs: Iterable[str | Path],
    out: str | Path,
    options: ConvertOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    progress: Callable[[InputEntry | str], None] | None = None,
    on_events: Callable[[int], None] | None = None,
) -> ConvertSummary:
    """Convert inputs into shards + manifest in `out`. Bad inputs are reported in the summary, the others finish.

    `progress(entry or error message)` is called as each input ends; `on_events(n)` as chunks of events convert
    in this process."""
    options = options or ConvertOptions()
    start = time.perf_counter()
    options.check()
    if workers < 1:
        raise ConvertError(f"--workers must be at least 1, not {workers}")
    files = expand_inputs(inputs)
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a directory")
    created = not out.exists()
    if not created and not (out / MANIFEST).exists() and _foreign(out):
        raise ConvertError(f"{out} is not empty and holds no conversion; choose a new or empty --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvertError(f"{out}: cannot create the output folder ({exc.strerror}); choose another --out") from exc
    summary = ConvertSummary(out=out)
    with FolderLock(out, ConvertError):
        previous = _previous(out)
        if previous is not None and previous.inputs and not resume:
            raise ConvertError(
                f"{out} already holds a conversion; pass --resume to continue it, or choose another --out"
            )
        if previous is not None and previous.options_key != options.key():
            raise ConvertError(
                f"{out} was converted with other options ({previous.options}); resume with the same options, "
                "or choose another --out"
            )
        if previous is None:  # a fresh set: an empty manifest marks the folder as ours from the start
            previous = Manifest.build(options.identity(), [], [], options_key=options.key())
            previous.save(out)
        summary.cleared = _clear_leftovers(out, previous)
        manifest = _convert_into(
            files, out, options, workers, scheduler, resume, previous, summary, progress, on_events
        )
        if not manifest.inputs:  # nothing converted: the folder holds no set
            (out / MANIFEST).unlink(missing_ok=True)
    if created and not manifest.inputs:
        _rmtree_empty(out)
    summary.seconds = time.perf_counter() - start
    return summary


def _convert_into(files, out, options, workers, scheduler, resume, previous, summary, progress, on_events) -> Manifest:
    """The conversion proper, in a locked output folder; returns the manifest saved last."""
    shas: dict[Path, str] = {f: sha256_file(f) for f in files} if resume else {}
    in_set = _carried_over(previous, files, shas, out, summary)
    earlier = set(in_set.entries)
    todo = _to_convert(files, shas, in_set, summary, progress)
    _convert_each(todo, out, options, workers, scheduler, on_events, in_set, summary, progress)
    _withdraw_repeated_events(files, out, earlier, in_set, summary)
    manifest = in_set.save(out, options)
    summary.in_set = manifest.totals
    return manifest


@dataclass
class _InSet:
    """The inputs of the set being built (by sha256) and the shards of each."""

    entries: dict[str, InputEntry] = field(default_factory=dict)
    shards: dict[str, list[ShardEntry]] = field(default_factory=dict)

    def add(self, entry: InputEntry, shards: list[ShardEntry]) -> None:
        self.entries[entry.sha256] = entry
        self.shards[entry.sha256] = shards

    def withdraw(self, out: Path, entry: InputEntry) -> None:
        """Remove an input and its files from the set."""
        _remove(out, self.shards.pop(entry.sha256), entry)
        self.entries.pop(entry.sha256)

    def save(self, out: Path, options: ConvertOptions) -> Manifest:
        """Write the manifest of the set (inputs by name) and return it."""
        ordered = sorted(self.entries.values(), key=lambda e: (e.name, e.sha256))
        shards = [s for e in ordered for s in self.shards[e.sha256]]
        manifest = Manifest.build(options.identity(), ordered, shards, options_key=options.key())
        manifest.save(out)
        return manifest


def _carried_over(
    previous: Manifest, files: list[Path], shas: dict[Path, str], out: Path, summary: ConvertSummary
) -> _InSet:
    """The earlier inputs that stay in the set: one with missing shards or (named again) changed content is removed."""
    in_set = _InSet()
    named_now = set(files)
    for entry in previous.inputs:
        mine = [s for s in previous.shards if s.input == entry.sha256]
        named = Path(entry.path) in named_now
        if not _complete(out, previous, entry):
            _remove(out, mine, entry)
            summary.errors.append(
                f"{entry.path}: some of its shards are missing from {out}; "
                + ("converted again" if named else "removed from the set: convert it again with --resume")
            )
        elif named and shas.get(Path(entry.path), entry.sha256) != entry.sha256:
            _remove(out, mine, entry)
            summary.replaced.append(entry.path)
        else:
            in_set.add(entry, mine)
    return in_set


def _to_convert(
    files: list[Path],
    shas: dict[Path, str],
    in_set: _InSet,
    summary: ConvertSummary,
    progress: Callable[[InputEntry | str], None] | None,
) -> list[Path]:
    """The inputs still to convert: not a copy of another input named, not already in the set (reported skipped)."""
    todo = []
    copies = _same_content(files, shas)
    for path in files:
        if path in copies:
            summary.errors.append(
                f"{path}: same content (sha256 {shas[path][:12]}...) as {copies[path]}; converted once"
            )
        elif path in shas and shas[path] in in_set.entries:
            summary.skipped.append(in_set.entries[shas[path]])
            if progress:
                progress(in_set.entries[shas[path]])
        else:
            todo.append(path)
    return todo


def _convert_each(
    todo: list[Path],
    out: Path,
    options: ConvertOptions,
    workers: int,
    scheduler: str | None,
    on_events: Callable[[int], None] | None,
    in_set: _InSet,
    summary: ConvertSummary,
    progress: Callable[[InputEntry | str], None] | None,
) -> None:
    """Convert the inputs (in parallel where asked), adding each to the set and saving the manifest as it ends."""
    in_process = on_events if not scheduler and (workers <= 1 or len(todo) <= 1) else None
    tasks = [(str(p), str(out), options, in_process) for p in todo]
    for index, result in parallel_map(convert_input, tasks, workers, scheduler):
        if isinstance(result, Failed):
            message = result.message if result.expected else f"{todo[index]}: {result.message}"
            summary.errors.append(message)
            if progress:
                progress(message)
            continue
        entry = result.entry
        if entry.sha256 in in_set.entries:  # the same content as an input converted earlier, under another name
            _remove(out, result.shards, entry)
            summary.errors.append(
                f"{entry.path}: same content (sha256 {entry.sha256[:12]}...) as {in_set.entries[entry.sha256].path}; "
                "converted once"
            )
            continue
        in_set.add(entry, result.shards)
        summary.converted.append(entry)
        in_set.save(out, options)
        if progress:
            progress(entry)


def _withdraw_repeated_events(
    files: list[Path], out: Path, earlier: set[str], in_set: _InSet, summary: ConvertSummary
) -> None:
    """(run, event) is unique across the set: an input that repeats one of an earlier input is withdrawn.

    Inputs already in the set come first, then this run's in the order given."""
    order = {str(p): i for i, p in enumerate(files)}
    ranked = sorted(in_set.entries.values(), key=lambda e: (e.sha256 not in earlier, order.get(e.path, -1), e.name))
    keys = [_keys(out, in_set.shards[e.sha256]) for e in ranked]
    for later, (first, run, event, n) in sorted(duplicate_owners(keys).items()):
        entry, other = ranked[later], ranked[first]
        summary.errors.append(
            f"{entry.path}: {n} (run, event) pairs already come from {other.path}, e.g. (run {run}, event {event}); "
            "not converted. Two files hold the same events: convert only one of them, or give them distinct runs"
        )
        in_set.withdraw(out, entry)
        summary.converted = [e for e in summary.converted if e.sha256 != entry.sha256]
        summary.skipped = [e for e in summary.skipped if e.sha256 != entry.sha256]


def _rmtree_empty(path: Path) -> None:
    """Remove a directory this run created if nothing of value is in it."""
    rej = path / REJECTS_DIR
    if rej.is_dir() and not any(rej.iterdir()):
        rej.rmdir()
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


__all__ = ["ConvertError", "ConvertOptions", "ConvertSummary", "convert", "convert_input"]
