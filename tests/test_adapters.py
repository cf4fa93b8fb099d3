"""fm4npp_models.adapters and baselines.adapter_only: parameter counts against the published heads, the Hungarian
matching and the truth rule, the inference rule, overfitting tiny events, padding invariance, no NaN."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

from fm4npp_models.adapters import TASKS, FeatureMix, make_head  # noqa: E402
from fm4npp_models.adapters.matching import assign_tracks, match, pair_costs, truth_instances  # noqa: E402
from fm4npp_models.baselines import AdapterOnly  # noqa: E402
from fm4npp_models.model.backbone import count_parameters  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


def small(task, d=8, n_features=2):
    """A narrow head of `task` for quick tests."""
    options = {"width": 16, "n_heads": 2} | ({"ffn": 32, "n_queries": 6} if task == "tracking" else {})
    return make_head(task, d, n_features, **options)


# ------------------------------------------------------------------------------------------------------------
# Parameter counts
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "width", "total", "trainable"),
    [
        ("tracking", 256, 2_285_646, 2_187_534),
        ("tracking", 1536, 5_565_326, 2_519_054),
        ("tracking", 1024, 3_761_934, 2_386_446),  # the paper's "2.39M trainable"
        ("pid", 256, 399_249, 399_249),
        ("pid", 1536, 736_529, 736_529),  # the paper's "0.74M"
        ("noise", 256, 398_478, 398_478),
    ],
)
def test_parameter_counts_equal_the_published_heads(task, width, total, trainable):
    # The published head modules (12 feature blocks) also hold the parts used only without a backbone: an
    # RMSNorm(D) `embedder_norm` (trainable) and an embedder (tracking: the frozen random concat embedder; PID and
    # noise: the trainable legacy embedder, 4.5 D). AdapterOnly is head + those parts, so it must match exactly, and
    # the head on backbone features must be the published count less them.
    with torch.device("meta"):
        baseline = AdapterOnly(task, width, n_features=12)
        head = make_head(task, width, 12)
    assert count_parameters(baseline) == total
    assert count_parameters(baseline, trainable_only=True) == trainable
    embedder_parts = count_parameters(baseline.embedding) + count_parameters(baseline.norm)
    assert count_parameters(head) == total - embedder_parts
    assert count_parameters(head) == count_parameters(head, trainable_only=True)
    if task == "tracking":
        assert embedder_parts == width + (width // 4 + 63 * width + (width // 4 + width) * width)
    else:
        assert embedder_parts == width + width // 4 + 3 * (width - width // 4) + 2 * width


def test_make_head_tasks_and_errors():
    assert [make_head(t, 8, 2, width=8, n_heads=2).task for t in TASKS] == list(TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        make_head("vertexing", 8, 2)
    with pytest.raises(ValueError, match="mixes 2 feature blocks"):
        FeatureMix(2)([torch.zeros(1, 1, 1)] * 3)


def test_feature_mix_starts_uniform_and_accepts_a_stacked_cache():
    zs = torch.randn(3, 2, 5, 4)
    mix = FeatureMix(3)
    torch.testing.assert_close(mix(list(zs)), zs.mean(0))
    torch.testing.assert_close(mix(zs), zs.mean(0))


# ------------------------------------------------------------------------------------------------------------
# Truth, matching, inference
# ------------------------------------------------------------------------------------------------------------


def test_truth_instances_noise_is_one_cluster_unmatched_and_padding_are_left_out():
    track = torch.tensor([[5, 5, 9, 3, 4, -1, 7, -1]])
    noise = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    ((points, targets),) = truth_instances(track, noise, mask)
    assert points.tolist() == [0, 1, 2, 3, 4, 6]  # 5 unmatched, 7 padding
    groups = sorted(tuple(points[row.bool()].tolist()) for row in targets)
    assert groups == [(0, 1), (2,), (3, 4), (6,)]  # the two noise points of different particles: one instance


def _two_track_event():
    """Six spacepoints, tracks 0 (points 0-2) and 1 (points 3-5); query 0 predicts track 1, query 1 track 0, query 2
    nothing, all with logits of +-20."""
    track = torch.tensor([[0, 0, 0, 1, 1, 1]])
    noise = torch.zeros(1, 6, dtype=torch.bool)
    mask = torch.ones(1, 6, dtype=torch.bool)
    on = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    mask_logits = (40 * on - 20)[None]  # (1, 3, 6)
    class_logits = torch.tensor([[[-5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]])
    return class_logits, mask_logits, track, noise, mask


def test_matching_pairs_swapped_queries_with_their_tracks_at_zero_dice_cost():
    class_logits, mask_logits, track, noise, mask = _two_track_event()
    ((points, targets),) = truth_instances(track, noise, mask)
    costs = pair_costs(torch.log_softmax(class_logits[0], -1), mask_logits[0][:, points], targets)
    rows, cols = match(costs["class"] * 0.5 + costs["dice"] + 30 * costs["focal"])
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 1: 0}  # instance j = track j here
    assert costs["dice"][rows, cols].max() < 1e-6
    assert costs["focal"][rows, cols].max() < 1e-6
    labels = assign_tracks(class_logits, mask_logits, mask)
    assert labels.tolist() == [[1, 1, 1, 0, 0, 0]]


def _brute_force_minimum(cost):
    c = cost if cost.shape[0] >= cost.shape[1] else cost.T  # rows >= columns: every column gets a row
    rows = itertools.permutations(range(c.shape[0]), c.shape[1])
    return min(sum(c[r, j].item() for j, r in enumerate(perm)) for perm in rows)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 3)])
def test_matching_equals_brute_force_minimum(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        cost = torch.tensor(rng.random(shape))
        rows, cols = match(cost)
        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(set(cols.tolist())) == min(shape)
        assert cost[rows, cols].sum().item() == pytest.approx(_brute_force_minimum(cost), abs=1e-12)


def test_inference_rule_no_object_queries_and_low_scores_leave_points_unassigned():
    class_logits = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]])  # query 0: track; query 1: no-object
    mask_logits = torch.tensor([[[5.0, -5.0, -200.0, 5.0], [-5.0, 5.0, -200.0, 5.0]]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    labels = assign_tracks(class_logits, mask_logits, mask)
    # point 1: the no-object query scores -1, so the track query takes it (sigmoid(-5) * P(track) > 0); point 2: the
    # best score is 0 (sigmoid underflows) -> -1; point 3: padding -> -1
    assert labels.tolist() == [[0, 0, -1, -1]]
    all_noobj = assign_tracks(class_logits[:, 1:], mask_logits[:, 1:], mask)
    assert all_noobj.tolist() == [[-1, -1, -1, -1]]


def test_loss_is_divided_by_the_batch_size_and_ignores_padding():
    torch.manual_seed(0)
    head = small("tracking").eval()
    feats = [torch.randn(1, 7, 8) for _ in range(2)]
    batch = {
        "track": torch.tensor([[0, 0, 1, 1, -1, 2, 2]]),
        "noise": torch.tensor([[0, 0, 0, 0, 0, 1, 1]]).bool(),
        "mask": torch.ones(1, 7, dtype=torch.bool),
    }
    one = head.loss(head(feats, batch["mask"]), batch)
    pad = lambda t, v: torch.cat([t, torch.full((1, 3, *t.shape[2:]), v, dtype=t.dtype)], 1)  # noqa: E731
    feats2 = [torch.cat([pad(z, 0.0), pad(z, 0.0)]) for z in feats]
    mask2 = pad(batch["mask"], False).repeat(2, 1)
    batch2 = {
        "track": pad(batch["track"], -1).repeat(2, 1),
        "noise": pad(batch["noise"], False).repeat(2, 1),
        "mask": mask2,
    }
    two = head.loss(head(feats2, mask2), batch2)
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Overfitting tiny events
# ------------------------------------------------------------------------------------------------------------


def _tiny_tracking_event(seed=0, n_tracks=3, per_track=20, d=16, n_features=3):
    """One event of 3 tracks x 20 spacepoints whose features cluster by track, in a random order."""
    g = torch.Generator().manual_seed(seed)
    track = torch.arange(n_tracks).repeat_interleave(per_track)[torch.randperm(n_tracks * per_track, generator=g)]
    centers = torch.randn(n_features, n_tracks, d, generator=g)
    feats = [(c[track] + 0.3 * torch.randn(len(track), d, generator=g))[None] for c in centers]
    batch = {
        "track": track[None],
        "noise": torch.zeros(1, len(track), dtype=torch.bool),
        "mask": torch.ones(1, len(track), dtype=torch.bool),
    }
    return feats, batch


def test_track_finder_overfits_a_tiny_event_to_perfect_ari():
    torch.manual_seed(0)
    feats, batch = _tiny_tracking_event()
    head = make_head("tracking", 16, 3, n_queries=10, width=64, ffn=128)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    first = None
    for _ in range(100):
        loss = head.loss(head(feats, batch["mask"]), batch)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5
    head.eval()
    labels = head.predict(head(feats, batch["mask"]), batch["mask"])[0]
    assert (labels >= 0).all()
    assert sklearn_metrics.adjusted_rand_score(batch["track"][0].numpy(), labels.numpy()) == 1.0


def test_segmentation_head_overfits_a_separable_set():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    pid = torch.randint(0, 5, (4, 30), generator=g)
    centers = 3 * torch.randn(2, 5, 8, generator=g)
    feats = [c[pid] + 0.2 * torch.randn(4, 30, 8, generator=g) for c in centers]
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[2, 20:] = False
    batch = {"pid": pid.masked_fill(~mask, -1), "mask": mask}
    head = make_head("pid", 8, 2, width=32, n_heads=4)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(60):
        loss = head.loss(head(feats, mask), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    pred = head.predict(head(feats, mask), mask)
    assert (pred[mask] == pid[mask]).all()
    assert (pred[~mask] == -1).all()


def test_adapter_only_trains_on_raw_features():
    torch.manual_seed(0)
    features = torch.rand(2, 12, 4)
    mask = torch.ones(2, 12, dtype=torch.bool)
    batch = {"noise": features[..., 1] > 0.5, "mask": mask}
    model = AdapterOnly("noise", d_model=16, width=16)
    assert not any(p.requires_grad for p in AdapterOnly("tracking", 16, width=16).embedding.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.loss(model(features, mask), batch)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]
    assert model.predict(model(features, mask), mask).shape == (2, 12)


# ------------------------------------------------------------------------------------------------------------
# Padding invariance and edge cases
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_outputs_of_real_spacepoints_do_not_change_with_appended_padding(task):
    torch.manual_seed(0)
    head = small(task).eval()
    feats = [torch.randn(2, 9, 8) for _ in range(2)]
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    padded = [torch.cat([z, 7 * torch.randn(2, 4, 8)], 1) for z in feats]  # junk in the padding
    mask_p = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    with torch.no_grad():
        a, b = head(feats, mask), head(padded, mask_p)
    if task == "tracking":
        for sa, sb in zip([*a["aux"], a], [*b["aux"], b], strict=True):
            torch.testing.assert_close(sb["class_logits"], sa["class_logits"], rtol=1e-5, atol=1e-5)
            for e in range(2):
                n = int(mask[e].sum())
                torch.testing.assert_close(sb["mask_logits"][e, :, :n], sa["mask_logits"][e, :, :n])
    else:
        torch.testing.assert_close(b["logits"][mask_p], a["logits"][mask], rtol=1e-5, atol=1e-5)
    assert (head.predict(b, mask_p)[:, :9][mask] == head.predict(a, mask)[mask]).all()


@pytest.mark.parametrize("task", TASKS)
def test_no_nan_for_a_single_spacepoint_and_an_all_padding_event(task):
    torch.manual_seed(0)
    head = small(task)
    feats = [torch.randn(3, 5, 8) for _ in range(2)]
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 0] = True  # one spacepoint; event 1: none; event 2: all five
    mask[2] = True
    labels = torch.tensor([[1, -1, -1, -1, -1], [-1] * 5, [0, 1, 1, 0, 2]])
    batch = {"track": labels, "pid": labels, "noise": labels == 0, "mask": mask}
    outputs = head(feats, mask)
    loss = head.loss(outputs, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    tensors = [outputs.get("logits"), outputs.get("class_logits"), outputs.get("mask_logits")]
    assert all(torch.isfinite(t).all() for t in tensors if t is not None)
    pred = head.predict(outputs, mask)
    assert pred.dtype == torch.int64
    assert (pred[~mask] == -1).all()
