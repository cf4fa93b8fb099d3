"""Downstream training (`fm4npp finetune`) and prediction (`fm4npp predict`): a head on the frozen backbone, or the
AdapterOnly baseline, on the labeled configuration of a dataset repository.

    model = Downstream.build("tracking", backbone=Backbone.from_run(RUN))   # or backbone=None: AdapterOnly
    outputs = model(batch["features"], batch["mask"])                      # the backbone runs frozen, in eval mode
    loss = model.loss(outputs, batch); labels = model.predict(outputs, batch["mask"])

Training (fm4npp_models.training.loop.fit) reads the labeled `train` split (its first N events in (run, event) order
with `train_events`, for data-efficiency studies) and validates on the labeled `validation` split; the weights with the
lowest validation loss are the run's (model selection never sees the test split). The settings follow the published
heads: AdamW with weight decay 1e-4, gradient-norm clip 1.0, lr 1e-4 (tracking) or 1e-3 (PID, noise), a cosine schedule
with warmup, here stepped per step rather than per epoch and scaled to `steps`.

A downstream run folder holds config.json (kind "downstream": the task, the backbone's config or null, the head's
options) and model.safetensors with the backbone's weights too, so that it predicts on its own.

Prediction runs each model over a split in the loader's order and writes, per event, the labels in the event's
stored spacepoint order (the loader's `index`): the predictions file of the leaderboard, with `track`, `pid` and
`noise` columns for the tasks of the runs given.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from fm4npp_data.errors import DatasetError
from fm4npp_data.files import partial_path
from fm4npp_data.integrity import WRITE_OPTIONS
from fm4npp_data.schema import PREDICTIONS_SCHEMA
from fm4npp_data.tasks import BY_COLUMN, TASKS, TRUTH_COLUMNS

from .adapters import make_head
from .baselines.adapter_only import AdapterOnly
from .checkpoints.run import (
    CONFIG,
    FORMAT,
    POSITIVE,
    RATE,
    VERSION,
    WEIGHTS,
    RunError,
    backbone_config,
    check_fields,
    load_state,
    load_tensors,
    read_config,
    write_run,
)
from .model.backbone import Backbone
from .training.loop import Dist, TrainError, fit, plot_log, to_device
from .training.options import FinetuneOptions, PredictOptions

#: The AdapterOnly baseline's width (the published heads' internal width).
ADAPTER_ONLY_WIDTH = 256
#: The head options a downstream config.json may hold (the heads' constructors' JSON-valued arguments).
_HEAD = {"width": POSITIVE, "n_heads": POSITIVE, "dropout": RATE}
_TRACK_FINDER = {**_HEAD, "n_queries": POSITIVE, "n_layers": POSITIVE, "ffn": POSITIVE}
_SEGMENTATION = {**_HEAD, "n_classes": POSITIVE}
HEAD_OPTIONS = {name: _SEGMENTATION if task.is_classification else _TRACK_FINDER for name, task in TASKS.items()}
#: Loader neighbours for downstream batches (the targets are not used; 1 keeps them small).
_K = 1


class Downstream(nn.Module):
    """A frozen backbone and a trainable head, or (backbone None) AdapterOnly: features, mask -> the head's outputs."""

    def __init__(self, task: str, backbone: Backbone | None, head_options: dict | None = None) -> None:
        super().__init__()
        if task not in TASKS:
            raise TrainError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
        self.task, self.head_options = task, dict(head_options or {})
        self.backbone = backbone
        if backbone is None:
            self.head = AdapterOnly(task, d_model=ADAPTER_ONLY_WIDTH, **self.head_options)
        else:
            backbone.requires_grad_(False)
            self.head = make_head(task, backbone.config.d_model, backbone.config.n_layers, **self.head_options)

    @classmethod
    def build(cls, task: str, backbone: Backbone | None = None, **head_options) -> Downstream:
        return cls(task, backbone, head_options)

    def train(self, mode: bool = True) -> Downstream:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: no dropout
        return self

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        if self.backbone is None:
            return self.head(features, mask)
        with torch.no_grad():
            feats = self.backbone.features(features, mask)
        return self.head(feats, mask)

    def loss(self, outputs: dict, batch: dict) -> torch.Tensor:
        return self.head.loss(outputs, batch)

    def predict(self, outputs: dict, mask: torch.Tensor) -> torch.Tensor:
        return self.head.predict(outputs, mask)

    def config(self, origin: dict | None = None) -> dict:
        return {"format": FORMAT, "version": VERSION, "kind": "downstream", "task": self.task,
                "backbone": None if self.backbone is None else self.backbone.config.as_dict(),
                "head": self.head_options, "origin": dict(origin or {})}  # fmt: skip


def save_downstream(run: Path, model: Downstream, origin: dict) -> None:
    write_run(run, model.state_dict(), model.config(origin))


def load_downstream(run: str | Path, map_location: str | torch.device = "cpu") -> Downstream:
    """A downstream run folder (`fm4npp finetune`) as a model, its weights loaded exactly."""
    run = Path(run)
    path = run / CONFIG
    if not path.is_file() and (run / "training.json").is_file():
        raise RunError(f"{run}: fine-tuning has not validated yet, so there is no selected model; go on with "
                       "`fm4npp finetune ... --resume`")  # fmt: skip
    config = read_config(run, "downstream")
    task, head = config["task"], config["head"]
    if task not in TASKS:
        raise RunError(f"{path}: task {task!r} is not one of {', '.join(TASKS)}")
    if not isinstance(head, dict):
        raise RunError(f"{path}: 'head' must be an object of head options, not {type(head).__name__}")
    check_fields(head, HEAD_OPTIONS[task], path, f"{task} head option", required=False)
    backbone = None if config["backbone"] is None else Backbone.from_config(backbone_config(config, path), path)
    try:
        model = Downstream(task, backbone, head)
    except ValueError as exc:  # sizes that do not fit together (a width not a multiple of the heads)
        raise RunError(f"{path}: the head options do not fit together ({exc})") from exc
    load_state(model, load_tensors(run / WEIGHTS), run / WEIGHTS)
    return model.to(map_location)


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------


class DownstreamTask:
    """For fit: the head's loss; validation: the batches' losses averaged with their events as weights, and (PID,
    noise) the accuracy over the labeled spacepoints of the validation split."""

    def loss(self, model, batch: dict) -> torch.Tensor:
        return model.loss(model(batch["features"], batch["mask"]), batch)

    @torch.no_grad()
    def validate(self, model, loader) -> dict[str, float]:
        device = next(model.parameters()).device
        total = events = right = counted = 0.0
        for batch in loader:
            batch = to_device(batch, device)
            outputs = model(batch["features"], batch["mask"])
            n = len(batch["run"])
            total += float(model.loss(outputs, batch)) * n  # the batch's loss, weighted by its events
            events += n
            task = TASKS[model.task]
            if task.is_classification:
                truth = batch[task.column].long()
                valid = batch["mask"] & (truth >= 0)
                right += float((model.predict(outputs, batch["mask"]) == truth)[valid].sum())
                counted += float(valid.sum())
        if events == 0:
            raise TrainError(f"the validation split ({loader!r}) is empty")
        out = {"val_loss": total / events}
        if counted:
            out["val_accuracy"] = right / counted
        return out


def _training_source(data: Path, out: Path, train_events: int | None) -> Path:
    """The labeled train split, or a shard of its first `train_events` events (by (run, event)) in RUN/."""
    if train_events is None:
        return data
    from fm4npp_data.integrity import READ_OPTIONS, checked_shards, damaged

    shards = checked_shards(data, "labeled", "train")  # each against splits.json, as the loader does
    pieces, left = [], train_events
    for shard in shards:
        try:
            file = pq.ParquetFile(shard, **READ_OPTIONS)
            for group in range(file.num_row_groups):
                if left <= 0:
                    break
                table = file.read_row_group(group)
                pieces.append(table.slice(0, left))
                left -= min(left, table.num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc)) from exc
    have = train_events - left
    if left > 0:
        raise TrainError(f"--train-events {train_events}, but the labeled train split of {data} has {have} events")
    subset = out / "train-subset.parquet"
    tmp = partial_path(subset)
    pq.write_table(pa.concat_tables(pieces), tmp, row_group_size=1_000, **WRITE_OPTIONS)
    tmp.replace(subset)
    return subset


def finetune(task: str, data: str | Path, out: str | Path, backbone_run: str | Path | None, options: FinetuneOptions,
             *, head_options: dict | None = None, resume: bool = False, stop_after: int | None = None,
             echo=print) -> dict:  # fmt: skip
    """Train a downstream head (backbone_run None: AdapterOnly) on the labeled config of `data`; a summary dict.
    head_options go to the head's constructor (e.g. {"n_queries": 50} for the track finder)."""
    from .checkpoints.run import check_output_place
    from .pretrain import data_identity
    from .training.loop import check_run_folder, device_of, training_run

    data, out = Path(data), Path(out)
    if task not in TASKS:
        raise TrainError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainError("fm4npp finetune runs in one process (the heads are small): run it without torchrun")
    if options.lr is None:
        options.lr = TASKS[task].published_lr
    options.check()
    try:
        check_fields(dict(head_options or {}), HEAD_OPTIONS[task], "--queries (the head options)", "head option",
                     required=False)  # fmt: skip
    except RunError as exc:
        raise TrainError(str(exc)) from exc
    if backbone_run is not None and out.resolve() == Path(backbone_run).resolve():
        raise TrainError(f"--out {out} is the backbone's run folder: give another --out")
    device = device_of(options.device, Dist())
    record = {"task": task, "options": asdict(options), "data": data_identity(data),
              "backbone": None if backbone_run is None else backbone_identity(Path(backbone_run)),
              "head": dict(head_options or {}), "world_size": 1}  # fmt: skip
    check_output_place(out, data, "--out", TrainError)  # refused before anything is written (training_run again)
    check_run_folder(out, resume, "finetune")
    torch.manual_seed(options.seed)
    backbone = None if backbone_run is None else Backbone.from_run(backbone_run)
    try:
        model = Downstream(task, backbone, head_options).to(device)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"bad head options {head_options}: {exc}") from exc
    with training_run(out, resume, record, data) as saved:  # the run folder is this run's until it ends
        if resume and saved is None:
            echo(f"nothing to resume in {out}: starting from step 0")
        return _finetune(task, data, out, backbone_run, options, model, record, saved, stop_after, echo)


def _finetune(task, data, out, backbone_run, options, model, record, saved, stop_after, echo) -> dict:
    """finetune() in its claimed run folder `out`: the training subset, the loaders, the optimizer, fit."""
    from fm4npp_data.loader import make_loader

    source = _training_source(data, out, options.train_events)
    try:
        train_loader = make_loader(source, "labeled", "train", batch_tokens=options.batch_tokens, seed=options.seed,
                                   num_workers=options.workers, k=_K)  # fmt: skip
        val_loader = make_loader(data, "labeled", "validation", batch_tokens=options.batch_tokens, shuffle=False,
                                 k=_K)  # fmt: skip
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    if not train_loader.stream.source.labels:
        raise TrainError(
            f"{source}: no labels ({', '.join(TRUTH_COLUMNS)}); fine-tuning needs the labeled configuration"
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in trainable if p.ndim >= 2]
    vectors = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": options.weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=options.lr)  # fmt: skip
    backbone_name = None if backbone_run is None else str(backbone_run)
    origin = {"trained_by": "fm4npp finetune", "task": task, "data": str(data), **record["data"],
              "backbone_run": backbone_name, "train_events": train_loader.num_events,
              "steps": options.steps}  # fmt: skip
    result = fit(model, DownstreamTask(), optimizer, train_loader, val_loader, options, out, record,
                 on_best=lambda m: save_downstream(out, m, origin),
                 saved=saved, stop_after=stop_after, echo=echo)  # fmt: skip
    val = result.progress.val
    plot = plot_log(out, None, f"{task}: {'AdapterOnly' if backbone_run is None else 'head on ' + str(backbone_run)}")
    return {
        "run": str(out), "task": task, "backbone": backbone_name, "step": result.progress.step,
        "steps": options.steps, "interrupted": result.interrupted, "events": result.progress.events,
        "elapsed_s": result.progress.elapsed_s, "train_events": train_loader.num_events,
        "val_loss": val.get("val_loss"), "best_val_loss": result.progress.best_val_loss,
        "val_accuracy": val.get("val_accuracy"),
        "trainable": sum(p.numel() for p in trainable), "plot": str(plot) if plot else None,
    }  # fmt: skip


def backbone_identity(run: Path) -> dict:
    """What a resumed fine-tuning must find again: the backbone's config and the sha256 of its weights."""
    from fm4npp_data.files import sha256_file

    from .checkpoints.run import read_config

    config = read_config(run)
    return {"backbone": config["backbone"], "weights_sha256": sha256_file(run / WEIGHTS)}


# ------------------------------------------------------------------------------------------------------------
# Prediction
# ------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_split(model: Downstream, data: str | Path, split: str, batch_tokens: int = PredictOptions.batch_tokens,
                  device: str = PredictOptions.device, live: bool = False,
                  ) -> dict[tuple[int, int], np.ndarray]:  # fmt: skip
    """{(run, event): labels in the event's stored spacepoint order} over the labeled `split` of `data`; live: a
    progress bar (events) on the terminal."""
    from fm4npp_data.loader import make_loader

    from .training.loop import Ticker, device_of

    dev = device_of(device, Dist())
    model = model.to(dev).eval()
    try:
        loader = make_loader(data, "labeled", split, batch_tokens=batch_tokens, shuffle=False, k=_K)
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    out = {}
    with Ticker(loader.num_events, 0, live, print, label=f"predicting {model.task}", stderr=True) as bar:
        for batch in loader:
            out.update(_predict_batch(model, to_device(batch, dev)))
            bar.advance(len(batch["run"]))
    return out


def _predict_batch(model: Downstream, batch: dict) -> dict[tuple[int, int], np.ndarray]:
    """{(run, event): labels in the stored order} of one batch (on the model's device)."""
    labels = model.predict(model(batch["features"], batch["mask"]), batch["mask"]).cpu().numpy()
    index = batch["index"].cpu().numpy()
    lengths = batch["mask"].sum(1).cpu().numpy()
    out = {}
    for b, (run, event) in enumerate(zip(batch["run"].tolist(), batch["event"].tolist(), strict=True)):
        n = int(lengths[b])
        stored = np.empty(n, np.int64)
        stored[index[b, :n]] = labels[b, :n]
        out[(run, event)] = stored
    return out


def predict(runs: list[str | Path], data: str | Path, split: str, out: str | Path,
            batch_tokens: int = PredictOptions.batch_tokens, device: str = PredictOptions.device,
            echo=print) -> dict:  # fmt: skip
    """Write the predictions file (run, event and a column per task of `runs`) for the labeled `split` of `data`:
    never inside a dataset repository or a run folder, never over a file that is not a predictions file; written
    under a temporary name and renamed. A progress bar on a terminal."""
    from .training.loop import is_terminal

    out = Path(out)
    check_predictions_out(out, data)
    models = [(run, load_downstream(run)) for run in runs]  # every run checked before any is run
    tasks = [model.task for _, model in models]
    if len(set(tasks)) < len(tasks):
        raise TrainError(f"two runs predict {max(tasks, key=tasks.count)}: give one run per task")
    columns: dict[str, dict] = {}
    for run, model in models:
        echo(f"predicting {model.task} with {run} on {split} ...")
        columns[TASKS[model.task].column] = predict_split(model, data, split, batch_tokens, device, is_terminal())
    table = predictions_table(columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    try:
        pq.write_table(table, tmp, **WRITE_OPTIONS)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TrainError(f"{out}: cannot write the predictions ({exc.strerror or exc}); free space or check the "
                         "folder's permissions, then run again") from exc  # fmt: skip
    return {"out": str(out), "events": table.num_rows, "columns": table.column_names[2:]}


def predictions_table(columns: dict[str, dict[tuple[int, int], np.ndarray]]) -> pa.Table:
    """The predictions file's table from {task column: {(run, event): labels}}: PREDICTIONS_SCHEMA's fields (run,
    event and the columns given), one row per event in (run, event) order."""
    keys = sorted(next(iter(columns.values())))
    values = {"run": [r for r, _ in keys], "event": [e for _, e in keys]}
    for name, labels in columns.items():
        cast = bool if pa.types.is_boolean(BY_COLUMN[name].dtype) else None  # 0/1 labels as booleans
        values[name] = [labels[key].astype(cast) if cast else labels[key] for key in keys]
    schema = pa.schema([field for field in PREDICTIONS_SCHEMA if field.name in values])
    return pa.Table.from_arrays([pa.array(values[field.name], field.type) for field in schema], schema=schema)


def check_predictions_out(out: Path, data: str | Path) -> None:
    """TrainError when the predictions file `out` would be written inside a dataset repository (the --data folder,
    or one with a splits.json above it) or a run folder, or over a file that is not a predictions file."""
    from .checkpoints.run import check_output_place

    check_output_place(out, data, "--out", TrainError)
    if out.is_dir():
        raise TrainError(f"--out {out} is a folder; give the predictions file's name (PREDICTIONS.parquet)")
    if out.exists() and not _is_predictions(out):
        raise TrainError(f"--out {out} exists and is not a predictions file of fm4npp predict: it is not replaced; "
                         "give another --out")  # fmt: skip


def _is_predictions(path: Path) -> bool:
    """Whether `path` is a Parquet file with the columns of a predictions file (run, event and task columns)."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return False
    return names[:2] == ["run", "event"] and len(names) > 2 and set(names[2:]) <= set(BY_COLUMN)
