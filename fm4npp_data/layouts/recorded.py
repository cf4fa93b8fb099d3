"""Recorded sPHENIX data without truth (the `pretrain` configuration): one row per cluster of every tracker.

Two layouts of one kind, declared as data:
- `trkr-ntuplizer`: TrkrNtuplizer's `ntp_cluster`, Float_t columns `event seed run seg job locx locy x y z ... adc ...
  layer ...` (coresoftware offline/packages/TrackingDiagnostics/TrkrNtuplizer.cc);
- `track-residuals`: the `clustertree` TTree of TrackResiduals, typed branches `run/I segment/I event/I ... gx gy gz
  ... adc ... layer/I`, global positions `gx gy gz` (coresoftware offline/packages/TrackingDiagnostics).

The TPC is layers 7..54; (`run`, `event`) identify events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .base import Chunk, Layout, SourceInfo, missing_in, truthless_chunks


@dataclass(frozen=True)
class RecordedLayout(Layout):
    """A one-row-per-cluster tree of recorded data: which tree, which branches hold our columns, event and run."""

    tree: str = ""
    columns: dict[str, str] = field(default_factory=dict)  # our column -> branch (x y z energy layer)
    event_branch: str = "event"
    run_branch: str = "run"

    def missing(self, file) -> list[str]:
        return missing_in(file, self.tree, [self.run_branch, self.event_branch, *self.columns.values()])

    def chunks(self, file, info: SourceInfo) -> Iterator[Chunk]:
        return truthless_chunks(file, info, self.tree, self.columns, self.event_branch, self.run_branch)


TRKR_NTUPLIZER = RecordedLayout(
    name="trkr-ntuplizer",
    truth="none",
    energy_units="ADC (cluster sum, TrkrNtuplizer `adc`)",
    row_tree="ntp_cluster",
    tree="ntp_cluster",
    columns={"x": "x", "y": "y", "z": "z", "energy": "adc", "layer": "layer"},
)

TRACK_RESIDUALS = RecordedLayout(
    name="track-residuals",
    truth="none",
    energy_units="ADC (cluster sum, TrackResiduals `adc`)",
    row_tree="clustertree",
    tree="clustertree",
    columns={"x": "gx", "y": "gy", "z": "gz", "energy": "adc", "layer": "layer"},
)
