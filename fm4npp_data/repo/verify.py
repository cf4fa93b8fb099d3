"""`verify`: re-check a built repository against its splits.json and the split rule (every file's sha256 and size,
the schemas, the counts, configurations and splits disjoint and complete, every event where its (run, event) puts
it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..dataset import BINNING, DIFFICULTY, MANIFEST
from ..errors import RepoError
from ..files import sha256_file
from ..integrity import READ_OPTIONS, SPLITS_FILE, read_splits
from ..prepared import binning_key
from ..splits import labeled_key, pretrain_split_of, split_of
from .layout import CONFIGS, REPO_FORMAT, TOP_FILES, ids_digest


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
                problems.append(
                    f"{where}: {run.shape[0]} events / {spacepoints} spacepoints, splits.json says "
                    f"{info['events']} / {info['spacepoints']}"
                )
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
        raise RepoError(
            f"{repo}: " + "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        )
    return {c: {s: v["events"] for s, v in d.items()} for c, d in splits["configs"].items()}


def _top_problems(repo: Path, splits: dict, manifest: dict) -> list[str]:
    """The files beside data/ against their recorded sha256; configs, splits and counts against the rule."""
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
        return [
            f"{config}/{split}: (run {run[i]}, event {event[i]}) belongs to {config}/{names[expected[i]]} by "
            f"the split rule"
        ]
    return []
