"""`fm4npp-data display` and `fm4npp-data stats` through the command line, on every kind of input.

The figures a command saves are captured (plots._save is wrapped) so that the tests check what was drawn, against
what the project's readers give for the same input (root_events, read_events)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from fm4npp_cli.data import main

from fm4npp_data.conversion.convert import convert
from fm4npp_data.conversion.ingest import root_events
from fm4npp_data.dataset import read_events
from fm4npp_data.plots import events as plots


def capture(monkeypatch, render: bool) -> dict:
    """The figures saved during a test, by file name; written as PNGs when `render`, else not drawn at all (faster)."""
    figures = {}
    save = plots._save

    def saved(fig, out_png):
        path = save(fig, out_png) if render else Path(out_png)
        figures[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", saved)
    return figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during a test, by file name; the PNGs are written too."""
    return capture(monkeypatch, render=True)


@pytest.fixture
def sketched(monkeypatch):
    """The figures saved during a test, by file name; no PNG is written (for tests of the data drawn)."""
    return capture(monkeypatch, render=False)


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def flat(table, column: str, row: int) -> np.ndarray:
    return np.asarray(table[column][row].values.to_numpy(zero_copy_only=False), dtype=np.float64)


def test_display_of_a_truthless_trkr_ntuplizer_file(sim_trkr, tmp_path, drawn):
    path = sorted(sim_trkr.glob("*.root"))[0]
    layout, table, counts = root_events(path)
    assert layout.truth == "none"
    row = int(np.argmax(plots.spacepoints_per_event(table)))
    run, event = table["run"][row].as_py(), table["event"][row].as_py()
    out = tmp_path / "e.png"
    code, output = invoke("display", path, "--event", event, "--out", out)
    assert (code, output) == (0, f"wrote {out}\n")
    assert out.is_file()
    ax_xy, ax_rz = drawn["e.png"].axes
    x, y, z = (flat(table, c, row) for c in "xyz")
    np.testing.assert_allclose(ax_xy.collections[0].get_offsets(), np.c_[x, y], rtol=1e-6)
    np.testing.assert_allclose(ax_rz.collections[0].get_offsets(), np.c_[z, np.hypot(x, y)], rtol=1e-6)
    assert len(np.unique(ax_xy.collections[0].get_facecolors(), axis=0)) == 1
    title = drawn["e.png"].get_suptitle()
    assert title.startswith(f"{path.name}, run {run}, event {event}\n")
    assert "no truth in this input" in title
    assert x.size < counts.spacepoints_out  # one event of the file


def test_stats_of_truthless_files_skips_the_truth_figures(sim_trkr, tmp_path, drawn):
    out = tmp_path / "figs"
    code, output = invoke("stats", sim_trkr, "--out", out)
    assert code == 0, output
    assert output.splitlines() == [
        f"wrote {out / 'event_display.png'}",
        f"wrote {out / 'overview.png'}",
        "skipped energy_vs_momentum.png: no truth momenta in the input (truth: none)",
        "skipped overview.png, its tracks-per-event histogram: no truth track ids in the input (truth: none)",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["event_display.png", "overview.png"]
    tables = [root_events(p)[1] for p in sorted(sim_trkr.glob("*.root"))]
    spacepoints = np.concatenate([plots.spacepoints_per_event(t) for t in tables])
    ax_sp, ax_energy = drawn["overview.png"].axes
    assert sum(p.get_height() for p in ax_sp.patches) == spacepoints.size
    assert sum(p.get_height() for p in ax_energy.patches) == spacepoints.sum()
    # the display: the first file's event with the most spacepoints below the limit
    first = plots.spacepoints_per_event(tables[0])
    want = first[first < plots.DISPLAY_MAX_CLUSTERS].max()
    assert len(drawn["event_display.png"].axes[0].collections[0].get_offsets()) == want


def test_stats_of_simulated_files_with_truth(sim_svtx, tmp_path, sketched):
    code, output = invoke("stats", sim_svtx, "--out", tmp_path)
    assert code == 0
    assert "skipped" not in output
    assert [line.split("/")[-1] for line in output.splitlines()] == [
        "energy_vs_momentum.png",
        "event_display.png",
        "overview.png",
    ]
    assert sketched["overview.png"].axes[1].patches  # the tracks-per-event histogram
    assert sum(p.get_height() for p in sketched["overview.png"].axes[1].patches) == 240
    assert "(2 file(s), 240 events)" in sketched["energy_vs_momentum.png"].axes[0].get_title()


@pytest.fixture
def converted(sim_svtx, tmp_path):
    """Both svtx-evaluator files converted together: events count from 0 in each, the runs differ."""
    out = tmp_path / "set"
    convert([sim_svtx], out)
    return out


def test_display_of_a_repeated_event_number_needs_the_run(converted, tmp_path, drawn):
    ids = read_events(converted, columns=["run", "event"])
    runs = sorted(set(ids["run"].to_pylist()))
    assert len(runs) == 2
    code, output = invoke("display", converted, "--event", 5, "--out", tmp_path / "e.png")
    assert code == 2
    runs_listed = f"({runs[0]}, {runs[1]})"
    assert output == f"Error: {converted}: event 5 is in 2 runs {runs_listed}: pass --run-number to choose one\n"
    assert not (tmp_path / "e.png").exists()

    code, output = invoke("display", converted, "--event", 5, "--run", runs[1], "--out", tmp_path / "e.png")
    assert (code, output) == (0, f"wrote {tmp_path / 'e.png'}\n")
    event = read_events(converted, run=runs[1], event=5)
    fig = drawn["e.png"]
    x, y = flat(event, "x", 0), flat(event, "y", 0)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), np.c_[x, y], rtol=1e-6)
    track = event["track_id"][0].values.to_numpy()
    colors = fig.axes[0].collections[0].get_facecolors()
    np.testing.assert_array_equal(colors, plots.track_colors(track))
    assert fig.get_suptitle().startswith(f"set, run {runs[1]}, event 5\n")

    code, output = invoke("display", converted, "--event", 5, "--run", 1, "--out", tmp_path / "x.png")
    assert (code, output) == (
        2,
        f"Error: {converted}: no event 5 in run 1; event 5 is in run(s) {runs[0]}, {runs[1]}\n",
    )


def test_stats_of_a_converted_set_matches_the_root_files(converted, sim_svtx, tmp_path, sketched):
    code, output = invoke("stats", converted, "--out", tmp_path / "figs")
    assert code == 0
    assert "skipped" not in output
    from_set = sketched.pop("energy_vs_momentum.png").axes[0]
    table = read_events(converted)
    p = plots.truth_momentum(table)
    energy = pc.list_flatten(table["energy"]).to_numpy()
    pid = plots.spacepoint_values(table, "pid", 0, np.int8)
    pions = (pid == 1) & (p >= plots.P_RANGE[0]) & (p <= plots.P_RANGE[1])
    centres, medians = plots.binned_median(p[pions], energy[pions], plots.momentum_edges())
    np.testing.assert_allclose(from_set.lines[0].get_xydata(), np.c_[centres, medians])
    code, _ = invoke("stats", sim_svtx, "--out", tmp_path / "root")
    assert code == 0
    np.testing.assert_allclose(
        sketched["energy_vs_momentum.png"].axes[0].lines[0].get_xydata(), np.c_[centres, medians]
    )
