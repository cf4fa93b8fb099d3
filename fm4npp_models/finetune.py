"""Downstream training (`fm4npp finetune`): a head on the frozen backbone, or the AdapterOnly baseline
(fm4npp_models.adapters.downstream), on the labeled configuration of a dataset repository.

    finetune("tracking", REPO, RUN, BACKBONE_RUN, FinetuneOptions(steps=2_000))   # BACKBONE_RUN None: AdapterOnly

Training (fm4npp_models.training.loop.fit) reads the labeled `train` split (its first N events in (run, event) order
with `train_events`, for data-efficiency studies) and validates on the labeled `validation` split; the weights with the
lowest validation loss are the run's (model selection never sees the test split). The settings follow the published
heads: AdamW with weight decay 1e-4, gradient-norm clip 1.0, lr 1e-4 (tracking) or 1e-3 (PID, noise), a cosine schedule
with warmup, here stepped per step rather than per epoch and scaled to `steps`. Prediction is fm4npp_models.predict.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fm4npp_data.errors import DatasetError, RunError, TrainError
from fm4npp_data.files import partial_path, sha256_file
from fm4npp_data.integrity import WRITE_OPTIONS
from fm4npp_data.tasks import TASKS, TRUTH_COLUMNS

from .adapters.downstream import HEAD_OPTIONS, LOADER_K, Downstream, save_downstream
from .checkpoints.run import WEIGHTS, check_fields, check_output_place, read_config
from .model.backbone import Backbone
from .pretrain import data_identity
from .training.checkpoint import check_run_folder, training_run
from .training.distributed import Dist, device_of, to_device
from .training.log import plot_log
from .training.loop import fit
from .training.options import FinetuneOptions


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
) -> dict:
    """Train a downstream head (backbone_run None: AdapterOnly) on the labeled config of `data`; a summary dict.
    head_options go to the head's constructor (e.g. {"n_queries": 50} for the track finder)."""
    data, out = Path(data), Path(out)
    if task not in TASKS:
        raise TrainError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainError("fm4npp finetune runs in one process (the heads are small): run it without torchrun")
    if options.lr is None:
        options.lr = TASKS[task].published_lr
    options.check()
    try:
        check_fields(
            dict(head_options or {}), HEAD_OPTIONS[task], "--queries (the head options)", "head option", required=False
        )
    except RunError as exc:
        raise TrainError(str(exc)) from exc
    if backbone_run is not None and out.resolve() == Path(backbone_run).resolve():
        raise TrainError(f"--out {out} is the backbone's run folder: give another --out")
    device = device_of(options.device, Dist())
    record = {
        "task": task,
        "options": asdict(options),
        "data": data_identity(data),
        "backbone": None if backbone_run is None else backbone_identity(Path(backbone_run)),
        "head": dict(head_options or {}),
        "world_size": 1,
    }
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
        "data": str(data),
        **record["data"],
        "backbone_run": backbone_name,
        "train_events": train_loader.num_events,
        "steps": options.steps,
    }
    result = fit(
        model,
        DownstreamTask(),
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
    plot = plot_log(out, None, f"{task}: {'AdapterOnly' if backbone_run is None else 'head on ' + str(backbone_run)}")
    return {
        "run": str(out),
        "task": task,
        "backbone": backbone_name,
        "step": result.progress.step,
        "steps": options.steps,
        "interrupted": result.interrupted,
        "events": result.progress.events,
        "elapsed_s": result.progress.elapsed_s,
        "train_events": train_loader.num_events,
        "val_loss": val.get("val_loss"),
        "best_val_loss": result.progress.best_val_loss,
        "val_accuracy": val.get("val_accuracy"),
        "trainable": sum(p.numel() for p in trainable),
        "plot": str(plot) if plot else None,
    }


def backbone_identity(run: Path) -> dict:
    """What a resumed fine-tuning must find again: the backbone's config and the sha256 of its weights."""
    config = read_config(run)
    return {"backbone": config["backbone"], "weights_sha256": sha256_file(run / WEIGHTS)}
