"""Downstream training (`fm4npp finetune`): a head on the frozen backbone, or the AdapterOnly baseline
(fm4npp_models.adapters.downstream), on the labeled configuration of a dataset repository.

    finetune("tracking", REPO, RUN, BACKBONE_RUN, FinetuneOptions(steps=2_000))   # BACKBONE_RUN None: AdapterOnly

Training (fm4npp_models.training.loop.fit) reads the labeled `train` split (its first N events in (run, event) order
with `train_events`, for data-efficiency studies) and validates on the labeled `validation` split; the weights with the
lowest validation loss are the run's (model selection never sees the test split). The settings follow the published
heads: AdamW with weight decay 1e-4, gradient-norm clip 1.0, lr 1e-4 (tracking) or 1e-3 (PID, noise), a cosine schedule
with warmup, here stepped per step rather than per epoch and scaled to `steps`. Prediction is fm4npp_models.predict.

Two departures from the published heads, each an option recorded in the run: PID and noise weigh their classes
(`class_weights` "balanced": inverse frequency in the labels trained on, fm4npp_models.training.class_weights;
"none" is the published plain cross entropy), and a head on the backbone reads the blocks' outputs z_l (head option
"features" "z", published), the residual stream x_l ("x") or both (Backbone.features); new runs take
training.options.DEFAULT_FEATURES.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fm4npp_data.errors import DatasetError, RunError, TrainError
from fm4npp_data.files import partial_path, sha256_file, write_json
from fm4npp_data.integrity import READ_OPTIONS, WRITE_OPTIONS, checked_shards, damaged
from fm4npp_data.tasks import TASKS, TRUTH_COLUMNS

from .adapters.downstream import HEAD_OPTIONS, LOADER_K, Downstream, model_name, save_downstream
from .baselines import GRAPH_BASELINES, baseline_class
from .checkpoints.run import WEIGHTS, check_fields, check_output_place, load_state, load_tensors, read_config
from .model.backbone import Backbone
from .pretrain import data_identity
from .training.checkpoint import TRAINING, Progress, check_run_folder, read_training, training_run
from .training.class_weights import CAP, balanced_weights, class_counts
from .training.distributed import Dist, device_of, to_device
from .training.log import plot_log
from .training.loop import fit
from .training.options import DEFAULT_FEATURES, MODEL_NAMES, FinetuneOptions


class DownstreamTask:
    """For fit: the head's loss (with the class weights `class_weight`, (C,) on the model's device, or None);
    validation: the batches' losses (weighted alike, so that model selection sees the loss trained on) averaged with
    their events as weights, and (PID, noise) the accuracy over the labeled spacepoints of the validation split and
    the macro recall (the mean of the recalls of the classes present in its labels)."""

    def __init__(self, class_weight: torch.Tensor | None = None) -> None:
        self.class_weight = class_weight

    def loss(self, model, batch: dict) -> torch.Tensor:
        return model.loss(model(batch["features"], batch["mask"]), batch, class_weight=self.class_weight)

    @torch.no_grad()
    def validate(self, model, loader) -> dict[str, float]:
        device = next(model.parameters()).device
        task = TASKS[model.task]
        total = events = 0.0
        n_classes = len(task.classes) if task.is_classification else 0
        seen = torch.zeros(n_classes, dtype=torch.int64, device=device)  # labeled spacepoints per class
        right = torch.zeros(n_classes, dtype=torch.int64, device=device)  # of them predicted so
        for batch in loader:
            batch = to_device(batch, device)
            outputs = model(batch["features"], batch["mask"])
            n = len(batch["run"])
            total += float(model.loss(outputs, batch, class_weight=self.class_weight)) * n  # weighted by its events
            events += n
            if task.is_classification:
                truth = batch[task.column].long()
                valid = batch["mask"] & (truth >= 0)
                hit = valid & (model.predict(outputs, batch["mask"]) == truth)
                seen += torch.bincount(truth[valid], minlength=n_classes)[:n_classes]
                right += torch.bincount(truth[hit], minlength=n_classes)[:n_classes]
        if events == 0:
            raise TrainError(f"the validation split ({loader!r}) is empty")
        out = {"val_loss": total / events}
        if int(seen.sum()):
            present = seen > 0
            out["val_accuracy"] = float(right.sum()) / float(seen.sum())
            out["val_macro_recall"] = float((right[present].double() / seen[present].double()).mean())
        return out


def _training_source(data: Path, out: Path, train_events: int | None) -> Path:
    """The labeled train split, or a shard of its first `train_events` events (by (run, event)) in RUN/."""
    if train_events is None:
        return data
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


def finetune(
    task: str,
    data: str | Path,
    out: str | Path,
    backbone_run: str | Path | None,
    options: FinetuneOptions,
    *,
    head_options: dict | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    echo=print,
    model: str | None = None,
) -> dict:
    """Train a downstream head (backbone_run None: AdapterOnly) or a graph baseline (`model`, with backbone_run None)
    on the labeled config of `data`; a summary dict. head_options go to the head's (or the baseline's) constructor
    (e.g. {"n_queries": 50} for the track finder). A baseline of several stages (Exa.TrkX) trains them in order, each
    for options.steps steps in OUT/stages/STAGE (a run folder of its own, resumed or skipped when finished)."""
    data, out = Path(data), Path(out)
    if task not in TASKS:
        raise TrainError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainError("fm4npp finetune runs in one process (the heads are small): run it without torchrun")
    if options.lr is None:  # a copy: the caller's options stay as given (a study reuses them for other tasks)
        options = replace(options, lr=TASKS[task].published_lr)
    if not TASKS[task].is_classification:
        options = replace(options, class_weights="none")  # no classes to weigh
    options.check()
    head_options = dict(head_options or {})
    model = model_name(model, backbone_run)
    if model in GRAPH_BASELINES and backbone_run is not None:
        raise TrainError(f"--model {model} reads the spacepoints, not a backbone: give no --backbone")
    kinds = baseline_class(model).OPTIONS if model in GRAPH_BASELINES else HEAD_OPTIONS[task]
    try:
        check_fields(head_options, kinds, "the head options", "head option", required=False)
    except RunError as exc:
        raise TrainError(str(exc)) from exc
    ignored = {}
    if backbone_run is None and "features" in head_options:  # AdapterOnly reads no backbone
        ignored["features"] = head_options.pop("features")
        echo(
            f"{MODEL_NAMES[model]} reads the spacepoints, not backbone features: features {ignored['features']!r} "
            "ignored"
        )
    elif backbone_run is not None:
        head_options.setdefault("features", DEFAULT_FEATURES)  # written out: the run says what it reads
    if backbone_run is not None and out.resolve() == Path(backbone_run).resolve():
        raise TrainError(f"--out {out} is the backbone's run folder: give another --out")
    device = device_of(options.device, Dist())
    record = {
        "task": task,
        "model": model,
        "options": asdict(options),
        "data": data_identity(data),
        "backbone": None if backbone_run is None else backbone_identity(Path(backbone_run)),
        "head": head_options,
        "world_size": 1,
    }
    if ignored:
        record["ignored_head_options"] = ignored
    check_output_place(out, data, "--out", TrainError)  # refused before anything is written (training_run again)
    check_run_folder(out, resume, "finetune")
    record["class_weights"] = class_weighting(task, data, options, echo)
    torch.manual_seed(options.seed)
    backbone = None if backbone_run is None else Backbone.from_run(backbone_run)
    try:
        net = Downstream(task, backbone, head_options, model=model).to(device)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"bad head options {head_options}: {exc}") from exc
    with training_run(out, resume, record, data) as saved:  # the run folder is this run's until it ends
        if len(net.stages) > 1:
            return _finetune_stages(task, data, out, options, net, record, resume, stop_after, echo)
        if resume and saved is None:
            echo(f"nothing to resume in {out}: starting from step 0")
        return _finetune(task, data, out, backbone_run, options, net, record, saved, stop_after, echo)


#: A multi-stage baseline's stage runs: OUT/STAGES/<stage>.
STAGES = "stages"


def _finetune_stages(task, data, out, options, model, record, resume, stop_after, echo) -> dict:
    """The stages of a multi-stage baseline in order, each a run folder OUT/stages/STAGE trained by _finetune with
    only that stage's weights trainable and starting from the previous stage's selected weights; a finished stage
    (its run at options.steps with a selected model) is loaded and skipped. Then OUT's own config.json and weights:
    the last stage's selection, which holds every stage's. stop_after counts the steps of each stage."""
    summary = None
    for stage in model.stages:
        folder = out / STAGES / stage
        model.head.set_stage(stage)
        done = read_training(folder) if folder.is_dir() else None
        if done and done["progress"]["step"] >= options.steps and (folder / WEIGHTS).is_file():
            load_state(model, load_tensors(folder / WEIGHTS), folder / WEIGHTS)
            echo(f"stage {stage}: finished before ({folder}), loaded")
            continue
        stage_record = {**record, "stage": stage}
        saved = check_run_folder(folder, resume, "finetune")
        if saved is None:
            folder.mkdir(parents=True, exist_ok=True)
            fresh = {**stage_record, "checkpoint": None, "progress": asdict(Progress()), "loaders": []}
            write_json(folder / TRAINING, fresh)
        echo(f"stage {stage} of {', '.join(model.stages)}: training in {folder}")
        summary = _finetune(task, data, folder, None, options, model, stage_record, saved, stop_after, echo)
        if summary["interrupted"]:
            return {**summary, "run": str(out), "stage": stage}
        if not (folder / WEIGHTS).is_file():
            raise TrainError(f"{folder}: stage {stage} selected no model (no validation ran); lower --val-every")
        load_state(model, load_tensors(folder / WEIGHTS), folder / WEIGHTS)  # the stage's selected weights
    last = out / STAGES / model.stages[-1]
    origin = {**read_config(last, "downstream")["origin"], "stages": list(model.stages)}
    save_downstream(out, model, origin)
    if summary is None:  # every stage finished before: the summary of the last
        summary = _stage_summary(task, last, model, options)
    return {**summary, "run": str(out), "stage": None}


def _stage_summary(task, folder, model, options) -> dict:
    """The summary of a stage run finished before (from its training.json)."""
    progress = read_training(folder)["progress"]
    return {
        "run": str(folder),
        "task": task,
        "backbone": None,
        "model": model.model,
        "step": progress["step"],
        "steps": options.steps,
        "interrupted": False,
        "events": progress.get("events"),
        "elapsed_s": progress.get("elapsed_s", 0.0),
        "train_events": read_config(folder, "downstream")["origin"].get("train_events", 0),
        "val_loss": None,
        "best_val_loss": progress.get("best_val_loss"),
        "val_accuracy": None,
        "val_macro_recall": None,
        "class_weights": {"class_weights": "none", "class_counts": None, "weights": None},
        "features": None,
        "trainable": sum(p.numel() for p in model.parameters()),
        "plot": None,
    }


def _finetune(task, data, out, backbone_run, options, model, record, saved, stop_after, echo) -> dict:
    """finetune() in its claimed run folder `out`: the training subset, the loaders, the optimizer, fit."""
    from fm4npp_data.loader import make_loader

    source = _training_source(data, out, options.train_events)
    try:
        train_loader = make_loader(
            source,
            "labeled",
            "train",
            batch_tokens=options.batch_tokens,
            seed=options.seed,
            num_workers=options.workers,
            k=LOADER_K,
        )
        val_loader = make_loader(
            data, "labeled", "validation", batch_tokens=options.batch_tokens, shuffle=False, k=LOADER_K
        )
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    if not train_loader.stream.source.labels:
        raise TrainError(
            f"{source}: no labels ({', '.join(TRUTH_COLUMNS)}); fine-tuning needs the labeled configuration"
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in trainable if p.ndim >= 2]
    vectors = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": options.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
        lr=options.lr,
    )
    backbone_name = None if backbone_run is None else str(backbone_run)
    origin = {
        "trained_by": "fm4npp finetune",
        "task": task,
        "model": model.model,
        "data": str(data),
        **record["data"],
        "backbone_run": backbone_name,
        "train_events": train_loader.num_events,
        "steps": options.steps,
        "class_weights": record["class_weights"],
    }
    weights = record["class_weights"]["weights"]
    device = next(model.parameters()).device
    class_weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
    result = fit(
        model,
        DownstreamTask(class_weight),
        optimizer,
        train_loader,
        val_loader,
        options,
        out,
        record,
        on_best=lambda m: save_downstream(out, m, origin),
        saved=saved,
        stop_after=stop_after,
        echo=echo,
    )
    val = result.progress.val
    title = f"head on {backbone_run}" if backbone_run is not None else MODEL_NAMES[model.model]
    if record.get("stage"):
        title += f", stage {record['stage']}"
    plot = plot_log(out, None, f"{task}: {title}")
    return {
        "run": str(out),
        "task": task,
        "backbone": backbone_name,
        "model": model.model,
        "step": result.progress.step,
        "steps": options.steps,
        "interrupted": result.interrupted,
        "events": result.progress.events,
        "elapsed_s": result.progress.elapsed_s,
        "train_events": train_loader.num_events,
        "val_loss": val.get("val_loss"),
        "best_val_loss": result.progress.best_val_loss,
        "val_accuracy": val.get("val_accuracy"),
        "val_macro_recall": val.get("val_macro_recall"),
        "class_weights": record["class_weights"],
        "features": model.features,
        "trainable": sum(p.numel() for p in trainable),
        "plot": str(plot) if plot else None,
    }


def class_weighting(task: str, data: Path, options: FinetuneOptions, echo=print) -> dict:
    """The class weights of a run, as recorded: {"class_weights": the option ("none" for tracking), "class_counts":
    the labeled spacepoints of each class in the events trained on (the labeled train split, or its first
    --train-events events; None for tracking), "weights": the balanced weights, or None (plain cross entropy)}.
    TrainError when balanced weights are asked of events that hold no label of the task."""
    spec = TASKS[task]
    if not spec.is_classification:
        return {"class_weights": "none", "class_counts": None, "weights": None}  # no classes to weigh
    try:
        shards = checked_shards(data, "labeled", "train")
        counts = class_counts(shards, spec.truth, len(spec.classes), options.train_events)
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    if options.class_weights == "none":
        return {"class_weights": "none", "class_counts": counts.tolist(), "weights": None}
    if counts.sum() == 0:
        raise TrainError(
            f"{data}: the events trained on hold no {task} label: nothing to learn or to weigh; use a repository "
            "with labels (or more --train-events)"
        )
    for name, n in zip(spec.classes, counts, strict=True):
        if n == 0:
            echo(f"warning: no {task} label of class {name!r} in the events trained on: its class weight is 0")
    weights = balanced_weights(counts, CAP if options.class_weights == "capped" else None)
    return {"class_weights": options.class_weights, "class_counts": counts.tolist(), "weights": weights.tolist()}


def backbone_identity(run: Path) -> dict:
    """What a resumed fine-tuning must find again: the backbone's config and the sha256 of its weights."""
    config = read_config(run)
    return {"backbone": config["backbone"], "weights_sha256": sha256_file(run / WEIGHTS)}
