"""`fm4npp-data simulate`: PYTHIA events -> fast TPC response -> ROOT files, in parallel, atomically.

Events are split into files of `events_per_file`; each file is made of chunks of at most CHUNK_EVENTS events whose
seeds derive from (seed, file index, chunk index) alone, so the output does not depend on the number of workers.
Everything is written into a hidden staging folder beside the output and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from .. import geometry as g
from ..errors import SimulationError, require
from ..labels import PID_CLASSES, noise_from_momentum, pid_from_pdg
from ..parallel import Failed, parallel_map
from ..version import tool_version
from .generator import EventGenerator, TruthParticles, mbd_fired, truth_particles, with_pileup
from .transport import Detector, detector, transport
from .writer import LAYOUTS, FileContent, RootWriter

CHUNK_EVENTS = 1000
#: key of the random streams of pile-up collisions (derived_seed(seed, PILEUP_STREAM, ...))
PILEUP_STREAM = 7_000_001
#: largest accepted --pileup (mean collisions per event): beyond RHIC's p+p rates in a 13.6 us drift window
MAX_PILEUP = 100.0
FILE_PATTERN = "fm4npp_sim_{index:05d}.root"


@dataclass
class FileStats:
    """What one output file holds."""

    path: str
    events: int
    spacepoints: int  # TPC clusters
    silicon_clusters: int
    tracks: int  # truth particles with at least one TPC spacepoint
    pid_counts: list[int] = field(default_factory=lambda: [0] * len(PID_CLASSES))  # TPC spacepoints per class
    noise: int = 0  # TPC spacepoints of particles below the noise cut
    rejected: int = 0  # generated collisions the trigger rejected
    empty: int = 0  # triggered events dropped for leaving no TPC spacepoint
    pileup_collisions: int = 0  # pile-up collisions added
    unmatched: int = 0  # TPC spacepoints without a truth match
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class RunSummary:
    out: str
    layout: str
    seed: int
    events: int
    files: list[FileStats]
    seconds: float
    trigger: str = "mbd"
    pileup: float = 0.0

    @property
    def rejected(self) -> int:
        """Generated collisions the trigger rejected."""
        return sum(f.rejected for f in self.files)

    @property
    def empty(self) -> int:
        """Triggered events dropped for leaving no TPC spacepoint."""
        return sum(f.empty for f in self.files)

    @property
    def spacepoints(self) -> int:
        return sum(f.spacepoints for f in self.files)

    @property
    def tracks(self) -> int:
        return sum(f.tracks for f in self.files)

    def class_fractions(self) -> dict[str, float]:
        counts = np.sum([f.pid_counts for f in self.files], axis=0)
        labeled = max(int(counts.sum()), 1)
        fractions = {name: int(n) / labeled for name, n in zip(PID_CLASSES, counts, strict=True)}
        fractions["noise"] = sum(f.noise for f in self.files) / labeled
        return fractions


def derived_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (NumPy SeedSequence): independent streams per file and chunk."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def run_number(seed: int) -> int:
    """The run number of a truth-less (trkr-ntuplizer) simulation: 1 + seed mod (2^24 - 1).

    Distinct seeds below 2^24 - 1 give distinct runs, so that simulations with different seeds convert together
    without (run, event) collisions; the value stays exact in the layout's Float_t `run` column (< 2^24)."""
    return 1 + seed % ((1 << 24) - 1)


def plan_files(n_events: int, events_per_file: int) -> list[tuple[int, int]]:
    """(file index, events) for each output file."""
    return [(i, min(events_per_file, n_events - start)) for i, start in enumerate(range(0, n_events, events_per_file))]


_GENERATOR: EventGenerator | None = None
_DETECTOR: Detector | None = None


def _tools():
    global _GENERATOR, _DETECTOR
    if _GENERATOR is None:
        _GENERATOR = EventGenerator()
        _DETECTOR = detector()
    return _GENERATOR, _DETECTOR


#: what the --trigger option accepts: the sPHENIX minimum-bias trigger, or every generated collision
TRIGGERS = ("mbd", "none")


def triggered_batch(generator: EventGenerator, n_events: int, seed: int, trigger: str):
    """n_events PYTHIA events that fire the trigger, and each one's position among the generated collisions.

    The first batch uses `seed` itself (so a triggered sample is a subset of the untriggered one of the same seed);
    top-ups use seeds derived from (seed, attempt).
    """
    if trigger == "none":
        return generator.generate(n_events, seed), np.arange(n_events)
    kept, positions, have, generated = [], [], 0, 0
    for attempt in range(1000):
        want = n_events - have
        size = want * 2 + 16 if attempt == 0 else max(want * 3, 64)
        batch = generator.generate(size, seed if attempt == 0 else derived_seed(seed, attempt))
        fired = np.flatnonzero(mbd_fired(batch))[:want]
        kept.append(batch[fired])
        positions.append(generated + fired)
        generated += size
        have += fired.shape[0]
        if have == n_events:
            return (kept[0] if len(kept) == 1 else ak.concatenate(kept)), np.concatenate(positions)
    raise SimulationError(f"the {trigger} trigger kept {have} of the {n_events} events asked after 1000 batches")


def add_pileup(generator: EventGenerator, truth: TruthParticles, mu: float, seed: int):
    """Poisson(mu) more (untriggered) collisions per event, at times uniform within +- the TPC drift time; the
    events with them, and how many each one got."""
    n_events = truth.collision.shape[0]
    rng = np.random.default_rng(derived_seed(seed, PILEUP_STREAM))
    per_event = rng.poisson(mu, n_events)
    total = int(per_event.sum())
    if total == 0:
        return truth, per_event
    owner = np.repeat(np.arange(n_events), per_event)
    t0 = rng.uniform(-g.DRIFT_TIME, g.DRIFT_TIME, total)
    pile = truth_particles(generator.generate(total, derived_seed(seed, PILEUP_STREAM, 1)), rng)
    return with_pileup(truth, pile, owner, t0), per_event


def drift_delays(hit_f, hit_i, new_f, new_i, truth: TruthParticles):
    """Read each TPC cluster at the time its charge was made; drop what leaves the readout window.

    Charge made t after the triggered collision reaches the pads t later, so a cluster at |z| is read as
    |z| - v_drift t; outside 0 < |z| < drift length it falls outside this event's readout. t is the production time
    of the cluster's particle: a pile-up collision's offset (which its detector-made particles inherit), a
    long-lived hadron's decay, a particle made late on a looper's path, or the life of a muon stopped before it
    decayed (microseconds: centimetres). Its own flight time after it was made (at most a few hundred ns on a
    looper's path, a few mm) is neglected. The silicon layers integrate over much shorter windows: their clusters of
    pile-up collisions are dropped.
    """
    t = np.concatenate([truth.vtx[:, 3], new_f[:, 6]])[hit_i[:, 1]]
    z = hit_f[:, 2]
    moved = np.abs(z) - g.DRIFT_VELOCITY * t
    tpc = hit_i[:, 2] >= g.FIRST_TPC_LAYER
    in_time = np.ones(hit_i.shape[0], bool)
    if truth.time_offset is not None:
        offset = np.concatenate([truth.time_offset, np.full(new_i.shape[0], np.nan)])
        parent = np.concatenate([truth.parent, new_i[:, 2]])
        for _ in range(1000):  # detector-made particles take their ancestor's collision time
            todo = np.flatnonzero(np.isnan(offset))
            if todo.shape[0] == 0:
                break
            offset[todo] = offset[parent[todo]]
        in_time = offset[hit_i[:, 1]] == 0.0
    keep = np.where(tpc, (moved > g.CENTRAL_MEMBRANE_HALF_WIDTH) & (moved < g.DRIFT_LENGTH), in_time)
    hit_f = hit_f[keep]
    hit_f[:, 2] = np.where(tpc[keep], np.sign(z[keep]) * moved[keep], hit_f[:, 2])
    return hit_f, hit_i[keep]


def select_events(c: FileContent, events: np.ndarray) -> FileContent:
    """The content of the given events (sorted indices) alone, events and particle indices renumbered."""
    event_map = np.full(c.n_events, -1, np.int64)
    event_map[events] = np.arange(events.shape[0])
    p_event = event_map[c.p_event]
    p_kept = p_event >= 0
    particle_map = np.full(p_event.shape[0], -1, np.int64)
    particle_map[p_kept] = np.arange(int(p_kept.sum()))
    hit_event = event_map[c.hit_event]
    h_kept = hit_event >= 0
    hit_particle = c.hit_particle[h_kept]
    p_parent = c.p_parent[p_kept]
    return FileContent(
        n_events=events.shape[0],
        seed=c.seed,
        hit_event=hit_event[h_kept],
        hit_particle=np.where(hit_particle >= 0, particle_map[hit_particle], -1),
        hit_layer=c.hit_layer[h_kept],
        hit_xyz=c.hit_xyz[h_kept],
        hit_true_xyz=c.hit_true_xyz[h_kept],
        hit_adc=c.hit_adc[h_kept],
        p_event=p_event[p_kept],
        p_pdg=c.p_pdg[p_kept],
        p_mom=c.p_mom[p_kept],
        p_vtx=c.p_vtx[p_kept],
        p_parent=np.where(p_parent >= 0, particle_map[p_parent], -1),
        p_primary=c.p_primary[p_kept],
        p_track_id=c.p_track_id[p_kept],
        p_keep=c.p_keep[p_kept],
    )


def simulate_chunk(n_events: int, seed: int, trigger: str = "mbd", pileup: float = 0.0) -> FileContent:
    """Generate and transport n_events events from one seed, with Poisson(pileup) pile-up.

    With a trigger, the events are the first n_events that fire it and leave at least one TPC spacepoint (the
    release holds no event without one); `rejected` counts the generated collisions the trigger rejected before the
    last kept event and `empty` the triggered ones without a TPC spacepoint.
    """
    if trigger == "none":
        return _transported(n_events, seed, trigger, pileup)[0]
    extra = n_events // 20 + 8
    while True:  # a few more triggered events than asked, so that enough are left after dropping the empty ones
        content, position, pileup_per_event = _transported(n_events + extra, seed, trigger, pileup)
        tpc = content.hit_layer >= g.FIRST_TPC_LAYER
        spacepoints = np.bincount(content.hit_event[tpc], minlength=content.n_events)
        used = np.flatnonzero(spacepoints > 0)[:n_events]
        if used.shape[0] == n_events:
            break
        extra *= 4
    last = int(used[-1])
    selected = select_events(content, used)
    selected.rejected = int(position[last]) - last
    selected.empty = last + 1 - n_events
    selected.pileup_collisions = int(pileup_per_event[used].sum())
    return selected


def _transported(n_events: int, seed: int, trigger: str, pileup: float):
    """n_events triggered events through the detector: their content, each one's position among the generated
    collisions and its number of pile-up collisions."""
    generator, surfaces = _tools()
    batch, position = triggered_batch(generator, n_events, seed, trigger)
    rng = np.random.default_rng(seed)
    truth = truth_particles(batch, rng)
    pileup_per_event = np.zeros(n_events, np.int64)
    if pileup > 0.0:
        truth, pileup_per_event = add_pileup(generator, truth, pileup, seed)
    hit_cap, new_cap = 2000 * n_events + 10000, 200 * n_events + 1000
    while True:
        hit_f, hit_i, new_f, new_i, overflow = transport(
            truth.ev_start,
            truth.pdg,
            truth.charge,
            truth.mass,
            truth.mom,
            truth.vtx,
            truth.end_len,
            surfaces,
            seed % (2**32),
            hit_cap,
            new_cap,
        )
        if not overflow:
            break
        hit_cap, new_cap = 4 * hit_cap, 4 * new_cap
    hit_f, hit_i = drift_delays(hit_f, hit_i, new_f, new_i, truth)
    n0, n1 = truth.pdg.shape[0], new_i.shape[0]
    n = n0 + n1
    p_event = np.concatenate([np.repeat(np.arange(n_events), np.diff(truth.ev_start)), new_i[:, 0]])
    p_parent = np.concatenate([truth.parent, new_i[:, 2]])
    p_primary = np.concatenate([truth.primary, np.zeros(n1, bool)])
    # which particles ntp_gtrack lists: every generator particle, and detector-made ones with clusters or with
    # descendants that have clusters
    keep = np.bincount(hit_i[:, 1], minlength=n) > 0
    keep[:n0] = True
    while True:
        parents = p_parent[np.flatnonzero(keep)]
        parents = parents[parents >= 0]
        if keep[parents].all():
            break
        keep[parents] = True
    # gtrackID: primaries 1, 2, ... and secondaries -1, -2, ... in each event, in particle order
    order = np.lexsort((np.arange(n), p_event))
    track_id = np.empty(n, np.int64)
    for flag, sign in ((True, 1), (False, -1)):
        members = order[p_primary[order] == flag]
        ev = p_event[members]
        first = np.searchsorted(ev, ev)
        track_id[members] = sign * (np.arange(members.shape[0]) - first + 1)
    hit_particle = hit_i[:, 1].copy()
    tpc = hit_i[:, 2] >= g.FIRST_TPC_LAYER
    hit_particle[tpc & (rng.random(hit_particle.shape[0]) < g.TRUTH_UNMATCHED_FRACTION)] = -1
    return (
        FileContent(
            n_events=n_events,
            seed=seed,
            hit_event=hit_i[:, 0],
            hit_particle=hit_particle,
            hit_layer=hit_i[:, 2],
            hit_xyz=hit_f[:, 0:3],
            hit_true_xyz=hit_f[:, 3:6],
            hit_adc=hit_f[:, 6],
            p_event=p_event,
            p_pdg=np.concatenate([truth.pdg, new_i[:, 1]]),
            p_mom=np.concatenate([truth.mom, new_f[:, 0:3]]),
            p_vtx=np.concatenate([truth.vtx, new_f[:, 3:7]]),
            p_parent=p_parent,
            p_primary=p_primary,
            p_track_id=track_id,
            p_keep=keep,
            pileup_collisions=int(pileup_per_event.sum()),
        ),
        position,
        pileup_per_event,
    )


def _content_stats(c: FileContent, stats: FileStats) -> None:
    tpc = c.hit_layer >= g.FIRST_TPC_LAYER
    stats.events += c.n_events
    stats.rejected += c.rejected
    stats.empty += c.empty
    stats.pileup_collisions += c.pileup_collisions
    stats.spacepoints += int(tpc.sum())
    stats.silicon_clusters += int((~tpc).sum())
    part = c.hit_particle[tpc]
    matched = part[part >= 0]
    stats.unmatched += int((part < 0).sum())
    stats.tracks += int(np.unique(matched).shape[0])
    pid = pid_from_pdg(c.p_pdg[matched])
    counts = np.bincount(pid, minlength=len(PID_CLASSES))
    stats.pid_counts = [a + int(b) for a, b in zip(stats.pid_counts, counts, strict=True)]
    mom = c.p_mom[matched]
    stats.noise += int(noise_from_momentum(mom[:, 0], mom[:, 1], mom[:, 2]).sum())


def simulate_file(
    index: int,
    n_events: int,
    seed: int,
    layout: str,
    out_dir: str,
    run_first_event: int = 0,
    run: int = 1,
    trigger: str = "mbd",
    pileup: float = 0.0,
) -> FileStats:
    """Simulate and write one file; returns what it holds.

    `event` counts from 0 per file in the svtx-evaluator layout (the evaluator's own counter); in the trkr-ntuplizer
    layout it is the event number within the run, as in recorded data, so it starts at `run_first_event`; that
    layout also records `run`.
    """
    start = time.perf_counter()
    path = Path(out_dir) / FILE_PATTERN.format(index=index)
    stats = FileStats(path=path.name, events=0, spacepoints=0, silicon_clusters=0, tracks=0)
    with RootWriter(path, layout, file_index=index, run=run) as writer:
        for chunk, first in enumerate(range(0, n_events, CHUNK_EVENTS)):
            count = min(CHUNK_EVENTS, n_events - first)
            content = simulate_chunk(count, derived_seed(seed, index, chunk), trigger, pileup)
            base = run_first_event if layout == "trkr-ntuplizer" else 0
            writer.write(content, event_offset=base + first)
            _content_stats(content, stats)
    stats.bytes = path.stat().st_size
    stats.seconds = time.perf_counter() - start
    return stats


def _check_options(
    n_events: int, out: Path, seed: int, layout: str, events_per_file: int, workers: int, trigger: str, pileup: float
) -> None:
    if n_events < 1:
        raise SimulationError(f"--events must be at least 1 (got {n_events})")
    if seed < 0:
        raise SimulationError(f"--seed must be a non-negative integer (got {seed})")
    if layout not in LAYOUTS:
        raise SimulationError(f"unknown --layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if events_per_file < 1:
        raise SimulationError(f"--events-per-file must be at least 1 (got {events_per_file})")
    if workers < 1:
        raise SimulationError(f"--workers must be at least 1 (got {workers})")
    if trigger not in TRIGGERS:
        raise SimulationError(f"unknown --trigger {trigger!r}; choose one of: {', '.join(TRIGGERS)}")
    if not (0.0 <= pileup <= MAX_PILEUP):
        raise SimulationError(
            f"--pileup must be a mean number of collisions between 0 and {MAX_PILEUP:g} (got {pileup}); 0 turns it off"
        )
    if out.exists():
        if not out.is_dir():
            raise SimulationError(f"output {out} exists and is not a directory: choose another --out")
        if any(out.iterdir()):
            raise SimulationError(f"output directory {out} is not empty: choose a new --out or empty it first")
    existing = out.resolve().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SimulationError(f"cannot create {out}: {existing} is a file, not a directory; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SimulationError(f"cannot write to {existing}: permission denied; choose a writable --out")


@dataclass(frozen=True)
class SimulateOptions:
    """The defaults of `simulate` (and of `fm4npp-data simulate`)."""

    seed: int = 1
    layout: str = "svtx-evaluator"
    events_per_file: int = 1000
    workers: int = 1
    trigger: str = "mbd"
    pileup: float = 0.0


def simulate(
    n_events: int,
    out: str | Path,
    seed: int = SimulateOptions.seed,
    layout: str = SimulateOptions.layout,
    events_per_file: int = SimulateOptions.events_per_file,
    workers: int = SimulateOptions.workers,
    trigger: str = SimulateOptions.trigger,
    pileup: float = SimulateOptions.pileup,
    progress=None,
    scheduler: str | None = None,
) -> RunSummary:
    """Simulate n_events p+p collisions into ROOT files in `out` (see `fm4npp-data simulate --help`).

    Files are simulated in `workers` local processes, or on the Dask cluster at `scheduler` (its workers must see
    `out`'s parent folder). progress: optional callable(events_done) called as files complete.
    """
    out = Path(out)
    _check_options(n_events, out, seed, layout, events_per_file, workers, trigger, pileup)
    require("pythia8mc", "sim", "fm4npp-data simulate")
    start = time.perf_counter()
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / f".{out.name}.partial-{os.getpid()}"
    stage.mkdir()
    try:
        plan = plan_files(n_events, events_per_file)
        run = run_number(seed)
        tasks = [
            (index, count, seed, layout, str(stage), index * events_per_file, run, trigger, pileup)
            for index, count in plan
        ]
        results: list[FileStats | None] = [None] * len(tasks)
        for index, result in parallel_map(simulate_file, tasks, workers, scheduler):
            if isinstance(result, Failed):
                raise SimulationError(f"{FILE_PATTERN.format(index=plan[index][0])}: {result.message}")
            results[index] = result
            if progress:
                progress(result.events)
        summary = RunSummary(
            out=str(out),
            layout=layout,
            seed=seed,
            events=n_events,
            trigger=trigger,
            pileup=pileup,
            files=results,
            seconds=time.perf_counter() - start,
        )
        if sum(f.events for f in results) != n_events:
            raise RuntimeError(f"internal error: {sum(f.events for f in results)} events written, {n_events} asked")
        record = asdict(summary)
        record["version"] = tool_version()
        record["rejected"] = summary.rejected
        record["empty"] = summary.empty
        (stage / "simulation.json").write_text(json.dumps(record, indent=1))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return summary
