"""The published FM4NPP data release (TPCpp-10M, Zenodo 10.5281/zenodo.16970029): NumPy `.npz` files in one zip.

A *part* is a folder of the release holding `spacepoints*.npz` (`data`: float32 N x 4 = E, x, y, z in cm; `size`:
spacepoints per event, whose cumulative sum gives the event boundaries, concatenated in shard order); the labeled
parts `labeled/{train,validation,test}/` also hold, shard by shard, `track_ids*.npz` (uint16), `pid_labels*.npz`
(uint8 class indices, 0 other, 1 pion, 2 kaon, 3 proton, 4 electron) and `noise_tags*.npz` (bool), each under the
key `data`. Train is sharded as `<stem>_000.npz`, `<stem>_001.npz`, ...

Everything is read straight out of the zip, streaming: a stored (uncompressed) zip member is read in place through
a window on the archive file, and each `.npy` array inside an `.npz` is read in slices of events after its header,
so memory stays bounded by one slice whatever the size of the archive (118 GB).
"""

from __future__ import annotations

import io
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ReleaseError
from .base import Chunk, Layout

#: The release as a layout (read by `part_chunks`, not from ROOT): labels per spacepoint, no particle lists.
LAYOUT = Layout(name="tpcpp-10m", truth="labels", energy_units="ADC (TPCpp-10M release E)")
LABELS = {"track": "track_ids", "pid": "pid_labels", "noise": "noise_tags"}
#: Run numbers of the release's parts (the release has none); other parts get a CRC32 of their path.
PART_RUNS = {"labeled/train": 1, "labeled/validation": 2, "labeled/test": 3}
_SHARD_RE = re.compile(r"^spacepoints(?P<suffix>.*)\.npz$")


class _Window(io.RawIOBase):
    """A read-only, seekable view of bytes [start, start + size) of an open file."""

    def __init__(self, file, start: int, size: int) -> None:
        self.file, self.start, self.size, self.pos = file, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        if n == 0:
            return 0
        self.file.seek(self.start + self.pos)
        got = self.file.readinto(memoryview(buffer)[:n])
        self.pos += got
        return got


class Source:
    """A release as a zip archive or an extracted folder: list members, open one as a seekable binary file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.zip = None
            self.names = sorted(str(p.relative_to(self.path).as_posix()) for p in self.path.rglob("*.npz"))
        elif self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ReleaseError(f"{self.path}: not a readable zip archive ({exc})") from exc
            self.raw = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            self.names = sorted(i.filename for i in self.zip.infolist() if i.filename.endswith(".npz"))
        else:
            raise ReleaseError(f"{self.path}: no such file or directory")

    def open(self, name: str):
        if self.zip is None:
            return open(self.path / name, "rb")
        info = self.zip.getinfo(name)
        if info.compress_type == zipfile.ZIP_STORED:
            self.raw.seek(info.header_offset)
            header = self.raw.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ReleaseError(f"{self.path}: member {name}: bad local header; the archive is damaged")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            return _Window(self.raw, info.header_offset + 30 + name_len + extra_len, info.file_size)
        return self.zip.open(name)

    def identity(self, name: str) -> dict:
        """A member's size, and its CRC32 when it is in a zip (from the zip directory: free)."""
        if self.zip is None:
            return {"bytes": (self.path / name).stat().st_size}
        info = self.zip.getinfo(name)
        return {"bytes": info.file_size, "crc32": f"{info.CRC:08x}"}

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
            self.raw.close()


@dataclass
class Part:
    """One folder of the release: its spacepoint shards in order, and the label files of each shard."""

    name: str  # e.g. "labeled/train"
    shards: list[str] = field(default_factory=list)  # spacepoints members
    labels: list[dict[str, str]] = field(default_factory=list)  # per shard: our label -> member

    @property
    def run(self) -> int:
        return PART_RUNS.get(self.name, zlib.crc32(self.name.encode()) & 0x7FFFFFFF)

    @property
    def labeled(self) -> bool:
        return bool(self.labels) and all(len(lab) == len(LABELS) for lab in self.labels)

    @property
    def split(self) -> str:
        return PurePosixPath(self.name).name


def find_parts(source: Source) -> list[Part]:
    """The parts of a release: folders with spacepoints shards; a shard's labels must be all there or all absent."""
    parts: dict[str, Part] = {}
    names = set(source.names)
    for member in source.names:
        p = PurePosixPath(member)
        m = _SHARD_RE.match(p.name)
        if not m:
            continue
        folder = str(p.parent) if str(p.parent) != "." else ""
        part = parts.setdefault(folder, Part(folder))
        part.shards.append(member)
        labels = {}
        for ours, stem in LABELS.items():
            candidate = str(p.parent / f"{stem}{m['suffix']}.npz") if folder else f"{stem}{m['suffix']}.npz"
            if candidate in names:
                labels[ours] = candidate
        part.labels.append(labels)
    if not parts:
        raise ReleaseError(f"{source.path}: no spacepoints*.npz found; is this the TPCpp-10M release?")
    for part in parts.values():
        present = {len(lab) for lab in part.labels}
        if present not in ({0}, {len(LABELS)}):
            raise ReleaseError(
                f"{source.path}: part {part.name or '.'}: some shards have labels and others do not, or a shard lacks "
                f"one of {', '.join(f'{s}*.npz' for s in LABELS.values())}"
            )
        if not part.labeled:
            part.labels = []
    return [parts[k] for k in sorted(parts)]


class NpyStream:
    """One array of an .npz member, read in row slices after its header (C order), never whole."""

    def __init__(self, source: Source, member: str, key: str) -> None:
        self.where = f"{source.path}: {member}: array {key!r}"
        try:
            self.outer = source.open(member)
            self.npz = zipfile.ZipFile(self.outer)
            self.file = self.npz.open(f"{key}.npy")
            version = np.lib.format.read_magic(self.file)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(self.file)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(self.file)
        except KeyError as exc:
            raise ReleaseError(f"{self.where}: missing (the member has no {key}.npy)") from exc
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
            raise ReleaseError(
                f"{self.where}: unreadable ({type(exc).__name__}: {exc}); the archive may be damaged"
            ) from exc
        if fortran and len(shape) > 1:
            raise ReleaseError(f"{self.where}: Fortran-ordered arrays are not supported")
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.row_items = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        self.read_rows = 0

    def read(self, rows: int) -> np.ndarray:
        want = rows * self.row_items * self.dtype.itemsize
        try:
            buffer = self.file.read(want)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise ReleaseError(
                f"{self.where}: unreadable ({type(exc).__name__}: {exc}); the archive may be damaged"
            ) from exc
        if len(buffer) != want:
            got = self.read_rows + len(buffer) // (self.dtype.itemsize * self.row_items)
            raise ReleaseError(f"{self.where}: ends after {got} rows of {self.shape[0]}; truncated")
        self.read_rows += rows
        out = np.frombuffer(buffer, self.dtype)
        return out.reshape(rows, *self.shape[1:]) if len(self.shape) > 1 else out

    def close(self) -> None:
        self.file.close()
        self.npz.close()
        self.outer.close()


def read_whole(source: Source, member: str, key: str) -> np.ndarray:
    stream = NpyStream(source, member, key)
    try:
        return stream.read(stream.shape[0])
    finally:
        stream.close()


def part_chunks(source: Source, part: Part, events_per_chunk: int = 20_000) -> Iterator[tuple[str, Chunk]]:
    """(member, Chunk) for the events of a part, in the release's order; event numbers count across its shards."""
    first_event = 0
    for i, member in enumerate(part.shards):
        size = read_whole(source, member, "size").astype(np.int64)
        data = NpyStream(source, member, "data")
        streams = {
            ours: NpyStream(source, name, "data") for ours, name in (part.labels[i].items() if part.labels else ())
        }
        try:
            if data.shape[0] != int(size.sum()) or len(data.shape) != 2 or data.shape[1] != 4:
                raise ReleaseError(
                    f"{source.path}: {member}: data has shape {data.shape} but size sums to {int(size.sum())} x 4"
                )
            for ours, stream in streams.items():
                if stream.shape[0] != data.shape[0]:
                    raise ReleaseError(
                        f"{source.path}: {part.labels[i][ours]}: "
                        f"{stream.shape[0]} labels for {data.shape[0]} spacepoints"
                    )
            for start in range(0, size.shape[0], events_per_chunk):
                counts = size[start : start + events_per_chunk]
                rows = int(counts.sum())
                block = data.read(rows)
                hits = {
                    "energy": block[:, 0].astype(np.float32),
                    "x": block[:, 1].astype(np.float32),
                    "y": block[:, 2].astype(np.float32),
                    "z": block[:, 3].astype(np.float32),
                    "layer": np.full(rows, -1, np.int16),
                }
                if streams:
                    hits["track"] = streams["track"].read(rows).astype(np.float64)
                    hits["pid"] = streams["pid"].read(rows).astype(np.int8)
                    hits["noise"] = streams["noise"].read(rows).astype(bool)
                    if (hits["pid"] > 4).any():
                        raise ReleaseError(f"{source.path}: {part.labels[i]['pid']}: a PID class above 4")
                n = counts.shape[0]
                event = np.arange(first_event + start, first_event + start + n, dtype=np.int64)
                chunk = Chunk(
                    run=np.full(n, part.run, np.int32),
                    event=event,
                    offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                    hits=hits,
                )
                yield member, chunk
        finally:
            data.close()
            for stream in streams.values():
                stream.close()
        first_event += size.shape[0]
