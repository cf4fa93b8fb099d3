"""`trkr-ntuplizer`: TrkrNtuplizer's `ntp_cluster` of recorded sPHENIX data (no truth; the `pretrain` configuration).

One row per cluster of every tracker, Float_t columns `event seed run seg job locx locy x y z ... adc ... layer ...`;
the TPC is layers 7..54. (`run`, `event`) identify events.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import Chunk, SourceInfo, missing_in, truthless_chunks

NAME = "trkr-ntuplizer"
ENERGY_UNITS = "ADC (cluster sum, TrkrNtuplizer `adc`)"
TREE = "ntp_cluster"
COLUMNS = {"x": "x", "y": "y", "z": "z", "energy": "adc", "layer": "layer"}
#: The one-row-per-spacepoint tree, whose entries are checked against what was converted.
ROW_TREE = TREE
TRUTH = "none"


def missing(file) -> list[str]:
    return missing_in(file, TREE, ["run", "event", *COLUMNS.values()])


def chunks(file, info: SourceInfo) -> Iterator[Chunk]:
    return truthless_chunks(file, info, TREE, COLUMNS, "event", "run")
