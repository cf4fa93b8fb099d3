"""Input layouts, declared as data, and detection of a file's layout from its trees and branches.

A layout is a frozen `Layout` (fm4npp_data.layouts.base): its `name`, `truth` ("full": labels and truth particles;
"track": track ids only; "none"), `energy_units`, the trees whose entries are checked against what was converted,
`missing(file) -> list[str]` (what the file lacks for it; empty when it matches) and `chunks(file, info)`. The
sPHENIX ROOT layouts are the instances below; a user-declared layout is a `UserLayout` read from a TOML file. The
published TPCpp-10M npz release has its own reader (`release`), used by import-release.
"""

from __future__ import annotations

from pathlib import Path

from .base import Chunk, Layout, LayoutError, SourceInfo
from .recorded import TRACK_RESIDUALS, TRKR_NTUPLIZER
from .svtx_evaluator import SVTX_EVALUATOR
from .user import UserLayout

#: The sPHENIX ROOT layouts, in the order detection tries them.
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (SVTX_EVALUATOR, TRKR_NTUPLIZER, TRACK_RESIDUALS)}

__all__ = ["LAYOUTS", "Chunk", "Layout", "LayoutError", "SourceInfo", "UserLayout", "detect", "resolve"]


def resolve(layout: str | Path | Layout | None) -> Layout | None:
    """The layout named `layout` (a known name or a TOML file), or None for automatic detection."""
    if layout is None or layout == "auto" or isinstance(layout, Layout):
        return None if layout in (None, "auto") else layout
    if str(layout) in LAYOUTS:
        return LAYOUTS[str(layout)]
    path = Path(layout)
    if path.suffix == ".toml":
        if not path.is_file():
            raise LayoutError(f"{path}: layout file not found")
        return UserLayout.from_toml(path)
    raise LayoutError(f"unknown layout {str(layout)!r}; known: {', '.join(LAYOUTS)}, or a TOML file (docs/layouts.md)")


def trees_of(file) -> str:
    """The trees of an open ROOT file with their number of branches, for error messages."""
    parts = []
    for name, classname in sorted(file.classnames(cycle=False).items()):
        if classname in ("TTree", "TNtuple", "TNtupleD"):
            parts.append(f"{name} ({classname}, {len(file[name].keys())} branches)")
        else:
            parts.append(f"{name} ({classname})")
    return ", ".join(parts) or "no objects"


def detect(file, path: Path, layout: Layout | None = None) -> Layout:
    """The layout of an open ROOT file: `layout` if given (checked), else the first sPHENIX layout that matches."""
    candidates = [layout] if layout is not None else list(LAYOUTS.values())
    tried = []
    for candidate in candidates:
        lacks = candidate.missing(file)
        if not lacks:
            return candidate
        tried.append(f"{candidate.name} (lacks {', '.join(lacks[:6])}{', ...' if len(lacks) > 6 else ''})")
    raise LayoutError(
        f"{path}: no layout matches. The file has: {trees_of(file)}. Tried: {'; '.join(tried)}. "
        "Name the layout with --layout, or declare one in a TOML file (docs/layouts.md)."
    )
