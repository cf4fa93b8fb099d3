"""Data checked when read: a repository's shards against the sha256 that `splits.json` records, and Parquet page
checksums. Imports numpy, pyarrow, json and hashlib only (no torch, no awkward), so the leaderboard starts fast.

    splits = read_splits(repo)                            # splits.json, read and checked for shape
    shards = checked_shards(repo, "labeled", "test")      # the split's shards, each one's sha256 checked

What is checked when a shard is first opened (the loader, `fm4npp predict`, the leaderboard, `fm4npp_data.load`):
its size and sha256 against `splits.json`, and that the split's files on disk are the ones `splits.json` lists. A
shard is hashed once: its *stamp* (resolved path, size, mtime_ns, ctime_ns, inode, device, and the sha256 it was
checked against) is kept in memory for the process and in a per-user cache file,
`$XDG_CACHE_HOME/fm4npp/verified-shards.json` (default `~/.cache`), so the next process that opens the same
unchanged file does not read it twice. Any change to a file (a write, a copy, `touch`, even a rewrite that restores
the mtime, which moves the ctime that no user can set) makes its stamp stale and the file is hashed again. A file
changed less than `RACY_SECONDS` before it was hashed gets no stamp (its next change could keep the same
timestamps). The cache is optional: an unreadable or read-only cache directory only means hashing again, and the
repository itself is never written (a read-only repository works). The stamps guard against accidents, not against
the user's own account: a process that can write the cache file can write the shards and splits.json too, so the file
is not signed; `fm4npp-data verify` always hashes every shard.

Besides, every Parquet file fm4npp writes carries page checksums (CRC32 of each data page, `WRITE_OPTIONS`) and the
project's pyarrow readers verify them (`READ_OPTIONS`), so a flipped bit inside a page is caught by the reader too,
even in a set that is not part of a repository. `damaged(path, exc)` is the message for a shard that cannot be read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path

from .errors import RepoError
from .files import sha256_file
from .splits import SHARD_NAME, repo_shards

SPLITS_FILE = "splits.json"
#: Keyword arguments of every pyarrow Parquet writer of the project, and of its pyarrow readers.
WRITE_OPTIONS = {"write_page_checksum": True}
READ_OPTIONS = {"page_checksum_verification": True}
#: A file modified this recently when it was hashed gets no stamp (filesystem timestamps are coarse).
RACY_SECONDS = 2.0
CACHE_NAME = "verified-shards.json"
CACHE_FORMAT = "fm4npp-verified-shards/1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: resolved path -> stamp (size, mtime_ns, ctime_ns, inode, device, sha256), for this process.
_verified: dict[str, list] = {}


def verify_hint(repo: Path) -> str:
    return f"run `fm4npp-data verify {repo}` to see what is damaged, then build or download the repository again"


# ------------------------------------------------------------------------------------------------------------
# splits.json
# ------------------------------------------------------------------------------------------------------------


def read_splits(repo: Path) -> dict:
    """The repository's splits.json, checked for shape (configs -> splits -> counts, columns and shards, each with
    path, events, bytes and sha256; the rule and the top files' sha256); RepoError naming the file otherwise."""
    path = Path(repo) / SPLITS_FILE
    fix = "rebuild the repository (fm4npp-data build) or download it again"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RepoError(f"{path}: missing, so the shards cannot be checked; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise RepoError(f"{path}: not readable JSON ({exc}); {fix}") from exc
    problem = _splits_shape(data)
    if problem:
        raise RepoError(f"{path}: not a splits.json of fm4npp ({problem}); {fix}")
    return data


def _splits_shape(data) -> str | None:
    """What is wrong with the shape of a parsed splits.json, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key in ("rule", "files", "configs"):
        if not isinstance(data.get(key), dict):
            return f"no {key!r} object"
    if not all(isinstance(v, str) and _SHA256.match(v) for v in data["files"].values()):
        return "'files' must map names to sha256 digests"
    rule = data["rule"]
    for key in ("labeled_events", "labeled_key_max"):
        if key in rule and rule[key] is not None and not (_count(rule[key]) and rule[key] < 2**64):
            return f"rule.{key} is not a count"
    for config, splits in data["configs"].items():
        if not isinstance(splits, dict):
            return f"configs.{config} is not an object"
        for split, info in splits.items():
            problem = _split_shape(split, info)
            if problem:
                return f"configs.{config}.{split}: {problem}"
    return None


def _split_shape(split: str, info) -> str | None:
    if not isinstance(info, dict):
        return "not an object"
    for key in ("events", "spacepoints"):
        if not _count(info.get(key)):
            return f"{key!r} is not a count"
    if not (isinstance(info.get("ids_sha256"), str) and _SHA256.match(info["ids_sha256"])):
        return "'ids_sha256' is not a sha256 digest"
    if not (isinstance(info.get("columns"), list) and all(isinstance(c, str) for c in info["columns"])):
        return "'columns' is not a list of names"
    shards = info.get("shards")
    if not isinstance(shards, list):
        return "'shards' is not a list"
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            return f"shard {i} is not an object"
        name = shard.get("path")
        match = SHARD_NAME.match(name) if isinstance(name, str) else None
        if match is None or match["split"] != split:
            return f"shard {i}: path {name!r} is not {split}-NNNNN-of-MMMMM.parquet"
        if not (_count(shard.get("events")) and _count(shard.get("spacepoints")) and _count(shard.get("bytes"))):
            return f"shard {name}: 'events', 'spacepoints' and 'bytes' must be counts"
        if not (isinstance(shard.get("sha256"), str) and _SHA256.match(shard["sha256"])):
            return f"shard {name}: 'sha256' is not a sha256 digest"
    return None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ------------------------------------------------------------------------------------------------------------
# The shards of a split, checked
# ------------------------------------------------------------------------------------------------------------


def checked_shards(repo: Path, config: str, split: str) -> list[Path]:
    """REPO/data/{config}/{split}-NNNNN-of-MMMMM.parquet, all of them, each one's size and sha256 checked against
    splits.json (hashed once per unchanged file: the module docstring). RepoError (a DatasetError) naming the shard
    and `fm4npp-data verify` for a damaged shard, a shard splits.json does not list or a listed one that is missing;
    DatasetError for a config or split the repository does not have."""
    repo = Path(repo)
    splits = read_splits(repo)
    shards = repo_shards(repo, config, split)  # the names on disk: all M of them, or a message
    info = splits["configs"].get(config, {}).get(split)
    listed = {s["path"]: s for s in info["shards"]} if info is not None else {}
    for path in shards:
        if path.name not in listed:
            raise RepoError(f"{path}: a shard that {repo / SPLITS_FILE} does not list; {verify_hint(repo)}")
    missing = sorted(set(listed) - {p.name for p in shards})
    if missing:
        raise RepoError(
            f"{repo / 'data' / config / missing[0]}: listed in {SPLITS_FILE} but missing; {verify_hint(repo)}"
        )
    check_files([(p, listed[p.name]["bytes"], listed[p.name]["sha256"]) for p in shards], repo)
    return shards


def check_files(files: list[tuple[Path, int, str]], repo: Path) -> None:
    """Each (path, bytes, sha256) checked (hashed unless its stamp is current); RepoError naming the first file that
    differs. Hashing happens under a lock on the cache file, so that processes started together (the ranks of one
    training) hash a file once between them; the stamps of newly hashed files go to the cache file at the end."""
    todo = []
    for path, size, sha in files:
        key, stamp = _stamp(path)
        if stamp is None:
            raise RepoError(f"{path}: missing or unreadable; {verify_hint(repo)}")
        if stamp[0] != size:
            raise RepoError(
                f"{path}: its size differs from {SPLITS_FILE}'s ({stamp[0]} bytes, not {size}): the shard "
                f"is damaged or was changed; {verify_hint(repo)}"
            )
        if _verified.get(key) != [*stamp, sha]:
            todo.append((path, key, [*stamp, sha]))
    if not todo:
        return
    with _cache_lock():
        cache, new = _load_cache(), {}
        for path, key, stamp in todo:
            if cache.get(key) != stamp:
                started = time.time_ns()
                if sha256_file(path) != stamp[-1]:
                    raise RepoError(
                        f"{path}: its sha256 differs from {SPLITS_FILE}'s: the shard is damaged or was "
                        f"changed; {verify_hint(repo)}"
                    )
                if _stamp(path)[1] != stamp[:-1] or max(stamp[1], stamp[2]) >= started - RACY_SECONDS * 1e9:
                    continue  # changed while hashed, or too recently to trust its timestamps: no stamp
                new[key] = stamp
            _verified[key] = stamp
        if new:
            _save_cache(new)


@contextlib.contextmanager
def _cache_lock():
    """An exclusive lock (flock) beside the cache file while it is held; none when the cache folder is unusable or
    its filesystem has no flock (Lustre mounted without -o flock: ENOSYS)."""
    fd, path = None, cache_file()
    try:
        if path is not None:
            path = path.with_name(f".{CACHE_NAME}.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _stamp(path: Path) -> tuple[str, list | None]:
    """(resolved path, [size, mtime_ns, ctime_ns, inode, device]) of a file; None for a missing one."""
    try:
        key = str(Path(path).resolve())
        st = os.stat(key)
    except OSError:
        return str(path), None
    return key, [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def cache_file() -> Path | None:
    """$XDG_CACHE_HOME/fm4npp/verified-shards.json (XDG_CACHE_HOME defaults to ~/.cache); None (no cache file) when
    that is not an absolute path: a relative XDG_CACHE_HOME (ignored, as the XDG spec says) with no home folder known,
    so that nothing is written into the working folder (which may be the repository)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")  # "~/.cache" itself when no home folder is known
    return Path(base) / "fm4npp" / CACHE_NAME if os.path.isabs(base) else None


def _load_cache() -> dict:
    """The stamps of the cache file; empty when it is missing, unreadable or not ours."""
    path = cache_file()
    try:
        data = json.loads(path.read_bytes()) if path is not None else {}
        stamps = data["stamps"] if data.get("format") == CACHE_FORMAT else {}
    except (OSError, ValueError, AttributeError, KeyError, TypeError, RecursionError):
        return {}
    return {k: v for k, v in stamps.items() if isinstance(v, list) and len(v) == 6} if isinstance(stamps, dict) else {}


def _save_cache(new: dict) -> None:
    """Merge the stamps `new` into the cache file, atomically (and drop those of files that no longer exist)."""
    path = cache_file()
    if path is None:
        return
    merged = {k: v for k, v in {**_load_cache(), **new}.items() if os.path.exists(k)}
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"format": CACHE_FORMAT, "stamps": merged}))
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache directory: the stamps stay in memory, the files are hashed again
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------------
# Parquet pages
# ------------------------------------------------------------------------------------------------------------


def damaged(path, exc: Exception, what: str = "cannot be read as Parquet") -> str:
    """The message for a shard pyarrow cannot read (a page checksum that fails, a truncated file): the shard, the
    error, and what to do."""
    path = Path(path)
    repo = _repository_of(path)
    fix = verify_hint(repo) if repo is not None else "convert or prepare its set again (or download it again)"
    kind = "a page checksum fails: the file is damaged" if "CRC" in str(exc) else "the shard is damaged"
    return f"{path}: {what} ({exc}); {kind}: {fix}"


def is_repository(path: Path) -> bool:
    """Whether `path` is a dataset repository (fm4npp-data build): a folder with splits.json beside data/."""
    return (Path(path) / SPLITS_FILE).is_file() and (Path(path) / "data").is_dir()


def _repository_of(path: Path) -> Path | None:
    """REPO when `path` is REPO/data/{config}/{shard} of a repository."""
    repo = path.parent.parent.parent
    return repo if path.parent.parent.name == "data" and is_repository(repo) else None


__all__ = [
    "READ_OPTIONS",
    "WRITE_OPTIONS",
    "RepoError",
    "cache_file",
    "checked_shards",
    "damaged",
    "is_repository",
    "read_splits",
]
