"""Benchmark: `fm4npp-data convert` against the I/O floor of the same files, side by side in one run.

Floor: reading the branches the converter reads with `uproot` alone (`ntp_cluster` and `ntp_gtrack`, `tree.iterate`
with the converter's step size) plus writing the Parquet tables the converter produced with `pyarrow` alone
(`pq.write_table`, ZSTD, row groups of 1000 events). Conversion and floor run on the same simulated svtx-evaluator
files, 3 times each, interleaved, best time kept. Reported: events/s, spacepoints/s, MB/s of ROOT read and of
Parquet written, all on 1 process; the ratio floor time / conversion time (target >= 0.5; the script exits 1 below
it); and the peak RSS of a fresh process converting a small and a large file (memory must not grow with the file:
the converter streams in 64 MB steps). Run: `python benchmarks/bench_convert.py [--events N] [--large-events M]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import uproot

from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.dataset import EventSet
from fm4npp_data.simulation import simulate

#: The branches the svtx-evaluator layout reads (fm4npp_data/layouts/svtx_evaluator.py).
TRUTH = ["gtrackID", "gflavor", "gpx", "gpy", "gpz", "gvx", "gvy", "gvz", "gprimary"]
READ = {
    "ntp_cluster": ["event", "x", "y", "z", "adc", "layer", *TRUTH],
    "ntp_gtrack": ["event", *TRUTH, "gparentid"],
}
STEP_SIZE = ConvertOptions().step_size
ROW_GROUP = ConvertOptions().row_group_events
TARGET = 0.5
MB = 1e6

#: Run in a fresh interpreter: convert one file, print this process's peak RSS in KiB. Not `ru_maxrss`: on Linux a
#: child's RUSAGE_SELF, and the parent's RUSAGE_CHILDREN, start from the parent's RSS at fork (the kernel carries the
#: old address space's high-water mark across exec), so every child would read as large as this benchmark process.
#: VmHWM is the high-water mark of the child's own address space.
CHILD = """
import sys
from fm4npp_data.conversion.convert import ConvertOptions, convert
if sys.argv[1] != "-":
    summary = convert([sys.argv[1]], sys.argv[2], ConvertOptions(), workers=1)
    assert not summary.errors, summary.errors
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def timed(function, *args):
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def read_floor(files: list[Path]) -> int:
    """Read the converter's branches with uproot alone; returns the number of values read."""
    values = 0
    for path in files:
        with uproot.open(path) as file:
            for tree_name, branches in READ.items():
                for arrays in file[tree_name].iterate(branches, step_size=STEP_SIZE, library="np"):
                    values += sum(a.shape[0] for a in arrays.values())
    return values


def write_floor(tables: list, out: Path) -> int:
    """Write the given Arrow tables with pyarrow alone; returns the bytes written."""
    out.mkdir()
    for i, table in enumerate(tables):
        pq.write_table(table, out / f"{i}.parquet", compression="zstd", row_group_size=ROW_GROUP)
    return sum(f.stat().st_size for f in out.iterdir())


def peak_rss_mb(path: Path | str, out: Path) -> float:
    """Peak RSS in MB of a fresh process converting `path` into `out` ("-": only the imports)."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"peak-memory subprocess failed:\n{result.stderr}")
    return int(result.stdout.split()[-1]) * 1024 / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="events in the throughput file (default 5000)")
    parser.add_argument("--large-events", type=int, default=20000, help="events in the peak-memory file")
    parser.add_argument("--small-events", type=int, default=1000, help="events in the small peak-memory file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp_name:
        tmp = Path(tmp_name)
        # warm-up, not timed: imports, first use of pyarrow and uproot, Numba compilation of the simulation
        simulate(100, tmp / "warm", seed=1, events_per_file=100)
        convert(sorted((tmp / "warm").glob("*.root")), tmp / "warm-out", ConvertOptions())

        simulate(args.events, tmp / "sim", seed=2, events_per_file=args.events)
        files = sorted((tmp / "sim").glob("*.root"))
        root_bytes = sum(f.stat().st_size for f in files)

        # --repeats conversions and floors, interleaved; the best (smallest) time of each
        best = {"convert": (float("inf"), 0.0), "read": (float("inf"), 0.0), "write": (float("inf"), 0.0)}
        tables: list = []
        for r in range(args.repeats):
            out = tmp / f"convert-{r}"
            wall, cpu, summary = timed(convert, files, out, ConvertOptions(), 1)
            if summary.errors:
                sys.exit(f"conversion failed: {summary.errors}")
            best["convert"] = min(best["convert"], (wall, cpu))
            if r == 0:  # the converter's output, read back (not timed) for the write floor
                totals = summary.totals()
                written = EventSet.open(out).shard_paths
                written += [out / e.rejects for e in summary.converted if e.rejects]
                parquet_bytes = sum(p.stat().st_size for p in written)
                tables = [pq.read_table(p) for p in written]
            else:
                shutil.rmtree(out)
            wall, cpu, _ = timed(read_floor, files)
            best["read"] = min(best["read"], (wall, cpu))
            wall, cpu, floor_bytes = timed(write_floor, tables, tmp / f"floor-{r}")
            best["write"] = min(best["write"], (wall, cpu))
            shutil.rmtree(tmp / f"floor-{r}")
        del tables

        # peak memory of a fresh process: imports only, then one file each of the small, throughput and large sizes
        rss_imports = peak_rss_mb("-", tmp / "none")
        memory = []  # (events, MB of ROOT file, peak RSS MB)
        for name, events in (("small", args.small_events), ("sim", args.events), ("large", args.large_events)):
            if name != "sim":  # the throughput file is one file of --events events, already there
                simulate(events, tmp / name, seed=3, events_per_file=events)
            path = next((tmp / name).glob("*.root"))
            memory.append((events, path.stat().st_size / MB, peak_rss_mb(path, tmp / f"{name}-out")))
            if name != "sim":
                shutil.rmtree(tmp / name)

    n, spacepoints = totals.events, totals.spacepoints_out
    t_convert, cpu_convert = best["convert"]
    t_floor = best["read"][0] + best["write"][0]
    cpu_floor = best["read"][1] + best["write"][1]
    ratio = t_floor / t_convert

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, 1 process, best of {args.repeats}")
    print(f"input: {len(files)} svtx-evaluator file(s), {n} events, {root_bytes / MB:.1f} MB ROOT")
    print(
        f"output: {spacepoints} TPC spacepoints ({spacepoints / n:.0f} per event), {parquet_bytes / MB:.1f} MB Parquet"
    )
    print()
    header = (
        f"{'':28s} {'seconds':>8s} {'CPU/wall':>8s} {'events/s':>9s} {'sp/s':>10s} {'ROOT MB/s':>9s} {'PQ MB/s':>8s}"
    )
    print(header)
    rows = {
        "convert": (t_convert, cpu_convert),
        "floor: uproot read": best["read"],
        "floor: pyarrow write": best["write"],
        "floor: read + write": (t_floor, cpu_floor),
    }
    for name, (wall, cpu) in rows.items():
        print(
            f"{name:28s} {wall:8.3f} {cpu / wall:8.2f} {n / wall:9.0f} {spacepoints / wall:10.0f} "
            f"{root_bytes / MB / wall:9.1f} {parquet_bytes / MB / wall:8.1f}"
        )
    print(f"(the pyarrow-alone floor wrote {floor_bytes / MB:.1f} MB for the converter's {parquet_bytes / MB:.1f} MB)")
    print()
    print(f"peak RSS, fresh process: imports only {rss_imports:.0f} MB")
    for events, file_mb, rss in memory:
        print(f"  convert {events:6d} events ({file_mb:6.1f} MB ROOT): {rss:6.0f} MB")
    print()
    print(
        f"convert {n / t_convert:.0f} events/s, {root_bytes / MB / t_convert:.1f} MB/s ROOT in per core; "
        f"floor {n / t_floor:.0f} events/s; ratio floor/convert {ratio:.2f} (target >= {TARGET}); "
        f"peak RSS {memory[0][2]:.0f} MB ({memory[0][1]:.0f} MB file) to {memory[-1][2]:.0f} MB "
        f"({memory[-1][1]:.0f} MB file)"
    )
    if ratio < TARGET:
        print(f"FAIL: conversion runs at {ratio:.2f} of the I/O floor, below the target {TARGET}")
        sys.exit(1)


if __name__ == "__main__":
    main()
