"""The loader's source: a dataset repository, a set or dataset folder, one shard or a `datasets.Dataset`, opened as
work units (a shard's row groups; ranges of TABLE_UNIT_EVENTS rows of a table), with the schema checked (prepared,
one k for all shards), a repository's shards checked against its splits.json, and the difficulty bins found beside
the data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..dataset import DIFFICULTY, MANIFEST, open_sets
from ..errors import DatasetError
from ..files import is_partial
from ..integrity import READ_OPTIONS, checked_shards, damaged
from ..tasks import TRUTH_COLUMNS

#: Columns a prepared events table has (beside run, event and energy).
PREPARED = ("r", "phi", "eta", "order", "knn", "knn_mean_distance")
#: Rows per work unit of a `datasets.Dataset` (a shard's unit is its row group).
TABLE_UNIT_EVENTS = 1_000


@dataclass(frozen=True)
class Unit:
    """A work unit: row group `start` of shard `part` (or rows start..start+events of a `datasets.Dataset`)."""

    part: int
    start: int
    events: int


@dataclass
class Source:
    """The events of one split: their work units, the data's k, whether it has labels, its difficulty bins."""

    name: str  # for messages
    units: list[Unit]
    k: int
    labels: bool
    difficulty: dict | None
    shards: list[str] = field(default_factory=list)
    table: object = None  # a datasets.Dataset

    @property
    def events(self) -> int:
        return sum(u.events for u in self.units)

    def read(self, unit: Unit, columns: list[str], use_threads: bool = True) -> pa.Table:
        """The events of a unit, with `columns` only."""
        if self.table is not None:
            return self.table.select_columns(columns).with_format("arrow")[unit.start : unit.start + unit.events]
        shard = self.shards[unit.part]
        try:
            file = pq.ParquetFile(shard, **READ_OPTIONS)
            return file.read_row_group(unit.start, columns=columns, use_threads=use_threads)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc, f"cannot read row group {unit.start}")) from exc


def open_source(source, config: str = "labeled", split: str = "train", difficulty=None) -> Source:
    """Find the events of `source` (see the module docstring), check that they are prepared, list the units.

    `difficulty` (a dict or a path to a difficulty.json) overrides the one found beside the data."""
    if _is_hf(source):
        return _table_source(source, split, difficulty)
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory; name a dataset repository, a set or a shard")
    labeled = None  # labels when the data has them
    if path.is_file():
        if path.suffix != ".parquet":
            raise DatasetError(f"{path}: not a Parquet shard; name a .parquet file, a set or a repository folder")
        shards, look = [path], _above(path.parent)
    elif (path / "data").is_dir():
        shards, look, labeled = checked_shards(path, config, split), [path], config == "labeled"
    elif (path / config / split / MANIFEST).is_file():  # a dataset of an imported release: ROOT/labeled/train
        shards, look = _folder_shards(path / config / split), _above(path / config / split)
    else:
        shards, look = _folder_shards(path), _above(path)
    units, k, has_labels = _shard_units(shards)
    if labeled and not has_labels:
        raise DatasetError(f"{shards[0]}: config {config!r} but the shard has no {', '.join(TRUTH_COLUMNS)} columns")
    if difficulty is None:
        difficulty = next((f / DIFFICULTY for f in look if (f / DIFFICULTY).is_file()), None)
    return Source(
        str(path),
        units,
        k,
        has_labels if labeled is None else labeled,
        _difficulty(difficulty),
        shards=[str(p) for p in shards],
    )


def _is_hf(source) -> bool:
    return type(source).__module__.split(".")[0] == "datasets"


def _folder_shards(path: Path) -> list[Path]:
    """The shards of a set or dataset folder (its manifests), or the *.parquet files of a folder without one."""
    loose = sorted(p for p in path.glob("*.parquet") if not is_partial(p.name) and not p.name.startswith("."))
    if loose and not (path / MANIFEST).is_file():
        return loose
    if not loose and not any(path.rglob(MANIFEST)):
        raise DatasetError(f"{path}: no shards (*.parquet) and no set ({MANIFEST}) here or below")
    shards = [p for s in open_sets(path) for p in s.shard_paths]
    if not shards:
        raise DatasetError(f"{path}: the set holds no shards")
    return shards


def _shard_units(shards: list[Path]) -> tuple[list[Unit], int, bool]:
    """Every non-empty row group of every shard, the data's k (one for all shards), and whether all have labels."""
    units, ks, labels = [], set(), True
    for part, shard in enumerate(shards):
        try:
            meta = pq.ParquetFile(shard, **READ_OPTIONS)
            schema = meta.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc)) from exc
        k = _check_schema(schema, shard)
        ks.add(k)
        if len(ks) > 1:
            raise DatasetError(
                f"{shard}: prepared with k = {k}, other shards with k = {min(ks - {k})}; "
                "prepare every shard with the same --k"
            )
        labels = labels and all(c in schema.names for c in TRUTH_COLUMNS)
        for i in range(meta.num_row_groups):
            n = meta.metadata.row_group(i).num_rows
            if n:
                units.append(Unit(part, i, n))
    return units, ks.pop(), labels


def _check_schema(schema: pa.Schema, where) -> int:
    """The data's k; DatasetError when the data is not a prepared events table."""
    missing = [c for c in ("run", "event", "energy") if c not in schema.names]
    if missing:
        raise DatasetError(f"{where}: not an fm4npp events table (no column {', '.join(missing)})")
    missing = [c for c in PREPARED if c not in schema.names]
    if missing:
        raise DatasetError(
            f"{where}: not prepared (no column {', '.join(missing)}): run `fm4npp-data prepare` on the set first"
        )
    knn = schema.field("knn").type
    if not (pa.types.is_list(knn) and pa.types.is_fixed_size_list(knn.value_type)):
        raise DatasetError(f"{where}: column 'knn' is {knn}, not list<fixed_size_list<int32, k>>")
    return knn.value_type.list_size


def _table_source(ds, split: str, difficulty) -> Source:
    """A datasets.Dataset (or the `split` of a DatasetDict): units of TABLE_UNIT_EVENTS rows of its Arrow table."""
    if not hasattr(ds, "with_format") or not hasattr(ds, "num_rows"):
        raise DatasetError(f"{type(ds).__name__} is not a datasets.Dataset or DatasetDict")
    if not isinstance(ds.num_rows, int):  # a DatasetDict
        if split not in ds:
            raise DatasetError(f"the DatasetDict has no split {split!r}; the splits are: {', '.join(ds)}")
        ds = ds[split]
    k = _check_schema(ds.data.schema, "the datasets.Dataset")
    units = [Unit(0, s, min(TABLE_UNIT_EVENTS, ds.num_rows - s)) for s in range(0, ds.num_rows, TABLE_UNIT_EVENTS)]
    labels = all(c in ds.column_names for c in TRUTH_COLUMNS)
    return Source(f"datasets.Dataset ({ds.num_rows} events)", units, k, labels, _difficulty(difficulty), table=ds)


def _above(folder: Path) -> list[Path]:
    """Where a set's difficulty.json may be: its folder, or a dataset folder above it (as prepare writes it)."""
    return [folder, *folder.resolve().parents[:3]]


def _difficulty(found) -> dict | None:
    """The difficulty bins (`edges`, `weights`) of a dict or a file, checked."""
    if found is None or isinstance(found, dict):
        data, where = found, "the difficulty"
    else:
        where = found
        try:
            data = json.loads(Path(found).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"{found}: cannot read the difficulty bins ({exc}); run fm4npp-data prepare again"
            ) from exc
    if data is None:
        return None
    edges, weights = (data.get("edges"), data.get("weights")) if isinstance(data, dict) else (None, None)
    if not (isinstance(edges, list) and isinstance(weights, list) and len(edges) == len(weights) + 1 >= 2):
        raise DatasetError(f"{where}: needs 'edges' (n + 1 numbers) and 'weights' (n numbers)")
    return {"edges": [float(v) for v in edges], "weights": [float(v) for v in weights]}
