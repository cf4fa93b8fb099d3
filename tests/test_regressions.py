"""Regression tests of defects found in the data half; each failed on the code before its fix."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.convert import ConvertOptions, convert, duplicate_owners
from fm4npp_data.dataset import Manifest, find_sets, read_events
from fm4npp_data.describe import describe
from fm4npp_data.layouts.base import tree_or_none
from fm4npp_data.prepare import PrepareOptions, prepare
from fm4npp_data.simulation import simulate

FLAT_TOML = '[tree]\nname = "hits"\nkind = "flat"\nevent = "evt"\nrun = "run"\n[columns]\nx = "x"\ny = "y"\nz = "z"\n'


def _flat_file(path, run, n_events=5, seed=0):
    """A flat one-row-per-spacepoint tree with a run branch: events 0..n_events-1, 4 spacepoints each."""
    rng = np.random.default_rng(seed)
    evt = np.repeat(np.arange(n_events, dtype=np.int64), 4)
    n = evt.shape[0]
    cols = {"run": np.full(n, run, np.int32), "evt": evt, "x": rng.normal(0, 50, n), "y": rng.normal(0, 50, n),
            "z": rng.normal(0, 50, n)}  # fmt: skip
    with uproot.recreate(path) as f:
        f.mktree("hits", {k: v.dtype for k, v in cols.items()})
        f["hits"].extend(cols)


# 1. (run << 40) | event overflowed int64 for 31-bit runs: runs differing by a multiple of 2**24 collided


def test_runs_that_differ_by_a_multiple_of_2_to_the_24_are_distinct_events(tmp_path):
    toml = tmp_path / "flat.toml"
    toml.write_text(FLAT_TOML)
    run = 5 + (1 << 30)  # a 31-bit run, as svtx-evaluator files get from their sha256
    _flat_file(tmp_path / "a.root", run, seed=1)
    _flat_file(tmp_path / "b.root", run + (1 << 24), seed=2)
    summary = convert([tmp_path / "a.root", tmp_path / "b.root"], tmp_path / "out", ConvertOptions(layout=str(toml)))
    assert summary.errors == []
    assert len(summary.converted) == 2
    events = read_events(tmp_path / "out", columns=["run", "event"])
    assert sorted(set(events["run"].to_pylist())) == [run, run + (1 << 24)]
    assert events.num_rows == 10


def test_duplicate_owners_compares_exact_pairs_and_names_the_true_run():
    big = np.int32(2**31 - 1)
    keys = [
        (np.array([big, 7], np.int32), np.array([2**40 + 3, 1], np.int64)),
        (np.array([big - (1 << 24), big], np.int32), np.array([2**40 + 3, 2**40 + 3], np.int64)),
    ]
    assert duplicate_owners(keys) == {1: (0, int(big), 2**40 + 3, 1)}


# 2. a dataset below a hidden folder was invisible to inspect and prepare


def test_a_dataset_below_a_hidden_folder_is_found(sim_svtx, tmp_path):
    out = tmp_path / ".cache" / "fm4npp" / "events"
    convert([sorted(sim_svtx.glob("*.root"))[0]], out)
    assert find_sets(out.parent) == [out]
    assert describe(out.parent).sections["events"]["events"] == 120
    summary = prepare(out.parent, PrepareOptions(k=2, sample_events=20))
    assert summary.errors == []
    assert summary.events == 120
    assert Manifest.load(out).prepare["k"] == 2
    (out / ".stage").mkdir()
    shutil.copy(out / "manifest.json", out / ".stage" / "manifest.json")  # hidden inside: not a set
    assert find_sets(out.parent) == [out]


# 3. a binning file with just the documented keys crashed with KeyError('sample_events') after rewriting shards


def test_a_binning_file_with_only_the_documented_keys_works(sim_svtx, tmp_path):
    out = tmp_path / "events"
    convert([sorted(sim_svtx.glob("*.root"))[0]], out)
    binning = tmp_path / "mine.json"
    edges = {"r": [30.0, 36.0, 40.7, 49.0, 57.9, 67.0, 76.0], "phi": np.linspace(-np.pi, np.pi, 9).tolist(),
             "eta": np.linspace(-1.2, 1.2, 9).tolist()}  # fmt: skip
    binning.write_text(json.dumps(edges))
    result = CliRunner().invoke(main, ["prepare", str(out), "--binning", str(binning), "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "given;" in result.output
    assert json.loads((out / "binning.json").read_text()) == edges
    assert Manifest.load(out).prepare is not None


# 4. a small set exited 2 after rewriting every shard, and "prepared" was set even when shards failed


def test_a_dozen_events_prepare_with_fewer_difficulty_bins(tmp_path):
    sim = tmp_path / "sim"
    simulate(12, sim, seed=3, events_per_file=12)
    convert([sim], tmp_path / "events")
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "events"), "--difficulty-bins", "20"])
    assert result.exit_code == 0, result.output
    difficulty = json.loads((tmp_path / "events" / "difficulty.json").read_text())
    assert difficulty["bins_requested"] == 20
    assert 1 <= len(difficulty["weights"]) <= 12
    assert sum(difficulty["events"]) + difficulty["without_neighbours"] == difficulty["training_events"] > 0
    assert "fewer than the 20 asked" in result.output
    assert Manifest.load(tmp_path / "events").prepare is not None


def test_prepared_means_every_shard_is(sim_svtx, tmp_path):
    out = tmp_path / "events"
    convert([sim_svtx], out, ConvertOptions(shard_events=50))
    shards = sorted(out.glob("*.parquet"))
    shards[1].write_bytes(b"not parquet at all")
    result = CliRunner().invoke(main, ["prepare", str(out), "--k", "2"])  # fitting the binning reads every shard
    assert result.exit_code == 2
    assert f"{shards[1]}: cannot be read as Parquet" in result.output
    assert all(pq.read_schema(s).names[-1] != "knn_mean_distance" for s in (shards[0], shards[2]))  # nothing written
    binning = tmp_path / "binning.json"
    binning.write_text(json.dumps({"r": [30.0, 36.0, 40.7, 49.0, 57.9, 67.0, 76.0],
                                   "phi": np.linspace(-np.pi, np.pi, 9).tolist(),
                                   "eta": np.linspace(-1.2, 1.2, 9).tolist()}))  # fmt: skip
    result = CliRunner().invoke(main, ["prepare", str(out), "--k", "2", "--binning", str(binning)])
    assert result.exit_code == 2
    assert f"{shards[1]}: cannot read the shard" in result.output
    assert "Traceback" not in result.output
    manifest = Manifest.load(out)
    assert manifest.prepare is None  # one shard failed: the set is not prepared
    assert not (out / "difficulty.json").exists()
    prepared = {s.path: s.sha256 for s in manifest.shards}
    from fm4npp_data.files import sha256_file

    assert prepared[shards[0].name] == sha256_file(shards[0])  # the good shards' new checksums are recorded


# 5. a killed run's partial file in rejects/ made the next run fail with "is not empty"


def test_leftovers_of_a_killed_run_anywhere_in_the_output_are_cleared(sim_svtx, tmp_path):
    out = tmp_path / "events"
    (out / "rejects").mkdir(parents=True)
    (out / "rejects" / ".fm4npp_sim_00000-1234abcd.parquet.partial").write_bytes(b"half")
    (out / ".fm4npp_sim_00000-1234abcd-00000.parquet.partial").write_bytes(b"half")
    summary = convert([sorted(sim_svtx.glob("*.root"))[0]], out)
    assert summary.errors == []
    assert len(summary.cleared) == 2
    assert not [p for p in out.rglob(".*")]
    # a killed prepare leaves a partial shard beside the set: cleared too
    (out / ".x-00000.parquet.partial").write_bytes(b"half")
    assert prepare(out, PrepareOptions(k=2)).cleared == [out / ".x-00000.parquet.partial"]


def test_a_set_that_kept_its_rejects_but_lost_its_manifest_entry_is_cleaned_on_resume(sim_svtx, tmp_path):
    files = sorted(sim_svtx.glob("*.root"))
    out = tmp_path / "events"
    convert(files[:1], out)
    (out / "rejects").mkdir(exist_ok=True)
    orphan = out / "rejects" / "other-deadbeef.parquet"  # committed by a run killed before its manifest
    orphan.write_bytes(b"x")
    summary = convert(files, out, resume=True)
    assert summary.errors == []
    assert orphan in summary.cleared
    assert not orphan.exists()


# also: simulate --layout trkr-ntuplizer always wrote run 1


def test_truthless_simulations_with_other_seeds_get_other_runs_and_convert_together(tmp_path):
    simulate(10, tmp_path / "a", seed=11, events_per_file=10, layout="trkr-ntuplizer")
    simulate(10, tmp_path / "b", seed=12, events_per_file=10, layout="trkr-ntuplizer")
    summary = convert([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert summary.errors == []
    assert len(summary.converted) == 2
    runs = read_events(tmp_path / "out", columns=["run"])["run"].to_pylist()
    assert sorted(set(runs)) == [12, 13]


# also: a blind `except` turned a damaged tree into "missing"


class _DamagedFile:
    """An open file whose key exists but whose object cannot be read."""

    def get(self, name, default=None):  # noqa: ARG002 - the signature of uproot's ReadOnlyDirectory.get
        raise uproot.deserialization.DeserializationError(f"bad bytes in {name}", None, None, None, "file.root")


def test_a_damaged_tree_is_not_reported_as_missing():
    with pytest.raises(uproot.deserialization.DeserializationError):
        tree_or_none(_DamagedFile(), "ntp_cluster")


# also: the first run's Numba compilation was folded into the rate


def test_compilation_is_reported_apart_from_the_rate(sim_svtx, tmp_path):
    out = tmp_path / "events"
    convert([sorted(sim_svtx.glob("*.root"))[0]], out)
    result = CliRunner().invoke(main, ["prepare", str(out), "--k", "2"])
    assert result.exit_code == 0, result.output
    assert "compilation" in result.output
    assert "Numba" in result.output
    summary = prepare(out, PrepareOptions(k=3))
    assert summary.compile_seconds > 0
    assert summary.rate == pytest.approx(summary.events / (summary.seconds - summary.compile_seconds))
    assert pq.read_schema(sorted(out.glob("*.parquet"))[0]).field("knn").type.value_type.list_size == 3
