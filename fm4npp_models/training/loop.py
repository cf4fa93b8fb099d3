"""The training loop of `fm4npp pretrain` and `fm4npp finetune` (`fit`): the steps, the learning-rate schedule,
validation and model selection, checkpoints at their steps, stops on Ctrl-C and SIGTERM (`StopRequest`).

    state = fit(model, task, optimizer, train_loader, val_loader, options, run, record)

One step: a batch from the (endless) training loader, `task.loss(model, batch)`, backward, gradient clipping, an AdamW
step at the scheduled learning rate. Every `val_every` steps `task.validate(model, val_loader)` runs over the whole
validation loader; every `checkpoint_every` steps (and at the end, and on Ctrl-C) a checkpoint is written
(fm4npp_models.training.checkpoint), and every step a row of the log (fm4npp_models.training.log).

**Schedule.** Linear warmup from lr / warmup to lr over `warmup` steps (default a tenth of the steps, as the paper's
10k of 100k), then a cosine down to `min_lr_ratio * lr` at the last step. Every optimizer group keeps its own ratio to
the base rate (μP's per-parameter rates): a group's rate is its `initial_lr` times the schedule's factor. (The
published scheduler set every group to one rate, erasing the μP ratios.)

**Clipping.** The global gradient norm is clipped at `clip` (0.1, the paper's value; the published script clipped each
gradient element at 0.1 instead). **Precision**: bf16 autocast on CUDA, float32 on CPU.

A non-finite loss, gradient norm, validation loss or weight stops training with a message saying why; nothing
non-finite is saved.

**Resume** (`saved`): the run is restored from its last checkpoint (restore_checkpoint) and the log is cut back to the
checkpoint's step. The remaining steps then see the same batches with the same dropout masks, so the loss curve
equals an uninterrupted run's.

**Distributed** (fm4npp_models.training.distributed): under `torchrun` the caller wraps the model in
DistributedDataParallel; the losses and counts are summed over the ranks, and a stop on any rank stops every rank.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from fm4npp_data.errors import TrainError

from .checkpoint import Progress, check_weights, last_checkpoint, restore_checkpoint, save_checkpoint
from .distributed import Dist, all_gather, all_sum, to_device, unwrap
from .log import LOG, Log, Ticker, is_terminal
from .options import TrainOptions


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """The schedule's multiplier of the base rate for the update at 0-based `step`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - 1 - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Every group's rate = its initial_lr * factor; returns the first group's rate."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]


class Task(Protocol):
    """What `fit` trains: a loss on one batch and a validation over a loader."""

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor: ...

    def validate(self, model: nn.Module, loader) -> dict[str, float]:
        """At least {"val_loss": ...}, averaged over every rank's share of the validation data."""
        ...


@dataclass
class Fit:
    """What `fit` returns: where it stopped, and the validation history."""

    progress: Progress
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)


def fit(
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    train_loader,
    val_loader,
    options: TrainOptions,
    run: Path,
    record: dict,
    save_model=None,
    *,
    saved: dict | None = None,
    on_best=None,
    stop_after: int | None = None,
    where: Dist | None = None,
    echo=print,
) -> Fit:
    """Train `model` (already on its device; wrapped in DDP by the caller when distributed) for options.steps steps.

    run: a folder claimed by training_run (its lock held); saved: the training state it yielded (None: a new run).
    record: facts saved in training.json and compared on resume (options, model, data); save_model(model) writes the
    run's weights and config at every checkpoint (None: the run's weights are on_best's), on_best(model) whenever the
    validation loss is the lowest so far (model selection). stop_after: stop (with a checkpoint) after this many steps
    in total, as an interruption would (for tests and time-limited jobs). A non-finite loss, gradient norm,
    validation loss or weight stops training with a TrainError saying why, and nothing is saved over the last
    checkpoint."""
    where = where or Dist()
    options.check()
    progress = Progress()
    if saved is not None:
        progress = restore_checkpoint(run, saved, record, model, optimizer, train_loader, where)
        echo(f"resuming {run} at step {progress.step} of {options.steps}")
    loop = _Loop(
        model,
        task,
        optimizer,
        train_loader,
        val_loader,
        options,
        run,
        record,
        where,
        progress,
        echo,
        resumed=saved is not None,
        save_model=save_model,
        on_best=on_best,
    )
    batches = endless(train_loader)
    last = options.steps if stop_after is None else min(options.steps, stop_after)
    stop = StopRequest()
    with stop, loop.ticker, loop.log:
        model.train()
        while progress.step < last:
            if stop.agreed:
                loop.stopped(stop.requested)
                break
            row = loop.step(next(batches))
            if loop.due(options.val_every):
                loop.validate(row)
            loop.log.write(row)
            loop.ticker.update(progress.step, row["loss"], row["tokens_per_s"])
            if loop.due(options.checkpoint_steps):
                loop.checkpoint()
            stop.share(where)
    if progress.step != loop.last_saved:
        loop.checkpoint()
    if stop_after is not None and progress.step < options.steps:
        loop.result.interrupted = True
    return loop.result


def endless(loader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch. A pass that began mid-epoch may be empty (a run resumed at the end of
    an epoch); a whole epoch without a batch is an error."""
    while True:
        fresh = loader.state_dict()["batches"] == 0
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty and fresh:
            s = loader.stream
            raise TrainError(
                f"{loader!r} gave no batch in a whole epoch: its split has {len(s.source.units)} row "
                f"groups for {s.world_size} processes x {s.workers} loader workers; use fewer processes "
                "or workers, or build the repository with smaller row groups"
            )


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


class _Pace:
    """The time a run has trained (a resumed run's earlier time included), its spacepoints/s over the last 50 steps
    and the time the steps left will take."""

    def __init__(self, progress: Progress) -> None:
        self.started, self.first_step = time.perf_counter(), progress.step
        self.start = self.started - progress.elapsed_s
        self.window = [(time.perf_counter(), progress.tokens)]
        self.now = self.started

    def tick(self, tokens: int) -> tuple[float, float]:
        """After a step that brought the spacepoints to `tokens`: (the elapsed seconds, spacepoints/s)."""
        self.now = time.perf_counter()
        self.window = [*self.window[-49:], (self.now, tokens)]
        rate = (self.window[-1][1] - self.window[0][1]) / max(1e-9, self.window[-1][0] - self.window[0][0])
        return self.now - self.start, rate

    def eta(self, step: int, steps: int) -> str:
        return _eta(steps - step, step - self.first_step, self.now - self.started)


def _eta(left: int, done: int, elapsed: float) -> str:
    """The time the `left` steps take at the pace of the `done` steps of this process (h:mm:ss)."""
    seconds = int(left * elapsed / max(1, done))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Loop:
    """The steps of `fit`, one method each: a training step, the validation, the checkpoint, a stop. It holds what
    they share: the model, the optimizer, the progress, the log, the progress bar and the result."""

    def __init__(
        self,
        model,
        task: Task,
        optimizer,
        train_loader,
        val_loader,
        options: TrainOptions,
        run: Path,
        record: dict,
        where: Dist,
        progress: Progress,
        echo,
        *,
        resumed: bool,
        save_model,
        on_best,
    ) -> None:
        self.model, self.task, self.optimizer, self.options = model, task, optimizer, options
        self.train_loader, self.val_loader = train_loader, val_loader
        self.run, self.record, self.where, self.progress = run, record, where, progress
        self.save_model, self.on_best = save_model, on_best
        self.device = next(model.parameters()).device
        self.log = Log(run / LOG, where.main, progress.step if resumed else None)
        self.result = Fit(progress)
        self.last_saved = progress.step
        self.pace = _Pace(progress)
        self.ticker = Ticker(options.steps, progress.step, where.main and is_terminal(), echo)

    def due(self, every: int) -> bool:
        """Whether the step just taken is one of every `every` steps, or the last."""
        return self.progress.step % every == 0 or self.progress.step == self.options.steps

    def step(self, batch: dict) -> dict:
        """One update on `batch` at the scheduled rate; the log row of the step (TrainError when the loss or the
        gradient norm is not finite: the weights are then not updated)."""
        options, progress = self.options, self.progress
        batch = to_device(batch, self.device)
        lr = set_lr(self.optimizer, lr_factor(progress.step, options.steps, options.warmup_steps, options.min_lr_ratio))
        with autocast(self.device):
            loss = self.task.loss(self.model, batch)
        if not torch.isfinite(loss):
            raise _non_finite_loss(self.model, batch, loss.item(), progress.step, self.run)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), options.clip))
        if not math.isfinite(grad_norm):
            raise TrainError(
                f"the gradient norm is {grad_norm} at step {progress.step + 1} (batch of events "
                f"{_events_of(batch)}), the loss {loss.item():.5g}: the weights were not updated"
                f"{_kept(self.run)}; lower --lr (or raise --warmup), or check the data"
            )
        self.optimizer.step()
        events, tokens = all_sum([len(batch["run"]), float(batch["mask"].sum())], self.where)
        loss_value = all_sum([loss.item()], self.where)[0] / self.where.world_size
        progress.step += 1
        progress.events += int(events)
        progress.tokens += int(tokens)
        progress.elapsed_s, rate = self.pace.tick(progress.tokens)
        return {
            "step": progress.step,
            "epoch": getattr(self.train_loader, "epoch", None),
            "events": progress.events,
            "tokens": progress.tokens,
            "lr": lr,
            "loss": loss_value,
            "grad_norm": grad_norm,
            "tokens_per_s": rate,
            "elapsed_s": progress.elapsed_s,
        }

    def validate(self, row: dict) -> None:
        """The task's validation into the progress, the history and `row`; on_best when the loss is the lowest so
        far. TrainError when the validation loss is not finite (naming the weights when they are not)."""
        model, progress = self.model, self.progress
        model.eval()
        with torch.no_grad(), autocast(self.device):
            val = self.task.validate(unwrap(model), self.val_loader)
        model.train()
        if not math.isfinite(val["val_loss"]):
            check_weights(unwrap(model).state_dict(), progress.step, self.run)
            raise TrainError(
                f"the validation loss is {val['val_loss']} at step {progress.step} although the "
                f"weights are finite: check the validation data (fm4npp-data verify){_kept(self.run)}"
            )
        progress.val = val
        row["val_loss"] = val["val_loss"]
        if progress.best_val_loss is None or val["val_loss"] < progress.best_val_loss:
            progress.best_val_loss = val["val_loss"]
            if self.on_best is not None and self.where.main:
                self.on_best(unwrap(model))
        self.result.history.append({"step": progress.step, **val})
        eta = self.pace.eta(progress.step, self.options.steps)
        self.ticker.echo(
            f"step {progress.step:>6}/{self.options.steps}  loss {row['loss']:.5f}  "
            f"val {val['val_loss']:.5f}  lr {row['lr']:.2e}  {row['tokens_per_s']:,.0f} tokens/s  "
            f"ETA {eta}"
        )

    def checkpoint(self) -> None:
        """A checkpoint of the step just taken, with every rank's loader position."""
        loaders = all_gather(self.train_loader.state_dict(), self.where)
        save_checkpoint(
            self.run, self.model, self.optimizer, self.progress, loaders, self.record, self.where, self.save_model
        )
        self.last_saved = self.progress.step

    def stopped(self, why: str | None) -> None:
        """A stop every process agreed on (Ctrl-C, SIGTERM): the run is interrupted; fit then checkpoints."""
        self.result.interrupted = True
        self.ticker.echo(f"stopped ({why}) at step {self.progress.step}; go on with --resume")


class StopRequest:
    """Ctrl-C and SIGTERM ask the loop to stop after the current step (then it checkpoints); a second Ctrl-C stops at
    once. Under torchrun a request on any rank stops every rank at the same step (`share`)."""

    def __init__(self) -> None:
        self.requested: str | None = None  # this process's signal
        self.agreed: str | None = None  # the decision every process takes at the same step (set by share)
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - a signal handler's signature
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def share(self, where: Dist) -> None:
        """After each step: stop when any process was asked to (one all-reduce under torchrun)."""
        if where.world_size == 1:
            self.agreed = self.requested
        elif all_sum([1.0 if self.requested else 0.0], where)[0] > 0:
            self.agreed = self.requested or "another process"


def _kept(run: Path) -> str:
    step = last_checkpoint(run)
    return f"; the checkpoint of step {step} is kept" if step is not None else ""


def _non_finite_loss(model: nn.Module, batch: dict, loss: float, step: int, run: Path) -> TrainError:
    """Why the loss of the update after `step` is not finite, told apart: weights that were loaded non-finite or
    that diverged, a frozen backbone whose features are not finite, or (finite weights) the data or the rate."""
    at = f"the loss is {loss} at step {step + 1} (batch of events {_events_of(batch)})"
    model = unwrap(model)
    bad = [(name, p) for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        name, p = bad[0]
        if not p.requires_grad:
            return TrainError(
                f"{at}: the frozen weight {name} is not finite, so it was so when the backbone was "
                "loaded; this is not the learning rate: give a backbone run with finite weights"
            )
        if step == 0:
            return TrainError(
                f"{at}: the weight {name} was not finite before any update (a damaged initial or "
                "loaded model), not the learning rate; start a new run"
            )
        return TrainError(
            f"{at}: training diverged (the weight {name} is no longer finite){_kept(run)}; lower --lr "
            "(or raise --warmup) and start a new run"
        )
    damaged = _non_finite_events(batch)
    if damaged:
        return TrainError(
            f"{at}: the input features of {damaged} are not finite (NaN or inf in their energy or "
            "coordinates): the data are damaged, not the weights or --lr; rebuild the repository "
            "from finite data (fm4npp-data build)"
        )
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and not any(p.requires_grad for p in backbone.parameters()):
        with torch.no_grad(), autocast(batch["features"].device):
            features = backbone.features(batch["features"], batch["mask"])
        if not all(bool(torch.isfinite(f[batch["mask"]]).all()) for f in features):
            return TrainError(
                f"{at}: the frozen backbone gives non-finite features for these events although its "
                "weights are finite (a damaged or diverged backbone); this is not --lr, the backbone "
                "is not trained here: give another --backbone"
            )
    if step == 0:
        return TrainError(
            f"{at}, before any update of the finite weights: not the learning rate; check the data "
            "of these events (fm4npp-data verify)"
        )
    return TrainError(f"{at}{_kept(run)}; lower --lr (or raise --warmup) or check the data")


def _non_finite_events(batch: dict) -> str:
    """The events of `batch` whose input features hold NaN or inf (named as _events_of does; "" when none)."""
    bad = ((~torch.isfinite(batch["features"])).any(-1) & batch["mask"]).any(1)
    return _events_of(batch, rows=bad) if bool(bad.any()) else ""


def _events_of(batch: dict, at_most: int = 4, rows: torch.Tensor | None = None) -> str:
    """The (run, event) pairs of the batch (rows: a boolean mask of the events to name)."""
    runs, events = (batch["run"], batch["event"]) if rows is None else (batch["run"][rows], batch["event"][rows])
    pairs = list(zip(runs.tolist(), events.tolist(), strict=True))
    shown = ", ".join(f"(run {r}, event {e})" for r, e in pairs[:at_most])
    return shown + (f" and {len(pairs) - at_most} more" if len(pairs) > at_most else "")
