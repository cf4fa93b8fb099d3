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


LOCK = ".fm4npp-lock"


class FolderLock:
    """An exclusive lock on an output folder for one run (`with FolderLock(folder, error):`).

    The lock is a file created with O_EXCL holding "host pid"; a lock left by a dead process on this host is taken
    over, a live one (or one from another host) is refused with `error(message)`, so that two runs never clear or
    overwrite each other's files."""

    def __init__(self, folder: Path, error: type[Exception]) -> None:
        self.path = Path(folder) / LOCK
        self.error = error

    def __enter__(self) -> FolderLock:
        import socket

        me = f"{socket.gethostname()} {os.getpid()}"
        # The lock is written whole under a temporary name, then linked into place (atomic, fails if it exists), so
        # that no other run ever sees it empty or half-written and takes it for a dead run's.
        tmp = self.path.with_name(f".{LOCK}.partial-{os.getpid()}")
        tmp.write_text(me + "\n")
        try:
            for _ in range(2):
                try:
                    _link_or_create(tmp, self.path, me)
                except FileExistsError:
                    if not self._stale(socket.gethostname()):
                        holder = self.path.read_text(errors="replace").strip() or "?"
                        raise self.error(
                            f"{self.path.parent}: another fm4npp run ({holder}, host and pid) is writing here; wait "
                            f"for it to end, or remove {self.path} if that run died"
                        ) from None
                    self.path.unlink(missing_ok=True)
                    continue
                return self
        finally:
            tmp.unlink(missing_ok=True)
        raise self.error(f"{self.path}: cannot take the lock of this folder")

    def _stale(self, host: str) -> bool:
        try:
            holder_host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return True  # empty or half-written: its writer died before it wrote a line
        if holder_host != host:
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _link_or_create(tmp: Path, path: Path, content: str) -> None:
    """Put the written file `tmp` at `path` by a hard link (FileExistsError if `path` exists); where the filesystem
    has no hard links, create `path` exclusively and write `content` into it."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE filesystems)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
