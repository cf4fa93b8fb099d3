"""Arrow schemas of the Parquet data (docs/data-format.md): events, derived columns, rejects, predictions.

One row per event; every list column of a row has one entry per spacepoint (or per truth particle for the
`particle_*` columns), in the input's order. Truth columns are present only when the source has truth: a
truth-less source (recorded data, the `pretrain` configuration) gives the identity, position, energy and layer only.
"""

from __future__ import annotations

import pyarrow as pa

from .tasks import TASKS

#: Version of the data contract; written into every manifest and the Parquet metadata.
SCHEMA_VERSION = 1

IDENTITY = (pa.field("run", pa.int32(), nullable=False), pa.field("event", pa.int64(), nullable=False))
SPACEPOINTS = (
    pa.field("x", pa.list_(pa.float32())),
    pa.field("y", pa.list_(pa.float32())),
    pa.field("z", pa.list_(pa.float32())),
    pa.field("energy", pa.list_(pa.float32())),
    pa.field("layer", pa.list_(pa.int16())),
)
#: The truth labels of the tasks (fm4npp_data.tasks): track_id, pid and noise, typed as the tasks' predictions.
LABELS = tuple(pa.field(task.truth, pa.list_(task.dtype)) for task in TASKS.values())
PARTICLES = (
    pa.field("particle_id", pa.list_(pa.int64())),
    pa.field("particle_pdg", pa.list_(pa.int32())),
    pa.field("particle_px", pa.list_(pa.float32())),
    pa.field("particle_py", pa.list_(pa.float32())),
    pa.field("particle_pz", pa.list_(pa.float32())),
    pa.field("particle_vx", pa.list_(pa.float32())),
    pa.field("particle_vy", pa.list_(pa.float32())),
    pa.field("particle_vz", pa.list_(pa.float32())),
    pa.field("particle_parent", pa.list_(pa.int64())),
    pa.field("particle_primary", pa.list_(pa.bool_())),
)
#: Value types (numpy dtype names) of the flat particle columns, by column name.
PARTICLE_TYPES = {
    "particle_id": "int64",
    "particle_pdg": "int32",
    "particle_px": "float32",
    "particle_py": "float32",
    "particle_pz": "float32",
    "particle_vx": "float32",
    "particle_vy": "float32",
    "particle_vz": "float32",
    "particle_parent": "int64",
    "particle_primary": "bool",
}


TRUTH_LEVELS = ("none", "track", "labels", "full")


def events_schema(truth: str = "full") -> pa.Schema:
    """The event schema for a source's level of truth: "none" (identity, spacepoints), "track" (plus `track_id`),
    "labels" (plus `pid` and `noise`, as in the TPCpp-10M release) or "full" (plus the `particle_*` lists)."""
    if truth not in TRUTH_LEVELS:
        raise ValueError(f"truth must be one of {TRUTH_LEVELS}, not {truth!r}")
    fields = [*IDENTITY, *SPACEPOINTS]
    if truth in ("track", "labels", "full"):
        fields += LABELS[:1]
    if truth in ("labels", "full"):
        fields += LABELS[1:]
    if truth == "full":
        fields += PARTICLES
    return pa.schema(fields, metadata={"fm4npp.schema_version": str(SCHEMA_VERSION)})


def derived_fields(k: int) -> tuple[pa.Field, ...]:
    """The columns `prepare` adds (docs/data-format.md, "Derived columns"), with k neighbours per spacepoint."""
    return (
        pa.field("r", pa.list_(pa.float32())),
        pa.field("phi", pa.list_(pa.float32())),
        pa.field("eta", pa.list_(pa.float32())),
        pa.field("box", pa.list_(pa.int16())),
        pa.field("order", pa.list_(pa.int32())),
        pa.field("knn", pa.list_(pa.list_(pa.int32(), k))),
        pa.field("knn_mean_distance", pa.float32()),
    )


#: Names of the derived columns, in the order they are appended.
DERIVED = tuple(f.name for f in derived_fields(1))


#: Spacepoints that could not be used, one row each, with the reason (fm4npp_data.conversion.assemble.REJECT_REASONS).
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("run", pa.int32()),
        pa.field("event", pa.int64()),
        pa.field("index", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("x", pa.float32()),
        pa.field("y", pa.float32()),
        pa.field("z", pa.float32()),
        pa.field("energy", pa.float32()),
        pa.field("source_track_id", pa.float64()),
    ]
)

#: A predictions file (the leaderboard's input): run, event and each task's column (fm4npp_data.tasks).
PREDICTIONS_SCHEMA = pa.schema(
    [pa.field("run", pa.int32()), pa.field("event", pa.int64()), *(task.field for task in TASKS.values())]
)
