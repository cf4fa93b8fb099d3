"""A user-declared layout: a small TOML file maps any TPC's ROOT tree onto our columns, no code needed.

```toml
[tree]
name = "T"              # the TTree
kind = "jagged"         # one row per event with vector branches; or "flat": one row per spacepoint
event = "eventId"       # the event number branch (required for flat; jagged defaults to the entry number)
run = "runId"           # optional run branch (else a run number derived from the file, see convert)
layer_offset = 0        # optional: subtract from `layer` (e.g. 7 for sPHENIX numbering)
unmatched_track_id = 0  # optional: the track id value that means "no truth match" (NaN and negatives always do)
energy_units = "ADC"    # optional: recorded in the manifest
[columns]               # our column = the file's branch; x, y, z required
x = "TPCHits_x"
y = "TPCHits_y"
z = "TPCHits_z"
energy = "TPCHits_adc"
track_id = "TPCHits_IdTruth"
layer = "TPCHits_row"
# truth of the spacepoint's particle, where present: pdg px py pz vx vy vz primary parent
```
Spacepoints are kept whatever their layer (other detectors number their rows differently); `layer` is -1 where the
file has no layer branch. Truth particles are built from the spacepoints' truth columns, one per track id and event.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from .base import (
    HIT_TRUTH,
    Chunk,
    Layout,
    LayoutError,
    SourceInfo,
    as_int,
    check_numeric,
    iterate_flat,
    missing_branches,
    tree_or_none,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TREE_KEYS = {"name", "kind", "event", "run", "layer_offset", "unmatched_track_id", "energy_units"}
COLUMN_KEYS = {"x", "y", "z", "energy", "layer", "track_id", *HIT_TRUTH}
REQUIRED = ("x", "y", "z")


def _check_keys(path: Path, table: str, values: dict, allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise LayoutError(
            f"{path}: unknown key(s) in [{table}]: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


@dataclass(frozen=True)
class UserLayout(Layout):
    """A layout declared in a TOML file (`UserLayout.from_toml(path)`); read like the sPHENIX layouts."""

    path: Path = Path()
    kind: str = "flat"
    tree: str = ""
    event: str | None = None
    run: str | None = None
    layer_offset: int = 0
    unmatched: float | None = None
    columns: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def from_toml(cls, path: str | Path) -> UserLayout:
        path = Path(path)
        try:
            text = path.read_text()
            config = tomllib.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise LayoutError(f"{path}: cannot read the layout file ({exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise LayoutError(f"{path}: not valid TOML ({exc})") from exc
        tree = config.get("tree")
        columns = config.get("columns")
        if not isinstance(tree, dict) or not isinstance(columns, dict):
            raise LayoutError(f"{path}: a layout needs a [tree] table and a [columns] table")
        _check_keys(path, "tree", tree, TREE_KEYS)
        _check_keys(path, "columns", columns, COLUMN_KEYS)
        if "name" not in tree:
            raise LayoutError(f'{path}: [tree] needs name = "<TTree name>"')
        kind = tree.get("kind", "flat")
        if kind not in ("flat", "jagged"):
            raise LayoutError(f'{path}: [tree] kind must be "flat" or "jagged", not {kind!r}')
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise LayoutError(f"{path}: [columns] must name the branches of {', '.join(missing)}")
        if kind == "flat" and "event" not in tree:
            raise LayoutError(f'{path}: a flat tree (one row per spacepoint) needs [tree] event = "<branch>"')
        truth = [c for c in HIT_TRUTH if c in columns]
        if "track_id" in columns and {"pdg", "px", "py", "pz"} <= set(truth):
            level = "full"
        elif "track_id" in columns:
            level = "track"
        else:
            level = "none"
        return cls(
            name=f"user:{path.name}",
            truth=level,
            energy_units=str(tree.get("energy_units", "as in the source")),
            row_tree=str(tree["name"]) if kind == "flat" else None,
            path=path,
            kind=kind,
            tree=str(tree["name"]),
            event=tree.get("event"),
            run=tree.get("run"),
            layer_offset=int(tree.get("layer_offset", 0)),
            unmatched=tree.get("unmatched_track_id"),
            columns={k: str(v) for k, v in columns.items()},
            text=text,
        )

    def _per_event(self) -> list[str]:
        return [b for b in (self.event, self.run) if b]

    def missing(self, file) -> list[str]:
        tree = tree_or_none(file, self.tree)
        if tree is None:
            return [f"tree {self.tree}"]
        return [f"{self.tree}.{b}" for b in missing_branches(tree, [*self._per_event(), *self.columns.values()])]

    def chunks(self, file, info: SourceInfo) -> Iterator[Chunk]:
        tree = file[self.tree]
        if self.kind == "flat":
            check_numeric(info.path, tree, [*self._per_event(), *self.columns.values()])
            for run, event, offsets, cols in iterate_flat(
                tree, list(self.columns.values()), info, self.event, self.run
            ):
                yield self._chunk(info, run, event, offsets, cols)
            return
        check_numeric(info.path, tree, self._per_event())
        check_numeric(info.path, tree, list(self.columns.values()), jagged=True)
        read = sorted({*self._per_event(), *self.columns.values()})
        for arrays, report in tree.iterate(read, step_size=info.step_size, library="ak", report=True):
            n = len(arrays)
            counts = np.asarray(ak.num(arrays[self.columns["x"]], axis=1), np.int64)
            cols = {}
            for branch in self.columns.values():
                branch_counts = np.asarray(ak.num(arrays[branch], axis=1), np.int64)
                if not np.array_equal(branch_counts, counts):
                    row = int(np.flatnonzero(branch_counts != counts)[0])
                    raise LayoutError(
                        f"{info.path}: entry {report.tree_entry_start + row}: branch {branch!r} has "
                        f"{branch_counts[row]} values but {self.columns['x']!r} has {counts[row]}"
                    )
                cols[branch] = np.asarray(ak.flatten(arrays[branch], axis=1))
            if self.event:
                event = as_int(info.path, self.event, np.asarray(arrays[self.event]), np.int64)
            else:
                event = np.arange(report.tree_entry_start, report.tree_entry_start + n, dtype=np.int64)
            if self.run:
                run = as_int(info.path, self.run, np.asarray(arrays[self.run]), np.int32)
            else:
                run = np.full(n, info.default_run, np.int32)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            yield self._chunk(info, run, event, offsets, cols)

    def _chunk(self, info: SourceInfo, run, event, offsets, cols) -> Chunk:
        hits = {name: np.asarray(cols[self.columns[name]], np.float32) for name in ("x", "y", "z")}
        n = hits["x"].shape[0]
        if "energy" in self.columns:  # else the events' energy is NaN (and not a reason to reject)
            hits["energy"] = np.asarray(cols[self.columns["energy"]], np.float32)
        if "layer" in self.columns:
            hits["layer"] = (
                as_int(info.path, self.columns["layer"], cols[self.columns["layer"]], np.int64) - self.layer_offset
            ).astype(np.int16)
        else:
            hits["layer"] = np.full(n, -1, np.int16)
        if "track_id" in self.columns:
            track = np.asarray(cols[self.columns["track_id"]], np.float64).copy()
            unmatched = ~np.isfinite(track) | (track < 0)
            if self.unmatched is not None:
                unmatched |= track == float(self.unmatched)
            track[unmatched] = np.nan
            hits["track"] = track
            for name in HIT_TRUTH:
                if name in self.columns:
                    values = np.asarray(cols[self.columns[name]], np.float64).copy()
                    values[unmatched] = np.nan
                    hits[name] = values
        return Chunk(run=np.asarray(run, np.int32), event=np.asarray(event, np.int64), offsets=offsets, hits=hits)
