"""Bad input to `fm4npp-data convert`: a clear message naming the file, non-zero exit, nothing partial written."""

import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.errors import LayoutError
from fm4npp_data.simulation import simulate


def run_cli(*args):
    return CliRunner().invoke(main, ["convert", *map(str, args)])


def first_file(sim):
    return sorted(sim.glob("*.root"))[0]


def only_error(summary, pattern):
    assert len(summary.errors) == 1, summary.errors
    assert not summary.converted, summary.errors
    assert re.search(pattern, summary.errors[0]), summary.errors[0]


def assert_nothing_written(out):
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def _rewrite(src, dst, edit_cluster=None, drop=()):
    """Copy an svtx-evaluator file with its ntp_cluster columns edited and some branches dropped."""
    with uproot.open(src) as f:
        cluster = f["ntp_cluster"].arrays(library="np")
        gtrack = f["ntp_gtrack"].arrays(library="np")
    if edit_cluster:
        edit_cluster(cluster)
    cluster = {k: v for k, v in cluster.items() if k not in drop}
    with uproot.recreate(dst) as f:
        f.mktree("ntp_cluster", {k: np.float32 for k in cluster})
        f["ntp_cluster"].extend(cluster)
        f.mktree("ntp_gtrack", {k: np.float32 for k in gtrack})
        f["ntp_gtrack"].extend(gtrack)
    return cluster


def test_truncated_root_file(sim_svtx, tmp_path):
    bad = tmp_path / "truncated.root"
    data = first_file(sim_svtx).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    result = run_cli(bad, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "truncated.root" in result.output
    assert "truncated or corrupt" in result.output
    assert_nothing_written(tmp_path / "out")


def test_corrupt_baskets(sim_svtx, tmp_path):
    bad = tmp_path / "corrupt.root"
    data = bytearray(first_file(sim_svtx).read_bytes())
    data[20_000:60_000] = bytes(40_000)
    bad.write_bytes(bytes(data))
    only_error(convert([bad], tmp_path / "out"), r"corrupt\.root.*(corrupt|truncated)")
    assert_nothing_written(tmp_path / "out")


def test_empty_and_not_root_files(tmp_path):
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    text = tmp_path / "notes.root"
    text.write_text("this is not a ROOT file\n" * 100)
    result = run_cli(empty, text, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "empty.root: the file is empty (0 bytes)" in result.output
    assert "notes.root: cannot be read as a ROOT file" in result.output
    assert_nothing_written(tmp_path / "out")


def test_missing_branch_lists_the_file_and_the_layouts_tried(sim_svtx, tmp_path):
    bad = tmp_path / "nogtrack.root"
    _rewrite(first_file(sim_svtx), bad, drop=("gtrackID",))
    result = run_cli(bad, "--out", tmp_path / "out")
    assert result.exit_code == 2
    msg = result.output
    assert "nogtrack.root: no layout matches" in msg
    assert "ntp_cluster (TTree, 62 branches)" in msg
    assert "svtx-evaluator (lacks ntp_cluster.gtrackID)" in msg
    assert "trkr-ntuplizer (lacks ntp_cluster.run)" in msg
    assert "track-residuals (lacks tree clustertree)" in msg
    assert_nothing_written(tmp_path / "out")
    forced = run_cli(bad, "--out", tmp_path / "out", "--layout", "svtx-evaluator")
    assert forced.exit_code == 2
    assert "lacks ntp_cluster.gtrackID" in forced.output


def test_missing_tree(tmp_path):
    path = tmp_path / "histos.root"
    with uproot.recreate(path) as f:
        f["h"] = np.histogram(np.arange(10), bins=5)
    only_error(convert([path], tmp_path / "out"), r"histos\.root: no layout matches\. The file has: h \(TH1D\)")


def test_branch_of_the_wrong_type(tmp_path):
    path = tmp_path / "jagged.root"
    import awkward as ak

    with uproot.recreate(path) as f:
        f["T"] = {"hx": ak.Array([[1.0, 2.0], [3.0]]), "hy": ak.Array([[1.0, 2.0], [3.0]]), "ev": np.array([0, 1])}
    toml = tmp_path / "flat.toml"
    toml.write_text('[tree]\nname = "T"\nkind = "flat"\nevent = "ev"\n[columns]\nx = "hx"\ny = "hy"\nz = "hy"\n')
    summary = convert([path], tmp_path / "out", ConvertOptions(layout=str(toml)))
    only_error(summary, r"jagged\.root: tree 'T': branch of the wrong type: hx is .*expected a numeric scalar")
    assert_nothing_written(tmp_path / "out")


def test_bad_toml_layouts_say_what_to_fix(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[tree]\nname = "T"\nkind = "flat"\n[columns]\nx = "a"\ny = "b"\nz = "c"\ncolour = "d"\n')
    with pytest.raises(LayoutError, match=r"bad\.toml: unknown key\(s\) in \[columns\]: colour"):
        convert([tmp_path], tmp_path / "out", ConvertOptions(layout=str(bad)))
    bad.write_text('[tree]\nname = "T"\nkind = "flat"\n[columns]\nx = "a"\ny = "b"\nz = "c"\n')
    with pytest.raises(LayoutError, match=r"needs \[tree\] event"):
        convert([tmp_path], tmp_path / "out", ConvertOptions(layout=str(bad)))


def test_good_inputs_finish_and_bad_ones_are_reported_at_the_end(sim_svtx, tmp_path):
    good = sorted(sim_svtx.glob("*.root"))
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    result = run_cli(good[0], empty, good[1], "--out", out, "--workers", "2")
    assert result.exit_code == 2
    assert (
        result.output.strip().splitlines()[-1]
        == f"Error: {empty}: the file is empty (0 bytes); was it written completely?"
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(e["name"] for e in manifest["inputs"]) == [g.name for g in good]
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(s["path"] for s in manifest["shards"])
    assert not list(out.glob(".*"))


def test_unusable_spacepoints_go_to_the_rejects_table_and_are_counted(sim_svtx, tmp_path):
    src = first_file(sim_svtx)
    tpc_rows = []

    def edit(c):
        tpc = np.flatnonzero((c["layer"] >= 7) & ~np.isnan(c["gtrackID"]))
        tpc_rows.extend(tpc[[3, 10, 20]])
        c["x"][tpc[3]] = np.nan
        c["z"][tpc[10]] = np.inf
        c["gtrackID"][tpc[20]] = 987654  # names no particle of ntp_gtrack

    bad = tmp_path / "damaged.root"
    cluster = _rewrite(src, bad, edit_cluster=edit)
    summary = convert([bad], tmp_path / "out")
    assert summary.errors == []
    counts = summary.converted[0].counts
    assert counts.rejected == {"non_finite_position": 2, "non_finite_energy": 0, "unknown_truth_id": 1}
    assert counts.spacepoints_in == counts.spacepoints_out + 3
    rejects = pq.read_table(tmp_path / "out" / summary.converted[0].rejects).to_pylist()
    assert sorted(r["reason"] for r in rejects) == ["non_finite_position", "non_finite_position", "unknown_truth_id"]
    assert {r["event"] for r in rejects} == {int(cluster["event"][i]) for i in tpc_rows}
    unknown = next(r for r in rejects if r["reason"] == "unknown_truth_id")
    assert unknown["source_track_id"] == 987654
    assert unknown["source"] == str(bad)


def test_duplicate_files_and_duplicate_events_name_both_files(sim_svtx, sim_trkr, tmp_path):
    src = first_file(sim_svtx)
    copy = tmp_path / "copy" / src.name
    copy.parent.mkdir()
    shutil.copy(src, copy)
    summary = convert([src, copy], tmp_path / "a")
    assert len(summary.converted) == 1
    assert summary.errors == [
        f"{copy}: same content (sha256 {summary.converted[0].sha256[:12]}...) as {src}; converted once"
    ]
    # two recorded-data files of one run numbered alike: seeds 6 and 6 + (2**24 - 1) both make run 7, events 0..
    other = tmp_path / "other"
    simulate(20, other, seed=6 + (1 << 24) - 1, events_per_file=20, layout="trkr-ntuplizer")
    mine = first_file(sim_trkr)
    summary = convert([mine, first_file(other)], tmp_path / "b")
    assert len(summary.errors) == 1
    error = summary.errors[0]
    assert error.startswith(f"{first_file(other)}: ")
    assert f"already come from {mine}" in error
    assert "(run 7, event " in error
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [e["name"] for e in manifest["inputs"]] == [mine.name]
    assert sorted(p.name for p in (tmp_path / "b").glob("*.parquet")) == [s["path"] for s in manifest["shards"]]


def test_output_that_is_not_ours_is_refused(sim_svtx, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "thesis.tex").write_text("x")
    result = run_cli(first_file(sim_svtx), "--out", tmp_path / "full")
    assert result.exit_code == 2
    assert "is not empty" in result.output
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["thesis.tex"]


def test_an_interrupted_run_leaves_only_hidden_partial_files_and_can_start_again(sim_svtx, tmp_path):
    out = tmp_path / "out"
    (out / "rejects").mkdir(parents=True)
    (out / ".fm4npp_sim_00000-deadbeef-00000.parquet.partial").write_bytes(b"half")
    summary = convert([first_file(sim_svtx)], out)
    assert summary.errors == []
    assert not list(out.glob(".*"))


def test_truth_ids_without_any_particle_in_the_chunk_are_rejected_not_a_crash():
    from fm4npp_data.conversion.assemble import assemble
    from fm4npp_data.layouts.base import PARTICLE_COLUMNS, Chunk

    hits = {name: np.zeros(3, np.float32) for name in ("x", "y", "z", "energy")}
    hits["x"][:] = [1.0, 2.0, 3.0]
    hits["layer"] = np.zeros(3, np.int16)
    hits["track"] = np.array([5.0, np.nan, 7.0])
    no_particles = {c: np.zeros(0) for c in PARTICLE_COLUMNS}
    chunk = Chunk(
        run=np.zeros(2, np.int32),
        event=np.array([0, 1]),
        offsets=np.array([0, 2, 3]),
        hits=hits,
        particle_offsets=np.zeros(3, np.int64),
        particles=no_particles,
    )
    table, rejects, counts = assemble(chunk, "full", "mem")
    assert counts.rejected["unknown_truth_id"] == 2
    assert counts.spacepoints_out == 1
    assert table["track_id"].to_pylist() == [[-1], []]
    assert table["pid"].to_pylist() == [[0], []]
    assert rejects["index"].to_pylist() == [0, 0]
    assert rejects["event"].to_pylist() == [0, 1]
