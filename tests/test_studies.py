"""The studies (`fm4npp study`, fm4npp_models.studies) on the small repository: data efficiency runs its grid, writes
its table and figure and skips finished runs on a re-run; model size pretrains and reuses that grid; the probe's
classifier and pair figures give the known answers on hand-built features, and the command writes its outputs."""

import csv
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402
from fm4npp_cli.main import main  # noqa: E402

from fm4npp_data.labels import NOISE_CLASSES, PID_CLASSES  # noqa: E402
from fm4npp_data.tasks import NOISE, PID, TRACKING  # noqa: E402
from fm4npp_models.checkpoints.run import save_run  # noqa: E402
from fm4npp_models.model.backbone import Backbone  # noqa: E402
from fm4npp_models.studies.common import mean_std  # noqa: E402
from fm4npp_models.studies.data_efficiency import _finetune_options, _head_options, aggregate, plan  # noqa: E402
from fm4npp_models.studies.options import StudyOptions  # noqa: E402
from fm4npp_models.studies.probe import (  # noqa: E402
    PairSampler,
    Points,
    dbscan_ari,
    fit_linear_map,
    linear_classifier,
    pair_auc,
)
from fm4npp_models.training.options import FinetuneOptions  # noqa: E402

K = 4  # the neighbours prepared in the small repository (conftest.K)
FAST = ["--batch-tokens", "2048", "--val-every", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory):
    """A random tiny backbone of 2 layers as a run folder (the studies need a backbone, not a good one)."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("backbone") / "fm-tiny"
    save_run(run, Backbone.of_size("tiny", k=K, n_layers=2), {"note": "random"})
    return run


def invoke(*args):
    return CliRunner().invoke(main, ["study", *map(str, args)], catch_exceptions=False)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------------------
# data efficiency
# ------------------------------------------------------------------------------------------------------------


def test_data_efficiency_runs_the_grid_and_skips_finished_runs(small_repo, backbone_run, tmp_path):
    out = tmp_path / "study"
    args = ["data-efficiency", "--data", small_repo, "--backbone", backbone_run, "--out", out, "--events", "3,6"]
    args += ["--seeds", "2", "--tasks", NOISE.name, "--steps", "1", *FAST]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    rows = read_csv(out / "data-efficiency.csv")
    cells = sorted((r["model"], r["events"], r["seed"]) for r in rows)
    assert cells == sorted((m, n, s) for m in ("fm-tiny", "AdapterOnly") for n in ("3", "6") for s in ("0", "1"))
    for r in rows:
        assert r["task"] == NOISE.name
        assert r["metric"] == "macro_recall"
        assert 0 <= float(r["macro_recall"]) <= 1
        assert 0 <= float(r["accuracy"]) <= 1
        assert float(r["value"]) == float(r["macro_recall"])
        assert r["train_events"] == r["events"]  # the first N events
        assert float(r["train_seconds"]) > 0
        assert r["steps"] == "1"
    table = (out / "data-efficiency.md").read_text()
    assert len(re.findall(r"\d ± \d", table)) == 4  # (FM, AO) x (3, 6), over 2 seeds
    assert "x |" in table  # the FM / AO ratio
    assert table in first.output  # printed
    assert (out / "data-efficiency.png").stat().st_size > 0
    results = sorted((out / "results").glob("*.json"))
    assert len(results) == 8
    stamps = {p: p.stat().st_mtime_ns for p in results}

    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert again.output.count("done before, skipped") == 8
    assert ": training" not in again.output
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert read_csv(out / "data-efficiency.csv") == rows

    redo = out / "results" / "AdapterOnly-noise-n3-s1.json"
    redo.unlink()  # as if stopped between training and scoring: the finished run folder is resumed, then scored
    third = invoke(*args)
    assert third.exit_code == 0, third.output
    assert third.output.count("done before, skipped") == 7
    assert third.output.count("training (resuming)") == 1
    assert json.loads(redo.read_text())["resumed"] is True

    steps = args.index("--steps") + 1
    changed = invoke(*args[:steps], "2", *args[steps + 1 :])  # other --steps: refused
    assert changed.exit_code == 2
    assert "study.json" in changed.output
    assert "other settings" in changed.output


def test_data_efficiency_refuses_a_repository_a_run_or_a_folder_of_other_files_as_out(
    small_repo, backbone_run, tmp_path
):
    (tmp_path / "mine.txt").write_text("not a study")
    for out in (small_repo / "study", backbone_run, tmp_path):
        result = invoke("data-efficiency", "--data", small_repo, "--out", out, "--tasks", PID.name, "--events", "3")
        assert result.exit_code == 2, result.output
        assert "give another --out" in result.output or "give a --out outside it" in result.output


def test_each_run_gets_the_options_of_its_task_and_model(tmp_path):
    runs = plan({"fm": tmp_path}, [TRACKING.name, PID.name], [5, None], 2)
    assert len(runs) == 2 * 2 * 2 * 2
    assert [r.name for r in runs[:4]] == [
        "fm-tracking-n5-s0",
        "AdapterOnly-tracking-n5-s0",
        "fm-tracking-n5-s1",
        "AdapterOnly-tracking-n5-s1",
    ]
    given = StudyOptions(steps=7, val_every=100, queries=12, class_weights="none", features="x")
    for run in runs:
        options = _finetune_options(run, given)
        assert (options.steps, options.val_every, options.seed, options.train_events) == (7, 7, run.seed, run.events)
        assert options.class_weights == "none"
        head = _head_options(run, given)
        assert head.get("n_queries") == (12 if run.task == TRACKING.name else None)
        assert head.get("features") == ("x" if run.backbone is not None else None)  # AdapterOnly has no backbone
    default = _finetune_options(runs[0], StudyOptions())
    assert default.class_weights == FinetuneOptions().class_weights
    assert _head_options(runs[0], StudyOptions()) == {}


def test_aggregate_gives_mean_std_and_the_ratio_to_adapter_only():
    rows = [
        {"task": PID.name, "events": 5, "train_events": 5, "model": m, "value": v, "train_seconds": 1.0}
        for m, v in (("fm", 0.6), ("fm", 0.8), ("AdapterOnly", 0.35), ("AdapterOnly", 0.35))
    ]
    fm, ao = aggregate(rows)
    assert fm["mean"] == pytest.approx(0.7)
    assert fm["std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert fm["ratio_to_adapter_only"] == pytest.approx(2.0)
    assert ao["ratio_to_adapter_only"] is None
    assert mean_std([None, 1.0]) == (1.0, 0.0, 1)


# ------------------------------------------------------------------------------------------------------------
# model size
# ------------------------------------------------------------------------------------------------------------


def test_model_size_pretrains_each_size_then_trains_the_heads(small_repo, tmp_path):
    out = tmp_path / "sizes"
    args = ["model-size", "--data", small_repo, "--sizes", "tiny", "--steps", "2", "--k", K, "--out", out]
    args += ["--task", PID.name, "--events", "4", "--finetune-steps", "1", *FAST]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    (row,) = read_csv(out / "model-size.csv")
    assert row["size"] == "tiny"
    assert int(row["parameters"]) == sum(p.numel() for p in Backbone.from_run(out / "pretrain" / "tiny").parameters())
    assert float(row["val_loss"]) > 0
    assert float(row["own_loss"]) > 0
    assert row["pretrain_steps"] == "2"
    assert 0 <= float(row["mean"]) <= 1
    assert row["seeds"] == "1"
    assert row["events"] == "4"
    (run,) = read_csv(out / "model-size-runs.csv")
    assert run["model"] == "tiny"
    assert run["train_events"] == "4"
    assert " ± " in (out / "model-size.md").read_text()
    assert (out / "model-size.png").is_file()
    again = invoke(*args)
    assert again.exit_code == 0
    assert "pretraining tiny: done before, skipped" in again.output


# ------------------------------------------------------------------------------------------------------------
# the probe
# ------------------------------------------------------------------------------------------------------------


def test_linear_classifier_recovers_a_one_hot_label_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 3000)
    one_hot = np.eye(5)[y] + rng.normal(0, 0.01, (3000, 5))
    got = linear_classifier(one_hot[:2000], y[:2000], one_hot[2000:], y[2000:], PID_CLASSES)
    assert got["macro_recall"] == 1.0
    assert got["accuracy"] == 1.0
    noise = rng.random(3000) < 0.2  # unbalanced, as the noise class
    chance = linear_classifier(
        rng.normal(size=(2000, 8)), noise[:2000] * 1, rng.normal(size=(1000, 8)), noise[2000:] * 1, NOISE_CLASSES
    )
    assert abs(chance["macro_recall"] - 0.5) < 0.06  # balanced weights: chance is 1 / classes, not the majority


def _tracks(rng, events=6, tracks=8, points=12, informative=True):
    """Hand-built events: each track a tight cluster in 4 dimensions (or not), plus 12 dimensions of loud noise."""
    n = events * tracks * points
    event = np.repeat(np.arange(events), tracks * points)
    track = np.tile(np.repeat(np.arange(tracks), points), events)
    centre = rng.normal(0, 1, (events, tracks, 4))[event, track]
    signal = centre + rng.normal(0, 0.02, (n, 4)) if informative else rng.normal(0, 1, (n, 4))
    x = np.concatenate([signal, rng.normal(0, 3, (n, 12))], axis=1).astype(np.float32)
    labels = {TRACKING.column: track, NOISE.column: np.zeros(n, bool)}
    return x, Points({}, labels, event, [(0, e) for e in range(events)])


def test_pair_auc_and_the_linear_map_find_tracks_where_the_features_hold_them():
    rng = np.random.default_rng(1)
    x, points = _tracks(rng)
    sampler = PairSampler(points.labels[TRACKING.column], points.event)
    i, j, same = sampler.sample(rng, 1000)
    assert (points.event[i] == points.event[j]).all()
    truth = points.labels[TRACKING.column]
    assert ((truth[i] == truth[j]) == same).all()
    assert (i != j).all()
    assert 0.4 < same.mean() < 0.6
    assert pair_auc(x[:, :4], sampler) > 0.99  # the informative dimensions alone
    linear = fit_linear_map(x, sampler, steps=150)
    with torch.no_grad():
        mapped = linear(torch.from_numpy(x)).numpy()
    assert pair_auc(x, sampler) < 0.9 < pair_auc(mapped, sampler)  # the noise dimensions hide what the map finds
    assert dbscan_ari(mapped, points)["ari"] > 0.8
    x_random, points = _tracks(rng, informative=False)
    sampler = PairSampler(points.labels[TRACKING.column], points.event)
    assert abs(pair_auc(x_random, sampler) - 0.5) < 0.05


def test_probe_command_writes_its_table_json_and_figure(small_repo, backbone_run, tmp_path):
    out = tmp_path / "probe"
    # the split sizes of small_repo differ between sessions (its run numbers follow the files' checksums)
    labeled = json.loads((small_repo / "splits.json").read_text())["configs"]["labeled"]
    train, test = min(6, labeled["train"]["events"]), min(4, labeled["test"]["events"])
    result = invoke(
        "probe",
        "--data",
        small_repo,
        "--backbone",
        backbone_run,
        "--out",
        out,
        "--events",
        str(train),
        "--eval-events",
        str(test),
        "--batch-tokens",
        "2048",
        "--device",
        "cpu",
        "--map-steps",
        "40",
        "--max-iter",
        "50",
    )
    assert result.exit_code == 0, result.output
    got = json.loads((out / "probe.json").read_text())
    assert got["train_events"] == train
    assert got["eval_events"] == test
    assert got["dimensions"] == {"FM": 2 * 64, "raw inputs": 64}
    for kind in ("FM", "raw inputs"):
        for task in (PID.name, NOISE.name):
            assert 0 <= got["probes"][kind][task]["macro_recall"] <= 1
        tracking = got["probes"][kind][TRACKING.name]
        assert 0 <= tracking["pair_auc"] <= 1
        assert -1 <= tracking["dbscan_ari"] <= 1
    table = (out / "probe.md").read_text()
    assert table in result.output
    assert table.count("\n| FM") + table.count("\n| raw inputs") == 2
    assert (out / "probe.png").stat().st_size > 0


def test_the_probe_reads_the_features_the_heads_read():
    from fm4npp_models.studies.options import ProbeOptions
    from fm4npp_models.studies.probe import fm_features
    from fm4npp_models.training.options import DEFAULT_FEATURES

    assert ProbeOptions().features == DEFAULT_FEATURES
    torch.manual_seed(0)
    backbone = Backbone.of_size("tiny", k=2).eval()
    features, mask = torch.randn(2, 9, 4), torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        x = fm_features(backbone, features, mask, "x")
        z = fm_features(backbone, features, mask, "z")
        stream = backbone.features(features, mask, kind="x")
        blocks = backbone.features(features, mask, kind="z")
    assert torch.equal(x, torch.cat([stream[-1], torch.stack(stream).mean(0)], -1))
    assert torch.equal(z, torch.cat([blocks[-1], torch.stack(blocks).mean(0)], -1))
    assert not torch.allclose(x, z)
