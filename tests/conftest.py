"""Shared fixtures: small simulated runs in each ROOT layout (simulated once per test session)."""

import pytest

from fm4npp_data.simulation import simulate


@pytest.fixture(scope="session")
def sim_svtx(tmp_path_factory):
    """Two svtx-evaluator files of 120 events each."""
    out = tmp_path_factory.mktemp("sim") / "svtx"
    simulate(240, out, seed=5, events_per_file=120)
    return out


@pytest.fixture(scope="session")
def sim_trkr(tmp_path_factory):
    """Two trkr-ntuplizer (truth-less) files of 50 events each."""
    out = tmp_path_factory.mktemp("sim") / "trkr"
    simulate(100, out, seed=6, events_per_file=50, layout="trkr-ntuplizer")
    return out
