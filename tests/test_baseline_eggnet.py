"""EggNet (fm4npp_models.baselines.eggnet): the 12-D augmented input, the parameter count, events kept apart, the
hinge loss and DBSCAN's labels, and a fit on hand-built straight tracks that DBSCAN then recovers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.metrics import adjusted_rand_score  # noqa: E402

from fm4npp_data import geometry as g  # noqa: E402
from fm4npp_data.tasks import TRACKING  # noqa: E402
from fm4npp_models.baselines import graphs, make_baseline  # noqa: E402
from fm4npp_models.baselines.eggnet import EMBEDDING, EggNet, augment, random_pairs, track_pairs  # noqa: E402
from fm4npp_models.checkpoints.run import check_value  # noqa: E402

PAPER_PARAMETERS = 160_000

#: Hand-built events: straight tracks (eta, phi) with a hit on every third TPC layer, and noise hits (eta, phi, layer)
#: away from them.
EVENTS = [
    {
        "tracks": [(-1.2, -2.5), (-0.4, -0.8), (0.4, 0.9), (1.2, 2.4)],
        "noise": [(-1.6, 1.6, 5), (0.0, -1.8, 20), (1.6, 0.0, 40), (0.8, -2.9, 11), (-0.9, 0.1, 33)],
    },
    {"tracks": [(-0.8, 1.5), (0.1, -2.0), (0.9, -0.2)], "noise": [(-1.5, -1.2, 8), (1.5, 2.9, 27), (0.5, 2.0, 44)]},
]
LAYERS = range(0, g.N_LAYERS, 3)


def normalized(eta, phi, layer) -> list[float]:
    """The loader's [E', eta', phi', r'] of a hit at (eta, phi) on a TPC layer (E' fixed at 0.3)."""
    r = g.LAYER_RADII[layer]
    return [
        0.3,
        (eta - g.ETA_RANGE[0]) / (g.ETA_RANGE[1] - g.ETA_RANGE[0]),
        (phi - g.PHI_RANGE[0]) / (g.PHI_RANGE[1] - g.PHI_RANGE[0]),
        (r - g.R_RANGE[0]) / (g.R_RANGE[1] - g.R_RANGE[0]),
    ]


def padded_batch(events, seed: int = 0) -> dict:
    """The loader's padded batch of hand-built events, hits in a random order within each event."""
    rng = np.random.default_rng(seed)
    rows = []
    for event in events:
        hits = [
            (normalized(eta, phi, layer), t, False) for t, (eta, phi) in enumerate(event["tracks"]) for layer in LAYERS
        ]
        hits += [(normalized(eta, phi, layer), -1, True) for eta, phi, layer in event["noise"]]
        rows.append([hits[i] for i in rng.permutation(len(hits))])
    B, S = len(rows), max(len(r) for r in rows) + 2
    batch = {
        "features": torch.zeros(B, S, 4),
        "mask": torch.zeros(B, S, dtype=torch.bool),
        "track": torch.full((B, S), -1, dtype=torch.int64),
        "noise": torch.zeros(B, S, dtype=torch.bool),
    }
    for b, hits in enumerate(rows):
        n = len(hits)
        batch["features"][b, :n] = torch.tensor([h[0] for h in hits])
        batch["mask"][b, :n] = True
        batch["track"][b, :n] = torch.tensor([h[1] for h in hits])
        batch["noise"][b, :n] = torch.tensor([h[2] for h in hits])
    return batch


def train(model, batch, steps: int, lr: float = 3e-3) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(model(batch["features"], batch["mask"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


@pytest.fixture(scope="module")
def trained(one_thread):  # noqa: ARG001 - one thread while it trains
    torch.manual_seed(0)
    model = EggNet(TRACKING.name)
    batch = padded_batch(EVENTS)
    losses = train(model, batch, steps=120)
    return model.eval(), batch, losses


def embed(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch["features"], batch["mask"])["embedding"]


def subset(batch: dict, events: list[int]) -> dict:
    return {key: value[events] for key, value in batch.items()}


# -- the model ------------------------------------------------------------------------------------------------


def test_parameter_count_is_the_papers():
    n = sum(p.numel() for p in EggNet(TRACKING.name).parameters())
    assert abs(n - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.15
    assert n == 151_640  # the docstring's count


def test_options_default_to_the_papers_and_are_of_their_kinds():
    model = make_baseline("eggnet", TRACKING.name)
    assert isinstance(model, EggNet)
    assert (model.k, model.eps, model.min_samples) == (10, 1.0, 2)
    assert all(check_value(getattr(model, name), kind) for name, kind in EggNet.OPTIONS.items())
    assert (EggNet.name, EggNet.tasks, EggNet.stages) == ("eggnet", (TRACKING.name,), ("train",))


def brute_force_augment(points: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Each point, then its 2 nearest other points of its event (itself where the event has fewer)."""
    rows, start = [], 0
    for n in sizes:
        p = points[start : start + n]
        for i in range(n):
            d = np.linalg.norm(p - p[i], axis=1)
            d[i] = np.inf
            nearest = [int(j) for j in np.argsort(d)[:2] if np.isfinite(d[j])]
            nearest += [i] * (2 - len(nearest))
            rows.append(np.concatenate([p[i], p[nearest[0]], p[nearest[1]]]))
        start += n
    return np.stack(rows)


@pytest.mark.parametrize("seed", range(3))
def test_augmented_hit_is_the_hit_and_its_two_nearest_of_its_event(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(v) for v in rng.integers(3, 30, size=4)] + [1, 2, 0, 5]
    points = rng.normal(size=(sum(sizes), 4)).astype(np.float32)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
    got = augment(torch.from_numpy(points), offsets).numpy()
    assert got.shape == (sum(sizes), 12)
    np.testing.assert_array_equal(got, brute_force_augment(points, sizes))


def test_knn_graphs_stay_within_events(monkeypatch):
    batch = padded_batch(EVENTS)
    nodes = graphs.flat_nodes(batch["mask"])
    knn, built = graphs.knn_edges, []

    def recording(points, offsets, k, max_distance=None):
        edges = knn(points, offsets, k, max_distance)
        built.append((k, edges))
        return edges

    monkeypatch.setattr(graphs, "knn_edges", recording)
    torch.manual_seed(0)
    EggNet(TRACKING.name)(batch["features"], batch["mask"])
    assert [k for k, _ in built] == [2, 10, 10, 10, 10]  # the augmentation, then one graph per GNN iteration
    for _, (source, target) in built[1:]:
        assert source.numel() == 10 * nodes.index.numel()
        assert torch.equal(nodes.batch[source], nodes.batch[target])


def test_an_events_embedding_does_not_depend_on_the_others_in_its_batch():
    torch.manual_seed(0)
    model = EggNet(TRACKING.name)
    batch = padded_batch(EVENTS)
    together, alone = embed(model, batch), embed(model, subset(batch, [1]))
    mask = batch["mask"][1]
    torch.testing.assert_close(together[1][mask], alone[0][mask], atol=1e-5, rtol=1e-5)
    assert together[0].abs().sum() > 0


# -- loss -----------------------------------------------------------------------------------------------------


def test_loss_falls_and_dbscan_recovers_the_tracks(trained):
    model, batch, losses = trained
    assert np.mean(losses[-10:]) < 0.2 * losses[0]
    labels = model.predict({"embedding": embed(model, batch)}, batch["mask"])
    for b in range(len(EVENTS)):
        on_track = batch["mask"][b] & ~batch["noise"][b]
        assert adjusted_rand_score(batch["track"][b][on_track], labels[b][on_track]) > 0.8


def test_sampled_pairs_stay_in_their_event_and_track():
    torch.manual_seed(0)
    batch = padded_batch(EVENTS)
    nodes = graphs.flat_nodes(batch["mask"])
    track, noise = batch["track"].reshape(-1)[nodes.index], batch["noise"].reshape(-1)[nodes.index]
    pairs = random_pairs(nodes, 50)
    assert torch.equal(nodes.batch[pairs[0]], nodes.batch[pairs[1]])
    assert (pairs[0] != pairs[1]).all()
    assert torch.bincount(pairs[1], minlength=len(track)).max() <= 50
    positives = track_pairs(track, noise, nodes.batch, 50)
    assert graphs.same_track(track, noise, positives).all()
    assert torch.equal(nodes.batch[positives[0]], nodes.batch[positives[1]])
    assert (positives[0] != positives[1]).all()
    on_track = (track >= 0) & ~noise
    assert set(positives[1].tolist()) == set(torch.nonzero(on_track).squeeze(1).tolist())
    # far partners too: 50 draws from a track of 16 hits reach most of them
    first = int(torch.nonzero(on_track)[0])
    assert len(set(positives[0][positives[1] == first].tolist())) >= 12


def test_loss_without_positive_pairs_is_finite_and_trains():
    torch.manual_seed(0)
    model = EggNet(TRACKING.name)
    batch = padded_batch(EVENTS)
    batch["track"] = torch.full_like(batch["track"], -1)  # no hit on a track
    loss = model.loss(model(batch["features"], batch["mask"]), batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert loss.item() > 0  # the negatives within the margin
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_loss_without_any_pair_is_zero_in_the_graph():
    torch.manual_seed(0)
    model = EggNet(TRACKING.name)
    batch = subset(padded_batch(EVENTS), [0, 1])
    batch["mask"] = torch.zeros_like(batch["mask"])
    batch["mask"][:, 0] = True  # one hit per event: no pair
    loss = model.loss(model(batch["features"], batch["mask"]), batch)
    loss.backward()
    assert loss.item() == 0.0


def test_same_seed_same_training():
    batch = padded_batch(EVENTS)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(train(EggNet(TRACKING.name), batch, steps=3))
    assert runs[0] == runs[1]
    torch.manual_seed(4)
    assert train(EggNet(TRACKING.name), batch, steps=3) != runs[0]


# -- predict --------------------------------------------------------------------------------------------------


def test_predict_is_int64_and_minus_1_on_padding(trained):
    model, batch, _ = trained
    labels = model.predict({"embedding": embed(model, batch)}, batch["mask"])
    assert labels.shape == batch["mask"].shape
    assert labels.dtype == torch.int64
    assert (labels[~batch["mask"]] == -1).all()
    assert (labels[batch["mask"]] >= 0).any()


def test_dbscan_noise_stays_unassigned():
    model = EggNet(TRACKING.name)
    embedding = torch.zeros(1, 4, EMBEDDING)
    embedding[0, 2, 0] = 5.0  # alone: DBSCAN noise
    labels = model.predict({"embedding": embedding}, torch.tensor([[True, True, True, False]]))
    assert labels.tolist() == [[0, 0, -1, -1]]


def test_permuting_events_gives_the_same_partitions(trained):
    model, batch, _ = trained
    three = subset(batch, [0, 1, 0])
    three["mask"][2, -5:] = False  # the third: event 0 with fewer hits (its last ones are padding anyway)
    three["mask"][2, :4] = False
    order = [2, 0, 1]
    first = model.predict({"embedding": embed(model, three)}, three["mask"])
    permuted = model.predict({"embedding": embed(model, subset(three, order))}, three["mask"][order])
    for new, old in enumerate(order):
        real = three["mask"][old]
        assert len(set(first[old][real].tolist())) >= 3  # a partition into tracks, not one cluster
        assert adjusted_rand_score(first[old][real], permuted[new][real]) == 1.0
