"""`fm4npp-data stats --compare release`: a simulation beside the TPCpp-10M release's published figures.

The counts are checked against the ROOT files read directly (uproot on ntp_cluster) and against simulation.json;
the table's ratios against hand arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data import geometry as g
from fm4npp_data.conversion.convert import convert
from fm4npp_data.conversion.ingest import root_events
from fm4npp_data.labels import noise_from_momentum, pid_from_pdg
from fm4npp_data.plots import events as plots
from fm4npp_data.plots import fidelity


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def direct_counts(folder: Path) -> dict[str, np.ndarray]:
    """Per event (files in name order, events from 0 in each): TPC clusters, distinct matched truth particles among
    them; and per TPC cluster its PID class and noise flag, straight from ntp_cluster."""
    sizes, tracks, pid, noise = [], [], [], []
    for path in sorted(folder.glob("*.root")):
        with uproot.open(path) as f:
            c = f["ntp_cluster"].arrays(["event", "layer", "gtrackID", "gflavor", "gpx", "gpy", "gpz"], library="np")
        tpc = (c["layer"] >= g.FIRST_TPC_LAYER) & (c["layer"] <= g.LAST_TPC_LAYER)
        event = c["event"][tpc].astype(np.int64)
        n_events = int(c["event"].max()) + 1
        sizes.append(np.bincount(event, minlength=n_events))
        track = c["gtrackID"][tpc]
        matched = np.isfinite(track)
        pairs = np.unique(np.c_[event[matched], track[matched].astype(np.int64)], axis=0)
        tracks.append(np.bincount(pairs[:, 0], minlength=n_events))
        flavor = np.where(matched, c["gflavor"][tpc], 0).astype(np.int64)
        pid.append(np.where(matched, pid_from_pdg(flavor), 0))
        p = [np.where(matched, c[k][tpc], 1.0) for k in ("gpx", "gpy", "gpz")]
        noise.append(matched & noise_from_momentum(*p))
    lists = {"sizes": sizes, "tracks": tracks, "pid": pid, "noise": noise}
    return {k: np.concatenate(v) for k, v in lists.items()}


def test_fidelity_of_simulated_files_counts_what_the_files_hold(sim_svtx):
    fid = fidelity.read_fidelity(sim_svtx)
    want = direct_counts(sim_svtx)
    assert fid.events == 240
    np.testing.assert_array_equal(fid.spacepoints, want["sizes"])
    np.testing.assert_array_equal(fid.tracks, want["tracks"])
    np.testing.assert_allclose(fid.pid_fractions, np.bincount(want["pid"], minlength=5) / want["pid"].size)
    assert fid.noise_fraction == pytest.approx(want["noise"].mean(), rel=1e-12)
    assert fid.empty == int(np.sum(want["sizes"] == 0))
    assert fid.large == int(np.sum(want["sizes"] > fidelity.LARGE_EVENT))
    assert fid.percentiles((50, 99)) == {50: np.median(want["sizes"]), 99: np.percentile(want["sizes"], 99)}
    # and what the simulation recorded of its own files
    files = json.loads((sim_svtx / "simulation.json").read_text())["files"]
    assert fid.spacepoints.sum() == sum(f["spacepoints"] for f in files)
    assert fid.tracks.sum() == sum(f["tracks"] for f in files)
    assert round(fid.noise_fraction * fid.spacepoints.sum()) == sum(f["noise"] for f in files)
    pid_counts = np.sum([f["pid_counts"] for f in files], axis=0)
    np.testing.assert_allclose(fid.pid_fractions[1:], pid_counts[1:] / fid.spacepoints.sum())


def test_a_converted_set_and_a_repository_give_the_same_counts(sim_svtx, tmp_path):
    from fm4npp_data.preparation.prepare import PrepareOptions, prepare
    from fm4npp_data.repo.build import BuildOptions, build

    convert([sim_svtx], tmp_path / "set")
    from_root, from_set = fidelity.read_fidelity(sim_svtx), fidelity.read_fidelity(tmp_path / "set")
    np.testing.assert_array_equal(from_set.spacepoints, from_root.spacepoints)
    np.testing.assert_array_equal(from_set.tracks, from_root.tracks)
    np.testing.assert_array_equal(from_set.pid_fractions, from_root.pid_fractions)
    assert from_set.noise_fraction == from_root.noise_fraction
    assert from_set.what == "1 input(s), 240 events"

    prepare(tmp_path / "set", PrepareOptions(k=2, sample_events=20))
    build([tmp_path / "set"], tmp_path / "repo", BuildOptions(row_group_events=8))
    train = json.loads((tmp_path / "repo" / "splits.json").read_text())["configs"]["labeled"]["train"]
    from_repo = fidelity.read_fidelity(tmp_path / "repo")  # the labeled train split
    assert from_repo.events == train["events"] > 0
    assert from_repo.spacepoints.sum() == train["spacepoints"]
    assert from_repo.what == f"repo, labeled/train, {train['events']} events"


def hand_made() -> fidelity.Fidelity:
    return fidelity.Fidelity(
        spacepoints=np.array([0, 100, 6000, 300]),
        tracks=np.array([0, 5, 50, 20]),
        pid_fractions=np.array([0.1, 0.5, 0.1, 0.1, 0.2]),
        noise_fraction=0.0428,
        what="4 events",
    )


def test_the_table_rows_and_ratios_by_hand():
    rows = {row.quantity: row for row in fidelity.fidelity_rows(hand_made())}
    mean = rows["mean TPC spacepoints / event"]
    assert (mean.ours, mean.release) == (1600.0, pytest.approx(861.2857, abs=1e-4))
    assert mean.ratio == pytest.approx(1600 * 70_000 / 60_290_000)  # 1.8577
    assert rows["median TPC spacepoints / event"].ours == 200.0
    assert rows["median TPC spacepoints / event"].ratio is None
    assert rows["max TPC spacepoints / event"].ratio == pytest.approx(6000 / 20_000)
    assert rows["events with > 5,000 spacepoints"].ours == 1
    assert rows["empty events (no TPC spacepoint)"].ours == 1
    assert rows["mean truth tracks / event"].ours == 18.75
    assert rows["mean truth tracks / event"].ratio is None
    assert rows["max truth tracks / event"].ratio == pytest.approx(50 / 100)
    assert rows["noise fraction of spacepoints"].ratio == pytest.approx(0.0428 / 0.107)  # 0.4
    assert [rows[f"PID class {c}"].ours for c in ("other", "pion", "kaon", "proton", "electron")] == [
        0.1,
        0.5,
        0.1,
        0.1,
        0.2,
    ]
    assert all(rows[f"PID class {c}"].ratio is None for c in ("other", "pion", "electron"))


def test_the_markdown_table():
    text = fidelity.markdown_table(fidelity.fidelity_rows(hand_made()), "4 events")
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[0] == "| quantity | ours (4 events) | TPCpp-10M release (labeled train) | ours / release |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert len(lines) == 2 + 8 + 5
    assert all(line.startswith("| ") and line.endswith(" |") and line.count(" | ") == 3 for line in lines[2:])
    assert lines[2] == "| mean TPC spacepoints / event | 1,600.0 | 861.3 (60.29M / 70,000 events) | 1.86 |"
    assert lines[3] == "| median TPC spacepoints / event | 200.0 | not published |  |"
    assert lines[4] == '| max TPC spacepoints / event | 6,000 | ~20,000 (text: "tens of thousands") | 0.3 |'
    assert "| noise fraction of spacepoints | 4.3 % | 10.7 % | 0.4 |" in lines
    assert "| PID class pion | 50.0 % | not published (Fig. 11 only) |  |" in lines


def test_an_input_without_truth_has_no_truth_rows(sim_svtx):
    _, table, _ = root_events(sorted(sim_svtx.glob("*.root"))[0])
    fid = fidelity.fidelity_of(table.select(["run", "event", "energy"]))
    assert (fid.tracks, fid.pid_fractions, fid.noise_fraction) == (None, None, None)
    assert fid.spacepoints.sum() == plots.spacepoints_per_event(table).sum()
    lines = fidelity.markdown_table(fidelity.fidelity_rows(fid)).splitlines()
    assert "| noise fraction of spacepoints | no truth | 10.7 % |  |" in lines
    assert "| mean truth tracks / event | no truth | not published (text: from under 10 to nearly 100) |  |" in lines
    fig = fidelity.fidelity_figure(fid.spacepoints, None, None)
    assert not fig.axes[1].containers  # no tracks histogram
    assert not fig.axes[2].containers  # no fraction bars


def test_stats_compare_release_writes_the_figure_and_the_table(sim_svtx, tmp_path, monkeypatch):
    figures = {}
    save = plots._save

    def saved(fig, out_png):
        figures[Path(out_png).name] = fig
        return save(fig, out_png)

    monkeypatch.setattr(plots, "_save", saved)
    code, output = invoke("stats", sim_svtx, "--out", tmp_path, "--compare", "release")
    assert code == 0
    table = (tmp_path / "fidelity.md").read_text()
    assert output == f"{table}wrote {tmp_path / 'fidelity.png'}\nwrote {tmp_path / 'fidelity.md'}\n"
    assert table.startswith("| quantity | ours (2 file(s), 240 events) |")
    fid = fidelity.read_fidelity(sim_svtx)
    assert table == fidelity.markdown_table(fidelity.fidelity_rows(fid), fid.what)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fidelity.md", "fidelity.png"]  # not the other figures

    from PIL import Image

    with Image.open(tmp_path / "fidelity.png") as png:
        assert png.size == tuple(round(s * plots.DPI) for s in fidelity.FIGSIZE)
    ax_sp, ax_tr, ax_fr = figures["fidelity.png"].axes
    assert sum(b.get_height() for b in ax_sp.containers[0]) == fid.events - fid.empty  # log x: empty ones apart
    assert [line.get_xdata()[0] for line in ax_sp.lines] == [
        pytest.approx(fid.spacepoints.mean()),
        pytest.approx(g.RELEASE_SPACEPOINTS_PER_EVENT),
    ]
    assert sum(b.get_height() for b in ax_tr.containers[0]) == 240
    heights = [b.get_height() for b in ax_fr.containers[0]]
    np.testing.assert_allclose(heights, [*fid.pid_fractions, fid.noise_fraction])
    assert ax_fr.lines[0].get_ydata()[0] == g.RELEASE_NOISE_FRACTION

    code, output = invoke("stats", sim_svtx, "--out", tmp_path, "--compare", "paper")
    assert code == 2
    assert "Invalid value for '--compare'" in output
