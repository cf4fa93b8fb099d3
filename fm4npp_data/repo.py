"""The benchmark dataset repository (`fm4npp/tpc-pp200`): `build` it from prepared sets, `verify` it, `publish` it.

```
REPO/README.md                  rendered from the project's dataset_card.md: YAML configs + features, then the card
REPO/binning.json  difficulty.json  manifest.json  splits.json
REPO/data/labeled/{train,validation,test}-NNNNN-of-MMMMM.parquet
REPO/data/pretrain/{train,validation}-NNNNN-of-MMMMM.parquet
```

Two configurations: `labeled` (events with truth labels; train / validation / test) and `pretrain` (every other
event; train / validation; truth columns dropped). An event is in exactly one configuration and one split, decided
from its (run, event) alone (fm4npp_data.splits): the labeled events are the ones with the smallest `labeled_key`
among those with labels, so a build does not depend on the order of its inputs or the number of workers. An imported
release keeps its own labeled splits, and its unlabeled parts become `pretrain`. Events a build leaves out (empty
events) are counted by reason in the manifest. Shards are sorted by (run, event); every file's sha256 is recorded in
splits.json, and `verify` re-checks everything. The build is written into a staging folder renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .dataset import BINNING, DIFFICULTY, MANIFEST, EventSet, open_sets
from .errors import Fm4nppError
from .files import FolderLock, partial_path, sha256_file, write_json
from .integrity import READ_OPTIONS, WRITE_OPTIONS, RepoError, checked_shards, read_splits
from .labels import PID_CLASSES
from .parallel import Failed, parallel_map
from .schema import DERIVED, IDENTITY, SCHEMA_VERSION, SPACEPOINTS
from .shards import COMPRESSION
from .splits import (
    FRACTIONS,
    PRETRAIN_FRACTIONS,
    PRETRAIN_SPLITS,
    SPLITS,
    labeled_key,
    pretrain_split_of,
    split_of,
)
from .tasks import TRUTH_COLUMNS
from .version import tool_version

REPO_FORMAT = "fm4npp-repo"
#: The files beside data/ whose sha256 splits.json records (splits.json itself aside).
SPLITS_FILE = "splits.json"
README = "README.md"
TOP_FILES = (README, BINNING, DIFFICULTY, MANIFEST)
CONFIGS = {"labeled": SPLITS, "pretrain": PRETRAIN_SPLITS}
#: The published labeled size (70k / 13k / 7k), taken when the inputs hold at least five times as many events.
LABELED_EVENTS = 90_000


@dataclass(frozen=True)
class BuildOptions:
    labeled_events: int | None = None  # None: 90k when there are >= 450k events, else a fifth of them
    shard_events: int = 10_000
    row_group_events: int = 1_000

    def check(self) -> None:
        if self.labeled_events is not None and self.labeled_events < 0:
            raise RepoError(f"--labeled-events must be >= 0, not {self.labeled_events}")
        if self.shard_events < 1 or self.row_group_events < 1:
            raise RepoError("--shard-events and --row-group-events must be at least 1")


@dataclass
class BuildSummary:
    out: Path
    splits: dict[str, dict[str, dict]] = field(default_factory=dict)  # config -> split -> {events, spacepoints, ...}
    excluded: dict[str, int] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------------------
# Scanning the inputs
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """Every event of the inputs, as columns: where it is stored, its identity, size, labels and assignment."""

    shards: list[Path]
    shard: np.ndarray  # index into shards
    row: np.ndarray
    run: np.ndarray
    event: np.ndarray
    spacepoints: np.ndarray
    distance: np.ndarray  # knn_mean_distance
    labeled: np.ndarray  # bool: has track_id, pid and noise
    release_split: np.ndarray  # int8: the release's labeled split (0, 1, 2), or -1


def _input_sets(dirs: Iterable[str | Path]) -> list[tuple[Path, list[EventSet]]]:
    found = []
    for d in map(Path, dirs):
        sets = open_sets(d)
        for eset in sets:
            if eset.manifest.prepare is None:
                raise RepoError(f"{eset.path}: not prepared (or not every shard is); run fm4npp-data prepare {d}")
            problems = eset.manifest.problems(eset.path, checksums=True)  # a build trusts no file it did not check
            if problems:
                raise RepoError(f"{eset.path}: the set does not match its manifest: {'; '.join(problems[:5])}")
        found.append((d, sets))
    if not found:
        raise RepoError("no input datasets given")
    return found


def _check_one_binning(inputs: list[tuple[Path, list[EventSet]]]) -> dict:
    """All inputs prepared with one binning, one k and one order; the binning.json they share."""
    first = None
    for folder, sets in inputs:
        for eset in sets:
            identity = {k: eset.manifest.prepare[k] for k in ("binning", "k", "order", "knn")}
            if first is None:
                first = (eset.path, identity)
            elif identity != first[1]:
                raise RepoError(
                    f"{eset.path} was prepared with {identity}, but {first[0]} with {first[1]}: a repository holds "
                    f"one binning; prepare {folder} with --binning {first[0]}/.../binning.json (the other's)"
                )
    from .preparation.prepare import binning_key

    for folder, _ in inputs:
        for candidate in (folder, *folder.parents[:3]):
            if (candidate / BINNING).is_file():
                binning = json.loads((candidate / BINNING).read_text())
                if binning_key(binning) == first[1]["binning"]:
                    return binning
    raise RepoError(f"no {BINNING} with the inputs' binning ({first[1]['binning']}) beside them; prepare them again")


def scan(inputs: list[tuple[Path, list[EventSet]]]) -> Catalog:
    """Read the identity, size and difficulty of every event (small columns only)."""
    shards, cols = [], {k: [] for k in ("shard", "row", "run", "event", "spacepoints", "distance", "labeled", "split")}
    for _, sets in inputs:
        for eset in sets:
            release = {"train": 0, "validation": 1, "test": 2}.get(eset.manifest.split or "", -1)
            for path in eset.shard_paths:
                try:
                    names = pq.read_schema(path).names
                    table = pq.read_table(path, columns=["run", "event", "x", "knn_mean_distance"])
                except (OSError, pa.ArrowException) as exc:
                    raise RepoError(f"{path}: cannot be read ({exc}); convert and prepare its input again") from exc
                n = table.num_rows
                has_labels = all(c in names for c in TRUTH_COLUMNS)
                cols["shard"].append(np.full(n, len(shards), np.int32))
                cols["row"].append(np.arange(n, dtype=np.int64))
                cols["run"].append(table["run"].to_numpy().astype(np.int32))
                cols["event"].append(table["event"].to_numpy().astype(np.int64))
                cols["spacepoints"].append(pc.list_value_length(table["x"]).to_numpy(zero_copy_only=False))
                cols["distance"].append(table["knn_mean_distance"].to_numpy(zero_copy_only=False).astype(np.float64))
                cols["labeled"].append(np.full(n, has_labels))
                cols["split"].append(np.full(n, release if has_labels else -1, np.int8))
                shards.append(path)
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    catalog = Catalog(shards, cat["shard"], cat["row"], cat["run"], cat["event"], cat["spacepoints"].astype(np.int64),
                      cat["distance"], cat["labeled"].astype(bool), cat["split"].astype(np.int8))  # fmt: skip
    order = np.lexsort((catalog.event, catalog.run))
    r, e = catalog.run[order], catalog.event[order]
    same = np.flatnonzero((r[1:] == r[:-1]) & (e[1:] == e[:-1]))
    if same.size:
        a, b = order[same[0]], order[same[0] + 1]
        raise RepoError(
            f"(run {r[same[0]]}, event {e[same[0]]}) is in {shards[catalog.shard[a]]} and in "
            f"{shards[catalog.shard[b]]}: the inputs overlap; build from distinct sets"
        )
    return catalog


# ------------------------------------------------------------------------------------------------------------
# Assignment
# ------------------------------------------------------------------------------------------------------------


def default_labeled_events(total: int) -> int:
    """90k when there are at least 450k events, else a fifth of them: both configurations always get events."""
    return LABELED_EVENTS if total >= 5 * LABELED_EVENTS else total // 5


@dataclass
class Assignment:
    config: np.ndarray  # int8: 0 labeled, 1 pretrain, -1 excluded
    split: np.ndarray  # int8: index into CONFIGS[config]
    excluded: dict[str, int]
    rule: dict


def assign(catalog: Catalog, labeled_events: int | None) -> Assignment:
    """Config and split of every event, from (run, event) alone (an imported release: its labeled parts' splits)."""
    n = catalog.run.shape[0]
    config = np.full(n, 1, np.int8)
    split = np.zeros(n, np.int8)
    empty = catalog.spacepoints == 0
    excluded = {"empty": int(empty.sum())}
    release = catalog.release_split >= 0
    rule: dict = {
        "labeled_splits": dict(zip(SPLITS, FRACTIONS, strict=True)),
        "pretrain_splits": dict(zip(PRETRAIN_SPLITS, PRETRAIN_FRACTIONS, strict=True)),
        "split_hash": "fm4npp_data.splits.split_uniform(run, event)",
        "labeled_hash": "fm4npp_data.splits.labeled_key(run, event): the smallest keys among events with labels",
    }
    if release.any() and labeled_events is not None:
        raise RepoError("--labeled-events cannot apply: an imported release among the inputs keeps its own labeled "
                        "splits; build without --labeled-events")  # fmt: skip
    if release.any() and (catalog.labeled & (catalog.release_split < 0)).any():
        raise RepoError("inputs with labels besides an imported release: the release's labeled splits would be mixed "
                        "with others; build the release alone, or the other inputs alone")  # fmt: skip
    if release.any():  # the release's labeled parts keep their split; nothing else is labeled
        config[release] = 0
        split[release] = catalog.release_split[release]
        rule["labeled_from"] = "the release's labeled parts, with their own splits"
    else:
        candidates = np.flatnonzero(catalog.labeled & ~empty)
        total = int((~empty).sum())
        want = default_labeled_events(total) if labeled_events is None else labeled_events
        want = min(want, candidates.shape[0])
        key = labeled_key(catalog.run[candidates], catalog.event[candidates])
        ranked = np.lexsort((catalog.event[candidates], catalog.run[candidates], key))[:want]
        chosen = candidates[ranked]
        config[chosen] = 0
        split[chosen] = split_of(catalog.run[chosen], catalog.event[chosen])
        rule["labeled_events"] = int(want)
        rule["labeled_key_max"] = int(key[ranked].max()) if want else None
        rule["labeled_from"] = "the events with labels whose labeled_key is at most labeled_key_max"
    pre = config == 1
    split[pre] = pretrain_split_of(catalog.run[pre], catalog.event[pre])
    config[empty] = -1
    return Assignment(config, split, excluded, rule)


# ------------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------------


def _columns(config: str, shards: list[Path], used: np.ndarray) -> list[str]:
    """The columns of a configuration: those every input shard it draws from has (pretrain: no truth)."""
    common = None
    for index in np.unique(used):
        names = pq.read_schema(shards[index]).names
        common = [c for c in (common or names) if c in names]
    base = [f.name for f in (*IDENTITY, *SPACEPOINTS)] + list(DERIVED)
    if config == "pretrain":
        return [c for c in base if c in (common or base)]
    return [c for c in (common or []) if c in base or c in TRUTH_COLUMNS or c.startswith("particle_")]


def write_shard(out: str, parts: list[tuple[str, list[int]]], columns: list[str], row_group_events: int) -> dict:
    """One output shard: the rows `parts` = [(input shard, rows)] in that order; written atomically."""
    tables = []
    for path, rows in parts:
        file = pq.ParquetFile(path, **READ_OPTIONS)
        sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        rows = np.asarray(rows, np.int64)
        groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
        table = file.read_row_groups(list(groups), columns=columns)
        tables.append(table.take(rows - starts[groups[0]] if groups.size == 1 else _local(rows, starts, groups)))
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    table = table.sort_by([("run", "ascending"), ("event", "ascending")])  # input shards may interleave
    table = table.replace_schema_metadata({b"fm4npp.schema_version": str(SCHEMA_VERSION).encode()})
    out = Path(out)
    tmp = partial_path(out)
    pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=row_group_events, **WRITE_OPTIONS)
    os.replace(tmp, out)
    run, event = table["run"].to_numpy(), table["event"].to_numpy()
    return {
        "path": out.name,
        "events": table.num_rows,
        "spacepoints": int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0),
        "bytes": out.stat().st_size,
        "sha256": sha256_file(out),
        "first": [int(run[0]), int(event[0])] if table.num_rows else None,
        "last": [int(run[-1]), int(event[-1])] if table.num_rows else None,
    }


def _local(rows: np.ndarray, starts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Positions of `rows` (file rows) in the concatenation of row groups `groups`."""
    offsets = np.concatenate([[0], np.cumsum(starts[groups + 1] - starts[groups])])
    which = np.searchsorted(starts[groups], rows, side="right") - 1
    return offsets[which] + rows - starts[groups][which]


def ids_digest(run: np.ndarray, event: np.ndarray) -> str:
    """sha256 of the sorted (run, event) pairs of a split (int64 little-endian pairs): its identity in splits.json."""
    order = np.lexsort((event, run))
    pairs = np.stack([run[order].astype("<i8"), event[order].astype("<i8")], axis=1)
    return hashlib.sha256(np.ascontiguousarray(pairs).tobytes()).hexdigest()


def build(
    dirs: Iterable[str | Path],
    out: str | Path,
    options: BuildOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[dict], None] | None = None,
) -> BuildSummary:
    """Build the dataset repository in `out` (new or empty) from prepared sets or datasets."""
    options = options or BuildOptions()
    options.check()
    start = time.perf_counter()
    out = Path(os.path.abspath(out))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RepoError(f"{out} exists and is not empty; choose a new --out (a repository is built whole)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(out.parent, RepoError):  # one build at a time beside `out`: it owns the staging folders there
        for stale in out.parent.glob(f".{out.name}.partial-*"):  # a killed build's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        return _build(dirs, out, options, workers, scheduler, progress, start)


def _build(dirs, out, options, workers, scheduler, progress, start) -> BuildSummary:
    inputs = _input_sets(dirs)
    binning = _check_one_binning(inputs)
    catalog = scan(inputs)
    assignment = assign(catalog, options.labeled_events)
    summary = BuildSummary(out=out, excluded=assignment.excluded)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    (stage / "data").mkdir(parents=True)
    try:
        splits = _write_splits(catalog, assignment, stage, options, workers, scheduler, progress)
        write_json(stage / BINNING, binning)
        difficulty = _difficulty(catalog, assignment, inputs)
        if difficulty is not None:
            write_json(stage / DIFFICULTY, difficulty)
        summary.inputs = _inputs_record(inputs, catalog)
        manifest = {
            "format": REPO_FORMAT,
            "tool_version": tool_version(),
            "built": date.today().isoformat(),
            "options": {
                "labeled_events": options.labeled_events,
                "shard_events": options.shard_events,
                "row_group_events": options.row_group_events,
            },  # fmt: skip
            "inputs": summary.inputs,
            "binning": _binning_key(inputs),
            "counts": {
                c: {s: {k: v[k] for k in ("events", "spacepoints")} for s, v in d.items()} for c, d in splits.items()
            },  # fmt: skip
            "excluded": assignment.excluded,
        }
        write_json(stage / MANIFEST, manifest)
        (stage / README).write_text(render_card(stage, manifest, splits, catalog, assignment))
        files = {name: sha256_file(stage / name) for name in TOP_FILES if (stage / name).is_file()}
        write_json(stage / SPLITS_FILE, {"rule": assignment.rule, "files": files, "configs": splits})
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary.splits = splits
    summary.seconds = time.perf_counter() - start
    return summary


def _binning_key(inputs) -> str:
    return inputs[0][1][0].manifest.prepare["binning"]


def _write_splits(catalog, assignment, stage, options, workers, scheduler, progress) -> dict:
    tasks, where = [], []
    splits: dict[str, dict[str, dict]] = {}
    for c, (config, names) in enumerate(CONFIGS.items()):
        in_config = np.flatnonzero(assignment.config == c)
        columns = _columns(config, catalog.shards, catalog.shard[in_config]) if in_config.size else []
        (stage / "data" / config).mkdir()
        splits[config] = {}
        for s, split in enumerate(names):
            members = in_config[assignment.split[in_config] == s]
            members = members[np.lexsort((catalog.event[members], catalog.run[members]))]
            n_shards = max(1, math.ceil(members.shape[0] / options.shard_events)) if members.size else 0
            splits[config][split] = {
                "events": int(members.shape[0]),
                "spacepoints": int(catalog.spacepoints[members].sum()),
                "ids_sha256": ids_digest(catalog.run[members], catalog.event[members]),
                "columns": columns,
                "shards": [],
            }
            for i in range(n_shards):
                chunk = members[i * options.shard_events : (i + 1) * options.shard_events]
                parts = []
                for shard in np.unique(catalog.shard[chunk]):
                    rows = chunk[catalog.shard[chunk] == shard]
                    parts.append((shard, rows))
                # keep the (run, event) order: input shards in the order their first event appears
                parts.sort(key=lambda p: int(np.flatnonzero(np.isin(chunk, p[1]))[0]))
                path = stage / "data" / config / f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
                spec = [(str(catalog.shards[sh]), catalog.row[rows].tolist()) for sh, rows in parts]
                tasks.append((str(path), spec, columns, options.row_group_events))
                where.append((config, split))
    results: dict[int, dict] = {}
    for index, result in parallel_map(write_shard, tasks, workers, scheduler):
        if isinstance(result, Failed):
            raise RepoError(f"{tasks[index][0]}: {result.message}")
        results[index] = result
        if progress:
            progress(result)
    for index in sorted(results):
        config, split = where[index]
        splits[config][split]["shards"].append(results[index])
    return splits


def _difficulty(catalog: Catalog, assignment: Assignment, inputs) -> dict | None:
    """The difficulty weights over the pretraining events of the train split (fm4npp_data.preparation.prepare)."""
    from .preparation.prepare import difficulty_weights

    train = (assignment.config == 1) & (assignment.split == 0)
    if not train.any():
        train = assignment.config >= 0
    d = catalog.distance[train]
    if not np.isfinite(d).any():
        return None
    difficulty = difficulty_weights(d, 10)
    difficulty.update(k=inputs[0][1][0].manifest.prepare["k"], training_events=int(train.sum()),
                      training_split="pretrain/train")  # fmt: skip
    return difficulty


def _inputs_record(inputs, catalog: Catalog) -> list[dict]:
    record = []
    shard_of_set = {}
    for folder, sets in inputs:
        for eset in sets:
            for path in eset.shard_paths:
                shard_of_set[str(path)] = (folder, eset)
    by_set: dict[str, dict] = {}
    for index, path in enumerate(catalog.shards):
        folder, eset = shard_of_set[str(path)]
        entry = by_set.setdefault(str(eset.path), {
            "path": str(eset.path.resolve()), "dataset": str(folder.resolve()), "layouts": eset.manifest.layouts,
            "truth": eset.manifest.truth, "noise_rule": eset.manifest.options.get("noise_variable", "pt"),
            "noise_cut": eset.manifest.options.get("noise_cut"), "split": eset.manifest.split,
            "simulated": _simulated(eset), "events": 0,
        })  # fmt: skip
        entry["events"] += int((catalog.shard == index).sum())
    record.extend(sorted(by_set.values(), key=lambda e: e["path"]))  # the same whatever the order of the inputs
    return record


def _simulated(eset: EventSet) -> bool:
    """Whether a set comes from fm4npp's fast simulation (its inputs sit beside a simulation.json)."""
    return any((Path(e.path).parent / "simulation.json").is_file() for e in eset.manifest.inputs)


# ------------------------------------------------------------------------------------------------------------
# The card
# ------------------------------------------------------------------------------------------------------------


def card_template() -> str:
    """The project's dataset_card.md (shipped with the package as fm4npp_data/dataset_card.md when installed)."""
    for candidate in (Path(__file__).parent / "dataset_card.md", Path(__file__).parents[1] / "dataset_card.md"):
        if candidate.is_file():
            return candidate.read_text()
    raise RepoError("dataset_card.md is missing from this installation of fm4npp")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


#: The paper the benchmark follows (linked from the card; the hub derives its `arxiv:` tag from the link).
PAPER = "https://arxiv.org/abs/2508.14087"
#: The hub's task categories of the benchmark: per-spacepoint labels (PID, noise, track) and pretrained features.
TASK_CATEGORIES = ["token-classification", "feature-extraction"]
#: The hub's size buckets (events, i.e. rows, of the whole repository), smallest first.
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")  # fmt: skip


def size_category(rows: int) -> str:
    """The hub's bucket of a dataset of `rows` rows: n<1K below 1,000, then one per power of ten."""
    return SIZE_CATEGORIES[min(max(len(str(int(rows))) - 3, 0), len(SIZE_CATEGORIES) - 1)]


def dataset_infos(folder: Path, splits: dict) -> dict:
    """{config: datasets.DatasetInfo} as `datasets` computes it for the repository in `folder`: each config is
    prepared from its Parquet shards by datasets' own Parquet builder (the builder `load_dataset(folder, config)`
    uses), so `dataset_size` and the splits' `num_bytes` are Arrow sizes and `download_size` the Parquet bytes. The
    Arrow files go to a temporary cache beside `folder`, removed after (a stale one goes with the build's staging)."""
    from .errors import require

    datasets = require("datasets", "hub", "fm4npp-data build (the card's dataset_info)")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    infos = {}
    try:
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f"{folder.name}.datasets-") as cache:
            for config, split_info in splits.items():
                files = {split: [str(folder / "data" / config / shard["path"]) for shard in info["shards"]]
                         for split, info in split_info.items() if info["events"]}  # fmt: skip
                if files:
                    builder = datasets.load_dataset_builder("parquet", data_files=files, cache_dir=cache)
                    builder.download_and_prepare()
                    infos[config] = builder.info
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the folder and the fix
        raise RepoError(f"{folder}: datasets cannot prepare the repository's shards ({type(exc).__name__}: {exc}); "
                        "check the installed datasets and pyarrow, then build again") from exc  # fmt: skip
    finally:
        if bars:
            datasets.enable_progress_bars()
    return infos


def _yaml_header(stage: Path, splits: dict) -> str:
    """The card's YAML metadata, written by `datasets`' and `huggingface_hub`'s own helpers: license, the hub's task
    and size categories, tags, the `configs` (data files of each split) and the `dataset_info` that datasets computes
    (features, Arrow sizes, examples per split, download size)."""
    from .errors import require

    hub = require("huggingface_hub", "hub", "fm4npp-data build (the card's YAML header)")
    require("datasets", "hub", "fm4npp-data build (the card's dataset_info)")
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    rows = sum(v["events"] for d in splits.values() for v in d.values())
    data = hub.DatasetCardData(
        license="cc-by-4.0",
        pretty_name="sPHENIX TPC p+p 200 GeV (fm4npp)",
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(rows)],
        tags=["physics", "particle-physics", "point-cloud", "sphenix"],
    )
    configs = {}
    for config, split_info in splits.items():
        files = [{"split": s, "path": f"data/{config}/{s}-*.parquet"} for s, v in split_info.items() if v["events"]]
        if files:
            configs[config] = {"data_files": files, **({"default": True} if config == "labeled" else {})}
    MetadataConfigs(configs).to_dataset_card_data(data)
    DatasetInfosDict(dataset_infos(stage, splits)).to_dataset_card_data(data)
    return f"---\n{data.to_yaml()}\n---\n"


def render_card(stage: Path, manifest: dict, splits: dict, catalog: Catalog, assignment: Assignment) -> str:
    """README.md of the repository: the YAML header, then dataset_card.md with its {{placeholders}} filled."""
    kept = assignment.config >= 0
    sp = catalog.spacepoints[kept]
    values = {
        "tool_version": manifest["tool_version"],
        "build_date": manifest["built"],
        "total_events": f"{int(kept.sum()):,}",
        "total_spacepoints": f"{int(sp.sum()):,}",
        "mean_spacepoints": f"{sp.mean():.0f}" if sp.size else "0",
        "max_spacepoints": f"{int(sp.max()):,}" if sp.size else "0",
        "splits_table": _table(
            ["config", "split", "events", "spacepoints", "shards", "bytes"],
            [
                [
                    c,
                    s,
                    f"{v['events']:,}",
                    f"{v['spacepoints']:,}",
                    len(v["shards"]),
                    f"{sum(x['bytes'] for x in v['shards']):,}",
                ]
                for c, d in splits.items()
                for s, v in d.items()
            ],
        ),  # fmt: skip
        "class_table": _class_table(stage, splits),
        "noise_rule": _noise_rule(manifest["inputs"]),
        "sources_table": _table(
            ["input", "layouts", "events", "fast simulation"],
            [
                [
                    Path(i["path"]).name or i["path"],
                    ", ".join(i["layouts"]),
                    f"{i['events']:,}",
                    "yes" if i["simulated"] else "no",
                ]
                for i in manifest["inputs"]
            ],
        ),  # fmt: skip
        "simulated": _simulated_sentence(manifest["inputs"]),
        "excluded_table": _table(["reason", "events"], [[k, f"{v:,}"] for k, v in assignment.excluded.items()]),
        "k": _k(stage),
        "binning_key": manifest["binning"],
    }
    text = card_template()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if left:
        raise RepoError(f"dataset_card.md has placeholders build does not know: {', '.join(left)}")
    return _yaml_header(stage, splits) + "\n" + text


def _k(stage: Path) -> str:
    for path in sorted((stage / "data").rglob("*.parquet")):
        field_type = pq.read_schema(path).field("knn").type
        return str(field_type.value_type.list_size)
    return "-"


def _noise_rule(inputs: list[dict]) -> str:
    rules = sorted({f"{'p_T' if i['noise_rule'] == 'pt' else 'p'} < {i['noise_cut']:.3f} GeV/c" for i in inputs
                    if i["noise_cut"] is not None})  # fmt: skip
    return ", ".join(rules) or "p_T < 0.060 GeV/c (the release's own labels)"


def _simulated_sentence(inputs: list[dict]) -> str:
    sim = sum(i["events"] for i in inputs if i["simulated"])
    total = sum(i["events"] for i in inputs)
    if sim == total:
        return f"All {total:,} events of this build come from fm4npp's fast simulation, not from the GEANT4 chain."
    if sim == 0:
        return "No event of this build comes from fm4npp's fast simulation."
    return f"{sim:,} of the {total:,} events of this build come from fm4npp's fast simulation."


def _class_table(stage: Path, splits: dict) -> str:
    rows = []
    for split, info in splits.get("labeled", {}).items():
        if not info["events"]:
            continue
        counts = np.zeros(len(PID_CLASSES), np.int64)
        noise = total = 0
        for shard in info["shards"]:
            table = pq.read_table(stage / "data" / "labeled" / shard["path"], columns=["pid", "noise"])
            pid = pc.list_flatten(table["pid"]).to_numpy()
            counts += np.bincount(pid, minlength=len(PID_CLASSES))
            noise += int(pc.sum(pc.list_flatten(table["noise"]).cast(pa.int64())).as_py() or 0)
            total += pid.shape[0]
        total = max(total, 1)
        rows.append([split, *(f"{c / total:.1%}" for c in counts), f"{noise / total:.1%}"])
    if not rows:
        return "(no labeled events in this build)"
    return _table(["split", *PID_CLASSES, "noise"], rows)


# ------------------------------------------------------------------------------------------------------------
# Verify
# ------------------------------------------------------------------------------------------------------------


def verify(repo: str | Path, progress: Callable[[str], None] | None = None) -> dict:
    """Re-check a repository: every file's sha256 and size, the schemas, the counts, and the split invariants
    (configs and splits disjoint and complete, every event where its (run, event) puts it). RepoError naming the
    shard (and the event) at fault; otherwise the counts checked."""
    repo = Path(repo)
    try:
        manifest = json.loads((repo / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RepoError(f"{repo}: not a readable dataset repository ({exc}); build one with fm4npp-data build") from exc
    splits = read_splits(repo)
    if not isinstance(manifest, dict) or manifest.get("format") != REPO_FORMAT:
        raise RepoError(f"{repo / MANIFEST}: not an fm4npp dataset repository manifest")
    rule = splits["rule"]
    problems: list[str] = _top_problems(repo, splits, manifest)
    listed = set()
    all_run, all_event, all_where = [], [], []
    for config, split_info in splits["configs"].items():
        if config not in CONFIGS:
            raise RepoError(f"{repo / SPLITS_FILE}: unknown config {config!r}")
        for split, info in split_info.items():
            runs, events, schema = [], [], None
            spacepoints = 0
            for shard in info["shards"]:
                path = repo / "data" / config / shard["path"]
                listed.add(path)
                if progress:
                    progress(str(path))
                if not path.is_file():
                    problems.append(f"{path}: missing")
                    continue
                if path.stat().st_size != shard["bytes"] or sha256_file(path) != shard["sha256"]:
                    problems.append(f"{path}: its sha256 or size differs from splits.json (the file is damaged)")
                    continue
                try:
                    table = pq.read_table(path, columns=["run", "event", "x"], **READ_OPTIONS)
                    this = pq.read_schema(path).remove_metadata()
                except (OSError, pa.ArrowException) as exc:
                    problems.append(f"{path}: cannot be read as Parquet ({exc})")
                    continue
                if schema is None:
                    schema = this
                elif not this.equals(schema):
                    problems.append(f"{path}: its schema differs from the split's first shard")
                if this.names != info["columns"]:
                    problems.append(f"{path}: columns {this.names} differ from splits.json's {info['columns']}")
                if table.num_rows != shard["events"]:
                    problems.append(f"{path}: {table.num_rows} events, splits.json says {shard['events']}")
                runs.append(table["run"].to_numpy())
                events.append(table["event"].to_numpy())
                spacepoints += int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0)
            run = np.concatenate(runs) if runs else np.zeros(0, np.int32)
            event = np.concatenate(events) if events else np.zeros(0, np.int64)
            where = f"{config}/{split}"
            if run.shape[0] != info["events"] or spacepoints != info["spacepoints"]:
                problems.append(f"{where}: {run.shape[0]} events / {spacepoints} spacepoints, splits.json says "
                                f"{info['events']} / {info['spacepoints']}")  # fmt: skip
            if run.shape[0] > 1 and (np.lexsort((event, run)) != np.arange(run.shape[0])).any():
                problems.append(f"{where}: events are not sorted by (run, event)")
            if ids_digest(run, event) != info["ids_sha256"]:
                problems.append(f"{where}: its events are not the ones splits.json records (ids_sha256)")
            problems += _split_problems(config, split, run, event, rule)
            all_run.append(run)
            all_event.append(event)
            all_where.extend([where] * run.shape[0])
    run = np.concatenate(all_run) if all_run else np.zeros(0, np.int32)
    event = np.concatenate(all_event) if all_event else np.zeros(0, np.int64)
    order = np.lexsort((event, run))
    same = np.flatnonzero((run[order][1:] == run[order][:-1]) & (event[order][1:] == event[order][:-1]))
    for d in same[:5]:
        i, j = order[d], order[d + 1]
        problems.append(f"(run {run[i]}, event {event[i]}) is in {all_where[i]} and in {all_where[j]}")
    expected = {repo / name for name in (*TOP_FILES, SPLITS_FILE)} | listed
    for path in sorted(repo.rglob("*")):
        if path.is_file() and path not in expected and not any(q.startswith(".") for q in path.relative_to(repo).parts):
            problems.append(f"{path}: a file the repository does not list (publish would send it)")
    if problems:
        raise RepoError(f"{repo}: " + "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if
                        len(problems) > 20 else ""))  # fmt: skip
    return {c: {s: v["events"] for s, v in d.items()} for c, d in splits["configs"].items()}


def _top_problems(repo: Path, splits: dict, manifest: dict) -> list[str]:
    """The files beside data/ against their recorded sha256; configs, splits and counts against the rule."""
    from .preparation.prepare import binning_key

    problems = []
    for name in TOP_FILES:
        recorded = splits.get("files", {}).get(name)
        path = repo / name
        if not path.is_file():
            if recorded is not None or name != DIFFICULTY:
                problems.append(f"{path}: missing")
        elif recorded is None or sha256_file(path) != recorded:
            problems.append(f"{path}: its sha256 differs from splits.json's (the file was changed)")
    configs = splits["configs"]
    if {c: sorted(d) for c, d in configs.items()} != {c: sorted(n) for c, n in CONFIGS.items()}:
        problems.append(f"{repo / SPLITS_FILE}: the configs and splits are not {dict(CONFIGS)}")
        return problems
    counts = {c: {s: {k: v[k] for k in ("events", "spacepoints")} for s, v in d.items()} for c, d in configs.items()}
    if manifest.get("counts") != counts:
        problems.append(f"{repo / MANIFEST}: its counts differ from splits.json's")
    labeled = sum(v["events"] for v in configs["labeled"].values())
    if "labeled_events" in splits["rule"] and labeled != splits["rule"]["labeled_events"]:
        problems.append(f"labeled: {labeled} events, the rule says {splits['rule']['labeled_events']}")
    try:
        key = binning_key(json.loads((repo / BINNING).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        key = None
    if key != manifest.get("binning"):
        problems.append(f"{repo / BINNING}: not the binning the repository was built with ({manifest.get('binning')})")
    return problems


def _split_problems(config: str, split: str, run: np.ndarray, event: np.ndarray, rule: dict) -> list[str]:
    """Events of config/split that the rule puts elsewhere (named, the first of them)."""
    if not run.shape[0]:
        return []
    names = CONFIGS[config]
    if config == "labeled":
        if "labeled_key_max" not in rule:
            return []  # the release's own splits
        expected = split_of(run, event)
        key = labeled_key(run, event)
        limit = rule["labeled_key_max"]
        bad_key = key > np.uint64(limit) if limit is not None else np.ones(key.shape, bool)
        if bad_key.any():
            i = int(np.flatnonzero(bad_key)[0])
            return [f"labeled/{split}: (run {run[i]}, event {event[i]}) is not among the labeled events of the rule"]
    else:
        expected = pretrain_split_of(run, event)
    wrong = expected != names.index(split)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        return [f"{config}/{split}: (run {run[i]}, event {event[i]}) belongs to {config}/{names[expected[i]]} by "
                f"the split rule"]  # fmt: skip
    return []


# ------------------------------------------------------------------------------------------------------------
# Publish and load
# ------------------------------------------------------------------------------------------------------------


def publish_plan(repo: str | Path) -> list[tuple[str, int]]:
    """(path in the repository, bytes) of every file `publish` sends, after `verify`."""
    repo = Path(repo)
    verify(repo)
    files = sorted(
        p for p in repo.rglob("*") if p.is_file() and not any(q.startswith(".") for q in p.relative_to(repo).parts)
    )
    return [(p.relative_to(repo).as_posix(), p.stat().st_size) for p in files]


#: What publish leaves out (a run's temporary files) and what it replaces on the hub (an earlier build's files).
PUBLISH_IGNORE = [".*", "**/.*"]
PUBLISH_REPLACE = ["data/**", "*.json", README]
_REF = re.compile(r"(?!-)(?!.*\.\.)[\w.-]+(/[\w.-]+)*")


class Published(list):
    """The files sent, [(path, bytes)], and where they went: `target` (in words), `revision` (the branch or the pull
    request's refs/pr/N), `commit`, `pr_url` and `tag` (None on a dry run, or where they do not apply)."""

    def __init__(self, plan, target: str, revision: str | None = None, commit: str | None = None,
                 pr_url: str | None = None, tag: str | None = None) -> None:  # fmt: skip
        super().__init__(plan)
        self.target, self.revision, self.commit, self.pr_url, self.tag = target, revision, commit, pr_url, tag


def _check_publish_options(repo_id: str, revision: str | None, create_pr: bool, tag: str | None) -> str:
    """The options checked before anything is read or sent; the target in words."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise RepoError(f"--repo-id must look like OWNER/NAME, not {repo_id!r}")
    if revision is not None and create_pr:
        raise RepoError("--create-pr opens a pull request against main, --revision names the branch to publish to: "
                        "give one of them (to resume into a pull request: --revision refs/pr/N alone)")  # fmt: skip
    for name, value in (("--revision", revision), ("--tag", tag)):
        if value is not None and not _REF.fullmatch(value):
            raise RepoError(f"{name} {value!r} is not a git reference name (letters, digits, . _ - and /)")
    if create_pr:
        return "a new pull request against main"
    return f"branch {revision}" if revision and not revision.startswith("refs/pr/") else (revision or "branch main")


def publish(
    repo: str | Path,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    tag: str | None = None,
    api=None,
) -> Published:
    """Upload a verified repository to the Hugging Face hub as dataset `repo_id`; the files sent.

    To main (default, only while main holds no build: an update of a published build must name its target), to the
    branch `revision` (created from main if absent; "main" replaces main's build in place; `refs/pr/N` resumes into a
    pull request) or, with `create_pr`, to a new pull request against main; the earlier build's files there are
    deleted.
    huggingface_hub's upload_folder commits a large folder in several commits (the first one carries the
    deletions), so an interrupted upload leaves its target mixed until it is run again: a branch or a pull request
    keeps main as it was. After the upload, the hub's files and sizes at the new commit are checked against
    splits.json (RepoError naming the differences); then `tag` is created at that commit. `dry_run` returns the
    plan without touching the network. The upload sends only what the hub lacks, so running it again resumes it.
    `api`: a huggingface_hub.HfApi (default: a new one)."""
    target = _check_publish_options(repo_id, revision, create_pr, tag)
    plan = publish_plan(repo)
    if dry_run:
        return Published(plan, target)
    from .errors import require

    hub = require("huggingface_hub", "hub", "fm4npp-data publish")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise RepoError("HF_HUB_OFFLINE is set: publishing needs the network; unset it, or use --dry-run")
    if hub.get_token() is None:
        raise RepoError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then publish again")
    api = api or hub.HfApi()
    repo = Path(repo)
    try:
        commit = _upload(api, repo, repo_id, private, revision, create_pr, tag)
        listing = list(api.list_repo_tree(repo_id, repo_type="dataset", revision=commit.oid, recursive=True))
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and hub errors of many types: one message, the fix
        resume = " (with --create-pr: resume into the pull request with --revision refs/pr/N)" if create_pr else ""
        raise RepoError(f"publishing {repo} to {repo_id} ({target}) failed ({type(exc).__name__}: {exc}); run it "
                        f"again to resume{resume}: files already on the hub are not sent twice") from exc  # fmt: skip
    where = f"{repo_id} at {commit.pr_revision or revision or 'main'} (commit {commit.oid})"
    differences = hub_differences(repo, listing)
    if differences:
        raise RepoError(f"{where}: the hub's files differ from {repo / SPLITS_FILE}: " + "; ".join(differences[:10])
                        + (f"; and {len(differences) - 10} more" if len(differences) > 10 else "")
                        + "; run publish again (it sends what differs)")  # fmt: skip
    if tag is not None:
        try:
            api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset",
                           tag_message=f"fm4npp {tool_version()}: dataset build")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - hub errors of many types
            raise RepoError(f"{where}: published and checked, but the tag {tag!r} could not be created "
                            f"({type(exc).__name__}: {exc}); create it on the hub, or publish again with "
                            "another --tag") from exc  # fmt: skip
    return Published(plan, target, commit.pr_revision or revision or "main", commit.oid, commit.pr_url, tag)


def _upload(api, repo: Path, repo_id: str, private: bool, revision: str | None, create_pr: bool, tag: str | None):
    """Create the dataset and the branch as needed, refuse a tag that exists, upload the folder; its CommitInfo."""
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if tag is not None and tag in {t.name for t in api.list_repo_refs(repo_id, repo_type="dataset").tags}:
        raise RepoError(f"the tag {tag!r} already exists on {repo_id}: a citable version names one build; choose "
                        "another --tag")  # fmt: skip
    if revision is None and not create_pr and SPLITS_FILE in api.list_repo_files(repo_id, repo_type="dataset"):
        raise RepoError(f"{repo_id} already holds a build on main: an upload there takes several commits, and one that "
                        "is interrupted leaves main mixed; publish to a pull request (--create-pr) or a branch "
                        "(--revision NAME), or give --revision main to replace it in place")  # fmt: skip
    if revision is not None and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)  # from main's head if new
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(repo),
        revision=revision,
        create_pr=create_pr,
        commit_message=f"fm4npp {tool_version()}: dataset build",
        ignore_patterns=list(PUBLISH_IGNORE),
        delete_patterns=list(PUBLISH_REPLACE),
    )


def expected_files(repo: Path) -> dict[str, tuple[int, str]]:
    """{path in the repository: (bytes, sha256)} of every file a published build holds: the shards as splits.json
    records them, the files beside data/ with splits.json's sha256, and splits.json itself."""
    splits = read_splits(repo)
    files = {
        f"data/{config}/{shard['path']}": (shard["bytes"], shard["sha256"])
        for config, split_info in splits["configs"].items()
        for info in split_info.values()
        for shard in info["shards"]
    }
    for name, sha in splits["files"].items():
        files[name] = ((repo / name).stat().st_size, sha)
    files[SPLITS_FILE] = ((repo / SPLITS_FILE).stat().st_size, sha256_file(repo / SPLITS_FILE))
    return files


def _git_blob_id(path: Path) -> str:
    """git's object id of a file (sha1 of 'blob SIZE\\0' + content): what the hub lists for a file not in LFS."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id, not a security hash


def hub_differences(repo: Path, listing: Iterable) -> list[str]:
    """How the hub's files (`listing`: huggingface_hub RepoFile entries of list_repo_tree, folders ignored) differ
    from the build in `repo`: a file missing, a size or sha256 (LFS) / git blob id (other files) that differs, or a
    file of a build (data/, *.json, README.md) that this build does not have."""
    expected = expected_files(repo)
    remote = {f.path: f for f in listing if hasattr(f, "size") and hasattr(f, "blob_id")}
    problems = [f"{path}: missing on the hub" for path in sorted(set(expected) - set(remote))]
    for path in sorted(set(expected) & set(remote)):
        size, sha = expected[path]
        entry = remote[path]
        if entry.size != size:
            problems.append(f"{path}: {entry.size} bytes on the hub, {size} in splits.json")
        elif entry.lfs is not None and entry.lfs.sha256 != sha:
            problems.append(f"{path}: its sha256 on the hub differs from splits.json's")
        elif entry.lfs is None and entry.blob_id != _git_blob_id(repo / path):
            problems.append(f"{path}: its content on the hub differs from {repo / path}")
    stray = [p for p in sorted(set(remote) - set(expected)) if any(fnmatch(p, g) for g in PUBLISH_REPLACE)]
    problems += [f"{path}: on the hub but not in this build (load_dataset would read it)" for path in stray]
    return problems


def load(path_or_id: str | Path, config: str = "labeled", split: str | None = None):
    """The dataset as `datasets.Dataset` (one split) or `DatasetDict` (split=None), from a local repository folder
    or a hub id (`fm4npp/tpc-pp200`; from the local cache when HF_HUB_OFFLINE=1).

    A local folder's shards are checked against its splits.json first (fm4npp_data.integrity.checked_shards);
    `datasets` itself then only compares each split's number of events with the card's `dataset_info`."""
    from .errors import require

    datasets = require("datasets", "hub", "fm4npp_data.load")
    if config not in CONFIGS:
        raise RepoError(f"unknown config {config!r}; the configs are {', '.join(CONFIGS)}")
    local = Path(path_or_id)
    source = str(local) if local.exists() else str(path_or_id)
    if local.exists() and not (local / README).is_file():
        raise RepoError(f"{local}: not a dataset repository (no {README}); build one with fm4npp-data build")
    if local.exists():  # the shards datasets will read, checked against splits.json first (a hub id: see README)
        listed = read_splits(local)["configs"].get(config, {})
        for name in [split] if split is not None else [s for s, info in listed.items() if info["events"]]:
            checked_shards(local, config, name)
    try:
        return datasets.load_dataset(source, config, split=split)
    except Fm4nppError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the source and the fix
        raise RepoError(
            f"cannot load {source} ({config}, {split or 'all splits'}): {type(exc).__name__}: {exc}"
        ) from exc


__all__ = [
    "BuildOptions",
    "BuildSummary",
    "RepoError",
    "build",
    "load",
    "Published",
    "publish",
    "publish_plan",
    "verify",
]
