"""`track-residuals`: the `clustertree` TTree of sPHENIX TrackResiduals, recorded data without truth.

One row per cluster, typed branches `run/I segment/I event/I ... gx gy gz ... adc ... layer/I`; global positions are
`gx gy gz`; the TPC is layers 7..54.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import Chunk, SourceInfo, missing_in, truthless_chunks

NAME = "track-residuals"
ENERGY_UNITS = "ADC (cluster sum, TrackResiduals `adc`)"
TREE = "clustertree"
COLUMNS = {"x": "gx", "y": "gy", "z": "gz", "energy": "adc", "layer": "layer"}
#: The one-row-per-spacepoint tree, whose entries are checked against what was converted.
ROW_TREE = TREE
TRUTH = "none"


def missing(file) -> list[str]:
    return missing_in(file, TREE, ["run", "event", *COLUMNS.values()])


def chunks(file, info: SourceInfo) -> Iterator[Chunk]:
    return truthless_chunks(file, info, TREE, COLUMNS, "event", "run")
