"""Fine-tuning the heads on a frozen backbone and the AdapterOnly baseline (fm4npp_models.finetune,
fm4npp_models.predict, `fm4npp finetune`, `fm4npp predict`) on the small repository: the backbone stays frozen, model
selection keeps the best validation weights, runs reload exactly, predictions come back in the stored order and cover
every event of the split."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from fm4npp_cli.finetune import finetune as finetune_command  # noqa: E402
from fm4npp_cli.finetune import predict as predict_command  # noqa: E402

from fm4npp_data.errors import TrainError  # noqa: E402
from fm4npp_models import Backbone  # noqa: E402
from fm4npp_models.adapters.downstream import Downstream, load_downstream  # noqa: E402
from fm4npp_models.checkpoints.run import RunError, save_run  # noqa: E402
from fm4npp_models.finetune import finetune  # noqa: E402
from fm4npp_models.predict import predict, predict_split  # noqa: E402
from fm4npp_models.training.log import read_log  # noqa: E402
from fm4npp_models.training.options import DEFAULT_FEATURES, FinetuneOptions  # noqa: E402

QUIET = {"echo": lambda *_: None}


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory):
    """A random (untrained) tiny backbone as a run folder: fine-tuning does not need a good one to be tested."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("backbone") / "run"
    save_run(run, Backbone.of_size("tiny", k=4, n_layers=2), {"note": "random"})
    return run


def options(**changes) -> FinetuneOptions:
    return FinetuneOptions(**{"steps": 4, "val_every": 2, "batch_tokens": 2_048, "lr": 1e-3, **changes})


def truth_of(repo, split="test"):
    table = pq.read_table(
        sorted((repo / "data" / "labeled").glob(f"{split}-*.parquet")),
        columns=["run", "event", "pid", "noise", "track_id"],
    )
    return {
        (r, e): (np.array(p), np.array(n), np.array(t))
        for r, e, p, n, t in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
    }


@pytest.mark.parametrize("task", ["pid", "noise", "tracking"])
def test_finetune_trains_the_head_only_and_keeps_the_best(small_repo, backbone_run, tmp_path, task):
    out = tmp_path / task
    head_options = {"n_queries": 12} if task == "tracking" else {}
    before = Backbone.from_run(backbone_run).state_dict()
    summary = finetune(task, small_repo, out, backbone_run, options(), head_options=head_options, **QUIET)
    assert summary["step"] == 4
    rows = read_log(out / "log.csv")
    val = {int(r["step"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
    assert sorted(val) == [2, 4]
    assert summary["best_val_loss"] == pytest.approx(min(val.values()), rel=1e-6)
    model = load_downstream(out)
    assert model.task == task
    for name, tensor in model.backbone.state_dict().items():  # frozen: the backbone is the one given
        assert torch.equal(tensor, before[name]), name
    assert not any(p.requires_grad for p in model.backbone.parameters())
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "downstream"
    assert config["head"] == {**head_options, "features": DEFAULT_FEATURES}  # written out: what the head reads


def test_adapter_only_has_no_backbone(small_repo, tmp_path):
    out = tmp_path / "ao"
    summary = finetune("pid", small_repo, out, None, options(steps=2), **QUIET)
    assert summary["backbone"] is None
    assert load_downstream(out).backbone is None


def test_train_events_takes_the_first_events(small_repo, tmp_path):
    summary = finetune("noise", small_repo, tmp_path / "few", None, options(steps=2, train_events=5), **QUIET)
    assert summary["train_events"] == 5
    subset = pq.read_table(tmp_path / "few" / "train-subset.parquet", columns=["run", "event"])
    first = pq.read_table(
        sorted((small_repo / "data" / "labeled").glob("train-*.parquet"))[0], columns=["run", "event"]
    )
    assert subset.to_pylist() == first.slice(0, 5).to_pylist()
    with pytest.raises(TrainError, match="has .* events"):
        finetune("noise", small_repo, tmp_path / "many", None, options(train_events=10**6), **QUIET)


def test_predictions_are_in_the_stored_order_and_cover_the_split(small_repo, backbone_run):
    """A model whose label is a function of each spacepoint's phi must give, in the stored order, that function of
    the stored phi column: this checks the scatter from the loader's serialized order back to the stored order."""

    class PhiBins(Downstream):
        def forward(self, features, mask):  # noqa: ARG002 - the model's signature
            return {"labels": (features[..., 2] * 5).floor().long().clamp(0, 4)}  # phi' = (phi + pi) / (2 pi)

        def predict(self, outputs, mask):
            return outputs["labels"].masked_fill(~mask, -1)

    got = predict_split(PhiBins("pid", Backbone.from_run(backbone_run)), small_repo, "test", device="cpu")
    table = pq.read_table(
        sorted((small_repo / "data" / "labeled").glob("test-*.parquet")), columns=["run", "event", "phi"]
    )
    assert sorted(got) == sorted(zip(table["run"].to_pylist(), table["event"].to_pylist(), strict=True))
    for run, event, phi in zip(*(table[c].to_pylist() for c in ("run", "event", "phi")), strict=True):
        phi = np.asarray(phi, np.float64)
        expected = np.clip(np.floor((phi + np.pi) / (2 * np.pi) * 5), 0, 4)
        assert np.mean(got[(run, event)] == expected) > 0.999, (run, event)


def test_predict_writes_the_leaderboard_file(small_repo, backbone_run, tmp_path):
    runs = []
    for task in ("pid", "noise"):
        finetune(task, small_repo, tmp_path / task, backbone_run, options(steps=1, val_every=1), **QUIET)
        runs.append(tmp_path / task)
    out = tmp_path / "predictions.parquet"
    summary = predict(runs, small_repo, "test", out, device="cpu", **QUIET)
    table = pq.read_table(out)
    assert table.column_names == ["run", "event", "pid", "noise"]
    assert table.schema.field("pid").type.value_type == pa.int8()
    assert table.schema.field("noise").type.value_type == pa.bool_()
    truth = truth_of(small_repo)
    assert summary["events"] == len(truth) == table.num_rows
    for run, event, pid in zip(*(table[c].to_pylist() for c in ("run", "event", "pid")), strict=True):
        assert len(pid) == len(truth[(run, event)][0])
        assert set(pid) <= set(range(5))
    with pytest.raises(TrainError, match="one run per task"):
        predict([runs[0], runs[0]], small_repo, "test", tmp_path / "x.parquet", **QUIET)


def test_cli_finetune_and_predict(small_repo, tmp_path):
    run = tmp_path / "noise"
    result = CliRunner().invoke(
        finetune_command,
        [
            "--task",
            "noise",
            "--data",
            str(small_repo),
            "--backbone",
            "none",
            "--out",
            str(run),
            "--steps",
            "2",
            "--val-every",
            "2",
            "--batch-tokens",
            "2048",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "AdapterOnly" in result.output
    assert "class weights balanced: training labels per class " in result.output
    assert "macro recall " in result.output
    refused = CliRunner().invoke(
        finetune_command,
        ["--task", "noise", "--data", str(small_repo), "--backbone", "none", "--out", str(tmp_path / "f")]
        + ["--features", "x"],
    )
    assert refused.exit_code == 2
    assert "--features is an option of a head on a backbone" in refused.output
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(predict_command, ["--run", str(run), "--data", str(small_repo), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column_names == ["run", "event", "noise"]


# -- found in review: each of these failed before its fix -------------------------------------------------------


def test_predict_explains_a_run_that_has_not_validated_yet(small_repo, tmp_path):
    run = tmp_path / "early"
    summary = finetune("pid", small_repo, run, None, options(steps=10, val_every=5), stop_after=2, **QUIET)
    assert summary["val_loss"] is None
    with pytest.raises(RunError, match="has not validated yet"):
        load_downstream(run)


def test_the_backbone_folder_is_not_the_output(small_repo, backbone_run):
    with pytest.raises(TrainError, match="the backbone's run folder"):
        finetune("pid", small_repo, backbone_run, backbone_run, options(), **QUIET)
    with pytest.raises(TrainError, match="no training state"):  # any model folder
        finetune("pid", small_repo, backbone_run, None, options(), **QUIET)
    assert Backbone.from_run(backbone_run).config.k == 4  # untouched


def test_a_refused_run_is_left_as_it_was(small_repo, tmp_path):
    run = tmp_path / "run"
    finetune("noise", small_repo, run, None, options(steps=1, val_every=1, train_events=6), **QUIET)
    subset = (run / "train-subset.parquet").read_bytes()
    with pytest.raises(TrainError, match="pass --resume"):
        finetune("noise", small_repo, run, None, options(steps=1, val_every=1, train_events=3), **QUIET)
    assert (run / "train-subset.parquet").read_bytes() == subset
