"""What the downstream heads are trained on and read: class weights for PID and noise (balanced: inverse frequency
in the labels trained on; fm4npp_models.training.class_weights, `--class-weights`) and the backbone features a head
reads (`Backbone.features(kind=...)`, the head option "features", `--features`)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight  # noqa: E402

from fm4npp_data.errors import RunError, TrainError  # noqa: E402
from fm4npp_models import Backbone  # noqa: E402
from fm4npp_models.adapters.downstream import Downstream, load_downstream, save_downstream  # noqa: E402
from fm4npp_models.adapters.segmentation import SegmentationHead  # noqa: E402
from fm4npp_models.checkpoints.run import save_run  # noqa: E402
from fm4npp_models.finetune import class_weighting, finetune  # noqa: E402
from fm4npp_models.model.backbone import FEATURE_KINDS, n_feature_blocks  # noqa: E402
from fm4npp_models.predict import predict_split  # noqa: E402
from fm4npp_models.training.class_weights import balanced_weights, class_counts  # noqa: E402
from fm4npp_models.training.options import FinetuneOptions  # noqa: E402

QUIET = {"echo": lambda *_: None}


def options(**changes) -> FinetuneOptions:
    return FinetuneOptions(**{"steps": 2, "val_every": 2, "batch_tokens": 2_048, "lr": 1e-3, **changes})


def train_shards(repo):
    return sorted((repo / "data" / "labeled").glob("train-*.parquet"))


def stored_labels(paths, column, events=None):
    """The flat labels of `column` of the first `events` events of `paths`, row by row (Python lists)."""
    rows = pq.read_table(paths, columns=[column])[column].to_pylist()[:events]
    return np.array([int(v) for row in rows for v in row], np.int64)


# -- class weights -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_balanced_weights_are_sklearns(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 7))
    labels = rng.choice(n_classes, size=int(rng.integers(50, 500)), p=rng.dirichlet(np.ones(n_classes)))
    labels[:n_classes] = np.arange(n_classes)  # every class present: sklearn refuses absent classes
    expected = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    np.testing.assert_allclose(balanced_weights(np.bincount(labels, minlength=n_classes)), expected, rtol=1e-12)


def test_an_absent_class_weighs_0_and_the_others_sum_to_the_count():
    weights = balanced_weights([30, 0, 10])
    np.testing.assert_allclose(weights, [40 / (2 * 30), 0.0, 40 / (2 * 10)])
    assert float(np.dot(weights, [30, 0, 10])) == pytest.approx(40)  # weighted count = labeled spacepoints
    assert balanced_weights([0, 0]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("column", "n_classes"), [("pid", 5), ("noise", 2)])
def test_class_counts_are_the_bincount_of_the_train_labels(small_repo, column, n_classes):
    shards = train_shards(small_repo)
    for events in (None, 13):  # the whole split, and its first 13 events (across row groups: 8 a group)
        labels = stored_labels(shards, column, events)
        expected = np.bincount(labels[labels >= 0], minlength=n_classes)
        got = class_counts(shards, column, n_classes, events)
        assert got.dtype == np.int64
        assert got.tolist() == expected.tolist()
        assert got.sum() > 0
    assert class_counts(shards, column, n_classes, 13).sum() < class_counts(shards, column, n_classes).sum()


def test_weighted_loss_is_the_hand_computation():
    torch.manual_seed(0)
    head = SegmentationHead(8, 1, task="pid", width=8, n_heads=2)
    logits = torch.randn(2, 6, 5)
    pid = torch.tensor([[0, 1, 1, 4, -1, 2], [3, 3, 0, 2, 1, -1]])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    batch = {"pid": pid, "mask": mask}
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    got = head.loss({"logits": logits}, batch, class_weight=weight)
    num = den = 0.0
    for b in range(2):
        for s in range(6):
            if mask[b, s] and pid[b, s] >= 0:
                y = int(pid[b, s])
                num += float(weight[y]) * -float(torch.log_softmax(logits[b, s], -1)[y])
                den += float(weight[y])
    assert float(got) == pytest.approx(num / den, rel=1e-6)
    # without weights: the plain mean; a class of weight 0 is left out, and with nothing left the loss is 0
    plain = head.loss({"logits": logits}, batch)
    valid = mask & (pid >= 0)
    assert float(plain) == pytest.approx(float(F.cross_entropy(logits[valid], pid[valid])), rel=1e-6)
    only_0 = {"pid": torch.where(valid, torch.zeros_like(pid), pid), "mask": mask}
    zero = head.loss({"logits": logits.requires_grad_()}, only_0, class_weight=torch.tensor([0.0, 1, 1, 1, 1]))
    assert float(zero.detach()) == 0.0
    assert zero.requires_grad


def test_the_option_refuses_other_values(small_repo, tmp_path):
    with pytest.raises(TrainError, match="--class-weights must be one of balanced, capped, none, not 'inverse'"):
        options(class_weights="inverse").check()
    with pytest.raises(TrainError, match="--class-weights"):
        finetune("noise", small_repo, tmp_path / "run", None, options(class_weights="sqrt"), **QUIET)
    assert not (tmp_path / "run").exists()


def test_tracking_has_no_class_weights(small_repo):
    assert class_weighting("tracking", small_repo, options()) == {
        "class_weights": "none",
        "class_counts": None,
        "weights": None,
    }


def test_a_balanced_run_records_its_weights_and_its_macro_recall(small_repo, tmp_path):
    """noise, head on a random tiny backbone reading the residual stream, balanced weights from the first 20 train
    events: the counts and weights are in training.json, config.json's origin and the summary, and the summary's
    macro recall is that of the selected model's predictions on the validation split."""
    torch.manual_seed(0)
    backbone = tmp_path / "backbone"
    save_run(backbone, Backbone.of_size("tiny", k=4, n_layers=2), {"note": "random"})
    given = options(lr=None, train_events=20)
    run = tmp_path / "noise"
    summary = finetune("noise", small_repo, run, backbone, given, head_options={"features": "x"}, **QUIET)
    assert given.lr is None  # the caller's options are not changed (a study reuses them)
    labels = stored_labels(train_shards(small_repo), "noise", 20)
    counts = np.bincount(labels, minlength=2)
    weights = len(labels) / (2 * counts)  # sklearn's rule, by hand
    assert counts.min() > 0
    record = json.loads((run / "training.json").read_text())
    config = json.loads((run / "config.json").read_text())
    for kept in (summary["class_weights"], record["class_weights"], config["origin"]["class_weights"]):
        assert kept["class_weights"] == "balanced"
        assert kept["class_counts"] == counts.tolist()
        assert kept["weights"] == pytest.approx(weights.tolist(), rel=1e-12)
    assert record["options"]["class_weights"] == "balanced"
    assert config["head"] == {"features": "x"}
    assert summary["features"] == "x"
    model = load_downstream(run)
    assert model.features == "x"
    assert model.head.mix.weights.numel() == 3
    got = predict_split(model, small_repo, "validation", device="cpu")
    table = pq.read_table(sorted((small_repo / "data" / "labeled").glob("validation-*.parquet")))
    truth, pred = [], []
    for r, e, noise in zip(*(table[c].to_pylist() for c in ("run", "event", "noise")), strict=True):
        truth.append(np.asarray(noise, np.int64))
        pred.append(got[(r, e)])
    truth, pred = np.concatenate(truth), np.concatenate(pred)
    recalls = [np.mean(pred[truth == c] == c) for c in np.unique(truth)]
    assert summary["val_macro_recall"] == pytest.approx(np.mean(recalls), abs=1e-9)
    assert summary["val_accuracy"] == pytest.approx(np.mean(pred == truth), abs=1e-9)


def test_resuming_with_other_class_weights_is_refused(small_repo, tmp_path):
    run = tmp_path / "run"
    first = options(steps=4, val_every=1)
    finetune("noise", small_repo, run, None, first, head_options={"features": "x"}, stop_after=1, **QUIET)
    record = json.loads((run / "training.json").read_text())
    assert record["ignored_head_options"] == {"features": "x"}
    assert record["head"] == {}
    assert record["progress"]["step"] == 1
    with pytest.raises(
        TrainError, match=r"cannot resume with other settings .*options\.class_weights: saved 'balanced'"
    ):
        finetune(
            "noise", small_repo, run, None, options(steps=4, val_every=1, class_weights="none"), resume=True, **QUIET
        )
    summary = finetune("noise", small_repo, run, None, first, head_options={"features": "x"}, resume=True, **QUIET)
    assert summary["step"] == 4
    assert summary["features"] is None


# -- what the heads read -------------------------------------------------------------------------------------


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Backbone.of_size("tiny", k=4, n_layers=3).double().eval()


def test_n_feature_blocks():
    assert FEATURE_KINDS == ("z", "x", "both")
    assert [n_feature_blocks(kind, 12) for kind in FEATURE_KINDS] == [12, 13, 25]
    with pytest.raises(ValueError, match="the kinds are z, x, both"):
        n_feature_blocks("y", 12)


def test_features_x_is_the_residual_stream_and_both_the_concatenation(tiny):
    features = torch.rand(2, 9, 4, dtype=torch.float64)
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    x = tiny.embedding(features) * mask.unsqueeze(-1)  # by hand: x_0 the masked embedding, x_l = x_{l-1} + z_l
    hand_x, hand_z = [x], []
    for block in tiny.blocks:
        z = block(x, mask=mask)
        x = x + z
        hand_x.append(x)
        hand_z.append(z)
    zs, xs, both = (tiny.features(features, mask, kind=kind) for kind in FEATURE_KINDS)
    assert len(zs) == 3
    assert len(xs) == 4
    assert len(both) == 7
    for got, expected in zip(zs + xs, hand_z + hand_x, strict=True):
        assert torch.equal(got, expected)
    assert all(torch.equal(a, b) for a, b in zip(both, zs + xs, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(tiny.features(features, mask), zs, strict=True))  # "z": default
    assert torch.all(xs[0][1, 5:] == 0)
    torch.testing.assert_close(tiny(features, mask), tiny.head(tiny.norm_f(xs[-1])))
    with pytest.raises(ValueError, match="unknown feature kind 'y'"):
        tiny.features(features, mask, kind="y")


@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_padding_and_the_stored_order(tiny, kind):
    features = torch.rand(1, 6, 4, dtype=torch.float64)
    alone = tiny.features(features, torch.ones(1, 6, dtype=torch.bool), kind=kind)
    padded = torch.cat([features, torch.rand(1, 5, 4, dtype=torch.float64) * 9], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 5])
    index = torch.tensor([[4, 1, 5, 0, 2, 3] + [-1] * 5])
    stored = tiny.features(padded, mask, index=index, kind=kind)
    for a, s in zip(alone, stored, strict=True):
        torch.testing.assert_close(s[0, index[0, :6]], a[0], rtol=1e-10, atol=1e-12)
        assert torch.all(s[0, 6:] == 0)


def _saved(tmp_path, features):
    torch.manual_seed(1)
    backbone = Backbone.of_size("tiny", k=4, n_layers=2)
    model = Downstream("pid", backbone, {} if features is None else {"features": features}).eval()
    save_downstream(tmp_path / "run", model, {"note": "test"})
    return model, tmp_path / "run"


def test_a_run_reading_x_reloads_and_predicts_identically(tmp_path):
    model, run = _saved(tmp_path, "x")
    loaded = load_downstream(run).eval()
    assert loaded.features == "x"
    assert loaded.head.mix.weights.numel() == 3
    features, mask = torch.rand(2, 10, 4), torch.tensor([[True] * 10, [True] * 7 + [False] * 3])
    with torch.no_grad():
        a, b = model(features, mask), loaded(features, mask)
    assert torch.equal(a["logits"], b["logits"])
    assert torch.equal(model.predict(a, mask), loaded.predict(b, mask))


def test_an_old_config_without_features_reads_z_and_a_bad_value_is_refused(tmp_path):
    _, run = _saved(tmp_path, None)
    config = json.loads((run / "config.json").read_text())
    assert "features" not in config["head"]
    loaded = load_downstream(run)
    assert loaded.features == "z"
    assert loaded.head.mix.weights.numel() == 2
    config["head"]["features"] = "y"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        RunError,
        match=rf"{run / 'config.json'}: bad pid head option values: features 'y' \(must be one of 'z', 'x', 'both'\)",
    ):
        load_downstream(run)
    config["head"]["features"], config["backbone"] = "x", None
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=rf"{run / 'config.json'}: head option 'features' with no backbone"):
        load_downstream(run)


def test_capped_weights_are_balanced_weights_with_a_ceiling():
    from fm4npp_models.training.class_weights import CAP, balanced_weights

    counts = [912, 340_558, 27_857, 15_015, 53_939]  # the demo's PID training labels: "other" is 0.2 %
    balanced = balanced_weights(counts)
    capped = balanced_weights(counts, CAP)
    assert balanced[0] == pytest.approx(sum(counts) / (5 * 912))  # 96.1
    assert capped[0] == CAP
    assert np.array_equal(capped[1:], balanced[1:])  # the others are below the cap
    assert FinetuneOptions(class_weights="capped", lr=1e-3).check() is None
