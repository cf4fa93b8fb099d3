"""Tests of fm4npp_data.plots on tiny synthetic arrays and tiny ROOT files (no simulation)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import uproot

from fm4npp_data import geometry as g
from fm4npp_data import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, kind: str) -> np.ndarray:
    """The file is a complete PNG of FIGSIZE[kind] * DPI pixels, with no temporary files left beside it."""
    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    width, height = plots.FIGSIZE[kind]
    assert image.shape[:2] == (round(height * plots.DPI), round(width * plots.DPI))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return image


def non_white_fraction(image: np.ndarray) -> float:
    return float(np.mean(np.any(image[..., :3] < 0.95, axis=-1)))


# ------------------------------------------------------------------------------------------------------------
# pure helpers
# ------------------------------------------------------------------------------------------------------------


def test_figure_pixel_sizes():
    assert plots.DPI == 110
    assert round(plots.FIGSIZE["energy_vs_momentum"][0] * plots.DPI) == 880


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


def test_track_colors_grey_for_nan_and_same_color_per_track():
    key = np.array([3.0, np.nan, 3.0, -1.0, 7.0], dtype=np.float32)
    colors = plots.track_colors(key)
    assert colors.shape == (5, 4)
    np.testing.assert_array_equal(colors[1], plots.UNMATCHED_COLOR)
    np.testing.assert_array_equal(colors[0], colors[2])
    assert not np.array_equal(colors[0], colors[3])
    assert not np.array_equal(colors[3], colors[4])
    assert plots.track_colors(np.array([np.nan, np.nan])).tolist() == [list(plots.UNMATCHED_COLOR)] * 2


def test_per_event_counts_counts_empty_events_and_ignores_unmatched():
    file = np.array([0, 0, 0, 0, 1, 1])
    event = np.array([0, 0, 0, 2, 1, 1], dtype=np.float32)
    track = np.array([1, 1, -1, np.nan, 1, 1], dtype=np.float32)
    spacepoints, tracks = plots.per_event_counts(file, event, track, n_events=[3, 2])
    assert spacepoints.tolist() == [3, 0, 1, 0, 2]
    assert tracks.tolist() == [2, 0, 0, 0, 1]


# ------------------------------------------------------------------------------------------------------------
# figures from arrays
# ------------------------------------------------------------------------------------------------------------


def test_energy_vs_momentum_png(tmp_path):
    rng = np.random.default_rng(1)
    n = 4000
    pdg = rng.choice([211.0, -211.0, 321.0, 2212.0, -11.0, 13.0, np.nan], n)
    p = np.exp(rng.uniform(np.log(0.03), np.log(8.0), n)).astype(np.float32)
    adc = (200.0 / np.minimum(p, 1.0) + rng.exponential(50.0, n)).astype(np.float32)
    out = plots.energy_vs_momentum(p, adc, pdg, tmp_path / "e.png", title="test")
    assert out == tmp_path / "e.png"
    image = assert_png(out, "energy_vs_momentum")
    assert non_white_fraction(image) > 0.05


def test_energy_vs_momentum_without_any_species(tmp_path):
    out = plots.energy_vs_momentum(
        np.array([0.5, 1.0]), np.array([100.0, 200.0]), np.array([np.nan, 13.0]), tmp_path / "empty.png"
    )
    assert_png(out, "energy_vs_momentum")


def test_energy_vs_momentum_thins_scatter_but_not_medians(tmp_path):
    p = np.full(500, 0.5)
    out = plots.energy_vs_momentum(
        p, np.arange(500.0), np.full(500, 211.0), tmp_path / "thin.png", max_points_per_species=50
    )
    assert_png(out, "energy_vs_momentum")


def test_event_display_png(tmp_path):
    rng = np.random.default_rng(2)
    radius = np.tile(g.LAYER_RADII, 3)
    phi = np.repeat([0.3, 2.0, -2.5], g.N_LAYERS) + rng.normal(0, 0.01, radius.size)
    x, y = radius * np.cos(phi), radius * np.sin(phi)
    z = np.repeat([10.0, -40.0, 80.0], g.N_LAYERS) * radius / 50.0
    key = np.repeat([1.0, -3.0, np.nan], g.N_LAYERS).astype(np.float32)
    out = plots.event_display(x, y, z, key, tmp_path / "sub" / "ev.png", title="synthetic")
    image = assert_png(out, "event_display")
    assert non_white_fraction(image) > 0.02


def test_event_display_overwrites_atomically(tmp_path):
    target = tmp_path / "ev.png"
    target.write_bytes(b"old")
    plots.event_display(np.array([]), np.array([]), np.array([]), np.array([]), target)
    assert_png(target, "event_display")


def test_dataset_overview_png(tmp_path):
    rng = np.random.default_rng(3)
    spacepoints = rng.poisson(300, 50)
    spacepoints[:5] = 0
    tracks = rng.poisson(30, 50)
    adc = rng.gamma(2.0, 120.0, 5000).astype(np.float32)
    adc[0] = np.nan
    out = plots.dataset_overview(spacepoints, tracks, adc, tmp_path / "o.png")
    assert_png(out, "dataset_overview")
    out = plots.dataset_overview(np.array([]), np.array([]), np.array([]), tmp_path / "o_empty.png")
    assert_png(out, "dataset_overview")


# ------------------------------------------------------------------------------------------------------------
# ROOT files
# ------------------------------------------------------------------------------------------------------------

BRANCHES = ("event", "layer", "x", "y", "z", "adc", "gtrackID", "gflavor", "gpx", "gpy", "gpz")


def write_root(path: Path, rows: dict[str, np.ndarray], gtrack_events: np.ndarray | None = None) -> Path:
    with uproot.recreate(path) as f:
        f.mktree("ntp_cluster", {name: np.float32 for name in rows})
        f["ntp_cluster"].extend({k: np.asarray(v, dtype=np.float32) for k, v in rows.items()})
        if gtrack_events is not None:
            f.mktree("ntp_gtrack", {"event": np.float32})
            f["ntp_gtrack"].extend({"event": np.asarray(gtrack_events, dtype=np.float32)})
    return path


def cluster_rows(n_events: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Per event: 2 silicon clusters (layers 0 and 5) and one track through all 48 TPC layers."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {name: [] for name in BRANCHES}
    for ev in range(n_events):
        layers = np.r_[0, 5, np.arange(g.FIRST_TPC_LAYER, g.LAST_TPC_LAYER + 1)]
        radius = np.r_[2.5, 9.7, g.LAYER_RADII]
        phi = rng.uniform(-np.pi, np.pi)
        m = layers.size
        rows["event"].append(np.full(m, ev))
        rows["layer"].append(layers)
        rows["x"].append(radius * np.cos(phi))
        rows["y"].append(radius * np.sin(phi))
        rows["z"].append(radius * 0.3)
        rows["adc"].append(rng.gamma(2.0, 120.0, m))
        track = np.full(m, ev + 1.0)
        track[-1] = np.nan
        rows["gtrackID"].append(track)
        rows["gflavor"].append(np.where(np.isnan(track), np.nan, 211.0))
        rows["gpx"].append(np.full(m, 0.3))
        rows["gpy"].append(np.full(m, 0.4))
        rows["gpz"].append(np.full(m, 0.0))
    return {k: np.concatenate(v).astype(np.float32) for k, v in rows.items()}


def test_read_tpc_clusters_keeps_tpc_layers_only(tmp_path):
    rows_a, rows_b = cluster_rows(3, seed=0), cluster_rows(2, seed=1)
    a = write_root(tmp_path / "a.root", rows_a)
    b = write_root(tmp_path / "b.root", rows_b)
    d = plots.read_tpc_clusters([a, str(b)], ["x", "layer", "adc", "gtrackID"])
    assert set(d) == {"x", "layer", "adc", "gtrackID", "file"}
    assert d["x"].shape == (5 * g.N_LAYERS,)
    assert d["layer"].min() == g.FIRST_TPC_LAYER and d["layer"].max() == g.LAST_TPC_LAYER
    assert d["file"].tolist() == [0] * (3 * g.N_LAYERS) + [1] * (2 * g.N_LAYERS)
    assert d["x"].dtype == np.float32 and d["x"].dtype.isnative
    tpc_a = rows_a["layer"] >= g.FIRST_TPC_LAYER
    np.testing.assert_array_equal(d["x"][: tpc_a.sum()], rows_a["x"][tpc_a])
    np.testing.assert_array_equal(d["adc"][d["file"] == 1], rows_b["adc"][rows_b["layer"] >= 7])
    assert np.isnan(d["gtrackID"]).sum() == 5


def test_read_tpc_clusters_layer_not_returned_unless_asked(tmp_path):
    path = write_root(tmp_path / "a.root", cluster_rows(1))
    d = plots.read_tpc_clusters(path, ["event"])
    assert set(d) == {"event", "file"}
    assert d["event"].shape == (g.N_LAYERS,)


def test_read_tpc_clusters_errors_name_file_and_branch(tmp_path):
    rows = cluster_rows(1)
    del rows["adc"]
    path = write_root(tmp_path / "noadc.root", rows)
    with pytest.raises(ValueError, match=r"noadc\.root.*'adc'"):
        plots.read_tpc_clusters(path, ["x", "adc"])
    with pytest.raises(FileNotFoundError, match=r"missing\.root"):
        plots.read_tpc_clusters(tmp_path / "missing.root", ["x"])
    with uproot.recreate(tmp_path / "notree.root") as f:
        f.mktree("other", {"x": np.float32})
    with pytest.raises(ValueError, match=r"notree\.root.*ntp_cluster"):
        plots.read_tpc_clusters(tmp_path / "notree.root", ["x"])
    (tmp_path / "junk.root").write_bytes(b"not a ROOT file at all")
    with pytest.raises(ValueError, match=r"junk\.root"):
        plots.read_tpc_clusters(tmp_path / "junk.root", ["x"])
    with pytest.raises(ValueError, match="no input files"):
        plots.read_tpc_clusters([], ["x"])


def test_plot_simulation_writes_three_pngs(tmp_path):
    a = write_root(tmp_path / "a.root", cluster_rows(3, seed=0), gtrack_events=np.arange(5))
    b = write_root(tmp_path / "b.root", cluster_rows(2, seed=1))
    written = plots.plot_simulation([a, b], tmp_path / "out")
    assert [p.name for p in written] == ["energy_vs_momentum.png", "event_display.png", "overview.png"]
    assert_png(written[0], "energy_vs_momentum")
    assert_png(written[1], "event_display")
    assert_png(written[2], "dataset_overview")


def test_pick_display_event_prefers_largest_below_limit():
    event = np.r_[np.zeros(plots.DISPLAY_MAX_CLUSTERS + 5), np.ones(10), np.full(30, 3)]
    assert plots._pick_display_event(event) == 3
    assert plots._pick_display_event(np.zeros(plots.DISPLAY_MAX_CLUSTERS + 5)) == 0


def test_display_event_and_its_error(tmp_path):
    path = write_root(tmp_path / "f.root", cluster_rows(3), gtrack_events=np.arange(4))
    out = plots.display_event(path, 1, tmp_path / "one.png")
    assert_png(out, "event_display")
    with pytest.raises(ValueError, match=r"f\.root: event 7 .*0\.\.3"):
        plots.display_event(path, 7, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"event 3 .*0\.\.3 \(3 of them with TPC clusters\)"):
        plots.display_event(path, 3, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
