"""Benchmark: what checking a repository's shards when they are read costs (fm4npp_data.integrity).

One shard of about `--mb` MB (random spacepoint lists, zstd, page checksums, as `build` writes them) in a repository
layout with its splits.json. Times, best of 3, the file in the page cache:
1. the baseline: pyarrow reading the whole shard (`pq.read_table`), and the same with page checksums verified;
2. `checked_shards` cold (no stamp: the sha256 of the whole file), and warm: a new process (the stamp from the cache
   file) and the same process (the stamp in memory).

Run: `python benchmarks/bench_integrity.py [--mb 256]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from timing import best_of

from fm4npp_data import integrity
from fm4npp_data.files import sha256_file
from fm4npp_data.integrity import READ_OPTIONS, WRITE_OPTIONS, checked_shards

SPLIT = "test-00000-of-00001.parquet"


def write_repo(root: Path, mb: int) -> Path:
    """A repository with one labeled test shard of about `mb` MB (float32 lists, 400 spacepoints per event)."""
    rng = np.random.default_rng(0)
    events = max(1, mb * 1_000_000 // (400 * 4 * 5))
    offsets = pa.array(np.arange(events + 1, dtype=np.int32) * 400)
    columns = {"run": pa.array(np.zeros(events, np.int32)), "event": pa.array(np.arange(events, dtype=np.int64))}
    for name in ("x", "y", "z", "energy", "r"):
        columns[name] = pa.ListArray.from_arrays(offsets, pa.array(rng.normal(0, 50, events * 400).astype(np.float32)))
    path = root / "data" / "labeled" / SPLIT
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table(columns), path, compression="zstd", row_group_size=1_000, **WRITE_OPTIONS)
    shard = {
        "path": SPLIT,
        "events": events,
        "spacepoints": events * 400,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    info = {
        "events": events,
        "spacepoints": events * 400,
        "ids_sha256": "0" * 64,
        "columns": list(columns),
        "shards": [shard],
    }
    (root / "splits.json").write_text(json.dumps({"rule": {}, "files": {}, "configs": {"labeled": {"test": info}}}))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
        repo = tmp / "repo"
        path = write_repo(repo, args.mb)
        size = path.stat().st_size / 1e6
        time.sleep(integrity.RACY_SECONDS + 0.1)  # older than the racy window: the stamp is kept
        pq.read_table(path)  # the page cache

        t_read, _ = best_of(3, lambda: pq.read_table(path))
        t_crc, _ = best_of(3, lambda: pq.read_table(path, **READ_OPTIONS))

        def cold():
            integrity._verified.clear()
            integrity.cache_file().unlink(missing_ok=True)
            return checked_shards(repo, "labeled", "test")

        def new_process():
            integrity._verified.clear()
            return checked_shards(repo, "labeled", "test")

        t_cold, _ = best_of(3, cold)
        assert integrity.cache_file().is_file()
        t_file, _ = best_of(3, new_process)
        t_memory, _ = best_of(3, lambda: checked_shards(repo, "labeled", "test"))

    print(f"integrity: one shard of {size:.0f} MB, {os.cpu_count()} cores, file in the page cache, best of 3")
    print(
        f"  pyarrow read_table: {t_read * 1e3:,.0f} ms ({size / t_read:,.0f} MB/s); with page checksums "
        f"verified {t_crc * 1e3:,.0f} ms ({size / t_crc:,.0f} MB/s, {t_crc / t_read:.2f}x)"
    )
    print(
        f"  checked_shards cold (sha256): {t_cold * 1e3:,.0f} ms ({size / t_cold:,.0f} MB/s, "
        f"{t_cold / t_read:.2f}x the read)"
    )
    print(f"  checked_shards warm: stamp from the cache file {t_file * 1e3:.2f} ms, in memory {t_memory * 1e3:.2f} ms")
    print(
        f"SUMMARY integrity: cold sha256 {size / t_cold:,.0f} MB/s = {t_cold / t_read:.2f}x a pyarrow read of the "
        f"shard ({size / t_read:,.0f} MB/s); warm {t_file * 1e3:.2f} ms (cache file) / {t_memory * 1e3:.2f} ms "
        f"(memory) per shard; page checksum verification {t_crc / t_read:.2f}x the read"
    )
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - start:.0f} s)")
    sys.exit(code)
