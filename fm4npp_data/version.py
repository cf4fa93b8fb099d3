"""The installed fm4npp version, read from the distribution's metadata (one lookup for every file that records it)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def tool_version() -> str:
    """The version of the installed `fm4npp` distribution ("0+unknown" when run from a source tree not installed)."""
    try:
        return version("fm4npp")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
