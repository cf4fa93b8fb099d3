"""Input layouts: one module per layout, and detection of a file's layout from its trees and branches.

A layout is any object with `NAME`, `ENERGY_UNITS`, `TRUTH` ("full": labels and truth particles; "track": track ids
only; "none"), `missing(file) -> list[str]` (what the file lacks for it; empty when it matches) and
`chunks(file, info) -> Iterator[Chunk]`. The sPHENIX layouts are modules; a user-declared layout is a `UserLayout`
read from a TOML file. The published TPCpp-10M npz release has its own reader (`release`), used by import-release.
"""

from __future__ import annotations

from pathlib import Path

from . import svtx_evaluator, track_residuals, trkr_ntuplizer
from .base import Chunk, LayoutError, SourceInfo
from .user import UserLayout

#: The sPHENIX ROOT layouts, in the order detection tries them.
LAYOUTS = {m.NAME: m for m in (svtx_evaluator, trkr_ntuplizer, track_residuals)}

__all__ = ["LAYOUTS", "Chunk", "LayoutError", "SourceInfo", "UserLayout", "detect", "resolve"]


def resolve(layout: str | Path | None):
    """The layout named `layout` (a known name or a TOML file), or None for automatic detection."""
    if layout is None or layout == "auto":
        return None
    if str(layout) in LAYOUTS:
        return LAYOUTS[str(layout)]
    path = Path(layout)
    if path.suffix == ".toml":
        if not path.is_file():
            raise LayoutError(f"{path}: layout file not found")
        return UserLayout(path)
    raise LayoutError(f"unknown layout {str(layout)!r}; known: {', '.join(LAYOUTS)}, or a TOML file (see docs/layouts)")


def describe(file) -> str:
    """The trees of an open ROOT file with their number of branches, for error messages."""
    parts = []
    for name, classname in sorted(file.classnames(cycle=False).items()):
        if classname in ("TTree", "TNtuple", "TNtupleD"):
            parts.append(f"{name} ({classname}, {len(file[name].keys())} branches)")
        else:
            parts.append(f"{name} ({classname})")
    return ", ".join(parts) or "no objects"


def detect(file, path: Path, layout=None):
    """The layout of an open ROOT file: `layout` if given (checked), else the first sPHENIX layout that matches."""
    candidates = [layout] if layout is not None else list(LAYOUTS.values())
    tried = []
    for candidate in candidates:
        lacks = candidate.missing(file)
        if not lacks:
            return candidate
        tried.append(f"{candidate.NAME} (lacks {', '.join(lacks[:6])}{', ...' if len(lacks) > 6 else ''})")
    raise LayoutError(
        f"{path}: no layout matches. The file has: {describe(file)}. Tried: {'; '.join(tried)}. "
        "Name the layout with --layout, or declare one in a TOML file (docs/layouts.md)."
    )
