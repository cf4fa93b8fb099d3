"""One exception hierarchy: every error a user can meet derives from `Fm4nppError`, and every exception class of the
project is defined here (the modules that raise them import them from here; tests/test_structure.py checks it).

The message of each says which file (and, where it applies, which event) is at fault and what to do; the command
line prints it as one line and exits with status 2, without a traceback. Anything else that escapes is a bug.

    Fm4nppError
    ├── LayoutError          an input does not have what its layout needs (a tree, a branch, a type)
    │   └── ReleaseError     the TPCpp-10M release archive or folder is not as expected
    ├── ConvertError         an input cannot be converted, or the output cannot be written
    ├── PrepareError         a dataset cannot be prepared (a bad --binning file, a damaged shard)
    ├── DatasetError         a converted or prepared set on disk is missing, damaged or inconsistent
    │   └── RepoError        a dataset repository cannot be built or published, or is not as splits.json says
    ├── SimulationError      bad simulation options or output location
    ├── DisplayError         nothing to draw (no such event, no TPC spacepoints)
    ├── MissingExtraError    an optional dependency is not installed (names the extra to install)
    ├── KernelsUnavailable   the fused Mamba2 kernels were asked for but cannot run (no mamba-ssm, no CUDA)
    ├── RunError             a run folder cannot be read or written (config.json, weights, the folder rule)
    ├── TrainError           training cannot start or go on (options, resume state, a non-finite loss)
    └── PredictionsError     a predictions file does not fit the split it is scored against
"""

from __future__ import annotations


class Fm4nppError(Exception):
    """Base of every error a user of fm4npp can meet; its message is meant to be read as it is."""


class LayoutError(Fm4nppError, ValueError):
    """The input does not have what a layout needs; the message names the file and what is missing."""


class ReleaseError(LayoutError):
    """The release archive or folder is not as expected; the message names the member."""


class ConvertError(Fm4nppError):
    """An input could not be converted, or the output cannot be written; the message says which and why."""


class PrepareError(Fm4nppError):
    """The data cannot be prepared; the message says which file and why."""


class DatasetError(Fm4nppError):
    """A set of shards on disk is missing, damaged or inconsistent with its manifest."""


class SimulationError(Fm4nppError, ValueError):
    """Bad simulation options or output location; the message says what to do."""


class DisplayError(Fm4nppError, ValueError):
    """There is nothing to draw for the request (no such event, no spacepoints); the message lists what there is."""


class RepoError(DatasetError):
    """The repository cannot be built, is not as its files say, or cannot be published; the message says where."""


class MissingExtraError(Fm4nppError, ImportError):
    """An optional dependency is missing; the message names the pip extra that installs it."""


class KernelsUnavailable(Fm4nppError, RuntimeError):
    """use_kernels=True, but the fused kernels cannot run: mamba-ssm is not importable, or the input is not on CUDA."""


class RunError(Fm4nppError):
    """A run folder cannot be read or written; the message names the file and what to do."""


class TrainError(Fm4nppError):
    """Training cannot start or go on; the message says why and what to do."""


class PredictionsError(Fm4nppError, ValueError):
    """A predictions file does not fit the split it is scored against; the message names the file, the event and
    what to do."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or raise MissingExtraError naming the extra that installs it."""
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the Python package {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'fm4npp[{extra}]'"
        ) from exc


__all__ = [
    "ConvertError",
    "DatasetError",
    "DisplayError",
    "Fm4nppError",
    "KernelsUnavailable",
    "LayoutError",
    "MissingExtraError",
    "PredictionsError",
    "PrepareError",
    "ReleaseError",
    "RepoError",
    "RunError",
    "SimulationError",
    "TrainError",
    "require",
]
