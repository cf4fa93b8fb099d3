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

The functions `convert`, `prepare`, `describe` and `import_release` share their names with the modules that define
them; `fm4npp_data.convert` is always the function. To reach a module, import from it by name
(`from fm4npp_data.convert import ConvertOptions`), not `import fm4npp_data.convert as module`.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "simulate": "fm4npp_data.simulation",
    "convert": "fm4npp_data.convert",
    "ConvertOptions": "fm4npp_data.convert",
    "import_release": "fm4npp_data.import_release",
    "prepare": "fm4npp_data.prepare",
    "PrepareOptions": "fm4npp_data.prepare",
    "describe": "fm4npp_data.describe",
    "read_events": "fm4npp_data.dataset",
    "find_sets": "fm4npp_data.dataset",
    "EventSet": "fm4npp_data.dataset",
    "Manifest": "fm4npp_data.dataset",
    "Fm4nppError": "fm4npp_data.errors",
    "build": "fm4npp_data.repo",
    "verify": "fm4npp_data.repo",
    "load": "fm4npp_data.repo",
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
    from .convert import ConvertOptions, convert
    from .dataset import EventSet, Manifest, find_sets, read_events
    from .describe import describe
    from .errors import Fm4nppError
    from .import_release import import_release
    from .prepare import PrepareOptions, prepare
    from .repo import build, load, verify
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


class _Package(types.ModuleType):
    """The package module: importing a submodule named like an entry point (fm4npp_data.convert) must not replace
    the function `fm4npp_data.convert` with the module. Code that wants the module imports from it by name
    (`from fm4npp_data.convert import ConvertOptions`), which Python resolves through sys.modules."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
