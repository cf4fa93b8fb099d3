"""What a ROOT file, a Parquet shard, a set, a dataset or a dataset repository holds: `fm4npp-data inspect PATH`
(numbers, not text).

`describe(path)` returns a `Description`: a title and named sections of facts, each a number, a string, a list or a
dict of numbers (class fractions, rejects by reason); the command line formats them as tables, scripts read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .conversion.assemble import Counts
from .conversion.ingest import open_root, root_events
from .dataset import MANIFEST, EventSet, find_sets
from .errors import DatasetError, LayoutError
from .integrity import RepoError, is_repository, read_splits
from .labels import PID_CLASSES
from .repo.layout import REPO_FORMAT


@dataclass
class Description:
    """What a path holds: `kind` is "root", "shard", "set", "dataset" or "repo"; `sections` maps a title to facts."""

    path: Path
    kind: str
    title: str
    sections: dict[str, dict[str, object]] = field(default_factory=dict)


def class_fractions(pid_counts, noise: int, total: int) -> dict[str, object]:
    """Facts on the labels of `total` spacepoints: the PID class fractions and the noise fraction."""
    if not total:
        return {}
    return {
        "classes (spacepoints)": {name: n / total for name, n in zip(PID_CLASSES, pid_counts, strict=True)},
        "noise fraction": noise / total,
    }


def describe_root(path: Path) -> Description:
    description = Description(path, "root", f"{path} (ROOT file)")
    objects = {}
    with open_root(path) as file:
        for name, classname in sorted(file.classnames(cycle=False).items()):
            obj = file[name]
            if hasattr(obj, "num_entries"):
                objects[name] = f"{classname}: {obj.num_entries} entries, {len(obj.keys())} branches"
            else:
                objects[name] = classname
    description.sections["objects"] = {"bytes": path.stat().st_size, **objects}
    try:
        layout, _, total = root_events(path, keep=False)
    except LayoutError as exc:
        description.sections["layout"] = {"detected": None, "why": str(exc)}
        return description
    facts: dict[str, object] = {
        "detected": layout.name,
        "truth": layout.truth,
        "events": total.events,
        "TPC spacepoints": total.spacepoints_in,
        "spacepoints per event": total.spacepoints_in / max(total.events, 1),
        "clusters of other layers": total.skipped_other_layers,
    }
    if layout.truth == "full":
        facts |= {"truth particles": total.particles_out, "unmatched spacepoints": total.unmatched}
        facts |= class_fractions(total.pid_counts, total.noise, total.spacepoints_out)
    facts["would be rejected"] = {k: v for k, v in total.rejected.items() if v}
    description.sections["layout"] = facts
    return description


def describe_shard(path: Path) -> Description:
    try:
        meta = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise DatasetError(f"{path}: cannot be read as Parquet ({exc})") from exc
    names = meta.schema_arrow.names
    table = pq.read_table(path, columns=[c for c in ("x", "pid", "noise") if c in names])
    events = meta.metadata.num_rows
    spacepoints = int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0) if "x" in names else 0
    schema_version = (meta.schema_arrow.metadata or {}).get(b"fm4npp.schema_version", b"?").decode()
    facts: dict[str, object] = {
        "bytes": path.stat().st_size,
        "events": events,
        "row groups": meta.num_row_groups,
        "spacepoints": spacepoints,
        "spacepoints per event": spacepoints / max(events, 1),
        "columns": names,
        "schema version": schema_version,
        "prepared": "order" in names,
    }
    if "pid" in names:
        pid = pc.list_flatten(table["pid"]).to_numpy()
        noise = pc.list_flatten(table["noise"]).to_numpy(zero_copy_only=False)
        facts |= class_fractions(np.bincount(pid, minlength=len(PID_CLASSES)).tolist(), int(noise.sum()), pid.shape[0])
    return Description(path, "shard", f"{path} (Parquet shard)", {"content": facts})


def _set_facts(eset: EventSet) -> dict[str, object]:
    m = eset.manifest
    t: Counts = m.totals
    facts: dict[str, object] = {
        "inputs": len(m.inputs),
        "layouts": m.layouts,
        "shards": len(m.shards),
        "bytes": sum(s.bytes for s in m.shards),
        "events": t.events,
        "spacepoints": t.spacepoints_out,
        "spacepoints per event": t.spacepoints_out / max(t.events, 1),
        "rejected": dict(t.rejected),
        "truth particles": t.particles_out,
        "energy units": m.energy_units,
    }
    if m.split:
        facts["split"] = m.split
    if "full" in m.truth or "labels" in m.truth:
        facts |= class_fractions(t.pid_counts, t.noise, t.spacepoints_out)
    facts["prepared"] = dict(m.prepare) if m.prepare else False
    return facts


def describe_dataset(path: Path) -> Description:
    sets = find_sets(path)
    if sets == [path]:
        eset = EventSet.open(path)
        m = eset.manifest
        title = f"{path} (converted set, schema {m.schema_version}, fm4npp {m.tool_version})"
        return Description(path, "set", title, {"content": _set_facts(eset)})
    description = Description(path, "dataset", f"{path} ({len(sets)} sets)")
    for folder in sets:
        description.sections[str(folder.relative_to(path))] = _set_facts(EventSet.open(folder))
    return description


def describe_repo(path: Path) -> Description:
    """A dataset repository from its splits.json and manifest.json (nothing is hashed: `fm4npp-data verify` checks):
    its configs and splits (events, spacepoints, shards, Parquet bytes, the digest of the split's (run, event) ids),
    the bytes on disk, the binning, k and the fm4npp version that built it."""
    splits = read_splits(path)
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        raise RepoError(f"{path / MANIFEST}: not readable JSON ({exc}); build the repository again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != REPO_FORMAT:
        raise RepoError(f"{path / MANIFEST}: not an fm4npp dataset repository manifest; build the repository again")
    files = [
        p for p in path.rglob("*") if p.is_file() and not any(q.startswith(".") for q in p.relative_to(path).parts)
    ]
    configs = splits["configs"]
    total = [sum(v[key] for d in configs.values() for v in d.values()) for key in ("events", "spacepoints")]
    facts: dict[str, object] = {
        "configs": [f"{c} ({', '.join(s for s, v in d.items() if v['events'])})" for c, d in configs.items()],
        "events": total[0],
        "spacepoints": total[1],
        "shards": sum(len(v["shards"]) for d in configs.values() for v in d.values()),
        "files": len(files),
        "bytes on disk": sum(p.stat().st_size for p in files),
        "binning": manifest.get("binning"),
        "k": _repo_k(path, configs),
        "excluded events": manifest.get("excluded") or {},
        "built": manifest.get("built"),
        "tool version": manifest.get("tool_version"),
    }
    title = f"{path} (dataset repository, fm4npp {manifest.get('tool_version', '?')})"
    description = Description(path, "repo", title, {"repository": facts})
    for config, split_info in configs.items():
        for split, info in split_info.items():
            description.sections[f"{config}/{split}"] = {
                "events": info["events"],
                "spacepoints": info["spacepoints"],
                "spacepoints per event": info["spacepoints"] / max(info["events"], 1),
                "shards": len(info["shards"]),
                "bytes": sum(s["bytes"] for s in info["shards"]),
                "columns": len(info["columns"]),
                "ids sha256": info["ids_sha256"],
            }
    return description


def _repo_k(path: Path, configs: dict) -> int | None:
    """Neighbours per spacepoint: the fixed size of the `knn` lists of the first shard (None without one)."""
    for config, split_info in configs.items():
        for info in split_info.values():
            if info["shards"] and "knn" in info["columns"]:
                try:
                    field = pq.read_schema(path / "data" / config / info["shards"][0]["path"]).field("knn")
                    return int(field.type.value_type.list_size)
                except (OSError, KeyError, AttributeError, pa.ArrowException):
                    return None
    return None


def describe(path: str | Path) -> Description:
    """What `path` holds: a ROOT file, a Parquet shard, a set (a folder with a manifest), a dataset of sets or a dataset
    repository (fm4npp-data build)."""
    path = Path(path)
    if path.is_dir() and is_repository(path):
        return describe_repo(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            try:
                find_sets(path)
            except DatasetError as exc:
                raise DatasetError(f"{exc}; or name a ROOT file or a shard") from exc
        return describe_dataset(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or directory")
    if path.suffix == ".parquet":
        return describe_shard(path)
    return describe_root(path)


__all__ = ["Description", "describe"]
