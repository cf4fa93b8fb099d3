"""One input -> labeled event tables: opening ROOT files, the chunk loop, and the checks that counts are conserved.

`convert` (ROOT files) and `import_release` (the npz release) share `pump`: chunks of a layout are assembled into
labeled Arrow tables (fm4npp_data.conversion.assemble), written by a ShardWriter, their rejected spacepoints by a
RejectsWriter, and counted; `conservation_problems` then checks that every spacepoint read is written or rejected
and that the shards hold what was counted. `root_events` reads a ROOT file through its layout into tables in
memory, for `describe` and the plots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import uproot

from .. import geometry as g
from ..errors import ConvertError, Fm4nppError
from ..files import sha256_file
from ..layouts import Chunk, Layout, SourceInfo, detect, resolve
from ..shards import RejectsWriter, ShardWriter
from .assemble import Counts, assemble


def run_from_sha(sha: str) -> int:
    """A run number for an input that has none: 31 bits of its sha256 (stable, and distinct with high probability)."""
    return int(sha[:8], 16) & 0x7FFFFFFF


def open_root(path: Path):
    """An open uproot file; ConvertError naming the file when it is missing, empty or not (complete) ROOT."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ConvertError(f"{path}: the file is empty (0 bytes); was it written completely?")
    try:
        return uproot.open(path)
    except Exception as exc:  # noqa: BLE001 - uproot raises many types for files that are not (complete) ROOT
        raise ConvertError(
            f"{path}: cannot be read as a ROOT file ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupt: copy it again, or check that the job that wrote it finished."
        ) from exc


def read_failure(path: Path, exc: Exception) -> ConvertError:
    """The user-facing error for a foreign exception (uproot's, the system's) met while reading `path`: damage."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else ""
    return ConvertError(
        f"{path}: reading failed ({type(exc).__name__}: {first_line}); the file may be truncated or corrupt: "
        "copy it again, or check that the job that wrote it finished"
    )


@contextmanager
def write_errors(out: Path):
    """Errors of writing the output (a full disk, no permission) reported as such, naming the output folder."""
    try:
        yield
    except OSError as exc:
        raise ConvertError(
            f"{out}: cannot write the output ({exc.strerror or exc}); free space or choose another --out"
        ) from exc


@dataclass
class Pumped:
    """What `pump` read and wrote: counts per source (a file, or a release member) and the events' identities."""

    counts: dict[str, Counts]
    run: np.ndarray
    event: np.ndarray

    @property
    def total(self) -> Counts:
        total = Counts()
        for c in self.counts.values():
            total.add(c)
        return total


def pump(
    chunks: Iterable[tuple[str, Chunk]],
    truth: str,
    writer: ShardWriter,
    rejects: RejectsWriter,
    where: str,
    noise_cut: float = g.NOISE_CUT,
    noise_variable: str = "pt",
    on_events: Callable[[int], None] | None = None,
) -> Pumped:
    """Assemble (source, chunk) pairs into labeled tables and write them; counts per source, every (run, event)."""
    counts: dict[str, Counts] = {}
    runs, events = [], []
    for source, chunk in chunks:
        table, rejected, c = assemble(
            chunk, truth, f"{where}::{source}" if source else where, noise_cut, noise_variable
        )
        counts.setdefault(source, Counts()).add(c)
        runs.append(chunk.run.astype(np.int32))
        events.append(chunk.event.astype(np.int64))
        with write_errors(writer.out):
            writer.add(table)
            rejects.add(rejected)
        if on_events is not None:
            on_events(chunk.n_events)
    with write_errors(writer.out):
        writer.finish()
    run = np.concatenate(runs) if runs else np.zeros(0, np.int32)
    event = np.concatenate(events) if events else np.zeros(0, np.int64)
    return Pumped(counts, run, event)


def conservation_problems(counts: Counts, writer: ShardWriter) -> list[str]:
    """Spacepoints read = written + rejected, and the shards hold the events and spacepoints counted."""
    rejected = sum(counts.rejected.values())
    problems = []
    if counts.spacepoints_in != counts.spacepoints_out + rejected:
        problems.append(f"spacepoints in {counts.spacepoints_in} != out {counts.spacepoints_out} + rejected {rejected}")
    if (writer.events, writer.spacepoints) != (counts.events, counts.spacepoints_out):
        problems.append(
            f"shards hold {writer.events} events / {writer.spacepoints} spacepoints, "
            f"expected {counts.events} / {counts.spacepoints_out}"
        )
    return problems


def tree_problems(file, layout: Layout, counts: Counts) -> list[str]:
    """The ROOT trees' entries against what was read: rows = spacepoints + other layers; particle rows = particles."""
    problems = []
    if layout.row_tree is not None:
        rows = file[layout.row_tree].num_entries
        read = counts.spacepoints_in + counts.skipped_other_layers
        if rows != read:
            problems.append(f"{layout.row_tree} has {rows} rows but {read} were read")
    if layout.particle_tree is not None and layout.particle_tree in file and counts.particles_in:
        rows = file[layout.particle_tree].num_entries
        if rows != counts.particles_out:
            problems.append(f"{layout.particle_tree} has {rows} rows but {counts.particles_out} particles were written")
    return problems


def first_repeated_pair(run: np.ndarray, event: np.ndarray) -> tuple[int, int] | None:
    """A (run, event) pair that occurs more than once, or None; exact for any int32 run and int64 event."""
    if run.shape[0] < 2:
        return None
    order = np.lexsort((event, run))
    r, e = run[order], event[order]
    same = np.flatnonzero((r[1:] == r[:-1]) & (e[1:] == e[:-1]))
    return (int(r[same[0]]), int(e[same[0]])) if same.size else None


def root_events(
    path: str | Path,
    layout: str | Path | Layout | None = None,
    noise_cut: float = g.NOISE_CUT,
    noise_variable: str = "pt",
    keep: bool = True,
) -> tuple[Layout, pa.Table, Counts]:
    """A ROOT file read through its layout (detected, or named) into one table of labeled events, in memory.

    For describing and drawing files; conversion streams instead (fm4npp_data.convert). With `keep=False` only the
    counts are kept (the table is empty), so that a large file is described in bounded memory."""
    path = Path(path)
    file = open_root(path)
    tables, total = [], Counts()
    try:
        with file:
            found = detect(file, path, resolve(layout))
            info = SourceInfo(path=path, default_run=run_from_sha(sha256_file(path)))
            for chunk in found.chunks(file, info):
                table, _, counts = assemble(chunk, found.truth, str(path), noise_cut, noise_variable)
                if keep:
                    tables.append(table)
                total.add(counts)
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - uproot's errors for a damaged file become a message naming it
        raise read_failure(path, exc) from exc
    if not tables:
        from ..schema import events_schema

        return found, events_schema(found.truth).empty_table(), total
    return found, pa.concat_tables(tables), total


def chunks_of(layout: Layout, file, info: SourceInfo) -> Iterator[tuple[str, Chunk]]:
    """The chunks of a ROOT file as (source, chunk) pairs for `pump` (one source: the file)."""
    for chunk in layout.chunks(file, info):
        yield "", chunk
