"""Tests of fm4npp_data.plots: the arrays taken from event tables, and what each figure draws (its artists' data).

Figures are built by pure `*_figure` functions, so the tests inspect the plotted data (scatter offsets and colors,
median lines, histogram bars, titles) rather than pixels; one test checks the PNG writing itself.
"""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pyarrow as pa
import pytest
import uproot

from fm4npp_data import geometry as g
from fm4npp_data.conversion.ingest import root_events
from fm4npp_data.errors import DisplayError
from fm4npp_data.plots import events as plots
from fm4npp_data.schema import events_schema
from fm4npp_data.simulation import simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def events_table(events: list[dict], truth: str = "full") -> pa.Table:
    """A table in the data contract from per-event dicts; missing list columns are filled with plausible values."""
    schema = events_schema(truth)
    rows = []
    for i, ev in enumerate(events):
        n = len(ev["x"])
        row = {"run": ev.get("run", 1), "event": ev.get("event", i), "x": ev["x"]}
        row |= {"y": ev.get("y", [0.0] * n), "z": ev.get("z", [0.0] * n), "energy": ev.get("energy", [100.0] * n)}
        row["layer"] = ev.get("layer", [0] * n)
        if truth != "none":
            row["track_id"] = ev.get("track_id", [-1] * n)
        if truth in ("labels", "full"):
            row |= {"pid": ev.get("pid", [0] * n), "noise": [False] * n}
        if truth == "full":
            m = len(ev.get("px", []))
            row |= {f"particle_{c}": ev.get(c, [0.0] * m) for c in ("px", "py", "pz", "vx", "vy", "vz")}
            row |= {"particle_id": list(range(m)), "particle_pdg": [211] * m, "particle_parent": [-1] * m}
            row["particle_primary"] = [True] * m
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def two_events() -> pa.Table:
    """Event 0: 3 spacepoints of particles 1, 0 and none; event 1: 2 spacepoints of particle 0; different momenta."""
    return events_table(
        [
            {
                "x": [1.0, 2.0, 3.0],
                "track_id": [1, 0, -1],
                "pid": [1, 3, 0],
                "px": [3.0, 0.0],
                "py": [4.0, 1.0],
                "pz": [0.0, 0.0],
            },
            {"x": [4.0, 5.0], "track_id": [0, 0], "pid": [2, 2], "px": [0.0], "py": [0.0], "pz": [2.0]},
        ]
    )


# ------------------------------------------------------------------------------------------------------------
# arrays from event tables
# ------------------------------------------------------------------------------------------------------------


def test_truth_momentum_looks_up_each_spacepoints_particle_in_its_own_event():
    p = plots.truth_momentum(two_events())
    np.testing.assert_allclose(p, [1.0, 5.0, np.nan, 2.0, 2.0])


def test_truth_momentum_and_track_counts_stay_aligned_in_a_mixed_table():
    """A truth-less input concatenated with one with truth: null truth rows, spacepoints still counted."""
    without = events_table([{"x": [9.0, 9.0, 9.0, 9.0]}], truth="none")
    mixed = pa.concat_tables([without, two_events()], promote_options="permissive")
    np.testing.assert_allclose(plots.truth_momentum(mixed), [np.nan] * 4 + [1.0, 5.0, np.nan, 2.0, 2.0])
    assert plots.spacepoint_values(mixed, "pid", 0, np.int8).tolist() == [0, 0, 0, 0, 1, 3, 0, 2, 2]
    assert plots.tracks_per_event(mixed).tolist() == [2, 1]  # the truth-less event is not counted
    assert plots.spacepoints_per_event(mixed).tolist() == [4, 3, 2]
    assert plots.truth_momentum(without).shape == (4,)
    assert np.isnan(plots.truth_momentum(without)).all()


def test_truth_momentum_matches_the_evaluators_own_per_cluster_momentum(sim_svtx):
    """An independent oracle: ntp_cluster of svtx-evaluator files carries each cluster's truth momentum."""
    path = sorted(sim_svtx.glob("*.root"))[0]
    _, table, _ = root_events(path)
    with uproot.open(path) as f:
        a = f["ntp_cluster"].arrays(["layer", "gpx", "gpy", "gpz"], library="np")
    tpc = (a["layer"] >= g.FIRST_TPC_LAYER) & (a["layer"] <= g.LAST_TPC_LAYER)
    expected = np.sqrt(a["gpx"] ** 2 + a["gpy"] ** 2 + a["gpz"] ** 2)[tpc]
    got = plots.truth_momentum(table)
    assert got.shape == expected.shape
    assert 0 < np.isnan(got).sum() < got.size // 100
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)


def test_tracks_per_event_counts_distinct_matched_tracks():
    table = events_table(
        [{"x": [0.0] * 5, "track_id": [4, 4, 1, -1, 7]}, {"x": []}, {"x": [0.0, 0.0], "track_id": [-1, -1]}],
        truth="track",
    )
    assert plots.tracks_per_event(table).tolist() == [3, 0, 0]
    assert plots.tracks_per_event(events_table([{"x": [1.0]}], truth="none")) is None


def test_truth_level_from_the_columns_present():
    assert plots.truth_level(two_events()) == "full"
    assert plots.truth_level(events_table([{"x": [1.0]}], truth="labels")) == "labels"
    assert plots.truth_level(events_table([{"x": [1.0]}], truth="track")) == "track"
    assert plots.truth_level(events_table([{"x": [1.0]}], truth="none")) == "none"


def test_pick_display_row_prefers_largest_below_limit():
    limit = plots.DISPLAY_MAX_CLUSTERS
    assert plots.pick_display_row(np.array([limit + 5, 10, 0, 30, 30])) == 3
    assert plots.pick_display_row(np.array([0, limit + 9, limit + 5])) == 2
    assert plots.pick_display_row(np.array([0, 0])) is None


def test_find_event_needs_run_when_the_event_repeats():
    runs = np.array([7, 7, 7, 9, 9], dtype=np.int32)
    events = np.array([0, 1, 2, 0, 1], dtype=np.int64)
    assert plots.find_event(runs, events, 2, None, "d") == 2
    assert plots.find_event(runs, events, 1, 9, "d") == 4
    with pytest.raises(DisplayError, match=r"^d: event 1 is in 2 runs \(7, 9\): pass --run-number to choose one$"):
        plots.find_event(runs, events, 1, None, "d")
    with pytest.raises(DisplayError, match=r"^d: no event 5; events present: 0, 1, 2 \(5 events; run\(s\) 7, 9\)$"):
        plots.find_event(runs, events, 5, None, "d")
    with pytest.raises(DisplayError, match=r"^d: no event 2 in run 9; event 2 is in run\(s\) 7$"):
        plots.find_event(runs, events, 2, 9, "d")
    with pytest.raises(DisplayError, match=r"^d: no run 3; runs present: 7, 9$"):
        plots.find_event(runs, events, 5, 3, "d")
    with pytest.raises(DisplayError, match=r"^d: no event 5 in run 9; events of run 9: 0, 1$"):
        plots.find_event(runs, events, 5, 9, "d")
    with pytest.raises(DisplayError, match=r"run 7, event 0 occurs 2 times"):
        plots.find_event(np.array([7, 7]), np.array([0, 0]), 0, None, "d")


def test_find_event_lists_only_a_few_events():
    with pytest.raises(DisplayError, match=r"events present: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(50 events"):
        plots.find_event(np.zeros(50), np.arange(50), 99, None, "d")


# ------------------------------------------------------------------------------------------------------------
# figures: the plotted data
# ------------------------------------------------------------------------------------------------------------


def test_binned_median_skips_sparse_bins_and_uses_geometric_centres():
    edges = np.array([0.1, 1.0, 10.0])
    x = np.r_[np.full(11, 0.5), np.full(3, 5.0), 20.0, np.nan]
    y = np.r_[np.arange(11.0), 100.0, 200.0, 300.0, 1.0, 1.0]
    centres, medians = plots.binned_median(x, y, edges, min_count=10)
    np.testing.assert_allclose(centres, [np.sqrt(0.1)])
    np.testing.assert_allclose(medians, [5.0])
    centres, medians = plots.binned_median(x, y, edges, min_count=3)
    np.testing.assert_allclose(centres, [np.sqrt(0.1), np.sqrt(10.0)])
    np.testing.assert_allclose(medians, [5.0, 200.0])
    centres, medians = plots.binned_median(np.array([]), np.array([]), edges)
    assert centres.shape == medians.shape == (0,)


def test_energy_vs_momentum_draws_each_species_and_its_medians():
    rng = np.random.default_rng(1)
    n = 4000
    pid = rng.choice([0, 1, 2, 3, 4], n)
    p = np.exp(rng.uniform(np.log(0.03), np.log(8.0), n))
    p[::50] = np.nan  # unmatched
    energy = 200.0 / np.minimum(p, 1.0) + rng.exponential(50.0, n)
    fig = plots.energy_vs_momentum_figure(p, energy, pid, title="test")
    (ax,) = fig.axes
    assert ax.get_title() == "test"
    assert len(ax.collections) == len(ax.lines) == len(plots.SPECIES)
    edges = np.geomspace(0.05, 5.0, 31)
    for i, (_, cls, _, _) in enumerate(plots.SPECIES):
        sel = (pid == cls) & (p >= 0.05) & (p <= 5.0)  # NaN momenta compare False
        np.testing.assert_allclose(ax.collections[i].get_offsets(), np.c_[p[sel], energy[sel]])
        # the medians, independently: each bin's median where it holds >= 10 clusters
        b = np.digitize(p[sel], edges) - 1
        want = [
            (np.sqrt(edges[k] * edges[k + 1]), np.median(energy[sel][b == k]))
            for k in range(30)
            if np.sum(b == k) >= 10
        ]
        np.testing.assert_allclose(ax.lines[i].get_xydata(), np.array(want))
        assert ax.lines[i].get_label().endswith(f"{sel.sum():,} clusters")
    plotted = np.isin(pid, [1, 2, 3, 4]) & (p >= 0.05) & (p <= 5.0)
    assert ax.get_ylim()[1] == pytest.approx(np.percentile(energy[plotted], 99) * 1.02)


def test_energy_vs_momentum_thins_scatter_but_not_medians():
    energy = np.arange(500.0)
    fig = plots.energy_vs_momentum_figure(np.full(500, 0.5), energy, np.full(500, 1), max_points_per_species=50)
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 50
    np.testing.assert_allclose(ax.lines[0].get_xydata()[:, 1], [np.median(energy)])


def test_energy_vs_momentum_without_any_species_says_so():
    fig = plots.energy_vs_momentum_figure(np.array([0.5, 1.0]), np.array([100.0, 200.0]), np.array([0, 0]))
    ax = fig.axes[0]
    assert all(len(c.get_offsets()) == 0 for c in ax.collections)
    assert "no pion, kaon, proton or electron clusters" in [t.get_text() for t in ax.texts]


def synthetic_event():
    """Three tracks through every layer (two matched, one unmatched) at different azimuths."""
    radius = np.tile(g.LAYER_RADII, 3)
    phi = np.repeat([0.3, 2.0, -2.5], g.N_LAYERS)
    x, y = radius * np.cos(phi), radius * np.sin(phi)
    z = np.repeat([10.0, -40.0, 80.0], g.N_LAYERS) * radius / 50.0
    track = np.repeat([1, 5, -1], g.N_LAYERS)
    return x, y, z, track


def test_event_display_draws_every_spacepoint_colored_by_track():
    x, y, z, track = synthetic_event()
    fig = plots.event_display_figure(x, y, z, track, title="f.root, run 7, event 3")
    ax_xy, ax_rz = fig.axes
    np.testing.assert_allclose(ax_xy.collections[0].get_offsets(), np.c_[x, y])
    np.testing.assert_allclose(ax_rz.collections[0].get_offsets(), np.c_[z, np.hypot(x, y)])
    colors = ax_xy.collections[0].get_facecolors()
    np.testing.assert_array_equal(colors, ax_rz.collections[0].get_facecolors())
    first, second, unmatched = colors[: g.N_LAYERS], colors[g.N_LAYERS : -g.N_LAYERS], colors[-g.N_LAYERS :]
    assert (first == first[0]).all()
    assert (second == second[0]).all()
    assert not np.array_equal(first[0], second[0])
    np.testing.assert_array_equal(unmatched, np.tile(plots.UNMATCHED_COLOR, (g.N_LAYERS, 1)))
    title = fig.get_suptitle()
    assert title.startswith("f.root, run 7, event 3\n")
    assert "144 clusters, 2 truth tracks, 48 unmatched" in title


def test_track_colors_differ_between_a_few_tracks():
    colors = plots.track_colors(np.arange(20))
    assert np.unique(colors, axis=0).shape[0] == 20


def test_event_display_without_truth_uses_one_color_and_says_so():
    x, y, z, _ = synthetic_event()
    fig = plots.event_display_figure(x, y, z, None, title="t")
    ax_xy, ax_rz = fig.axes
    np.testing.assert_allclose(ax_xy.collections[0].get_offsets(), np.c_[x, y])
    for ax in (ax_xy, ax_rz):
        assert np.unique(ax.collections[0].get_facecolors(), axis=0).tolist() == [list(plots.NO_TRUTH_COLOR)]
    assert "144 clusters; no truth in this input" in fig.get_suptitle()


def bar_heights(ax) -> np.ndarray:
    return np.array([patch.get_height() for patch in ax.patches])


def test_dataset_overview_histograms_hold_every_event_and_cluster():
    rng = np.random.default_rng(3)
    spacepoints = rng.poisson(300, 50)
    spacepoints[:5] = 0
    tracks = rng.poisson(30, 50)
    energy = rng.gamma(2.0, 120.0, 5000)
    energy[0] = np.nan
    fig = plots.dataset_overview_figure(spacepoints, tracks, energy, title="Overview")
    ax_sp, ax_tracks, ax_energy = fig.axes
    assert bar_heights(ax_sp).sum() == 50
    assert bar_heights(ax_tracks).sum() == 50
    assert bar_heights(ax_energy).sum() == 4999
    bins = np.array([[p.get_x(), p.get_x() + p.get_width()] for p in ax_sp.patches])
    first_bin = (spacepoints >= bins[0, 0]) & (spacepoints < bins[0, 1])
    assert bar_heights(ax_sp)[0] == first_bin.sum() >= 5
    assert ax_sp.lines[0].get_xdata()[0] == pytest.approx(spacepoints.mean())
    assert fig.get_suptitle() == "Overview"


def test_dataset_overview_without_truth_leaves_the_tracks_histogram_out():
    fig = plots.dataset_overview_figure(np.array([3, 3, 1]), None, np.array([10.0, 20.0]))
    ax_sp, ax_energy = fig.axes
    assert "spacepoints" in ax_sp.get_xlabel()
    assert "energy" in ax_energy.get_xlabel()
    assert bar_heights(ax_sp).sum() == 3
    assert bar_heights(ax_energy).sum() == 2
    empty = plots.dataset_overview_figure(np.array([]), np.array([]), np.array([]))
    assert [bar_heights(ax).sum() for ax in empty.axes] == [0, 0, 0]


def test_serialization_colors_points_by_their_position_in_the_order():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 0.0, 1.0])
    order = np.array([2, 0, 3, 1])
    knn = np.array([[1, -1], [2, 3], [3, -1], [-1, -1]])
    fig = plots.serialization_figure(x, y, order, np.array([0, 0, 1, 1]), knn, title="t")
    ax_seq = fig.axes[0]
    np.testing.assert_allclose(ax_seq.lines[0].get_xydata(), np.c_[x[order], y[order]])
    np.testing.assert_array_equal(ax_seq.collections[0].get_array(), [1, 3, 0, 2])
    assert "2 occupied boxes" in ax_seq.get_title()


# ------------------------------------------------------------------------------------------------------------
# writing PNGs
# ------------------------------------------------------------------------------------------------------------


def test_save_writes_a_fixed_size_png_atomically(tmp_path):
    target = tmp_path / "sub" / "ev.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    x, y, z, track = synthetic_event()
    assert plots._save(plots.event_display_figure(x, y, z, track), target) == target
    assert target.read_bytes()[:8] == PNG_MAGIC
    width, height = plots.FIGSIZE["event_display"]
    assert matplotlib.image.imread(target).shape[:2] == (round(height * plots.DPI), round(width * plots.DPI))
    assert [p.name for p in target.parent.iterdir()] == ["ev.png"]


def test_save_keeps_the_old_file_when_drawing_fails(tmp_path):
    target = tmp_path / "ev.png"
    target.write_bytes(b"old")

    class Broken(Exception):
        pass

    fig = plots.event_display_figure(*synthetic_event())

    def broken_savefig(*_args, **_kwargs):
        raise Broken("disk full")

    fig.savefig = broken_savefig
    with pytest.raises(Broken, match="disk full"):
        plots._save(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ev.png"]


# ------------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------------


def test_input_sources_expands_folders_of_root_files_and_keeps_sets(tmp_path, sim_svtx):
    roots = sorted(sim_svtx.glob("*.root"))
    assert plots.input_sources([sim_svtx]) == roots
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.json").write_text("{}")
    assert plots.input_sources([tmp_path / "set", roots[0]]) == [tmp_path / "set", roots[0]]
    assert plots.input_sources(tmp_path) == [tmp_path]  # a dataset: sets below
    (tmp_path / "empty").mkdir()
    with pytest.raises(DisplayError, match=r"empty: no \.root files and no converted set"):
        plots.input_sources([tmp_path / "empty"])


def test_display_event_of_a_root_file_names_the_file_and_events_when_absent(tmp_path, sim_svtx):
    path = sorted(sim_svtx.glob("*.root"))[0]
    with pytest.raises(
        DisplayError,
        match=r"fm4npp_sim_00000\.root: no event 500; events present: 0, 1, 2, .*"
        r"\(120 events; run\(s\) \d+\)",
    ):
        plots.display_event(path, 500, tmp_path / "bad.png")
    _, table, _ = root_events(path)
    assert (plots.spacepoints_per_event(table) > 0).all()  # the trigger (on by default) keeps no empty event
    # without the trigger some collisions leave no TPC spacepoint (here 2 of 20)
    simulate(20, tmp_path / "untriggered", seed=5, events_per_file=20, trigger="none")
    path = tmp_path / "untriggered" / path.name
    _, table, _ = root_events(path)
    empty = table["event"].to_numpy()[plots.spacepoints_per_event(table) == 0]
    assert empty.shape[0] > 0
    with pytest.raises(DisplayError, match=rf"run \d+, event {int(empty[0])} has no TPC spacepoints to draw"):
        plots.display_event(path, int(empty[0]), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
