"""`fm4npp-data convert`: round trips from every layout, labels recomputed independently, resume, parallel, Dask."""

import json
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.dataset import read_events as read_table
from fm4npp_data.errors import ConvertError

TPC_FIRST, TPC_LAST = 7, 54  # sPHENIX numbering of the TPC layers, written out here on purpose
PDG_TO_CLASS = {211: 1, -211: 1, 321: 2, -321: 2, 2212: 3, -2212: 3, 11: 4, -11: 4}


def read_events(out):
    """The manifest of a conversion as written (JSON), and its events as Python lists, in manifest order."""
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, read_table(out).to_pydict()


def test_svtx_round_trip_every_spacepoint_and_particle_once_with_labels_recomputed(sim_svtx, tmp_path):
    out = tmp_path / "pq"
    summary = convert([sim_svtx], out, ConvertOptions(shard_events=70, row_group_events=25, step_size=2000))
    assert summary.errors == []
    manifest, events = read_events(out)
    files = sorted(sim_svtx.glob("*.root"))
    assert [e["name"] for e in manifest["inputs"]] == [f.name for f in files]
    n_shards = [sum(s["input"] == e["sha256"] for s in manifest["shards"]) for e in manifest["inputs"]]
    assert n_shards == [2, 2]  # 120 events -> 70 + 50
    assert all("shards" not in e for e in manifest["inputs"])  # each shard's sha256 is recorded once
    for entry, path in zip(manifest["inputs"], files, strict=True):
        with uproot.open(path) as f:
            c = f["ntp_cluster"].arrays(library="np")
            p = f["ntp_gtrack"].arrays(library="np")
        run = entry["default_run"]
        rows = [i for i, r in enumerate(events["run"]) if r == run]
        tpc = (c["layer"] >= TPC_FIRST) & (c["layer"] <= TPC_LAST)
        assert entry["counts"]["spacepoints_in"] == tpc.sum() == sum(len(events["x"][i]) for i in rows)
        assert entry["counts"]["skipped_other_layers"] == (~tpc).sum()
        assert sorted(events["event"][i] for i in rows) == sorted(
            set(c["event"].astype(int)) | set(p["event"].astype(int))
        )
        for i in rows:
            ev = events["event"][i]
            sel = tpc & (c["event"] == ev)
            np.testing.assert_array_equal(np.array(events["x"][i], np.float32), c["x"][sel])
            np.testing.assert_array_equal(np.array(events["z"][i], np.float32), c["z"][sel])
            np.testing.assert_array_equal(np.array(events["energy"][i], np.float32), c["adc"][sel])
            np.testing.assert_array_equal(events["layer"][i], c["layer"][sel] - 7)
            # particles: the ntp_gtrack rows of the event, each once
            psel = p["event"] == ev
            np.testing.assert_array_equal(events["particle_id"][i], p["gtrackID"][psel].astype(int))
            np.testing.assert_array_equal(events["particle_pdg"][i], p["gflavor"][psel].astype(int))
            np.testing.assert_array_equal(events["particle_parent"][i], p["gparentid"][psel].astype(int))
            # labels, recomputed from the cluster's own truth columns
            gid = c["gtrackID"][sel]
            track = np.array(events["track_id"][i], dtype=np.int64)
            matched = ~np.isnan(gid)
            assert ((track == -1) == ~matched).all()
            np.testing.assert_array_equal(
                np.array(events["particle_id"][i], dtype=np.int64)[track[matched]], gid[matched].astype(int)
            )
            expected_pid = [
                PDG_TO_CLASS.get(int(f), 0) if m else 0 for f, m in zip(c["gflavor"][sel], matched, strict=True)
            ]
            assert events["pid"][i] == expected_pid
            pt = np.sqrt(c["gpx"][sel].astype(float) ** 2 + c["gpy"][sel].astype(float) ** 2)
            assert events["noise"][i] == list(matched & (pt < 0.060))
    total = manifest["totals"]
    assert (
        total["particles_in"] == total["particles_out"] == sum(uproot.open(f)["ntp_gtrack"].num_entries for f in files)
    )
    assert sum(total["pid_counts"]) == total["spacepoints_out"]
    assert 0.03 < total["noise"] / total["spacepoints_out"] < 0.2


def test_noise_rule_options_change_the_labels(sim_svtx, tmp_path):
    path = sorted(sim_svtx.glob("*.root"))[0]
    by_p = convert([path], tmp_path / "p", ConvertOptions(noise_variable="p", noise_cut=0.1))
    by_pt = convert([path], tmp_path / "pt", ConvertOptions())
    c = uproot.open(path)["ntp_cluster"].arrays(library="np")
    tpc = (c["layer"] >= TPC_FIRST) & (c["layer"] <= TPC_LAST) & ~np.isnan(c["gpx"])
    p = np.sqrt(c["gpx"][tpc].astype(float) ** 2 + c["gpy"][tpc] ** 2 + c["gpz"][tpc] ** 2)
    assert by_p.totals().noise == (p < 0.1).sum()
    assert by_pt.totals().noise < by_p.totals().noise


def test_trkr_ntuplizer_has_no_truth_columns_and_keeps_run_and_event(sim_trkr, tmp_path):
    summary = convert([sim_trkr], tmp_path / "pq")
    assert summary.errors == []
    manifest, events = read_events(tmp_path / "pq")
    assert set(events) == {"run", "event", "x", "y", "z", "energy", "layer"}
    assert manifest["layouts"] == ["trkr-ntuplizer"]
    assert set(events["run"]) == {7}  # 1 + seed
    # event numbers run on across the files of a run; events without any cluster have no row to come from
    in_files = [uproot.open(f)["ntp_cluster"]["event"].array(library="np") for f in sorted(sim_trkr.glob("*.root"))]
    assert sorted(events["event"]) == sorted(set(np.concatenate(in_files).astype(int).tolist()))
    assert set(events["event"]) <= set(range(100))
    assert len(events["event"]) > 80
    rows = sum(len(e) for e in in_files)
    t = manifest["totals"]
    assert t["spacepoints_out"] + t["skipped_other_layers"] == rows
    assert t["spacepoints_out"] == sum(len(x) for x in events["x"])


def _write_track_residuals(path, n_events=5, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, n_events)
    event = np.repeat(np.arange(n_events, dtype=np.int32) + 100, counts)
    n = event.shape[0]
    with uproot.recreate(path) as f:
        f.mktree(
            "clustertree",
            {
                "run": np.int32,
                "segment": np.int32,
                "event": np.int32,
                "gx": np.float32,
                "gy": np.float32,
                "gz": np.float32,
                "adc": np.float32,
                "layer": np.int32,
            },
        )
        f["clustertree"].extend(
            {
                "run": np.full(n, 53000, np.int32),
                "segment": np.zeros(n, np.int32),
                "event": event,
                "gx": rng.normal(0, 40, n).astype(np.float32),
                "gy": rng.normal(0, 40, n).astype(np.float32),
                "gz": rng.normal(0, 50, n).astype(np.float32),
                "adc": rng.uniform(10, 900, n).astype(np.float32),
                "layer": rng.integers(0, 57, n).astype(np.int32),
            }
        )
    return counts, f


def test_track_residuals_layout(tmp_path):
    path = tmp_path / "residuals.root"
    _write_track_residuals(path)
    with uproot.open(path) as f:
        t = f["clustertree"].arrays(library="np")
    summary = convert([path], tmp_path / "pq")
    assert summary.errors == []
    manifest, events = read_events(tmp_path / "pq")
    assert manifest["layouts"] == ["track-residuals"]
    tpc = (t["layer"] >= 7) & (t["layer"] <= 54)
    assert events["run"] == [53000] * len(np.unique(t["event"]))
    for i, ev in enumerate(events["event"]):
        sel = tpc & (t["event"] == ev)
        np.testing.assert_array_equal(np.array(events["x"][i], np.float32), t["gx"][sel])
        np.testing.assert_array_equal(events["layer"][i], t["layer"][sel] - 7)


STAR_TOML = Path(__file__).parents[1] / "docs" / "layouts" / "star-like.toml"  # the documented example


def _write_jagged(path, n_events=30, seed=1):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 25, n_events)
    counts[3] = 0
    n = counts.sum()
    track = rng.integers(0, 6, n)  # 0 = no truth
    pdg_of = np.array([0, 211, -321, 2212, 11, 22])
    mom_of = rng.uniform(-0.2, 0.2, (6, 3))
    flat = {
        "TPCHits_x": rng.normal(0, 50, n),
        "TPCHits_y": rng.normal(0, 50, n),
        "TPCHits_z": rng.normal(0, 80, n),
        "TPCHits_adc": rng.uniform(1, 500, n),
        "TPCHits_IdTruth": track,
        "TPCHits_row": rng.integers(1, 46, n),
        "TPCHits_pdg": pdg_of[track],
        "TPCHits_px": mom_of[track, 0],
        "TPCHits_py": mom_of[track, 1],
        "TPCHits_pz": mom_of[track, 2],
    }
    arrays = {
        k: ak.unflatten(v.astype(np.float32 if k != "TPCHits_IdTruth" else np.int32), counts) for k, v in flat.items()
    }
    arrays["eventId"] = np.arange(n_events, dtype=np.int64) * 3
    with uproot.recreate(path) as f:
        f.mktree("T", {k: ak.type(v) if k != "eventId" else np.int64 for k, v in arrays.items()})
        f["T"].extend(arrays)
    return counts, flat


def test_user_toml_layout_converts_a_jagged_per_event_tree(tmp_path):
    path = tmp_path / "star_like.root"
    counts, flat = _write_jagged(path)
    summary = convert([path], tmp_path / "pq", ConvertOptions(layout=str(STAR_TOML)))
    assert summary.errors == []
    manifest, events = read_events(tmp_path / "pq")
    assert manifest["layouts"] == ["user:star-like.toml"]
    assert events["event"] == list(range(0, 90, 3))
    assert [len(x) for x in events["x"]] == list(counts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in range(len(counts)):
        s = slice(starts[i], starts[i + 1])
        np.testing.assert_array_equal(np.array(events["x"][i], np.float32), flat["TPCHits_x"][s].astype(np.float32))
        ids = flat["TPCHits_IdTruth"][s]
        track = np.array(events["track_id"][i], dtype=np.int64)
        assert ((track == -1) == (ids == 0)).all()
        pid = [PDG_TO_CLASS.get(int(p), 0) if t else 0 for p, t in zip(flat["TPCHits_pdg"][s], ids, strict=True)]
        assert events["pid"][i] == pid
        # each distinct id of the event is one particle, and track_id points at it
        assert sorted(events["particle_id"][i]) == sorted(set(ids[ids > 0].tolist()))
        if (ids > 0).any():
            np.testing.assert_array_equal(np.array(events["particle_id"][i])[track[ids > 0]], ids[ids > 0])


def test_flat_user_layout_and_chunking_do_not_change_the_output(tmp_path, sim_svtx):
    toml = tmp_path / "flat.toml"
    toml.write_text(
        '[tree]\nname = "ntp_cluster"\nkind = "flat"\nevent = "event"\n'
        '[columns]\nx = "x"\ny = "y"\nz = "z"\nenergy = "adc"\n'
    )
    path = sorted(sim_svtx.glob("*.root"))[0]
    small = convert([path], tmp_path / "a", ConvertOptions(layout=str(toml), step_size=777))
    big = convert([path], tmp_path / "b", ConvertOptions(layout=str(toml)))
    assert small.errors == big.errors == []
    assert _shard_shas(tmp_path / "a") == _shard_shas(tmp_path / "b")
    _, events = read_events(tmp_path / "a")
    assert set(events) == {"run", "event", "x", "y", "z", "energy", "layer"}
    assert sum(len(x) for x in events["x"]) == uproot.open(path)["ntp_cluster"].num_entries  # every layer kept
    assert set(v for layer in events["layer"] for v in layer) == {-1}


def _shard_shas(out):
    return sorted(s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"])


def test_resume_skips_converted_inputs_and_workers_give_the_same_shards(sim_svtx, tmp_path):
    files = sorted(sim_svtx.glob("*.root"))
    first = convert(files[:1], tmp_path / "r")
    again = convert(files, tmp_path / "r", resume=True)
    assert len(again.skipped) == 1
    assert len(again.converted) == 1
    assert again.skipped[0].sha256 == first.converted[0].sha256
    parallel = convert(files, tmp_path / "w", workers=2)
    assert _shard_shas(tmp_path / "r") == _shard_shas(tmp_path / "w")
    with pytest.raises(ConvertError, match="other options"):
        convert(files, tmp_path / "r", ConvertOptions(noise_cut=0.1), resume=True)
    assert parallel.errors == []


def test_dask_local_cluster_gives_the_same_shards_as_the_local_run(sim_svtx, tmp_path):
    distributed = pytest.importorskip("distributed")
    files = sorted(sim_svtx.glob("*.root"))
    local = convert(files, tmp_path / "local")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = convert(files, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert remote.errors == []

    assert local.errors == []
    assert _shard_shas(tmp_path / "local") == _shard_shas(tmp_path / "dask")
    shutil.rmtree(tmp_path / "dask")


def test_the_documented_flat_layout_converts_a_flat_tree(tmp_path):
    rng = np.random.default_rng(2)
    evt = np.repeat(np.arange(6), [3, 0, 5, 1, 7, 2][:6]).astype(np.int32)
    evt = evt[evt != 1]
    n = evt.shape[0]
    cols = {"run": np.full(n, 42, np.int32), "evt": evt, "padrow": rng.integers(0, 159, n).astype(np.int32)}
    cols.update({name: rng.normal(size=n) for name in ("gx", "gy", "gz", "q")})
    with uproot.recreate(tmp_path / "run0042.root") as f:
        f.mktree("clusters", {k: v.dtype for k, v in cols.items()})
        f["clusters"].extend(cols)
    toml = Path(__file__).parents[1] / "docs" / "layouts" / "flat-testbeam.toml"
    summary = convert([tmp_path / "run0042.root"], tmp_path / "pq", ConvertOptions(layout=str(toml)))
    assert summary.errors == []
    manifest, events = read_events(tmp_path / "pq")
    assert manifest["energy_units"] == ["ADC (sum of pad charges)"]
    assert events["run"] == [42] * 5
    assert events["event"] == [0, 2, 3, 4, 5]
    assert [len(x) for x in events["x"]] == [3, 5, 1, 7, 2]
    np.testing.assert_array_equal(np.concatenate(events["layer"]), cols["padrow"])


def test_inspect_a_root_file_a_shard_and_a_dataset(sim_svtx, tmp_path):
    from click.testing import CliRunner
    from fm4npp_cli.data import main

    path = sorted(sim_svtx.glob("*.root"))[0]
    summary = convert([path], tmp_path / "pq")
    counts = summary.converted[0].counts
    runner = CliRunner()
    root = runner.invoke(main, ["inspect", str(path)])
    assert root.exit_code == 0, root.output
    assert "svtx-evaluator" in root.output
    assert f"{counts.spacepoints_in:,}" in root.output
    shard_path = next((tmp_path / "pq").glob("*.parquet"))
    shard = runner.invoke(main, ["inspect", str(shard_path)])
    assert shard.exit_code == 0
    assert f"{counts.spacepoints_out:,}" in shard.output
    assert "particle_parent" in shard.output
    dataset = runner.invoke(main, ["inspect", str(tmp_path / "pq")])
    assert dataset.exit_code == 0
    assert f"{counts.events:,}" in dataset.output
    missing = runner.invoke(main, ["inspect", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert "nothing: no such file or directory" in missing.output


def test_progress_reports_events_chunk_by_chunk_and_inputs_as_they_end(sim_svtx, tmp_path):
    chunks, ends = [], []
    convert([sim_svtx], tmp_path / "pq", ConvertOptions(step_size=3000), progress=ends.append, on_events=chunks.append)
    assert len(chunks) > 2
    assert sum(chunks) == sum(e.counts.events for e in ends) == 240
    assert [e.name for e in ends] == sorted(p.name for p in sim_svtx.glob("*.root"))
