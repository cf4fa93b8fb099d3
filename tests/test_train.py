"""Pretraining (fm4npp_models.training, fm4npp_models.pretrain, `fm4npp pretrain`) on a tiny repository: the
schedule, checkpoints that reload exactly, resume reproducing the uninterrupted loss curve, the refusals, the CLI's
defaults, and data-parallel training under torchrun with two CPU processes (gloo)."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from fm4npp_cli.main import main as fm4npp  # noqa: E402

from fm4npp_data.errors import TrainError  # noqa: E402
from fm4npp_models import Backbone  # noqa: E402
from fm4npp_models.pretrain import PretrainOptions, pretrain  # noqa: E402
from fm4npp_models.training.log import read_log  # noqa: E402
from fm4npp_models.training.loop import lr_factor  # noqa: E402

K = 4  # conftest.SMALL_REPO_K


@pytest.fixture
def repo(small_repo):
    return small_repo


def options(**changes) -> PretrainOptions:
    base = {"steps": 6, "lr": 3e-3, "val_every": 3, "k": K, "batch_tokens": 2_048, "seed": 1}
    return PretrainOptions(**{**base, **changes})


def losses(run: Path) -> list[float]:
    return [float(row["loss"]) for row in read_log(run / "log.csv")]


def test_schedule_warms_up_linearly_then_decays_by_a_cosine():
    steps, warmup = 100, 10
    f = [lr_factor(s, steps, warmup, 0.1) for s in range(steps)]
    assert f[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert f[warmup] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(0.1)
    middle = warmup + (steps - 1 - warmup) / 2
    assert lr_factor(int(middle), steps, warmup, 0.1) == pytest.approx(0.55, abs=0.02)
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :], strict=False))
    assert lr_factor(0, 5, 0, 0.0) == 1.0  # no warmup


def test_pretrain_writes_a_run_that_reloads_exactly(repo, tmp_path):
    run = tmp_path / "run"
    summary = pretrain(repo, run, options(), echo=lambda *_: None)
    assert summary["step"] == 6
    assert not summary["interrupted"]
    assert summary["events"] > 0
    assert summary["tokens"] > 0
    rows = read_log(run / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [bool(r["val_loss"]) for r in rows] == [False, False, True, False, False, True]
    assert math.isfinite(summary["val_loss"])
    assert summary["own_loss"] > 0
    training = json.loads((run / "training.json").read_text())
    assert training["checkpoint"] == "checkpoint-0000006"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000006"]  # older ones removed
    model = Backbone.from_run(run)
    assert model.config.k == K
    assert model.config.d_model == 64
    saved = json.loads((run / "config.json").read_text())
    assert saved["origin"]["trained_by"] == "fm4npp pretrain"
    assert saved["origin"]["size"] == "tiny"
    # the run's weights are the checkpoint's
    from fm4npp_models.checkpoints.run import load_tensors

    ckpt = load_tensors(run / "checkpoint-0000006" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt[name]), name


def test_resume_reproduces_the_uninterrupted_curve(repo, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain(repo, whole, options(), echo=lambda *_: None)
    first = pretrain(repo, parts, options(), stop_after=4, echo=lambda *_: None)  # interrupted after step 4
    assert first["interrupted"]
    assert first["step"] == 4
    assert len(losses(parts)) == 4
    pretrain(repo, parts, options(), resume=True, echo=lambda *_: None)
    assert losses(parts) == losses(whole)  # exactly: same batches, dropout masks, moments and schedule
    a, b = Backbone.from_run(whole), Backbone.from_run(parts)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_an_existing_run_needs_resume_and_the_same_settings(repo, tmp_path):
    run = tmp_path / "run"
    pretrain(repo, run, options(steps=2, val_every=2), echo=lambda *_: None)
    with pytest.raises(TrainError, match="pass --resume"):
        pretrain(repo, run, options(steps=2, val_every=2), echo=lambda *_: None)
    with pytest.raises(TrainError, match="lr"):
        pretrain(repo, run, options(steps=2, val_every=2, lr=1e-3), resume=True, echo=lambda *_: None)


def test_bad_inputs_are_refused_with_the_fix(repo, tmp_path):
    with pytest.raises(TrainError, match="not a dataset repository"):
        pretrain(tmp_path, tmp_path / "run", options(), echo=lambda *_: None)
    with pytest.raises(TrainError, match="unknown model size 'm9'"):
        pretrain(repo, tmp_path / "run", options(model="m9"), echo=lambda *_: None)
    with pytest.raises(TrainError, match="k = 10, but the data has k = 4"):
        pretrain(repo, tmp_path / "run", options(k=10), echo=lambda *_: None)
    with pytest.raises(TrainError, match="--steps must be at least 1"):
        pretrain(repo, tmp_path / "run", options(steps=0), echo=lambda *_: None)


def test_cli_pretrains_and_reports(repo, tmp_path):
    out = tmp_path / "run"
    args = [
        "--data",
        str(repo),
        "--out",
        str(out),
        "--steps",
        "2",
        "--val-every",
        "2",
        "--k",
        str(K),
        "--batch-tokens",
        "2048",
        "--lr",
        "1e-3",
    ]
    result = CliRunner().invoke(fm4npp, ["pretrain", *args])
    assert result.exit_code == 0, result.output
    assert "2 of 2 steps" in result.output
    assert "own position (ratio" in result.output
    assert "mean offset of each neighbour rank" in result.output
    assert (out / "model.safetensors").is_file()
    again = CliRunner().invoke(fm4npp, ["pretrain", *args])
    assert again.exit_code == 2
    assert "pass --resume" in again.output


@pytest.mark.slow
def test_torchrun_two_cpu_processes(repo, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "fm4npp_cli.main",
        "pretrain",
        "--data",
        str(repo),
        "--out",
        str(out),
        "--steps",
        "4",
        "--val-every",
        "2",
        "--k",
        str(K),
        "--batch-tokens",
        "2048",
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    training = json.loads((out / "training.json").read_text())
    assert training["world_size"] == 2
    assert len(training["loaders"]) == 2
    assert [state["settings"]["rank"] for state in training["loaders"]] == [0, 1]
    assert all(state["batches"] > 0 or state["epoch"] > 0 for state in training["loaders"])
    with (out / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]  # one log, written by rank 0
    # the events of a step are those of both ranks; the result is one model
    assert training["progress"]["events"] > 0
    Backbone.from_run(out)
    assert done.stdout.count("validation loss") == 1  # the summary is printed once


@pytest.mark.slow
def test_sigterm_stops_at_a_step_checkpoints_and_resumes_the_same_curve(repo, tmp_path):
    import signal
    import time

    steps = 40
    whole = tmp_path / "whole"
    pretrain(repo, whole, options(steps=steps, val_every=10), echo=lambda *_: None)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "fm4npp_cli.main",
        "pretrain",
        "--data",
        str(repo),
        "--out",
        str(run),
        "--steps",
        str(steps),
        "--val-every",
        "10",
        "--k",
        str(K),
        "--batch-tokens",
        "2048",
        "--lr",
        "3e-3",
        "--seed",
        "1",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((run / "log.csv").is_file() and len(losses(run)) >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "stopped (SIGTERM)" in output
    stopped = json.loads((run / "training.json").read_text())["progress"]["step"]
    assert 3 <= stopped < steps
    assert len(losses(run)) == stopped  # the checkpoint is at the last logged step
    pretrain(repo, run, options(steps=steps, val_every=10), resume=True, echo=lambda *_: None)
    assert losses(run) == losses(whole)


# -- found in review: each of these failed before its fix -------------------------------------------------------


def test_resume_exactly_at_the_end_of_an_epoch(repo, tmp_path):
    from fm4npp_data.loader import make_loader

    per_epoch = len(list(make_loader(repo, "pretrain", "train", batch_tokens=2_048, seed=1, k=K)))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain(repo, whole, options(steps=per_epoch + 2, val_every=per_epoch), echo=lambda *_: None)
    pretrain(repo, parts, options(steps=per_epoch + 2, val_every=per_epoch), stop_after=per_epoch, echo=print)
    pretrain(repo, parts, options(steps=per_epoch + 2, val_every=per_epoch), resume=True, echo=lambda *_: None)
    assert losses(parts) == losses(whole)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_resume_is_exact_with_loader_workers_and_dropout(repo, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain(repo, whole, options(workers=2), echo=lambda *_: None)
    pretrain(repo, parts, options(workers=2), stop_after=3, echo=lambda *_: None)
    pretrain(repo, parts, options(workers=2), resume=True, echo=lambda *_: None)
    assert losses(parts) == losses(whole)


def test_resume_names_the_option_that_differs(repo, tmp_path):
    run = tmp_path / "run"
    pretrain(repo, run, options(steps=2, val_every=2), echo=lambda *_: None)
    with pytest.raises(TrainError, match=r"options\.steps: saved 2, now 5") as info:
        pretrain(repo, run, options(steps=5, val_every=2), resume=True, echo=lambda *_: None)
    assert "lr" not in str(info.value)


def test_a_model_folder_is_never_overwritten(repo, tmp_path):
    from fm4npp_models.checkpoints.run import save_run

    imported = tmp_path / "imported"
    save_run(imported, Backbone.of_size("tiny", k=K), {"note": "not trained here"})
    before = (imported / "model.safetensors").read_bytes()
    for resume in (False, True):
        with pytest.raises(TrainError, match="no training state"):
            pretrain(repo, imported, options(), resume=resume, echo=lambda *_: None)
    assert (imported / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clip": -1.0}, "--clip must be positive"),
        ({"clip": 0.0}, "--clip must be positive"),
        ({"weight_decay": -0.1}, "--weight-decay must be >= 0"),
        ({"device": "bogus"}, "not a device"),
        ({"device": "cuda:3"}, "no CUDA device|cuda"),
    ],
)
def test_bad_settings_are_refused(repo, tmp_path, change, message):
    if change.get("device") == "cuda:3" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainError, match=message):
        pretrain(repo, tmp_path / "run", options(**change), echo=lambda *_: None)
