"""fm4npp_data: sPHENIX TPC data for foundation models — simulate, convert, prepare, describe and read events.

The entry points are imported lazily (on first use), so `import fm4npp_data` stays fast and needs none of the
optional extras:

    simulate(n_events, out, ...)          PYTHIA 8 + fast TPC response -> ROOT files (extra: sim)
    convert(inputs, out, options, ...)    ROOT files -> Parquet shards + manifest
    import_release(src, out, ...)         the TPCpp-10M npz release -> Parquet shards, its splits kept
    prepare(root, options, ...)           derived columns, binning.json, difficulty.json
    describe(path)                        what a file, shard, set or dataset holds (numbers)
    read_events(path, columns, run, event)  events of a shard, set or dataset as an Arrow table
    build(dirs, out) / verify(repo)       the benchmark dataset repository (configs labeled and pretrain)
    load(path_or_id, config, split)       the repository as a datasets.Dataset(Dict) (extra: hub)

Errors a user can meet derive from `Fm4nppError` (fm4npp_data.errors).

The modules are grouped by stage: `conversion/` (convert, ingest, assemble, release), `preparation/`, `repo/`,
`loader/`, `plots/`, `evaluation/` (metrics, leaderboard), beside the shared `errors`, `files`, `geometry`,
`labels`, `tasks`, `schema`, `dataset`, `splits`, `shards`, `integrity`, `description` and `prepared` (README,
"Layout").
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "simulate": "fm4npp_data.simulation",
    "convert": "fm4npp_data.conversion.convert",
    "ConvertOptions": "fm4npp_data.conversion.convert",
    "import_release": "fm4npp_data.conversion.release",
    "prepare": "fm4npp_data.preparation.prepare",
    "PrepareOptions": "fm4npp_data.preparation.prepare",
    "describe": "fm4npp_data.description",
    "read_events": "fm4npp_data.dataset",
    "find_sets": "fm4npp_data.dataset",
    "EventSet": "fm4npp_data.dataset",
    "Manifest": "fm4npp_data.dataset",
    "Fm4nppError": "fm4npp_data.errors",
    "build": "fm4npp_data.repo.build",
    "verify": "fm4npp_data.repo.verify",
    "load": "fm4npp_data.repo.hub",
}

__all__ = [
    "ConvertOptions",
    "EventSet",
    "Fm4nppError",
    "Manifest",
    "PrepareOptions",
    "__version__",
    "build",
    "convert",
    "describe",
    "find_sets",
    "import_release",
    "load",
    "prepare",
    "read_events",
    "simulate",
    "verify",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from .conversion.convert import ConvertOptions, convert
    from .conversion.release import import_release
    from .dataset import EventSet, Manifest, find_sets, read_events
    from .description import describe
    from .errors import Fm4nppError
    from .preparation.prepare import PrepareOptions, prepare
    from .repo.build import build
    from .repo.hub import load
    from .repo.verify import verify
    from .simulation import simulate


def __getattr__(name: str):
    if name == "__version__":
        from .version import tool_version

        return tool_version()
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fm4npp_data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
