"""The training loop of `fm4npp pretrain` and `fm4npp finetune`: steps, schedule, checkpoints, resume.

    state = fit(model, task, train_loader, val_loader, options, run=RUN)

One step: a batch from the (endless) training loader, `task.loss(model, batch)`, backward, gradient clipping, an AdamW
step at the scheduled learning rate. Every `val_every` steps `task.validate(model, val_loader)` runs over the whole
validation loader; every `checkpoint_every` steps (and at the end, and on Ctrl-C) a checkpoint is written.

**Schedule.** Linear warmup from lr / warmup to lr over `warmup` steps (default a tenth of the steps, as the paper's
10k of 100k), then a cosine down to `min_lr_ratio * lr` at the last step. Every optimizer group keeps its own ratio to
the base rate (μP's per-parameter rates): a group's rate is its `initial_lr` times the schedule's factor. (The
published scheduler set every group to one rate, erasing the μP ratios.)

**Clipping.** The global gradient norm is clipped at `clip` (0.1, the paper's value; the published script clipped each
gradient element at 0.1 instead). **Precision**: bf16 autocast on CUDA, float32 on CPU.

**Checkpoints** (nothing pickled; RUN/training.json names the last complete one, and is written last):

    RUN/config.json, RUN/model.safetensors           the run (fm4npp_models.checkpoints.run): the latest weights
    RUN/checkpoint-SSSSSSS/model.safetensors         the weights at step S
    RUN/checkpoint-SSSSSSS/optimizer.safetensors     AdamW's moments, by parameter index
    RUN/checkpoint-SSSSSSS/rng-R.safetensors         rank R's random generator states (dropout)
    RUN/training.json                                options, step, tokens, loader positions of every rank, seed
    RUN/log.csv, RUN/loss.png                        one row per step (validation rows filled at validation)

**The run folder** is the command's alone (`training_run`): a new or empty folder, never one of the user's files or
inside a dataset repository or another run; it holds a lock (fm4npp_data.files.FolderLock) for the whole run, so a
second command on it is refused, and training.json is written at the start (checkpoint null: a run that stopped before
its first checkpoint starts again). A run with a checkpoint is only gone on with `--resume`. A non-finite loss,
gradient norm, validation loss or weight stops training with a message; nothing non-finite is saved, and a write that
fails (a full disk) leaves the last complete checkpoint as it was.

**Resume** (`resume=True`): the weights, the moments, the random states and every rank's loader position are
restored, the log is cut back to the checkpoint's step, and the options must equal the saved ones. The remaining
steps then see the same batches with the same dropout masks, so the loss curve equals an uninterrupted run's.

**Distributed**: under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
nccl on CUDA); each rank reads its share of the data (the loader's rank / world_size); rank 0 writes the files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from fm4npp_data.errors import Fm4nppError, TrainError
from fm4npp_data.files import write_json

from ..checkpoints.run import load_tensors, save_tensors
from .options import TrainOptions

TRAINING = "training.json"
LOG = "log.csv"
PLOT = "loss.png"
LOG_FIELDS = ["step", "epoch", "events", "tokens", "lr", "loss", "grad_norm", "val_loss", "tokens_per_s", "elapsed_s"]


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """The schedule's multiplier of the base rate for the update at 0-based `step`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - 1 - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Task(Protocol):
    """What `fit` trains: a loss on one batch and a validation over a loader."""

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor: ...

    def validate(self, model: nn.Module, loader) -> dict[str, float]:
        """At least {"val_loss": ...}, averaged over every rank's share of the validation data."""
        ...


# ------------------------------------------------------------------------------------------------------------
# Distributed set-up
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed() -> Dist:
    """This process's place under torchrun (RANK, WORLD_SIZE, LOCAL_RANK), initializing the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish(where: Dist) -> None:
    """End this process's part in a distributed run: wait for every rank, then leave the process group (a rank
    that exits with the group alive can abort in the communication library's threads)."""
    if where.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def device_of(name: str, where: Dist) -> torch.device:
    """`auto` (this process's GPU when CUDA is available, else the CPU), `cpu`, `cuda`, `cuda:N`; TrainError else."""
    if name == "auto":
        return torch.device(f"cuda:{where.local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"--device {name!r} is not a device; give auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}, but this machine has no CUDA device; give --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise TrainError(f"--device {name}: fm4npp trains on cpu or cuda")
    return device


def all_sum(values: list[float], where: Dist) -> list[float]:
    """Element-wise sum over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    if where.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t.tolist()


def all_gather(obj, where: Dist) -> list:
    if where.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * where.world_size
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------------------


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as named tensors ('state.{index}.{name}')."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"state.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], where) -> None:
    """Load optimizer_tensors() back, each checked against its parameter (TrainError naming the tensor): AdamW's
    moments must have the parameter's shape and dtype, and every parameter with a state the same tensors."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise TrainError(f"{where}: {key!r} is not an optimizer state tensor (state.INDEX.NAME)")
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if state and max(state) >= len(params):
        raise TrainError(f"{where}: optimizer state for {max(state) + 1} parameters, the model has {len(params)}")
    problems = [problem for index, entry in sorted(state.items())
                for problem in _moment_problems(optimizer, index, entry, params[index])]  # fmt: skip
    if problems:
        raise TrainError(f"{where}: optimizer state that does not fit the model: {'; '.join(problems[:4])}"
                         + (f" and {len(problems) - 4} more" if len(problems) > 4 else ""))  # fmt: skip
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def _moment_problems(optimizer, index: int, entry: dict[str, torch.Tensor], param: torch.Tensor) -> list[str]:
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return []
    amsgrad = any(group.get("amsgrad") for group in optimizer.param_groups)
    expected = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())
    if set(entry) != expected:
        return [f"state.{index}: tensors {sorted(entry)}, expected {sorted(expected)}"]
    out = []
    for name, t in entry.items():
        if name == "step":
            if t.numel() != 1 or not bool(torch.isfinite(t.double()).all()) or float(t) < 0:
                out.append(f"state.{index}.step is {tuple(t.shape)} {t.dtype}, expected one count >= 0")
        elif t.shape != param.shape or t.dtype != param.dtype:
            out.append(f"state.{index}.{name} {tuple(t.shape)} {t.dtype}, expected {tuple(param.shape)} {param.dtype}")
        elif not bool(torch.isfinite(t).all()):
            out.append(f"state.{index}.{name} holds NaN or inf")
    return out


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def set_rng(tensors: dict[str, torch.Tensor], where="random states") -> None:
    """Restore rng_tensors(); TrainError naming `where` when a state is missing or not a generator's state."""
    expected = {"torch": torch.get_rng_state()}
    expected.update({f"cuda.{i}": torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())
                     if f"cuda.{i}" in tensors})  # fmt: skip
    for name, like in expected.items():
        got = tensors.get(name)
        if got is None:
            raise TrainError(f"{where}: no {name!r} random state")
        if got.dtype != like.dtype or got.shape != like.shape:
            raise TrainError(f"{where}: the {name!r} random state is {tuple(got.shape)} {got.dtype}, expected "
                             f"{tuple(like.shape)} {like.dtype}")  # fmt: skip
    try:
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[name] for name in expected if name != "torch"]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    except (RuntimeError, ValueError) as exc:
        raise TrainError(f"{where}: not a random generator's state ({exc})") from exc


#: The name of a checkpoint folder (checkpoint_name); only such folders are a run's to remove.
CHECKPOINT = re.compile(r"checkpoint-\d{7}")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


@dataclass
class Progress:
    """Where training stands (saved in training.json)."""

    step: int = 0
    events: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    best_val_loss: float | None = None
    val: dict = field(default_factory=dict)


def save_checkpoint(run: Path, model: nn.Module, optimizer, progress: Progress, loaders: list[dict], record: dict,
                    where: Dist, save_model) -> None:  # fmt: skip
    """Write checkpoint-STEP/ (every rank its random states), then training.json and the run's weights (rank 0).
    Weights that are not finite are never written (TrainError); a write that fails (a full disk) removes the new
    checkpoint's folder and leaves the last complete checkpoint, which training.json names, as it was."""
    weights = _unwrap(model).state_dict()
    if where.main:
        _check_weights(weights, progress.step, run)
    folder = run / checkpoint_name(progress.step)
    if where.main:
        folder.mkdir(parents=True, exist_ok=True)
    _barrier(where)
    try:
        save_tensors(rng_tensors(), folder / f"rng-{where.rank}.safetensors")
        if where.main:
            save_tensors(weights, folder / "model.safetensors")
            save_tensors(optimizer_tensors(optimizer), folder / "optimizer.safetensors")
            _barrier(where)
            write_json(run / TRAINING, {**record, "checkpoint": folder.name, "progress": asdict(progress),
                                        "loaders": loaders})  # fmt: skip
        else:
            _barrier(where)
    except (Fm4nppError, OSError) as exc:
        if where.main and _named_checkpoint(run) != folder.name:
            shutil.rmtree(folder, ignore_errors=True)
        kept = _last_checkpoint(run)
        raise TrainError(f"checkpoint of step {progress.step} not written: {_message(exc)}; "
                         + (f"the checkpoint of step {kept} is kept: go on from it with --resume once fixed"
                            if kept is not None else "no checkpoint was written yet")) from exc  # fmt: skip
    if where.main:
        if save_model is not None:
            save_model(_unwrap(model))
        for old in run.glob("checkpoint-*"):  # the earlier checkpoints; a user's copy under another name stays
            if old.is_dir() and old.name != folder.name and CHECKPOINT.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
    _barrier(where)


def _check_weights(weights: dict[str, torch.Tensor], step: int, run: Path) -> None:
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        kept = _last_checkpoint(run)
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise TrainError(f"the weights are not finite after step {step} ({shown}): training diverged; nothing was "
                         "saved over the last checkpoint" + (f" (step {kept})" if kept is not None else "")
                         + "; lower --lr (or raise --warmup) and start a new run")  # fmt: skip


def _saved(run: Path) -> dict | None:
    try:
        return read_training(run)
    except TrainError:
        return None


def _named_checkpoint(run: Path) -> str | None:
    """The checkpoint folder training.json names (None: none, or no readable training.json)."""
    return (_saved(run) or {}).get("checkpoint")


def _last_checkpoint(run: Path) -> int | None:
    """The step of the checkpoint training.json names (None: none)."""
    saved = _saved(run)
    return None if saved is None or saved["checkpoint"] is None else saved["progress"]["step"]


def _message(exc: Exception) -> str:
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)


#: The commands that write training runs; a run's training.json says which (a fine-tuning record has a task).
COMMANDS = {"pretrain": "`fm4npp pretrain`", "finetune": "`fm4npp finetune`"}
DAMAGED = ("restore the run folder from a copy if you keep one (an earlier checkpoint), or start a new run with "
           "another --out")  # fmt: skip


def run_kind(record: dict) -> str:
    """Which command a training record (training.json) is of: "finetune" or "pretrain"."""
    return "finetune" if "task" in record else "pretrain"


def check_run_folder(run: Path, resume: bool, kind: str = "pretrain") -> dict | None:
    """The saved training state to resume `run` from (None: a new run). A command writes only into a new or empty
    folder, or into a run of its own kind: TrainError for a folder that holds anything else (the user's files, a
    model without training state, a run of the other command), and for a run with a checkpoint without resume. A run
    that has no checkpoint yet (it stopped before its first) holds nothing to keep: it starts again."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise TrainError(f"--out {run} is a file; give a folder")
    saved = read_training(run)
    if saved is not None:
        if run_kind(saved) != kind:
            raise TrainError(f"{run} holds a run of {COMMANDS[run_kind(saved)]}, not of {COMMANDS[kind]}: it would be "
                             "overwritten; give another --out")  # fmt: skip
        if saved["checkpoint"] is None:
            return None
        if not resume:
            raise TrainError(f"{run} already holds a training run (at step {saved['progress']['step']}); pass --resume "
                             "to go on from its last checkpoint, or give another --out")  # fmt: skip
        return saved
    if (run / "config.json").is_file():
        raise TrainError(f"{run} holds a model (config.json) that has no training state: it would be overwritten; "
                         "give another --out")  # fmt: skip
    from ..checkpoints.run import _some, folder_contents

    held = folder_contents(run)
    if held:
        raise TrainError(
            f"--out {run} is not empty ({_some(held, 4)}) and is not a run of {COMMANDS[kind]}: a run is "
            "written only into a new or empty folder, and nothing there is replaced; give another --out"
        )
    return None


@contextmanager
def training_run(run: Path, resume: bool, record: dict, data: str | Path, where: Dist | None = None):
    """Claim the run folder of a training command for the whole run; yields the saved state to resume from (None: a
    new run). Checked on every rank before anything is written (check_run_folder, and not inside a dataset
    repository or another run); then rank 0 creates the folder, takes its lock (a second command on it is refused
    while this one runs), checks again under the lock and, for a new run, writes training.json without a checkpoint,
    so that the folder is a run of this command from its start."""
    from ..checkpoints.run import check_output_place, hold_run

    where = where or Dist()
    run = Path(run)
    kind = run_kind(record)
    check_output_place(run, data, "--out", TrainError)
    saved = check_run_folder(run, resume, kind)
    _barrier(where)  # every rank has read the folder before rank 0 writes into it
    if not where.main:
        yield saved
        return
    run.mkdir(parents=True, exist_ok=True)
    with hold_run(run, TrainError):
        saved = check_run_folder(run, resume, kind)
        if saved is None:
            write_json(run / TRAINING, {**record, "checkpoint": None, "progress": asdict(Progress()), "loaders": []})
        yield saved


def read_training(run: Path) -> dict | None:
    """RUN/training.json (None when there is none), its shape checked: TrainError naming it when damaged."""
    path = Path(run) / TRAINING
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path}: unreadable ({exc}); {DAMAGED}") from exc
    problem = _training_problem(saved)
    if problem:
        raise TrainError(f"{path}: damaged training state ({problem}); {DAMAGED}")
    return saved


def _training_problem(saved) -> str | None:
    """What is wrong with the shape of a training.json (None: nothing)."""
    if not isinstance(saved, dict):
        return f"a JSON {type(saved).__name__}, not an object"
    missing = sorted({"checkpoint", "progress", "loaders"} - set(saved))
    if missing:
        return f"missing keys {missing}"
    checkpoint, progress, loaders = saved["checkpoint"], saved["progress"], saved["loaders"]
    if checkpoint is not None and not (isinstance(checkpoint, str) and CHECKPOINT.fullmatch(checkpoint)):
        return f"'checkpoint' is {checkpoint!r}, not a checkpoint-NNNNNNN folder name"
    if not isinstance(loaders, list) or not all(isinstance(x, dict) for x in loaders):
        return "'loaders' is not a list of loader states"
    if not isinstance(progress, dict):
        return "'progress' is not an object"
    kinds = {"step": int, "events": int, "tokens": int, "elapsed_s": (int, float), "best_val_loss": (int, float,
             type(None)), "val": dict}  # fmt: skip
    if set(progress) != set(kinds):
        return f"'progress' has the keys {sorted(progress)}, not {sorted(kinds)}"
    wrong = [name for name, kind in kinds.items()
             if not isinstance(progress[name], kind) or isinstance(progress[name], bool)
             or (kind is int and progress[name] < 0)]  # fmt: skip
    if wrong:
        return f"'progress' values of the wrong type: {', '.join(wrong)}"
    return None


def _barrier(where: Dist) -> None:
    if where.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ------------------------------------------------------------------------------------------------------------
# The log
# ------------------------------------------------------------------------------------------------------------


class Log:
    """log.csv, one row per step; a resumed run first cuts the file back to its checkpoint's step."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = _rows_until(path, resume_step) if resume_step is not None and path.is_file() else []
        tmp = path.with_name(f".{path.name}.partial")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, LOG_FIELDS)

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, row: dict) -> None:
        if self.enabled:
            self.writer.writerow({k: _fmt(row.get(k)) for k in LOG_FIELDS})
            self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()


def _rows_until(path: Path, step: int) -> list[dict]:
    """The rows of the log `path` up to `step` (a resumed run's); TrainError naming the file when it is damaged."""
    try:
        with path.open(newline="") as f:
            return [row for row in csv.DictReader(f) if int(row["step"]) <= step]
    except (OSError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise TrainError(f"{path}: not a training log of fm4npp ({type(exc).__name__}: {exc}); correct it, or remove "
                         "it (its rows are then lost), and resume again") from exc  # fmt: skip


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def read_log(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_log(run: Path, baseline: float | None = None, title: str = "") -> Path | None:
    """RUN/loss.png: training loss (and its running mean) and validation loss against step; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_log(run / LOG)
    if not rows:
        return None
    step = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    ax.plot(step, loss, color="0.75", lw=0.8, label="training loss (per step; pretraining: difficulty-weighted)")
    window = max(1, len(loss) // 25)
    running = [sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1])
               for i in range(len(loss))]  # fmt: skip
    ax.plot(step, running, color="C0", lw=1.5, label=f"training loss (mean of {window})")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="C1", ms=4, label="validation loss")
    if baseline is not None:
        ax.axhline(baseline, color="C3", ls="--", lw=1, label="own coordinates (validation)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(frameon=False)
    out = run / PLOT
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------


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
            raise TrainError(f"{loader!r} gave no batch in a whole epoch: its split has {len(s.source.units)} row "
                             f"groups for {s.world_size} processes x {s.workers} loader workers; use fewer processes "
                             "or workers, or build the repository with smaller row groups")  # fmt: skip


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Every group's rate = its initial_lr * factor; returns the first group's rate."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]


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
        progress = _restore(run, saved, record, model, optimizer, train_loader, where)
        echo(f"resuming {run} at step {progress.step} of {options.steps}")
    loop = _Loop(model, task, optimizer, train_loader, val_loader, options, run, record, where, progress, echo,
                 resumed=saved is not None, save_model=save_model, on_best=on_best)  # fmt: skip
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


class _Loop:
    """The steps of `fit`, one method each: a training step, the validation, the checkpoint, a stop. It holds what
    they share: the model, the optimizer, the progress, the log, the progress bar and the result."""

    def __init__(self, model, task: Task, optimizer, train_loader, val_loader, options: TrainOptions, run: Path,
                 record: dict, where: Dist, progress: Progress, echo, *, resumed: bool, save_model,
                 on_best) -> None:  # fmt: skip
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
        lr = set_lr(self.optimizer, lr_factor(progress.step, options.steps, options.warmup_steps,
                                              options.min_lr_ratio))  # fmt: skip
        with autocast(self.device):
            loss = self.task.loss(self.model, batch)
        if not torch.isfinite(loss):
            raise _non_finite_loss(self.model, batch, loss.item(), progress.step, self.run)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), options.clip))
        if not math.isfinite(grad_norm):
            raise TrainError(f"the gradient norm is {grad_norm} at step {progress.step + 1} (batch of events "
                             f"{_events_of(batch)}), the loss {loss.item():.5g}: the weights were not updated"
                             f"{_kept(self.run)}; lower --lr (or raise --warmup), or check the data")  # fmt: skip
        self.optimizer.step()
        events, tokens = all_sum([len(batch["run"]), float(batch["mask"].sum())], self.where)
        loss_value = all_sum([loss.item()], self.where)[0] / self.where.world_size
        progress.step += 1
        progress.events += int(events)
        progress.tokens += int(tokens)
        progress.elapsed_s, rate = self.pace.tick(progress.tokens)
        return {"step": progress.step, "epoch": getattr(self.train_loader, "epoch", None), "events": progress.events,
                "tokens": progress.tokens, "lr": lr, "loss": loss_value, "grad_norm": grad_norm,
                "tokens_per_s": rate, "elapsed_s": progress.elapsed_s}  # fmt: skip

    def validate(self, row: dict) -> None:
        """The task's validation into the progress, the history and `row`; on_best when the loss is the lowest so
        far. TrainError when the validation loss is not finite (naming the weights when they are not)."""
        model, progress = self.model, self.progress
        model.eval()
        with torch.no_grad(), autocast(self.device):
            val = self.task.validate(_unwrap(model), self.val_loader)
        model.train()
        if not math.isfinite(val["val_loss"]):
            _check_weights(_unwrap(model).state_dict(), progress.step, self.run)
            raise TrainError(
                f"the validation loss is {val['val_loss']} at step {progress.step} although the "
                f"weights are finite: check the validation data (fm4npp-data verify){_kept(self.run)}"
            )
        progress.val = val
        row["val_loss"] = val["val_loss"]
        if progress.best_val_loss is None or val["val_loss"] < progress.best_val_loss:
            progress.best_val_loss = val["val_loss"]
            if self.on_best is not None and self.where.main:
                self.on_best(_unwrap(model))
        self.result.history.append({"step": progress.step, **val})
        eta = self.pace.eta(progress.step, self.options.steps)
        self.ticker.echo(f"step {progress.step:>6}/{self.options.steps}  loss {row['loss']:.5f}  "
                         f"val {val['val_loss']:.5f}  lr {row['lr']:.2e}  {row['tokens_per_s']:,.0f} tokens/s  "
                         f"ETA {eta}")  # fmt: skip

    def checkpoint(self) -> None:
        _checkpoint(self.run, self.model, self.optimizer, self.progress, self.train_loader, self.record, self.where,
                    self.save_model)  # fmt: skip
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


class Ticker:
    """A progress bar on a terminal (rank 0): training's with the loss and spacepoints/s, or any count of `total`
    (`advance`); elsewhere only the echoed lines. stderr: draw on stderr (stdout keeps the command's output)."""

    def __init__(self, steps: int, done: int, live: bool, echo, label: str = "training", stderr: bool = False) -> None:
        self.steps, self.done, self.live, self._echo = steps, done, live, echo
        self.label, self.stderr = label, stderr
        self.bar = None

    def __enter__(self) -> Ticker:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True) if self.stderr else None
            self.bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
                                console=console)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.steps, completed=self.done, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=f"loss {loss:.5f}  {rate:,.0f} tokens/s")

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=count)

    def echo(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
        else:
            self._echo(line)


def _eta(left: int, done: int, elapsed: float) -> str:
    """The time the `left` steps take at the pace of the `done` steps of this process (h:mm:ss)."""
    seconds = int(left * elapsed / max(1, done))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _kept(run: Path) -> str:
    step = _last_checkpoint(run)
    return f"; the checkpoint of step {step} is kept" if step is not None else ""


def _non_finite_loss(model: nn.Module, batch: dict, loss: float, step: int, run: Path) -> TrainError:
    """Why the loss of the update after `step` is not finite, told apart: weights that were loaded non-finite or
    that diverged, a frozen backbone whose features are not finite, or (finite weights) the data or the rate."""
    at = f"the loss is {loss} at step {step + 1} (batch of events {_events_of(batch)})"
    model = _unwrap(model)
    bad = [(name, p) for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        name, p = bad[0]
        if not p.requires_grad:
            return TrainError(
                f"{at}: the frozen weight {name} is not finite, so it was so when the backbone was "
                "loaded; this is not the learning rate: give a backbone run with finite weights"
            )
        if step == 0:
            return TrainError(f"{at}: the weight {name} was not finite before any update (a damaged initial or "
                              "loaded model), not the learning rate; start a new run")  # fmt: skip
        return TrainError(f"{at}: training diverged (the weight {name} is no longer finite){_kept(run)}; lower --lr "
                          "(or raise --warmup) and start a new run")  # fmt: skip
    damaged = _non_finite_events(batch)
    if damaged:
        return TrainError(f"{at}: the input features of {damaged} are not finite (NaN or inf in their energy or "
                          "coordinates): the data are damaged, not the weights or --lr; rebuild the repository "
                          "from finite data (fm4npp-data build)")  # fmt: skip
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and not any(p.requires_grad for p in backbone.parameters()):
        with torch.no_grad(), autocast(batch["features"].device):
            features = backbone.features(batch["features"], batch["mask"])
        if not all(bool(torch.isfinite(f[batch["mask"]]).all()) for f in features):
            return TrainError(f"{at}: the frozen backbone gives non-finite features for these events although its "
                              "weights are finite (a damaged or diverged backbone); this is not --lr, the backbone "
                              "is not trained here: give another --backbone")  # fmt: skip
    if step == 0:
        return TrainError(f"{at}, before any update of the finite weights: not the learning rate; check the data "
                          "of these events (fm4npp-data verify)")  # fmt: skip
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


def _checkpoint(run, model, optimizer, progress, train_loader, record, where, save_model) -> None:
    loaders = all_gather(train_loader.state_dict(), where)
    save_checkpoint(run, model, optimizer, progress, loaders, record, where, save_model)


def _restore(run: Path, saved: dict, record: dict, model, optimizer, train_loader, where: Dist) -> Progress:
    differ = _differences(saved, record)
    if differ:
        raise TrainError(f"{run}: cannot resume with other settings than the run's (" + "; ".join(differ) + "); "
                         "run again with the saved settings, or give another --out")  # fmt: skip
    folder = run / saved["checkpoint"]
    loaders = saved.get("loaders") or []
    if len(loaders) != where.world_size:
        raise TrainError(f"{run}: the run was trained on {len(loaders)} processes, this one has {where.world_size}; "
                         "resume with the same number of processes")  # fmt: skip
    from fm4npp_data.errors import DatasetError

    from ..checkpoints.run import load_state

    weights, moments, rng = (folder / name for name in ("model.safetensors", "optimizer.safetensors",
                                                         f"rng-{where.rank}.safetensors"))  # fmt: skip
    try:
        load_state(_unwrap(model), load_tensors(weights), weights)
        load_optimizer_tensors(optimizer, load_tensors(moments), moments)
        set_rng(load_tensors(rng), rng)
    except Fm4nppError as exc:
        raise TrainError(f"{exc}; the checkpoint {folder.name} cannot be resumed from: {DAMAGED}") from exc
    try:
        train_loader.load_state_dict(loaders[where.rank])
    except DatasetError as exc:
        raise TrainError(f"{run / TRAINING}: the loader position of rank {where.rank}: {exc}; {DAMAGED}") from exc
    return Progress(**saved["progress"])


def _differences(saved: dict, record: dict) -> list[str]:
    """What differs between the saved record and this run's, option by option."""
    out = []
    for key, value in record.items():
        old, new = _jsonable(saved.get(key)), _jsonable(value)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{key}.{k}: saved {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)]  # fmt: skip
        else:
            out.append(f"{key}: saved {old!r}, now {new!r}")
    return out


def _jsonable(value):
    return json.loads(json.dumps(value)) if value is not None else None


def is_terminal() -> bool:
    return sys.stderr.isatty()
