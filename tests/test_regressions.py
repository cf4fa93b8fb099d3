"""Regression tests of defects found in the data half; each failed on the code before its fix."""

import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.convert import ConvertOptions, convert, duplicate_owners
from fm4npp_data.dataset import Manifest, find_sets, read_events
from fm4npp_data.description import describe
from fm4npp_data.errors import DatasetError
from fm4npp_data.layouts.base import tree_or_none
from fm4npp_data.preparation.prepare import PrepareOptions, prepare
from fm4npp_data.simulation import simulate

FLAT_TOML = '[tree]\nname = "hits"\nkind = "flat"\nevent = "evt"\nrun = "run"\n[columns]\nx = "x"\ny = "y"\nz = "z"\n'


def _flat_file(path, run, n_events=5, seed=0):
    """A flat one-row-per-spacepoint tree with a run branch: events 0..n_events-1, 4 spacepoints each."""
    rng = np.random.default_rng(seed)
    evt = np.repeat(np.arange(n_events, dtype=np.int64), 4)
    n = evt.shape[0]
    cols = {
        "run": np.full(n, run, np.int32),
        "evt": evt,
        "x": rng.normal(0, 50, n),
        "y": rng.normal(0, 50, n),
        "z": rng.normal(0, 50, n),
    }
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
    edges = {
        "r": [30.0, 36.0, 40.7, 49.0, 57.9, 67.0, 76.0],
        "phi": np.linspace(-np.pi, np.pi, 9).tolist(),
        "eta": np.linspace(-1.2, 1.2, 9).tolist(),
    }
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
    binning.write_text(
        json.dumps(
            {
                "r": [30.0, 36.0, 40.7, 49.0, 57.9, 67.0, 76.0],
                "phi": np.linspace(-np.pi, np.pi, 9).tolist(),
                "eta": np.linspace(-1.2, 1.2, 9).tolist(),
            }
        )
    )
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
    compiled = re.search(r"compilation\s*│\s*([\d.]+) s \(Numba", result.output)
    timed = re.search(r"time\s*│\s*([\d.]+) s \((\d+) events/s", result.output)
    assert compiled is not None, result.output
    assert timed is not None, result.output
    # the rate printed is that of the time printed, which excludes the compilation
    shown = float(timed[1])  # rounded to 0.1 s
    assert 120 / (shown + 0.05) - 1 <= int(timed[2]) <= 120 / max(shown - 0.05, 1e-3) + 1
    summary = prepare(out, PrepareOptions(k=3))
    assert summary.compile_seconds > 0
    assert pq.read_schema(sorted(out.glob("*.parquet"))[0]).field("knn").type.value_type.list_size == 3


# found in review


def test_a_folder_of_user_files_is_refused_before_anything_is_touched(sim_svtx, tmp_path):
    out = tmp_path / "mine"
    (out / "rejects").mkdir(parents=True)
    user_files = [out / "notes.txt", out / "mydata-deadbeef-00001.parquet", out / "rejects" / "mine.parquet"]
    for f in user_files:
        f.write_text("mine")
    result = CliRunner().invoke(main, ["convert", str(sorted(sim_svtx.glob("*.root"))[0]), "--out", str(out)])
    assert result.exit_code == 2
    assert "is not empty and holds no conversion" in result.output
    assert all(f.read_text() == "mine" for f in user_files)


def test_a_prepare_killed_after_renaming_a_shard_is_recorded_by_the_next_run(sim_svtx, tmp_path):
    out = tmp_path / "events"
    convert([sim_svtx], out, ConvertOptions(shard_events=50))
    first = sorted(out.glob("*.parquet"))[0]
    binning = prepare(out, PrepareOptions(k=2)).binning  # then "kill": put back the manifest of before
    from fm4npp_data.preparation.prepare import prepare_shard

    for shard in out.glob("*.parquet"):
        shard.unlink()
    convert([sim_svtx], tmp_path / "again", ConvertOptions(shard_events=50))
    for shard in (tmp_path / "again").glob("*.parquet"):
        shutil.copy(shard, out / shard.name)
    shutil.copy(tmp_path / "again" / "manifest.json", out / "manifest.json")
    prepare_shard(str(first), {k: binning[k] for k in ("r", "phi", "eta")}, 2, "hierarchical")  # renamed, unrecorded
    assert Manifest.load(out).problems(out) != []
    summary = prepare(out, PrepareOptions(k=2))
    assert str(first) in summary.unchanged
    assert Manifest.load(out).problems(out, checksums=True) == []


def test_the_same_content_under_two_names_is_converted_once_and_leaves_no_orphan(sim_svtx, tmp_path):
    src = sorted(sim_svtx.glob("*.root"))[0]
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    shutil.copy(src, tmp_path / "d1" / "a.root")
    shutil.copy(src, tmp_path / "d2" / "a.root")
    shutil.copy(src, tmp_path / "copy.root")
    files = [tmp_path / "d1" / "a.root", tmp_path / "d2" / "a.root", tmp_path / "copy.root"]
    summary = convert(files, tmp_path / "out", ConvertOptions(shard_events=40), workers=2)
    assert len(summary.converted) == 1
    assert len(summary.errors) == 2
    assert all("same content" in e for e in summary.errors)
    assert Manifest.load(tmp_path / "out").problems(tmp_path / "out", checksums=True) == []


def test_resume_keeps_the_inputs_of_the_set_before_a_new_input_with_the_same_events(tmp_path):
    simulate(12, tmp_path / "a", seed=5, events_per_file=12, layout="trkr-ntuplizer")
    simulate(6, tmp_path / "b", seed=5, events_per_file=6, layout="trkr-ntuplizer")  # run 6 too, events 0..5
    a, b = next((tmp_path / "a").glob("*.root")), next((tmp_path / "b").glob("*.root"))
    convert([a], tmp_path / "out")
    summary = convert([b, a], tmp_path / "out", resume=True)
    assert [e.path for e in summary.skipped] == [str(a)]
    assert len(summary.errors) == 1
    assert summary.errors[0].startswith(f"{b}: ")
    assert [e.path for e in Manifest.load(tmp_path / "out").inputs] == [str(a)]


def test_resume_replaces_an_input_whose_content_changed_and_reports_lost_shards(sim_svtx, tmp_path):
    files = sorted(sim_svtx.glob("*.root"))
    (tmp_path / "in").mkdir()
    shutil.copy(files[0], tmp_path / "in" / "a.root")
    convert([tmp_path / "in"], tmp_path / "out")
    shutil.copy(files[1], tmp_path / "in" / "a.root")  # the same name, other events
    summary = convert([tmp_path / "in"], tmp_path / "out", resume=True)
    assert summary.replaced == [str(tmp_path / "in" / "a.root")]
    manifest = Manifest.load(tmp_path / "out")
    assert len(manifest.inputs) == 1
    assert manifest.totals.events == summary.in_set.events == 120
    assert manifest.problems(tmp_path / "out") == []
    next((tmp_path / "out").glob("*.parquet")).unlink()
    lost = convert([files[0]], tmp_path / "out", resume=True)
    assert any("some of its shards are missing" in e and "removed from the set" in e for e in lost.errors)
    assert Manifest.load(tmp_path / "out").problems(tmp_path / "out") == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(totals=5),
        lambda m: m["totals"].update(events="12"),
        lambda m: m["shards"][0].update(path="../../etc/passwd"),
        lambda m: m["inputs"][0].update(rejects="/etc/passwd"),
    ],
)
def test_a_manifest_with_wrong_types_or_paths_outside_the_set_is_refused(sim_svtx, tmp_path, edit):
    out = tmp_path / "events"
    convert([sorted(sim_svtx.glob("*.root"))[0]], out)
    data = json.loads((out / "manifest.json").read_text())
    edit(data)
    (out / "manifest.json").write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 2
    assert "damaged manifest" in result.output


def test_unwritable_outputs_are_messages_naming_the_path(sim_svtx, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["convert", str(sim_svtx), "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    assert str(blocker / "sub") in result.output
    assert isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(main, ["convert", str(sim_svtx), "--out", str(tmp_path / "o"), "--step-size", "lots"])
    assert result.exit_code == 2
    assert "--step-size must be a size" in result.output
    assert not (tmp_path / "o").exists()


def test_read_events_of_a_truthless_set_with_truth_columns_gives_nulls(sim_trkr, tmp_path):
    convert([sim_trkr], tmp_path / "events")
    table = read_events(tmp_path / "events", columns=["event", "pid"])
    assert table.num_rows == read_events(tmp_path / "events", columns=["event"]).num_rows > 0
    assert table["pid"].null_count == table.num_rows
    with pytest.raises(DatasetError, match="has no column 'knn'"):
        read_events(tmp_path / "events", columns=["knn"])


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(sim_svtx, tmp_path):
    out = tmp_path / "events"
    out.mkdir()
    from fm4npp_data.files import LOCK

    (out / LOCK).write_text("some-other-host 1\n")
    result = CliRunner().invoke(main, ["convert", str(sim_svtx), "--out", str(out)])
    assert result.exit_code == 2
    assert "another fm4npp run (some-other-host 1" in result.output
    (out / LOCK).write_text(f"{__import__('socket').gethostname()} 999999999\n")  # a dead process of this host
    assert convert([sim_svtx], out).errors == []
    assert not (out / LOCK).exists()
