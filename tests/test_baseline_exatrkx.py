"""baselines.exatrkx: the parameter count of the paper's Table 2, the pair recall and purity worked by hand, the
stages (freezing, losses), and the whole pipeline trained stage by stage on hand-built events whose tracks are known:
the radius graph joins the same-track pairs, the filter and the GNN keep the true edges, predict finds the tracks."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

from fm4npp_data import geometry as g  # noqa: E402
from fm4npp_data.errors import TrainError  # noqa: E402
from fm4npp_data.tasks import PID, TRACKING  # noqa: E402
from fm4npp_models.baselines.exatrkx import (  # noqa: E402
    DEFAULTS,
    OPTIONS,
    ExaTrkX,
    pair_recall_purity,
    radius_graph,
    same_track_pairs,
    undirected,
)
from fm4npp_models.baselines.graphs import connected_components, flat_nodes, same_track  # noqa: E402
from fm4npp_models.checkpoints.run import check_value  # noqa: E402
from fm4npp_models.model.backbone import count_parameters  # noqa: E402

#: Small widths for the training tests (the default model trains as well, only slower).
SMALL = {"embedding_hidden": 64, "filter_hidden": 64, "gnn_hidden": 32, "gnn_iterations": 2}
STEPS = {"embedding": 150, "filter": 300, "gnn": 150}
R_PRIME = (g.LAYER_RADII - g.R_RANGE[0]) / (g.R_RANGE[1] - g.R_RANGE[0])  # the 48 layers as the loader's r'


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


# -- hand-built events ---------------------------------------------------------------------------------------------


def event(tracks, n_noise, seed, every=2):
    """Tracks of one hit every `every` TPC layers, each at (eta0 + 0.1 r', phi0 + 0.3 r') with jitter 0.01 (slightly
    bent lines), plus `n_noise` noise hits anywhere, in random order: (features (n, 4) in the loader's [0, 1]
    normalization, track (n,), noise (n,))."""
    rng = np.random.default_rng(seed)
    r = R_PRIME[::every]
    n = len(r)
    rows, track = [], []
    for t, (eta, phi) in enumerate(tracks):
        jitter = rng.normal(0, 0.01, (2, n))
        rows.append(np.stack([rng.uniform(0.2, 0.8, n), eta + 0.1 * r + jitter[0], phi + 0.3 * r + jitter[1], r], 1))
        track += [t] * n
    rows.append(
        np.stack(
            [
                rng.uniform(0, 1, n_noise),
                rng.uniform(-1.8, 1.8, n_noise),
                rng.uniform(-3.0, 3.0, n_noise),
                rng.choice(R_PRIME, n_noise),
            ],
            1,
        )
    )
    x = np.concatenate(rows)
    x[:, 1] = (x[:, 1] - g.ETA_RANGE[0]) / (g.ETA_RANGE[1] - g.ETA_RANGE[0])  # eta' = (eta + 2) / 4
    x[:, 2] = (x[:, 2] - g.PHI_RANGE[0]) / (g.PHI_RANGE[1] - g.PHI_RANGE[0])  # phi' = (phi + pi) / 2 pi
    track = np.array(track + list(range(100, 100 + n_noise)))  # noise hits: particles of their own
    noise = np.arange(len(x)) >= len(tracks) * n
    order = rng.permutation(len(x))
    return x[order], track[order], noise[order]


def batch_of(events, pad=3):
    """A padded loader batch of `events` (each padded by at least `pad`)."""
    B, S = len(events), max(len(e[0]) for e in events) + pad
    batch = {
        "features": torch.zeros(B, S, 4),
        "mask": torch.zeros(B, S, dtype=torch.bool),
        "track": torch.full((B, S), -1, dtype=torch.int64),
        "noise": torch.zeros(B, S, dtype=torch.bool),
        "pid": torch.full((B, S), -1, dtype=torch.int64),
    }
    for b, (x, track, noise) in enumerate(events):
        n = len(x)
        batch["features"][b, :n] = torch.tensor(x, dtype=torch.float32)
        batch["mask"][b, :n] = True
        batch["track"][b, :n] = torch.tensor(track)
        batch["noise"][b, :n] = torch.tensor(noise)
    return batch


EVENTS = [
    event([(-1.0, -2.0), (0.0, 0.5), (1.0, 2.5), (0.5, -1.0)], 6, seed=0),
    event([(-1.0, -2.0), (0.8, -2.5), (-1.2, 0.0)], 5, seed=1),  # a track where event 0 has one: never joined
]


def flat_truth(batch):
    nodes = flat_nodes(batch["mask"])
    return nodes, batch["track"].reshape(-1)[nodes.index], batch["noise"].reshape(-1)[nodes.index]


def precision_recall(logits, edges, batch, cut):
    """(precision, recall) of the edges with sigmoid(logit) > cut against graphs.same_track."""
    _, track, noise = flat_truth(batch)
    truth, kept = same_track(track, noise, edges), torch.sigmoid(logits) > cut
    return (truth & kept).sum().item() / max(kept.sum().item(), 1), (truth & kept).sum().item() / truth.sum().item()


def partition(labels):
    """A labelling as its partition: -1 as singletons, then each cluster numbered by its first member."""
    labels = np.asarray(labels).copy()
    labels[labels < 0] = -1 - np.arange((labels < 0).sum())
    first = {}
    return [first.setdefault(v, len(first)) for v in labels.tolist()]


def train(model, batch, stage, steps, lr=3e-3):
    """`steps` Adam steps of `stage` on `batch`: the losses."""
    model.set_stage(stage)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(model(batch["features"], batch["mask"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def trained(one_thread):  # noqa: ARG001 - one thread while it trains
    """The small model trained stage by stage on EVENTS: the model, the batch, the losses and the eval outputs of
    each stage."""
    torch.manual_seed(0)
    model, batch = ExaTrkX(TRACKING.name, **SMALL), batch_of(EVENTS)
    result = {"model": model, "batch": batch, "losses": {}, "outputs": {}}
    model.eval()
    with torch.no_grad():
        result["untrained"] = model(batch["features"], batch["mask"])
    for stage in model.stages:
        result["losses"][stage] = train(model, batch, stage, STEPS[stage])
        with torch.no_grad():
            result["outputs"][stage] = model(batch["features"], batch["mask"])
    return result


# -- parameters and options ----------------------------------------------------------------------------------------


def test_default_parameter_count_is_the_papers_within_15_percent():
    with torch.device("meta"):
        model = ExaTrkX(TRACKING.name)
    per_stage = {stage: count_parameters(getattr(model, stage)) for stage in model.stages}
    assert per_stage == {"embedding": 3_171_336, "filter": 549_377, "gnn": 351_233}  # as the docstring says
    assert count_parameters(model) == sum(per_stage.values()) == 4_071_946
    assert abs(count_parameters(model) / 3.86e6 - 1) < 0.15  # the paper's Table 2
    # the Exa.TrkX sizes: 4 hidden layers of 1024 to 8; 3 of 512; IN hidden 128, 8 iterations
    linears = [m for m in model.embedding if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 1024)] + [(1024, 1024)] * 3 + [(1024, 8)]
    assert [m.out_features for m in model.filter if isinstance(m, torch.nn.Linear)] == [512, 512, 512, 1]
    assert (model.gnn.iterations, model.gnn.classifier[0].out_features) == (8, 128)


def test_options_defaults_and_errors():
    assert set(DEFAULTS) == set(OPTIONS)
    assert all(check_value(DEFAULTS[k], kind) for k, kind in OPTIONS.items())
    assert (DEFAULTS["radius"], DEFAULTS["filter_cut"], DEFAULTS["edge_cut"]) == (2.0, 0.675, 0.9)  # the paper's
    assert ExaTrkX.name == "exatrkx"
    assert ExaTrkX.tasks == (TRACKING.name,)
    assert ExaTrkX.stages == ("embedding", "filter", "gnn")
    with pytest.raises(TrainError, match="tracks only"):
        ExaTrkX(PID.name)
    with pytest.raises(TrainError, match=r"unknown options \['radiu'\]"):
        ExaTrkX(TRACKING.name, radiu=1.0)
    with pytest.raises(TrainError, match="edge_cut 1.5"):
        ExaTrkX(TRACKING.name, **SMALL, edge_cut=1.5)
    with pytest.raises(TrainError, match="unknown stage 'gnm'"):
        ExaTrkX(TRACKING.name, **SMALL).set_stage("gnm")


# -- graphs --------------------------------------------------------------------------------------------------------


def test_pair_recall_purity_by_hand_and_by_brute_force():
    # event 0: nodes 0-3 track 7 (6 pairs), node 4 track 8 (alone), node 5 noise of track 7; event 1: nodes 6-8
    # track 7 again (another particle: 3 pairs), node 9 no truth (-1). Same-track pairs: 6 + 3 = 9.
    track = torch.tensor([7, 7, 7, 7, 8, 7, 7, 7, 7, -1])
    noise = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=torch.bool)
    batch = torch.tensor([0] * 6 + [1] * 4)
    # graph: (0,1) both ways, (2,0), (1,3) -> 3 true of event 0; (0,4) false, (3,5) false (noise); (6,8) true,
    # (8,9) false (no truth): 7 pairs, 4 joined
    edges = torch.tensor([[0, 1, 2, 1, 0, 3, 6, 8], [1, 0, 0, 3, 4, 5, 8, 9]])
    result = pair_recall_purity(edges, track, noise, batch)
    assert result == {"recall": 4 / 9, "purity": 4 / 7, "true_pairs": 9, "pairs": 7, "joined": 4}
    # brute force over every unordered pair of the same event
    pairs = {tuple(sorted(e)) for e in edges.T.tolist()}
    same = {
        (i, j)
        for i, j in itertools.combinations(range(10), 2)
        if batch[i] == batch[j] and track[i] == track[j] >= 0 and not noise[i] and not noise[j]
    }
    assert (len(same), len(pairs), len(pairs & same)) == (9, 7, 4)


def test_undirected_orients_by_order_and_same_track_pairs_are_per_event():
    edges = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    assert undirected(edges, 4).tolist() == [[0, 2], [1, 3]]
    order = torch.tensor([0.5, 0.1, 0.0, 0.0])  # node 1 inner to node 0; 2 and 3 tie: the lower index first
    assert undirected(edges, 4, order).tolist() == [[1, 2], [0, 3]]
    track = torch.tensor([3, 3, 3, 3, 3, -1])
    noise = torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.bool)
    pairs = same_track_pairs(track, noise, torch.tensor([0, 3, 6]), cap=10)
    assert sorted(map(tuple, pairs.T.tolist())) == [(0, 1), (3, 4)]  # not (0, 3): two events
    torch.manual_seed(0)
    capped = same_track_pairs(
        torch.zeros(6, dtype=torch.int64), torch.zeros(6, dtype=torch.bool), torch.tensor([0, 6]), 4
    )
    assert capped.shape == (2, 4)
    assert bool((capped[0] < capped[1]).all())


# -- stages --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ExaTrkX.stages)
def test_set_stage_trains_that_stage_only(stage):
    torch.manual_seed(0)
    model = ExaTrkX(TRACKING.name, **SMALL, filter_cut=0.0)  # every edge to the GNN, untrained as it is
    batch = batch_of(EVENTS)
    model.set_stage(stage)
    model.loss(model(batch["features"], batch["mask"]), batch).backward()
    for name in model.stages:
        params = list(getattr(model, name).parameters())
        if name == stage:
            assert all(p.requires_grad for p in params)
            assert all(p.grad is not None for p in params)
            assert any(p.grad.abs().sum() > 0 for p in params)
        else:
            assert not any(p.requires_grad for p in params)
            assert all(p.grad is None for p in params)


def test_forward_computes_what_each_stage_needs():
    torch.manual_seed(0)
    model, batch = ExaTrkX(TRACKING.name, **SMALL), batch_of(EVENTS)
    keys = {}
    for stage in model.stages:
        model.set_stage(stage)
        keys[stage] = set(model(batch["features"], batch["mask"]))
    assert keys == {
        "embedding": {"embedding", "pairs"},
        "filter": {"embedding", "edges", "filter_logits"},
        "gnn": {"embedding", "edges", "filter_logits", "gnn_edges", "gnn_logits"},
    }
    assert ExaTrkX(TRACKING.name, **SMALL).stage == "gnn"  # a new model runs the whole pipeline


def test_filter_trains_on_at_most_filter_train_edges_and_classifies_all_in_eval():
    torch.manual_seed(0)
    model, batch = ExaTrkX(TRACKING.name, **SMALL, filter_train_edges=50), batch_of(EVENTS)
    model.set_stage("filter")
    assert model(batch["features"], batch["mask"])["edges"].shape[1] == 50
    model.eval()
    assert model(batch["features"], batch["mask"])["edges"].shape[1] > 50


def test_same_seed_same_pairs_and_loss():
    batch = batch_of(EVENTS)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = ExaTrkX(TRACKING.name, **SMALL)
        model.set_stage("embedding")
        out = model(batch["features"], batch["mask"])
        runs.append((out["pairs"], model.loss(out, batch).item()))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("stage", ExaTrkX.stages)
def test_loss_without_positive_pairs_is_finite_positive_and_keeps_the_graph(stage):
    torch.manual_seed(0)
    model = ExaTrkX(TRACKING.name, **SMALL, filter_cut=0.0)
    x, track, _ = EVENTS[0]
    batch = batch_of([(x, track, np.ones(len(x), bool))])  # every hit noise: no positive pair, no positive edge
    model.set_stage(stage)
    loss = model.loss(model(batch["features"], batch["mask"]), batch)
    assert torch.isfinite(loss)
    assert loss.item() > 0
    assert loss.requires_grad


def test_an_event_of_one_hit_and_an_empty_one_give_a_zero_loss_that_keeps_the_graph_and_predict_minus_1():
    torch.manual_seed(0)
    model = ExaTrkX(TRACKING.name, **SMALL)
    x, track, noise = EVENTS[0]
    batch = batch_of([(x[:1], track[:1], noise[:1]), (x[:0], track[:0], noise[:0])])
    for stage in model.stages:
        model.set_stage(stage)
        out = model(batch["features"], batch["mask"])
        loss = model.loss(out, batch)
        assert loss.item() == 0.0
        assert loss.requires_grad
        assert model.predict(out, batch["mask"]).tolist() == [[-1] * 4, [-1] * 4]


# -- the pipeline trained on the hand-built events -----------------------------------------------------------------


def test_each_stages_loss_falls(trained):
    for stage, losses in trained["losses"].items():
        first, last = np.mean(losses[:5]), np.mean(losses[-5:])
        assert last < 0.2 * first, (stage, first, last)


def test_radius_graph_joins_the_same_track_pairs_and_few_others(trained):
    nodes, track, noise = flat_truth(trained["batch"])
    graph = {}
    for when, outputs in (("untrained", trained["untrained"]), ("trained", trained["outputs"]["embedding"])):
        edges = radius_graph(outputs["embedding"], nodes.offsets, DEFAULTS["radius"], DEFAULTS["max_neighbours"])
        graph[when] = pair_recall_purity(edges, track, noise, nodes.batch)
    assert graph["trained"]["recall"] > 0.95  # the paper's radius is chosen for > 0.8
    assert graph["trained"]["purity"] > 0.95
    # cross pairs (different tracks or noise, one event) joined: at most 2 % of them
    n = np.diff(nodes.offsets.numpy())
    cross_pairs = sum(k * (k - 1) // 2 for k in n) - graph["trained"]["true_pairs"]
    assert (graph["trained"]["pairs"] - graph["trained"]["joined"]) < 0.02 * cross_pairs
    assert graph["untrained"]["purity"] < 0.5  # the training made it


def test_filter_and_gnn_classify_the_edges(trained):
    batch, outputs = trained["batch"], trained["outputs"]
    _, track, noise = flat_truth(batch)
    edges, logits = outputs["filter"]["edges"], outputs["filter"]["filter_logits"]
    false = ~same_track(track, noise, edges)
    kept_false = (false & (torch.sigmoid(logits) > DEFAULTS["filter_cut"])).sum().item()
    assert false.sum().item() >= 5  # the radius graph holds a few cross-track edges ...
    assert kept_false <= false.sum().item() // 2  # ... and the filter drops most of them
    p, r = precision_recall(logits, edges, batch, DEFAULTS["filter_cut"])
    assert p > 0.99
    assert r > 0.99
    gnn = outputs["gnn"]
    assert gnn["gnn_edges"].shape[1] < edges.shape[1]  # the filter's edges only
    p, r = precision_recall(gnn["gnn_logits"], gnn["gnn_edges"], batch, DEFAULTS["edge_cut"])
    assert p > 0.99
    assert r > 0.99


def test_predict_recovers_the_tracks(trained):
    model, batch, outputs = trained["model"], trained["batch"], trained["outputs"]["gnn"]
    labels = model.predict(outputs, batch["mask"])
    assert labels.shape == batch["mask"].shape
    assert labels.dtype == torch.int64
    assert bool((labels[~batch["mask"]] == -1).all())
    for b in range(len(EVENTS)):
        real = batch["mask"][b] & ~batch["noise"][b]
        ari = sklearn_metrics.adjusted_rand_score(batch["track"][b][real].numpy(), partition(labels[b][real]))
        assert ari > 0.9, (b, ari)
    # track 0 of both events lies at the same place: still two tracks
    first = [set(labels[b][batch["mask"][b] & (batch["track"][b] == 0)].tolist()) for b in range(2)]
    assert len(first[0]) == len(first[1]) == 1
    assert first[0] != first[1]


def test_no_edge_or_pair_across_events(trained):
    model, batch = trained["model"], trained["batch"]
    nodes = flat_nodes(batch["mask"])
    model.set_stage("embedding")
    pairs = model(batch["features"], batch["mask"])["pairs"]
    model.set_stage("gnn")
    outputs = trained["outputs"]["gnn"]
    for edges in (pairs, outputs["edges"], outputs["gnn_edges"]):
        assert edges.shape[1] > 0
        assert bool((nodes.batch[edges[0]] == nodes.batch[edges[1]]).all())
        assert bool((edges[0] != edges[1]).all())


def test_permuting_events_permutes_the_predictions(trained):
    model, batch = trained["model"], trained["batch"]
    swapped = {k: v.flip(0) for k, v in batch.items()}
    with torch.no_grad():
        labels = model.predict(model(batch["features"], batch["mask"]), batch["mask"])
        again = model.predict(model(swapped["features"], swapped["mask"]), swapped["mask"])
    for b in range(2):
        assert partition(labels[b]) == partition(again[1 - b])


def test_predict_from_earlier_stages_uses_what_they_have(trained):
    model, batch, outputs = trained["model"], trained["batch"], trained["outputs"]
    nodes = flat_nodes(batch["mask"])
    # stage "embedding": the components of the radius graph itself
    labels = model.predict(outputs["embedding"], batch["mask"])
    graph = radius_graph(
        outputs["embedding"]["embedding"], nodes.offsets, DEFAULTS["radius"], DEFAULTS["max_neighbours"]
    )
    expected = connected_components(nodes.index.shape[0], graph, min_size=DEFAULTS["min_track_size"])
    assert labels.reshape(-1)[nodes.index].tolist() == expected.tolist()
    assert bool((labels[~batch["mask"]] == -1).all())
    # stage "filter": the edges the filter keeps, which already separate these tracks
    labels = model.predict(outputs["filter"], batch["mask"])
    assert bool((labels[~batch["mask"]] == -1).all())
    for b in range(len(EVENTS)):
        real = batch["mask"][b] & ~batch["noise"][b]
        ari = sklearn_metrics.adjusted_rand_score(batch["track"][b][real].numpy(), partition(labels[b][real]))
        assert ari > 0.9, (b, ari)
