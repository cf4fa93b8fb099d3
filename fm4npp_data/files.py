"""File helpers shared by the commands that write data: checksums, atomic JSON, temporary names and leftovers.

Every file or folder being written has a temporary name: a leading dot and a `.partial` marker
(`.NAME.partial`, or `.NAME.partial-PID` for a staging folder); it is renamed into place when complete. Such names
found later are the leftovers of an interrupted run: `clear_leftovers` removes them, and only them, below a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

_PARTIAL_RE = re.compile(r"^\..+\.partial(-\d+)?$")


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """The sha256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def partial_path(path: Path) -> Path:
    """The temporary name under which `path` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.partial")


def is_partial(name: str) -> bool:
    """Whether a file or folder name is a temporary name of fm4npp (a leftover when no run is writing)."""
    return bool(_PARTIAL_RE.match(name))


def write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON under a temporary name in the same folder, then rename it into place (atomic)."""
    tmp = partial_path(path)
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def clear_leftovers(root: Path) -> list[Path]:
    """Remove the temporary files and staging folders of interrupted runs anywhere below `root`; what was removed."""
    removed = []
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            if is_partial(name):
                path = Path(dirpath) / name
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if not is_partial(d)]
    return removed
