"""A converted or prepared set of shards on disk, as a typed object; finding sets; reading events.

A *set* is a folder with Parquet shards and a `manifest.json` (docs/data-format.md): what `convert` writes, or one
part of an imported release. A *dataset* is a folder holding one set, or several below it (an imported release:
`labeled/train`, `labeled/validation`, ...), with `binning.json` and `difficulty.json` at its root once prepared.

- `Manifest` (with `InputEntry`, `ShardEntry`): the manifest as dataclasses; `Manifest.load(folder)`,
  `manifest.save(folder)` (atomic), `manifest.problems(folder, checksums=...)` (counts, files, sha256, versions).
- `EventSet`: a set on disk (`EventSet.open(folder)`), its shards, whether it is prepared, `validate()`.
- `find_sets(root)`: the sets at or below a folder. Only names inside the dataset are looked at: a dataset below a
  hidden folder (`~/.cache/...`) is found; hidden folders inside it (temporary files of a run) are not sets.
- `read_events(path, columns=None, run=None, event=None)`: events of a shard, a set or a dataset as one Arrow table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .conversion.assemble import REJECT_REASONS, Counts
from .errors import DatasetError
from .files import is_partial, sha256_file, write_json
from .integrity import READ_OPTIONS, damaged
from .schema import SCHEMA_VERSION
from .version import tool_version

MANIFEST = "manifest.json"
BINNING = "binning.json"
DIFFICULTY = "difficulty.json"
REJECTS_DIR = "rejects"
FORMAT = "fm4npp-events"
#: Version of the manifest's own layout (2: each shard's sha256 recorded once, in `shards`).
MANIFEST_VERSION = 2


@dataclass
class ShardEntry:
    """One Parquet shard of a set: its file name, where its events came from, its counts and checksum."""

    path: str
    input: str  # the sha256 of the input file it came from, or the release part's name
    events: int
    spacepoints: int
    bytes: int
    sha256: str


@dataclass
class InputEntry:
    """One input of a set: a ROOT file (path, sha256, layout, ...) or the members of a release part."""

    path: str
    name: str
    counts: Counts
    sha256: str = ""
    bytes: int = 0
    layout: str = ""
    truth: str = ""
    energy_units: str = ""
    default_run: int | None = None
    notes: list[str] = field(default_factory=list)
    rejects: str | None = None
    seconds: float = 0.0
    members: dict | None = None  # release: member -> {bytes, crc32 | sha256}

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["counts"] = self.counts.as_dict()
        if self.members is None:
            out.pop("members")
        return out


@dataclass
class Manifest:
    """manifest.json of a set (docs/data-format.md)."""

    options: dict
    inputs: list[InputEntry] = field(default_factory=list)
    shards: list[ShardEntry] = field(default_factory=list)
    options_key: str = ""
    layouts: list[str] = field(default_factory=list)
    truth: list[str] = field(default_factory=list)
    energy_units: list[str] = field(default_factory=list)
    reject_reasons: list[str] = field(default_factory=lambda: list(REJECT_REASONS))
    totals: Counts = field(default_factory=Counts)
    # an imported release part
    source: str | None = None
    part: str | None = None
    split: str | None = None
    run: int | None = None
    rejects: str | None = None
    # present when every shard is prepared with these settings
    prepare: dict | None = None
    format: str = FORMAT
    manifest_version: int = MANIFEST_VERSION
    schema_version: int = SCHEMA_VERSION
    tool_version: str = field(default_factory=tool_version)

    @classmethod
    def build(cls, options: dict, inputs: list[InputEntry], shards: list[ShardEntry], **extra) -> Manifest:
        """A manifest whose summaries (layouts, truth, units, totals) are computed from its inputs."""
        return cls(
            options=options,
            inputs=inputs,
            shards=shards,
            layouts=sorted({e.layout for e in inputs}),
            truth=sorted({e.truth for e in inputs}),
            energy_units=sorted({e.energy_units for e in inputs}),
            totals=Counts.total(e.counts.as_dict() for e in inputs),
            **extra,
        )

    # -- reading and writing --------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """The manifest of the set in `folder`; DatasetError (naming the file and what to do) if it is damaged."""
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DatasetError(f"{path}: no manifest; is {folder} a converted set (fm4npp-data convert)?") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"{path}: unreadable manifest ({exc}); the set is damaged: convert it again into a new folder"
            ) from exc
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = MANIFEST) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{where}: not an fm4npp manifest (format is not {FORMAT!r})")
        version = data.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise DatasetError(
                f"{where}: manifest version {version} (fm4npp {data.get('tool_version', '?')}); this fm4npp reads "
                f"version {MANIFEST_VERSION}: convert the inputs again with this version"
            )
        try:
            data = dict(data)
            data["totals"] = _counts(data["totals"])
            data["inputs"] = [InputEntry(**{**e, "counts": _counts(e["counts"])}) for e in data["inputs"]]
            data["shards"] = [ShardEntry(**s) for s in data["shards"]]
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(f"unknown manifest keys {', '.join(unknown)}")
            manifest = cls(**data)
            manifest._check_types()
            return manifest
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(
                f"{where}: damaged manifest ({type(exc).__name__}: {exc}); convert the inputs again into a new folder"
            ) from exc

    def _check_types(self) -> None:
        """Numbers are integers and file names stay inside the set (a manifest is data, not instructions)."""
        for shard in self.shards:
            if not _plain_name(shard.path):
                raise ValueError(f"shard path {shard.path!r} is not a file name inside the set")
            for name in ("events", "spacepoints", "bytes"):
                if not _count(getattr(shard, name)):
                    raise ValueError(f"shard {shard.path}: {name} is not a count")
        for entry in self.inputs:
            rejects = entry.rejects
            if rejects is not None and not (rejects.startswith(f"{REJECTS_DIR}/") and _plain_name(rejects[8:])):
                raise ValueError(f"rejects path {rejects!r} is not a file of {REJECTS_DIR}/")
        for counts in (self.totals, *(e.counts for e in self.inputs)):
            values = [v for k, v in counts.as_dict().items() if k not in ("rejected", "pid_counts")]
            values += [*counts.rejected.values(), *counts.pid_counts]
            if not all(_count(v) for v in values):
                raise ValueError("a count is not a non-negative integer")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["totals"] = self.totals.as_dict()
        out["inputs"] = [e.as_dict() for e in self.inputs]
        return out

    def save(self, folder: str | Path) -> None:
        """Write manifest.json into `folder` atomically."""
        write_json(Path(folder) / MANIFEST, self.as_dict())

    # -- checks ---------------------------------------------------------------------------------------------

    def problems(self, folder: str | Path, checksums: bool = False) -> list[str]:
        """What is wrong with the set in `folder` against this manifest (empty when nothing is): versions, counts
        conserved, every shard present with its size (and sha256 when `checksums`), no shard unaccounted for."""
        folder = Path(folder)
        out = []
        if self.schema_version != SCHEMA_VERSION:
            out.append(f"schema version {self.schema_version}, this fm4npp writes {SCHEMA_VERSION}")
        total = Counts.total(e.counts.as_dict() for e in self.inputs)
        if total.as_dict() != self.totals.as_dict():
            out.append("totals are not the sum of the inputs' counts")
        t = self.totals
        rejected = sum(t.rejected.values())
        if t.spacepoints_in != t.spacepoints_out + rejected:
            out.append(f"spacepoints in {t.spacepoints_in} != out {t.spacepoints_out} + rejected {rejected}")
        events = sum(s.events for s in self.shards)
        spacepoints = sum(s.spacepoints for s in self.shards)
        if (events, spacepoints) != (t.events, t.spacepoints_out):
            out.append(
                f"shards hold {events} events / {spacepoints} spacepoints, totals say {t.events} / {t.spacepoints_out}"
            )
        for shard in self.shards:
            path = folder / shard.path
            if not path.is_file():
                out.append(f"{path}: missing")
            elif path.stat().st_size != shard.bytes:
                out.append(f"{path}: {path.stat().st_size} bytes, the manifest says {shard.bytes}")
            elif checksums and sha256_file(path) != shard.sha256:
                out.append(f"{path}: sha256 differs from the manifest's")
        named = {s.path for s in self.shards}
        for path in sorted(folder.glob("*.parquet")):
            if path.name not in named:
                out.append(f"{path}: a shard the manifest does not name")
        return out


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _counts(d: dict) -> Counts:
    counts = Counts(**{k: v for k, v in d.items() if k != "rejected"})
    counts.rejected = dict(d["rejected"])
    return counts


# ------------------------------------------------------------------------------------------------------------
# Sets on disk
# ------------------------------------------------------------------------------------------------------------


@dataclass
class EventSet:
    """A set of shards with its manifest, in `path`."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path) -> EventSet:
        path = Path(path)
        return cls(path, Manifest.load(path))

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / s.path for s in self.manifest.shards]

    @property
    def prepared(self) -> bool:
        return self.manifest.prepare is not None

    @property
    def events(self) -> int:
        return self.manifest.totals.events

    def validate(self, checksums: bool = True) -> None:
        """Raise DatasetError listing everything that is wrong with the set (see Manifest.problems)."""
        problems = self.manifest.problems(self.path, checksums)
        if problems:
            raise DatasetError(f"{self.path / MANIFEST}: " + "; ".join(problems))


def find_sets(root: str | Path) -> list[Path]:
    """Folders at or below `root` holding a manifest.json, sorted; DatasetError when there is none.

    Names are looked at relative to `root`: hidden folders inside it (a run's temporary files) are skipped, the
    folders above it do not matter."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory")
    if (root / MANIFEST).is_file():
        return [root]
    sets = sorted(
        p.parent
        for p in root.rglob(MANIFEST)
        if not any(part.startswith(".") or is_partial(part) for part in p.relative_to(root).parts)
    )
    if not sets:
        raise DatasetError(
            f"{root}: no {MANIFEST} here or below; run fm4npp-data convert or import-release first, "
            "or name the folder that holds the data"
        )
    return sets


def open_sets(root: str | Path) -> list[EventSet]:
    return [EventSet.open(p) for p in find_sets(root)]


def _shards_of(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".parquet":
            raise DatasetError(f"{path}: not a Parquet shard; name a .parquet file, a set or a dataset folder")
        return [path]
    return [p for s in open_sets(path) for p in s.shard_paths]


def _filters(run: int | None, event: int | Iterable[int] | None):
    filters = []
    if run is not None:
        filters.append(("run", "=", int(run)))
    if event is not None:
        if np.ndim(event) == 0:
            filters.append(("event", "=", int(event)))
        else:
            filters.append(("event", "in", [int(e) for e in event]))
    return filters or None


def iter_events(
    path: str | Path,
    columns: list[str] | None = None,
    run: int | None = None,
    event: int | Iterable[int] | None = None,
) -> Iterator[tuple[Path, pa.Table]]:
    """(shard, table) for each shard of a shard file, set or dataset, with the events that match run/event."""
    filters = _filters(run, event)
    for shard in _shards_of(Path(path)):
        try:
            schema = pq.read_schema(shard)
            if columns is None:
                table = pq.read_table(shard, filters=filters, **READ_OPTIONS)
            else:
                have = [c for c in columns if c in schema.names]
                table = pq.read_table(shard, columns=have or ["run"], filters=filters, **READ_OPTIONS)
                table = table.select(have) if have else table.drop_columns(["run"])
                for name in columns:
                    if name not in schema.names:  # a column other sets have (truth): null here
                        table = table.append_column(
                            _field(name, shard), pa.nulls(table.num_rows, _field(name, shard).type)
                        )
                table = table.select(list(columns))
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc)) from exc
        if table.num_rows:
            yield shard, table


def _field(name: str, shard: Path) -> pa.Field:
    """The type of an event column a shard lacks (a truth column of a truth-less set), for a column of nulls."""
    from .schema import events_schema

    full = events_schema("full")
    if name in full.names:
        return full.field(name)
    raise DatasetError(
        f"{shard}: has no column {name!r}; a derived column is there only once the set is prepared "
        "(fm4npp-data prepare), and the columns are listed in docs/data-format.md"
    )


def read_events(
    path: str | Path,
    columns: list[str] | None = None,
    run: int | None = None,
    event: int | Iterable[int] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The events of a shard, a set or a dataset (all its sets) as one Arrow table, in shard order.

    `columns` selects columns (a truth column that a truth-less set lacks comes as nulls; a derived column of a set
    that is not prepared is an error); `run` and `event` (one number or several) select events; `limit` keeps the
    first `limit` events (shards are read only as far as needed)."""
    tables, n = [], 0
    for _, table in iter_events(path, columns, run, event):
        tables.append(table if limit is None else table.slice(0, limit - n))
        n += tables[-1].num_rows
        if limit is not None and n >= limit:
            break
    if tables:
        return pa.concat_tables(tables, promote_options="permissive")
    shards = _shards_of(Path(path))
    schema = pq.read_schema(shards[0]) if shards else pa.schema([])
    if columns is not None:
        schema = pa.schema([f for f in schema if f.name in columns])
    return schema.empty_table()


def column_names(path: str | Path) -> list[str]:
    """The columns found in any shard of a shard file, set or dataset (union, in first-seen order)."""
    names: dict[str, None] = {}
    for shard in _shards_of(Path(path)):
        try:
            names.update(dict.fromkeys(pq.read_schema(shard).names))
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"{shard}: cannot be read as Parquet ({exc}); the shard is damaged") from exc
    return list(names)


__all__ = [
    "BINNING",
    "DIFFICULTY",
    "MANIFEST",
    "EventSet",
    "InputEntry",
    "Manifest",
    "ShardEntry",
    "column_names",
    "find_sets",
    "iter_events",
    "open_sets",
    "read_events",
]
