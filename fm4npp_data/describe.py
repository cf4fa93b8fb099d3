"""What a ROOT file, a Parquet shard or a converted dataset holds: `fm4npp-data inspect PATH`.

Each function returns a `Report`: titled sections of (key, value) rows, printed by the CLI as tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .assemble import Counts, assemble
from .convert import MANIFEST, ConvertError, open_root, run_from_sha
from .files import sha256_file
from .labels import PID_CLASSES
from .layouts import LayoutError, SourceInfo, detect


@dataclass
class Report:
    title: str
    sections: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)


def _fractions(pid_counts, noise: int, total: int) -> list[tuple[str, str]]:
    if not total:
        return []
    classes = ", ".join(f"{name} {n / total:.1%}" for name, n in zip(PID_CLASSES, pid_counts, strict=True))
    return [("classes (spacepoints)", classes), ("noise", f"{noise / total:.1%}")]


def inspect_root(path: Path) -> Report:
    report = Report(f"{path} (ROOT file, {path.stat().st_size / 1e6:.1f} MB)")
    file = open_root(path)
    with file:
        trees = []
        for name, classname in sorted(file.classnames(cycle=False).items()):
            obj = file[name]
            if hasattr(obj, "num_entries"):
                trees.append((name, f"{classname}: {obj.num_entries} entries, {len(obj.keys())} branches"))
            else:
                trees.append((name, classname))
        report.sections.append(("objects", trees))
        try:
            layout = detect(file, path)
        except LayoutError as exc:
            report.sections.append(("layout", [("detected", "none"), ("why", str(exc))]))
            return report
        info = SourceInfo(path=path, default_run=run_from_sha(sha256_file(path)))
        total = Counts()
        for chunk in layout.chunks(file, info):
            total.add(assemble(chunk, layout.TRUTH, str(path))[2])
    rows = [
        ("detected", layout.NAME),
        ("truth", layout.TRUTH),
        ("events", str(total.events)),
        ("TPC spacepoints", f"{total.spacepoints_in} ({total.spacepoints_in / max(total.events, 1):.0f} per event)"),
        ("clusters of other layers", str(total.skipped_other_layers)),
    ]
    if layout.TRUTH == "full":
        rows += [("truth particles", str(total.particles_out)), ("unmatched spacepoints", str(total.unmatched))]
        rows += _fractions(total.pid_counts, total.noise, total.spacepoints_out)
    rejected = sum(total.rejected.values())
    rows.append(("would be rejected", f"{rejected} ({', '.join(f'{k} {v}' for k, v in total.rejected.items() if v)})"))
    report.sections.append(("layout", rows))
    return report


def inspect_parquet(path: Path) -> Report:
    meta = pq.ParquetFile(path)
    report = Report(f"{path} (Parquet, {path.stat().st_size / 1e6:.1f} MB)")
    names = meta.schema_arrow.names
    table = pq.read_table(path, columns=[c for c in ("x", "pid", "noise") if c in names])
    spacepoints = int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0) if "x" in names else 0
    rows = [
        ("events", str(meta.metadata.num_rows)),
        ("row groups", str(meta.num_row_groups)),
        ("spacepoints", f"{spacepoints} ({spacepoints / max(meta.metadata.num_rows, 1):.0f} per event)"),
        ("columns", ", ".join(names)),
        ("schema version", (meta.schema_arrow.metadata or {}).get(b"fm4npp.schema_version", b"?").decode()),
    ]
    if "pid" in names:
        pid = pc.list_flatten(table["pid"]).to_numpy()
        noise = pc.list_flatten(table["noise"]).to_numpy(zero_copy_only=False)
        rows += _fractions(np.bincount(pid, minlength=5).tolist(), int(noise.sum()), pid.shape[0])
    report.sections.append(("content", rows))
    return report


def inspect_dataset(path: Path) -> Report:
    manifest = json.loads((path / MANIFEST).read_text())
    t = manifest["totals"]
    report = Report(
        f"{path} (converted dataset, schema {manifest['schema_version']}, fm4npp {manifest['tool_version']})"
    )
    rows = [
        ("inputs", str(len(manifest["inputs"]))),
        ("layouts", ", ".join(manifest["layouts"])),
        ("shards", f"{len(manifest['shards'])} ({sum(s['bytes'] for s in manifest['shards']) / 1e6:.1f} MB)"),
        ("events", str(t["events"])),
        ("spacepoints", f"{t['spacepoints_out']} ({t['spacepoints_out'] / max(t['events'], 1):.0f} per event)"),
        ("rejected", ", ".join(f"{k} {v}" for k, v in t["rejected"].items())),
        ("truth particles", str(t["particles_out"])),
        ("energy units", "; ".join(manifest["energy_units"])),
    ]
    if "full" in manifest["truth"] or "labels" in manifest["truth"]:
        rows += _fractions(t["pid_counts"], t["noise"], t["spacepoints_out"])
    prep = manifest.get("prepare")
    rows.append(("prepared", f"k={prep['k']}, order {prep['order']}, binning {prep['binning']}" if prep else "no"))
    report.sections.append(("content", rows))
    return report


def inspect(path: str | Path) -> Report:
    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return inspect_dataset(path)
        parts = sorted(p.parent for p in path.rglob(MANIFEST) if not any(s.startswith(".") for s in p.parts))
        if not parts:
            raise ConvertError(
                f"{path}: a directory without {MANIFEST}; name a ROOT file, a shard or a converted dataset"
            )
        report = Report(f"{path} ({len(parts)} parts)")
        for part in parts:
            sub = inspect_dataset(part)
            report.sections.append((str(part.relative_to(path)), sub.sections[0][1]))
        return report
    if not path.is_file():
        raise ConvertError(f"{path}: no such file or directory")
    if path.suffix == ".parquet":
        return inspect_parquet(path)
    return inspect_root(path)


__all__ = ["Report", "inspect"]
