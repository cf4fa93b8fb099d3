"""The model commands lose nothing and explain every bad input (issue 15, the model half): a command writes only into
a folder it created or its own run (--resume), under one lock; non-finite weights and options are refused; a full
disk, a damaged config.json or resume state, a pickled global and a non-finite backbone are messages (exit 2, the file
named, what to do); `predict` shows progress on a terminal."""

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from fm4npp_cli.main import main as fm4npp  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from test_published import SMALL, random_published, save_released  # noqa: E402

from fm4npp_data.errors import TrainError  # noqa: E402
from fm4npp_models import Backbone  # noqa: E402
from fm4npp_models.adapters.downstream import Downstream, save_downstream  # noqa: E402
from fm4npp_models.checkpoints import run as run_module  # noqa: E402
from fm4npp_models.checkpoints.run import RunError, hold_run, load_tensors, save_run  # noqa: E402
from fm4npp_models.pretrain import PretrainOptions, pretrain  # noqa: E402

K = 4  # conftest.SMALL_REPO_K
QUIET = {"echo": lambda *_: None}
TRAIN = ["--k", str(K), "--batch-tokens", "2048", "--steps", "2", "--val-every", "1", "--lr", "1e-3"]
#: The options of `stopped_run` (options() below), to resume it from the command line.
RESUME = [
    "--k",
    str(K),
    "--batch-tokens",
    "2048",
    "--steps",
    "2",
    "--val-every",
    "1",
    "--lr",
    "3e-3",
    "--seed",
    "1",
    "--resume",
]


def invoke(*args):
    return CliRunner().invoke(fm4npp, [str(a) for a in args])


def options(**changes) -> PretrainOptions:
    return PretrainOptions(
        **{"steps": 2, "lr": 3e-3, "val_every": 1, "k": K, "batch_tokens": 2_048, "seed": 1, **changes}
    )


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def released(tmp_path):
    return save_released(tmp_path / "pp_nerf_test.ckpt", random_published(**SMALL))


@pytest.fixture
def noise_run(tmp_path):
    """An (untrained) AdapterOnly noise run: what predict reads."""
    torch.manual_seed(0)
    run = tmp_path / "noise"
    save_downstream(run, Downstream("noise", None, {"width": 32}), {"note": "untrained"})
    return run


@pytest.fixture(scope="module")
def stopped_run(small_repo, tmp_path_factory):
    """A pretraining run stopped after its checkpoint of step 1 (of 2): what --resume reads."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    pretrain(small_repo, run, options(), stop_after=1, **QUIET)
    return run


# -- 1. lost work ---------------------------------------------------------------------------------------------------


def test_import_checkpoint_never_replaces_an_existing_run_or_folder(tmp_path, released):
    run = tmp_path / "run"
    assert invoke("import-checkpoint", released, "--out", run).exit_code == 0
    before = snapshot(run)
    other = save_released(tmp_path / "other.ckpt", random_published(seed=1, **SMALL))
    again = invoke("import-checkpoint", other, "--out", run)
    assert again.exit_code == 2
    assert f"--out {run} is not empty (config.json, model.safetensors)" in again.output
    assert snapshot(run) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert invoke("import-checkpoint", released, "--out", mine).exit_code == 2
    assert snapshot(mine) == {"notes.txt": b"mine"}
    (tmp_path / "empty").mkdir()
    assert invoke("import-checkpoint", released, "--out", tmp_path / "empty").exit_code == 0


def test_training_refuses_a_folder_of_user_files_and_touches_nothing(small_repo, tmp_path):
    mine = tmp_path / "mine"
    (mine / "checkpoint-0000001").mkdir(parents=True)
    (mine / "checkpoint-0000001" / "weights.bin").write_bytes(b"precious")
    (mine / "log.csv").write_text("my,own,log\n")
    before = snapshot(mine)
    result = invoke("pretrain", "--data", small_repo, "--out", mine, *TRAIN)
    assert result.exit_code == 2, result.output
    assert f"--out {mine} is not empty (checkpoint-0000001, log.csv) and is not a run of `fm4npp pretrain`" in (
        result.output
    )
    result = invoke(
        "finetune",
        "--task",
        "noise",
        "--data",
        small_repo,
        "--backbone",
        "none",
        "--out",
        mine,
        "--steps",
        "1",
        "--val-every",
        "1",
        "--batch-tokens",
        "2048",
        "--resume",
    )
    assert result.exit_code == 2, result.output
    assert "is not a run of `fm4npp finetune`" in result.output
    assert snapshot(mine) == before
    assert sorted(p.name for p in mine.iterdir()) == ["checkpoint-0000001", "log.csv"]  # no lock, no training.json


def test_a_checkpoint_removes_only_the_runs_earlier_checkpoints(small_repo, stopped_run, tmp_path):
    """A user's copy of a checkpoint kept in the run folder under another name survives the next checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    shutil.copytree(run / "checkpoint-0000001", run / "checkpoint-0000001-keep")
    (run / "checkpoint-notes").mkdir()
    (run / "checkpoint-notes" / "notes.txt").write_text("mine")
    kept = snapshot(run / "checkpoint-0000001-keep")
    assert invoke("pretrain", "--data", small_repo, "--out", run, *RESUME).exit_code == 0
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        "checkpoint-0000001-keep",
        "checkpoint-0000002",
        "checkpoint-notes",
    ]
    assert snapshot(run / "checkpoint-0000001-keep") == kept
    assert (run / "checkpoint-notes" / "notes.txt").read_text() == "mine"


def test_a_run_of_the_other_command_is_refused_even_with_resume(small_repo, stopped_run):
    before = snapshot(stopped_run)
    result = invoke(
        "finetune",
        "--task",
        "noise",
        "--data",
        small_repo,
        "--backbone",
        "none",
        "--out",
        stopped_run,
        "--steps",
        "1",
        "--val-every",
        "1",
        "--batch-tokens",
        "2048",
        "--resume",
    )
    assert result.exit_code == 2
    assert "holds a run of `fm4npp pretrain`, not of `fm4npp finetune`" in result.output
    assert snapshot(stopped_run) == before


def test_a_second_command_on_a_run_folder_in_use_is_refused(small_repo, tmp_path, released):
    out = tmp_path / "run"
    out.mkdir()
    with hold_run(out):  # as a first `fm4npp pretrain` holds it while it trains
        result = invoke("pretrain", "--data", small_repo, "--out", out, *TRAIN)
        assert result.exit_code == 2, result.output
        assert "another fm4npp run" in result.output
        assert invoke("import-checkpoint", released, "--out", out).exit_code == 2
        assert sorted(p.name for p in out.iterdir()) == [".fm4npp-lock"]
    assert not (out / ".fm4npp-lock").exists()


def test_outputs_inside_the_dataset_repository_or_a_run_are_refused(small_repo, tmp_path, noise_run):
    shard = sorted((small_repo / "data" / "labeled").glob("test-*.parquet"))[0]
    truth = shard.read_bytes()
    result = invoke("predict", "--run", noise_run, "--data", small_repo, "--out", shard)
    assert result.exit_code == 2, result.output
    assert "is inside the dataset repository" in result.output
    assert shard.read_bytes() == truth
    copy = tmp_path / "copy"  # another repository (splits.json) than --data
    shutil.copytree(small_repo, copy)
    result = invoke("predict", "--run", noise_run, "--data", small_repo, "--out", copy / "p.parquet")
    assert result.exit_code == 2
    assert f"is inside the dataset repository {copy.resolve()}" in result.output
    result = invoke("predict", "--run", noise_run, "--data", small_repo, "--out", noise_run / "p.parquet")
    assert result.exit_code == 2
    assert f"is inside the run folder {noise_run.resolve()}" in result.output
    result = invoke("pretrain", "--data", small_repo, "--out", small_repo / "runs" / "r1", *TRAIN)
    assert result.exit_code == 2
    assert "is inside the dataset repository" in result.output
    assert not (small_repo / "runs").exists()


def test_predict_replaces_only_a_predictions_file_and_writes_it_whole(small_repo, tmp_path, noise_run):
    table = pa.table({"id": [1, 2]})
    for name, write in [
        ("mine.parquet", lambda p: pq.write_table(table, p)),
        ("notes.txt", lambda p: p.write_text("x")),
    ]:
        path = tmp_path / name
        write(path)
        before = path.read_bytes()
        result = invoke("predict", "--run", noise_run, "--data", small_repo, "--out", path)
        assert result.exit_code == 2, result.output
        assert f"--out {path} exists and is not a predictions file" in result.output
        assert path.read_bytes() == before
    out = tmp_path / "p.parquet"
    for _ in range(2):  # a predictions file is replaced
        assert invoke("predict", "--run", noise_run, "--data", small_repo, "--out", out).exit_code == 0
    assert pq.read_table(out).column_names == ["run", "event", "noise"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


# -- 3. invariants --------------------------------------------------------------------------------------------------


def test_non_finite_weights_are_refused_naming_the_file_and_tensor(small_repo, tmp_path, noise_run):
    weights = noise_run / "model.safetensors"
    state = load_tensors(weights)
    name = sorted(n for n, t in state.items() if t.is_floating_point())[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    result = invoke("predict", "--run", noise_run, "--data", small_repo, "--out", tmp_path / "p.parquet")
    assert result.exit_code == 2, result.output
    assert f"{weights}: non-finite weights (NaN or inf) in {name} (1 of" in result.output
    assert not (tmp_path / "p.parquet").exists()
    backbone = tmp_path / "backbone"
    save_run(backbone, Backbone.of_size("tiny", k=K, n_layers=1))
    state = load_tensors(backbone / "model.safetensors")
    state["head.bias"] = torch.full_like(state["head.bias"], float("inf"))
    save_file(state, str(backbone / "model.safetensors"))
    with pytest.raises(RunError, match=r"non-finite weights \(NaN or inf\) in head.bias"):
        Backbone.from_run(backbone)


@pytest.mark.parametrize(
    ("command", "args", "option"),
    [
        ("pretrain", ["--lr", "inf"], "--lr"),
        ("pretrain", ["--lr", "nan"], "--lr"),
        ("pretrain", ["--lr", "0"], "--lr"),
        ("pretrain", ["--dropout", "nan"], "--dropout"),
        ("pretrain", ["--dropout", "1"], "--dropout"),
        ("pretrain", ["--clip", "inf"], "--clip"),
        ("pretrain", ["--weight-decay", "nan"], "--weight-decay"),
        ("pretrain", ["--k", "0"], "--k"),
        ("pretrain", ["--batch-tokens", "0"], "--batch-tokens"),
        ("pretrain", ["--warmup", "-1"], "--warmup"),
        ("pretrain", ["--workers", "-1"], "--workers"),
        ("pretrain", ["--seed", "-1"], "--seed"),
        ("finetune", ["--queries", "0"], "--queries"),
        ("finetune", ["--queries", "-1"], "--queries"),
        ("finetune", ["--lr", "inf"], "--lr"),
        ("finetune", ["--train-events", "0"], "--train-events"),
        ("finetune", ["--steps", "0"], "--steps"),
        ("predict", ["--batch-tokens", "-5"], "--batch-tokens"),
    ],
)
def test_numeric_options_out_of_range_are_option_errors(small_repo, tmp_path, command, args, option):
    few = ["--steps", "3", "--val-every", "1", "--batch-tokens", "2048"]  # (were the option accepted)
    base = {
        "pretrain": ["--data", small_repo, "--out", tmp_path / "run", "--k", str(K), *few],
        "finetune": ["--task", "tracking", "--data", small_repo, "--backbone", "none", "--out", tmp_path / "run", *few],
        "predict": ["--run", tmp_path, "--data", small_repo, "--out", tmp_path / "p.parquet"],
    }[command]
    result = invoke(command, *base, *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "run").exists()


def test_the_library_refuses_a_non_finite_rate_or_dropout(small_repo, tmp_path):
    for change, message in [
        ({"lr": float("inf")}, "--lr must be a positive finite number"),
        ({"dropout": float("nan")}, r"--dropout must be in \[0, 1\)"),
    ]:
        with pytest.raises(TrainError, match=message):
            pretrain(small_repo, tmp_path / "run", options(**change), **QUIET)


def test_a_diverging_run_keeps_its_last_finite_checkpoint(small_repo, tmp_path, monkeypatch):
    """The weights turn NaN in the update of step 2: nothing is saved over the checkpoint of step 1."""
    from fm4npp_models import pretrain as pretrain_module

    build = pretrain_module.build_optimizer

    def poisoned(model, opts):
        optimizer = build(model, opts)
        steps = []

        def hook(*_):
            steps.append(1)
            if len(steps) == 2:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

        optimizer.register_step_post_hook(hook)
        return optimizer

    monkeypatch.setattr(pretrain_module, "build_optimizer", poisoned)
    run = tmp_path / "run"
    with pytest.raises(
        TrainError,
        match=r"not finite after step 2 .*training diverged; nothing was saved over the "
        r"last checkpoint \(step 1\); lower --lr",
    ) as info:
        pretrain(small_repo, run, options(steps=3), **QUIET)
    assert "(step 1)" in str(info.value)
    assert json.loads((run / "training.json").read_text())["checkpoint"] == "checkpoint-0000001"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000001"]
    saved = load_tensors(run / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in saved.values())
    checkpoint = load_tensors(run / "checkpoint-0000001" / "model.safetensors")
    assert all(torch.equal(saved[n], checkpoint[n]) for n in saved)


# -- 4. messages, not tracebacks ------------------------------------------------------------------------------------


def full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_last_checkpoint(small_repo, stopped_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    before = snapshot(run)
    monkeypatch.setattr(run_module, "save_file", full_disk)
    result = invoke("pretrain", "--data", small_repo, "--out", run, *RESUME)
    assert result.exit_code == 2, result.output
    assert "checkpoint of step 2 not written" in result.output
    assert f"{run / 'checkpoint-0000002'}" in result.output
    assert "the disk is full: free space on it" in result.output
    assert "the checkpoint of step 1 is kept: go on from it with --resume" in result.output
    after = snapshot(run)
    assert {n: after[n] for n in before if n != "log.csv"} == {n: b for n, b in before.items() if n != "log.csv"}
    assert not (run / "checkpoint-0000002").exists()
    assert not [p for p in run.rglob("*") if ".partial" in p.name]


def test_a_full_disk_while_importing_names_the_path(tmp_path, released, monkeypatch):
    monkeypatch.setattr(run_module, "save_file", full_disk)
    result = invoke("import-checkpoint", released, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert f"{tmp_path / 'run' / 'model.safetensors'}: cannot write it (No space left on device); the disk is full" in (
        result.output
    )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["backbone"].update(d_model="64"),
            "bad backbone values: d_model '64' (must be a positive integer)",
        ),
        (lambda c: c["backbone"].update(n_layers=-2), "n_layers -2 (must be a positive integer)"),
        (lambda c: c["backbone"].update(k=True), "k True (must be a positive integer)"),
        (lambda c: c["backbone"].update(trainable_embedding=1), "trainable_embedding 1 (must be true or false)"),
        (lambda c: c["backbone"].update(dropout=1.5), "dropout 1.5 (must be a number in [0, 1))"),
        (lambda c: c["backbone"].pop("headdim"), "missing backbone keys ['headdim']"),
        (lambda c: c["backbone"].update(headdim=48), "the backbone sizes do not fit together"),
        (lambda c: c.pop("origin"), "missing keys ['origin']"),
    ],
)
def test_a_backbone_config_with_wrong_types_or_values_is_a_message(tmp_path, edit, message):
    run = tmp_path / "run"
    save_run(run, Backbone.of_size("tiny", k=K, n_layers=1))
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=re.escape(message)) as info:
        Backbone.from_run(run)
    assert str(run / "config.json") in str(info.value)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ({"width": 32, "n_queries": 5}, "unknown noise head option keys ['n_queries']"),
        ({"width": "32"}, "width '32' (must be a positive integer)"),
        ({"width": 32, "dropout": -0.1}, "dropout -0.1"),
    ],
)
def test_a_downstream_config_with_a_bad_head_is_a_message(small_repo, tmp_path, noise_run, head, message):
    config = json.loads((noise_run / "config.json").read_text())
    config["head"] = head
    (noise_run / "config.json").write_text(json.dumps(config))
    result = invoke("predict", "--run", noise_run, "--data", small_repo, "--out", tmp_path / "p.parquet")
    assert result.exit_code == 2, result.output
    assert f"{noise_run / 'config.json'}: " in result.output
    assert message in result.output


def _damage_tensor(path, name, change):
    tensors = load_tensors(path)
    change(tensors, name)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: (run / "training.json").write_text("{not json"), "training.json: unreadable"),
        (
            lambda run: (run / "training.json").write_text("[1, 2]"),
            "training.json: damaged training state (a JSON list",
        ),
        (
            lambda run: (run / "training.json").write_text(
                json.dumps({**json.loads((run / "training.json").read_text()), "progress": {"step": "1"}})
            ),
            "training.json: damaged training state ('progress' has the keys",
        ),
        (
            lambda run: _damage_tensor(
                run / "checkpoint-0000001" / "rng-0.safetensors", "torch", lambda t, n: t.update({n: t[n][:10]})
            ),
            "rng-0.safetensors: the 'torch' random state",
        ),
        (
            lambda run: _damage_tensor(
                run / "checkpoint-0000001" / "rng-0.safetensors", "torch", lambda t, n: t.update({"other": t.pop(n)})
            ),
            "rng-0.safetensors: no 'torch' random",
        ),
        (
            lambda run: _damage_tensor(
                run / "checkpoint-0000001" / "optimizer.safetensors", "state.0.exp_avg", lambda t, n: t.pop(n)
            ),
            "optimizer.safetensors: optimizer state that does not fit",
        ),
        (
            lambda run: _damage_tensor(
                run / "checkpoint-0000001" / "optimizer.safetensors",
                "state.0.exp_avg_sq",
                lambda t, n: t.update({n: t[n].flatten()[:3]}),
            ),
            "state.0.exp_avg_sq (3,)",
        ),
        (
            lambda run: _damage_tensor(
                run / "checkpoint-0000001" / "optimizer.safetensors",
                "state.1.exp_avg",
                lambda t, n: t.update({n: t[n].double()}),
            ),
            "torch.float64, expected",
        ),
        (lambda run: (run / "checkpoint-0000001" / "optimizer.safetensors").unlink(), "optimizer.safetensors: no such"),
    ],
)
def test_damaged_resume_state_is_a_message_naming_the_file(small_repo, stopped_run, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    damage(run)
    result = invoke("pretrain", "--data", small_repo, "--out", run, *RESUME)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in result.output
    assert "start a new run with another --out" in result.output


def test_a_damaged_log_on_resume_is_a_message_naming_it(small_repo, stopped_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    with (run / "log.csv").open("a") as f:
        f.write("garbage,row\n")
    before = snapshot(run)
    result = invoke("pretrain", "--data", small_repo, "--out", run, *RESUME)
    assert result.exit_code == 2, result.output
    assert f"{run / 'log.csv'}: not a training log of fm4npp (ValueError: invalid literal" in result.output
    assert "correct it, or remove it (its rows are then lost), and resume again" in result.output
    assert snapshot(run) == before
    (run / "log.csv").unlink()
    assert invoke("pretrain", "--data", small_repo, "--out", run, *RESUME).exit_code == 0


def test_the_pickle_refusal_names_a_blocked_global(tmp_path):
    class System:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    path = save_released(tmp_path / "evil.ckpt", random_published(**SMALL), params=System())
    result = invoke("import-checkpoint", path, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "evil.ckpt: refused: loading it would need unpickling code (it refers to " in result.output
    assert f"{os.system.__module__}.system" in result.output  # posix.system: its module is blocked by torch
    assert not (tmp_path / "run").exists()


def test_a_non_finite_backbone_is_not_blamed_on_the_learning_rate(small_repo, tmp_path):
    """Finite weights so large that the frozen backbone's features overflow: the message names the backbone."""
    torch.manual_seed(0)
    model = Backbone.of_size("tiny", k=K, n_layers=2)
    with torch.no_grad():
        for block in model.blocks:
            block.mixer.out_proj.weight.fill_(1e38)
    save_run(tmp_path / "huge", model)
    result = invoke(
        "finetune",
        "--task",
        "noise",
        "--data",
        small_repo,
        "--backbone",
        tmp_path / "huge",
        "--out",
        tmp_path / "run",
        "--steps",
        "2",
        "--val-every",
        "1",
        "--batch-tokens",
        "2048",
    )
    assert result.exit_code == 2, result.output
    assert "the frozen backbone gives non-finite features" in result.output
    assert "give another --backbone" in result.output
    assert "lower --lr" not in result.output


def test_non_finite_data_is_not_blamed_on_the_backbone_or_the_rate(small_repo, tmp_path, rerecord):
    """Energies that are NaN in the train shard (its sha256 recorded again): the message names the data and the
    events, not the (finite) frozen backbone nor --lr."""
    import pyarrow.compute as pc

    from fm4npp_data.integrity import WRITE_OPTIONS

    repo = tmp_path / "repo"
    shutil.copytree(small_repo, repo)
    path = sorted((repo / "data" / "labeled").glob("train-*.parquet"))[0]
    table = pq.read_table(path)
    energy = table["energy"].combine_chunks()
    nan = pa.array(pc.list_flatten(energy).to_numpy(zero_copy_only=False) * float("nan"), pa.float32())
    table = table.set_column(
        table.schema.get_field_index("energy"), "energy", pa.ListArray.from_arrays(energy.offsets, nan)
    )
    pq.write_table(table, path, row_group_size=8, **WRITE_OPTIONS)
    rerecord(repo)
    torch.manual_seed(0)
    save_run(tmp_path / "backbone", Backbone.of_size("tiny", k=K, n_layers=2))
    result = invoke(
        "finetune",
        "--task",
        "noise",
        "--data",
        repo,
        "--backbone",
        tmp_path / "backbone",
        "--out",
        tmp_path / "run",
        "--steps",
        "2",
        "--val-every",
        "1",
        "--batch-tokens",
        "2048",
    )
    assert result.exit_code == 2, result.output
    assert re.search(
        r"the input features of \(run \d+, event \d+\).* are not finite \(NaN or inf in their energy "
        r"or coordinates\): the data are damaged, not the weights or --lr",
        result.output,
    )
    assert "backbone" not in result.output
    assert "Traceback" not in result.output


# -- 6. progress on predict -----------------------------------------------------------------------------------------


def test_predict_shows_progress_on_a_terminal_without_changing_the_predictions(
    small_repo, tmp_path, noise_run, monkeypatch
):
    from rich.progress import Progress

    from fm4npp_models.training import log

    quiet = tmp_path / "quiet.parquet"
    assert invoke("predict", "--run", noise_run, "--data", small_repo, "--out", quiet).exit_code == 0
    advanced = []
    update = Progress.update

    def spy(self, task, **fields):
        advanced.append(fields.get("advance", 0))
        return update(self, task, **fields)

    monkeypatch.setattr(Progress, "update", spy)
    monkeypatch.setattr(log, "is_terminal", lambda: True)
    live = tmp_path / "live.parquet"
    assert invoke("predict", "--run", noise_run, "--data", small_repo, "--out", live).exit_code == 0
    events = pq.read_table(live).num_rows
    assert sum(advanced) == events > 0
    assert pq.read_table(live).equals(pq.read_table(quiet))


def test_a_killed_import_leaves_nothing_that_blocks_its_retry(tmp_path, released):
    """A command killed while writing leaves `.NAME.partial` files (and perhaps its lock): the retry goes on."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".model.safetensors.partial").write_bytes(b"half a file")
    (run / ".fm4npp-lock").write_text("nohost-that-exists 1\n")  # another host's lock is never taken over...
    assert invoke("import-checkpoint", released, "--out", run).exit_code == 2
    (run / ".fm4npp-lock").unlink()  # ...so the user removes it, as the message says
    result = invoke("import-checkpoint", released, "--out", run)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors"]


def test_the_run_lock_is_never_seen_half_written(tmp_path):
    """The lock appears whole (linked into place), so a second command never takes a live run's lock as a dead
    one's; while it is held a second command is refused, and nothing of it is left after."""
    from fm4npp_data import files

    seen = []
    real_link = os.link

    def link(src, dst):  # what another process can read at the moment the lock appears
        real_link(src, dst)
        seen.append(Path(dst).read_text())

    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files.os, "link", link)
        with hold_run(folder):
            assert seen == [f"{os.uname().nodename} {os.getpid()}\n"]
            with pytest.raises(RunError, match="another fm4npp run"), hold_run(folder):
                pass
    assert list(folder.iterdir()) == []
