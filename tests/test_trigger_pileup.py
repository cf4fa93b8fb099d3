"""The minimum-bias trigger, the selection of events with TPC spacepoints, and pile-up."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest

from fm4npp_data import geometry as g
from fm4npp_data.simulation import simulate
from fm4npp_data.simulation.generator import EventGenerator, TruthParticles, mbd_fired, with_pileup
from fm4npp_data.simulation.runner import drift_delays, select_events, simulate_chunk, triggered_batch

pytest.importorskip("pythia8mc")

M_PI = 0.13957


def _batch(events):
    """A PYTHIA-like batch: each event a list of (pdg, status, pt, eta, mass)."""
    rows = []
    for particles in events:
        rows.append([])
        for pdg, status, pt, eta, mass in particles:
            pz = pt * np.sinh(eta)
            e = np.sqrt(pt * pt + pz * pz + mass * mass)
            rows[-1].append({"id": pdg, "status": status, "p": {"px": pt, "py": 0.0, "pz": pz, "e": e}})
    return ak.Array([{"prt": r} for r in rows])


def test_mbd_needs_a_fast_charged_particle_in_each_arm():
    fired = mbd_fired(
        _batch(
            [
                [(211, 91, 0.3, 4.0, M_PI), (-211, 91, 0.3, -4.0, M_PI)],  # both arms: fires
                [(211, 91, 0.3, 4.0, M_PI), (211, 91, 0.3, 4.2, M_PI)],  # north only
                [(211, 91, 0.3, 4.0, M_PI), (22, 91, 0.3, -4.0, 0.0)],  # a photon does not count
                [(211, 91, 0.3, 4.0, M_PI), (-211, 91, 0.3, -3.0, M_PI)],  # south particle outside 3.51..4.61
                [(211, 91, 0.3, 4.0, M_PI), (-211, 91, 0.3, -4.7, M_PI)],  # beyond 4.61
                [(211, 91, 0.3, 4.0, M_PI), (-211, -91, 0.3, -4.0, M_PI)],  # not a final-state particle
                # slow proton south: p = 0.3 cosh(4) = 8 GeV is fast; at pt 0.01, p = 0.27 GeV, beta 0.28 < 1/n
                [(211, 91, 0.3, 4.0, M_PI), (2212, 91, 0.01, -4.0, 0.938)],
                [(211, 91, 0.3, 4.0, M_PI), (2212, 91, 0.3, -4.0, 0.938)],
            ]
        )
    )
    assert fired.tolist() == [True, False, False, False, False, False, False, True]
    assert pytest.approx(0.686, abs=1e-3) == 1.0 / g.QUARTZ_REFRACTIVE_INDEX


def test_triggered_events_are_the_untriggered_ones_that_fire_in_the_same_order():
    generator = EventGenerator()
    everything = generator.generate(80, 21)
    fired = np.flatnonzero(mbd_fired(everything))
    batch, position = triggered_batch(generator, 20, 21, "mbd")
    assert len(batch) == 20
    assert mbd_fired(batch).all()
    np.testing.assert_array_equal(position, fired[:20])  # all from the first batch of 2 x 20 + 16 = 56 events
    for i in (0, 7, 19):
        np.testing.assert_array_equal(batch.prt.id[i], everything.prt.id[position[i]])
    # efficiency of the trigger on inelastic p+p collisions: about half (sPHENIX: ~ 60 % of 42 mb)
    big = mbd_fired(generator.generate(1000, 5)).mean()
    assert 0.4 < big < 0.7


def test_select_events_keeps_their_hits_and_particles_and_renumbers():
    c = simulate_chunk(6, 17, "none")
    sel = np.array([1, 4])
    s = select_events(c, sel)
    assert s.n_events == 2
    for new, old in enumerate(sel):
        assert (s.hit_event == new).sum() == (c.hit_event == old).sum()
        assert (s.p_event == new).sum() == (c.p_event == old).sum()
        np.testing.assert_array_equal(s.hit_adc[s.hit_event == new], c.hit_adc[c.hit_event == old])
        # each hit's particle is the same particle (pdg and momentum) as before
        ok_new = s.hit_particle[s.hit_event == new]
        ok_old = c.hit_particle[c.hit_event == old]
        np.testing.assert_array_equal(ok_new >= 0, ok_old >= 0)
        np.testing.assert_array_equal(s.p_mom[ok_new[ok_new >= 0]], c.p_mom[ok_old[ok_old >= 0]])
    parents = s.p_parent[s.p_parent >= 0]
    assert (s.p_event[s.p_parent >= 0] == s.p_event[parents]).all()


def test_default_chunk_has_no_empty_event_and_counts_the_rejected():
    untriggered = simulate_chunk(60, 23, "none")
    c = simulate_chunk(20, 23, "mbd")
    tpc = c.hit_layer >= g.FIRST_TPC_LAYER
    assert (np.bincount(c.hit_event[tpc], minlength=20) > 0).all()
    assert c.rejected > 0
    # the kept events are, in order, the untriggered sample's events at positions fired-and-not-empty: their
    # numbers of generator particles agree event by event
    n_gen = np.bincount(untriggered.p_event[untriggered.p_primary], minlength=60)
    kept = np.bincount(c.p_event[c.p_primary], minlength=20)
    generated = c.n_events + c.rejected + c.empty
    assert generated <= 60
    assert set(kept.tolist()) <= set(n_gen[:generated].tolist())


def _truth(n_events, per_event, pdg0, t=0.0):
    n = n_events * per_event
    return TruthParticles(
        ev_start=np.arange(0, n + 1, per_event),
        pdg=np.full(n, pdg0) + np.arange(n),
        charge=np.ones(n),
        mass=np.full(n, M_PI),
        mom=np.ones((n, 3)),
        vtx=np.zeros((n, 4)) + t,
        end_len=np.full(n, np.inf),
        primary=np.arange(n) % per_event == 0,
        parent=np.where(np.arange(n) % per_event == 0, -1, np.arange(n) - 1),
        collision=np.zeros((n_events, 4)),
    )


def test_with_pileup_appends_each_collision_to_its_event_and_reindexes_parents():
    truth = _truth(3, 2, 100)  # pdg 100..105, events of 2
    pile = _truth(2, 2, 200)  # pdg 200..203
    merged = with_pileup(truth, pile, owner=np.array([0, 2]), t0=np.array([500.0, -800.0]))
    assert merged.ev_start.tolist() == [0, 4, 6, 10]
    assert merged.pdg.tolist() == [100, 101, 200, 201, 102, 103, 104, 105, 202, 203]
    assert merged.time_offset.tolist() == [0, 0, 500, 500, 0, 0, 0, 0, -800, -800]
    assert merged.vtx[:, 3].tolist() == merged.time_offset.tolist()
    # parents: each secondary's parent is the particle one before it, in the merged order too
    assert merged.parent.tolist() == [-1, 0, -1, 2, -1, 4, -1, 6, -1, 8]


def test_pileup_clusters_move_by_the_drift_time_and_leave_the_window():
    truth = _truth(1, 2, 100)
    truth.time_offset = np.array([0.0, 1000.0])
    truth.vtx[:, 3] = truth.time_offset  # as with_pileup sets them
    truth.parent = np.array([-1, -1])
    layer = g.FIRST_TPC_LAYER + 3
    hit_f = np.zeros((5, 7))
    hit_f[:, 2] = [50.0, 50.0, -50.0, 100.0, 5.0]
    hit_i = np.array([[0, 0, layer], [0, 1, layer], [0, 1, layer], [0, 2, layer], [0, 1, 0]])
    new_i = np.array([[0, 11, 1, 2]])  # particle 2 is made by particle 1 (pile-up, t0 = 1000 ns) at once
    new_f = np.zeros((1, 7))
    new_f[0, 6] = 1000.0
    f, i = drift_delays(hit_f, hit_i, new_f, new_i, truth)
    shift = g.DRIFT_VELOCITY * 1000.0  # 7.55 cm
    # the triggered hit stays; pile-up hits move towards the membrane; the silicon pile-up hit is dropped
    assert f[:, 2].tolist() == pytest.approx([50.0, 50.0 - shift, -50.0 + shift, 100.0 - shift])
    assert i[:, 1].tolist() == [0, 1, 1, 2]
    truth.time_offset = np.array([0.0, -2000.0])  # 15.1 cm further out: 100 -> 115 leaves the drift volume
    truth.vtx[:, 3] = truth.time_offset
    new_f[0, 6] = -2000.0
    f, i = drift_delays(hit_f, hit_i, new_f, new_i, truth)
    assert f[:, 2].tolist() == pytest.approx([50.0, 50.0 + 2 * shift, -50.0 - 2 * shift])


def test_late_charge_of_the_triggered_collision_is_read_closer_to_the_membrane():
    # a muon stopped in the gas decays 2 us later: its electron's clusters are read 15.1 cm closer to the membrane,
    # one at |z| < 15.1 cm is lost; the silicon keeps its hits of the triggered collision
    truth = _truth(1, 1, 100)
    layer = g.FIRST_TPC_LAYER + 3
    hit_f = np.zeros((4, 7))
    hit_f[:, 2] = [60.0, -40.0, 10.0, 5.0]
    hit_i = np.array([[0, 1, layer], [0, 1, layer], [0, 1, layer], [0, 1, 0]])
    new_i = np.array([[0, 11, 0, 6]])
    new_f = np.zeros((1, 7))
    new_f[0, 6] = 2000.0
    f, i = drift_delays(hit_f, hit_i, new_f, new_i, truth)
    shift = g.DRIFT_VELOCITY * 2000.0
    assert f[:, 2].tolist() == pytest.approx([60.0 - shift, -40.0 + shift, 5.0])
    assert i[:, 2].tolist() == [layer, layer, 0]


def test_pileup_adds_collisions_and_spacepoints_and_is_recorded(tmp_path):
    plain = simulate(20, tmp_path / "a", seed=8)
    piled = simulate(20, tmp_path / "b", seed=8, pileup=3.0)
    record = json.loads((tmp_path / "b" / "simulation.json").read_text())
    assert record["pileup"] == 3.0
    assert record["trigger"] == "mbd"
    added = sum(f["pileup_collisions"] for f in record["files"])
    assert 30 < added < 95  # Poisson(3) x 20 events = 60 +- 8
    assert piled.spacepoints > plain.spacepoints
    assert json.loads((tmp_path / "a" / "simulation.json").read_text())["rejected"] == plain.rejected > 0


def test_pythia_reads_its_mpi_initialization_from_a_cache_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FM4NPP_CACHE", str(tmp_path))
    from fm4npp_data.simulation.generator import mpi_init_file

    path = mpi_init_file()
    assert path.parent == tmp_path
    assert not path.exists()
    first = EventGenerator()  # computes the tables, writes them atomically, then reads them like every later one
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left
    stamp = path.stat().st_mtime_ns
    second = EventGenerator()
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    a, b = first.generate(30, 4), second.generate(30, 4)
    assert ak.all(ak.flatten(a.prt.id) == ak.flatten(b.prt.id))
