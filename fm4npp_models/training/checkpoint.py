"""A training run's folder and its checkpoints: the claim of the run folder (`training_run`, `check_run_folder`),
training.json (`read_training`), checkpoints written (`save_checkpoint`) and restored (`restore_checkpoint`), the
optimizer's moments and the random states as named tensors.

**Checkpoints** (nothing pickled; RUN/training.json names the last complete one, and is written last):

    RUN/config.json, RUN/model.safetensors           the run (fm4npp_models.checkpoints.run): the latest weights
    RUN/checkpoint-SSSSSSS/model.safetensors         the weights at step S
    RUN/checkpoint-SSSSSSS/optimizer.safetensors     AdamW's moments, by parameter index
    RUN/checkpoint-SSSSSSS/rng-R.safetensors         rank R's random generator states (dropout)
    RUN/training.json                                options, step, tokens, loader positions of every rank, seed

**The run folder** is the command's alone (`training_run`): a new or empty folder, never one of the user's files or
inside a dataset repository or another run; it holds a lock (fm4npp_data.files.FolderLock) for the whole run, so a
second command on it is refused, and training.json is written at the start (checkpoint null: a run that stopped before
its first checkpoint starts again). A run with a checkpoint is only gone on with `--resume`. Nothing non-finite is
saved, and a write that fails (a full disk) leaves the last complete checkpoint as it was.

**Resume** (`restore_checkpoint`): the weights, the moments, the random states and every rank's loader position are
restored, and the options must equal the saved ones.
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fm4npp_data.errors import DatasetError, Fm4nppError, TrainError
from fm4npp_data.files import write_json

from ..checkpoints.run import (
    _some,
    check_output_place,
    folder_contents,
    hold_run,
    load_state,
    load_tensors,
    save_tensors,
)
from .distributed import Dist, barrier, unwrap

#: The training state of a run folder: options, progress, the last checkpoint, loader positions.
TRAINING = "training.json"
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
    problems = [
        problem
        for index, entry in sorted(state.items())
        for problem in _moment_problems(optimizer, index, entry, params[index])
    ]
    if problems:
        raise TrainError(
            f"{where}: optimizer state that does not fit the model: {'; '.join(problems[:4])}"
            + (f" and {len(problems) - 4} more" if len(problems) > 4 else "")
        )
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
    expected.update(
        {f"cuda.{i}": torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count()) if f"cuda.{i}" in tensors}
    )
    for name, like in expected.items():
        got = tensors.get(name)
        if got is None:
            raise TrainError(f"{where}: no {name!r} random state")
        if got.dtype != like.dtype or got.shape != like.shape:
            raise TrainError(
                f"{where}: the {name!r} random state is {tuple(got.shape)} {got.dtype}, expected "
                f"{tuple(like.shape)} {like.dtype}"
            )
    try:
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[name] for name in expected if name != "torch"]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    except (RuntimeError, ValueError) as exc:
        raise TrainError(f"{where}: not a random generator's state ({exc})") from exc


def save_checkpoint(
    run: Path,
    model: nn.Module,
    optimizer,
    progress: Progress,
    loaders: list[dict],
    record: dict,
    where: Dist,
    save_model,
) -> None:
    """Write checkpoint-STEP/ (every rank its random states), then training.json and the run's weights (rank 0).
    Weights that are not finite are never written (TrainError); a write that fails (a full disk) removes the new
    checkpoint's folder and leaves the last complete checkpoint, which training.json names, as it was."""
    weights = unwrap(model).state_dict()
    if where.main:
        check_weights(weights, progress.step, run)
    folder = run / checkpoint_name(progress.step)
    if where.main:
        folder.mkdir(parents=True, exist_ok=True)
    barrier(where)
    try:
        save_tensors(rng_tensors(), folder / f"rng-{where.rank}.safetensors")
        if where.main:
            save_tensors(weights, folder / "model.safetensors")
            save_tensors(optimizer_tensors(optimizer), folder / "optimizer.safetensors")
            barrier(where)
            write_json(
                run / TRAINING, {**record, "checkpoint": folder.name, "progress": asdict(progress), "loaders": loaders}
            )
        else:
            barrier(where)
    except (Fm4nppError, OSError) as exc:
        if where.main and _named_checkpoint(run) != folder.name:
            shutil.rmtree(folder, ignore_errors=True)
        kept = last_checkpoint(run)
        raise TrainError(
            f"checkpoint of step {progress.step} not written: {_message(exc)}; "
            + (
                f"the checkpoint of step {kept} is kept: go on from it with --resume once fixed"
                if kept is not None
                else "no checkpoint was written yet"
            )
        ) from exc
    if where.main:
        if save_model is not None:
            save_model(unwrap(model))
        for old in run.glob("checkpoint-*"):  # the earlier checkpoints; a user's copy under another name stays
            if old.is_dir() and old.name != folder.name and CHECKPOINT.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
    barrier(where)


def check_weights(weights: dict[str, torch.Tensor], step: int, run: Path) -> None:
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        kept = last_checkpoint(run)
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise TrainError(
            f"the weights are not finite after step {step} ({shown}): training diverged; nothing was "
            "saved over the last checkpoint"
            + (f" (step {kept})" if kept is not None else "")
            + "; lower --lr (or raise --warmup) and start a new run"
        )


def _saved(run: Path) -> dict | None:
    try:
        return read_training(run)
    except TrainError:
        return None


def _named_checkpoint(run: Path) -> str | None:
    """The checkpoint folder training.json names (None: none, or no readable training.json)."""
    return (_saved(run) or {}).get("checkpoint")


def last_checkpoint(run: Path) -> int | None:
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
#: What to do about a damaged run folder (the end of the messages that name one).
DAMAGED = (
    "restore the run folder from a copy if you keep one (an earlier checkpoint), or start a new run with another --out"
)


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
            raise TrainError(
                f"{run} holds a run of {COMMANDS[run_kind(saved)]}, not of {COMMANDS[kind]}: it would be "
                "overwritten; give another --out"
            )
        if saved["checkpoint"] is None:
            return None
        if not resume:
            raise TrainError(
                f"{run} already holds a training run (at step {saved['progress']['step']}); pass --resume "
                "to go on from its last checkpoint, or give another --out"
            )
        return saved
    if (run / "config.json").is_file():
        raise TrainError(
            f"{run} holds a model (config.json) that has no training state: it would be overwritten; give another --out"
        )
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
    where = where or Dist()
    run = Path(run)
    kind = run_kind(record)
    check_output_place(run, data, "--out", TrainError)
    saved = check_run_folder(run, resume, kind)
    barrier(where)  # every rank has read the folder before rank 0 writes into it
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
    kinds = {
        "step": int,
        "events": int,
        "tokens": int,
        "elapsed_s": (int, float),
        "best_val_loss": (int, float, type(None)),
        "val": dict,
    }
    if set(progress) != set(kinds):
        return f"'progress' has the keys {sorted(progress)}, not {sorted(kinds)}"
    wrong = [
        name
        for name, kind in kinds.items()
        if not isinstance(progress[name], kind)
        or isinstance(progress[name], bool)
        or (kind is int and progress[name] < 0)
    ]
    if wrong:
        return f"'progress' values of the wrong type: {', '.join(wrong)}"
    return None


def restore_checkpoint(run: Path, saved: dict, record: dict, model, optimizer, train_loader, where: Dist) -> Progress:
    """Restore the checkpoint training.json names (`saved`): the weights, the moments, this rank's random states and
    loader position; TrainError when the settings differ from the saved ones or the checkpoint is damaged."""
    differ = _differences(saved, record)
    if differ:
        raise TrainError(
            f"{run}: cannot resume with other settings than the run's (" + "; ".join(differ) + "); "
            "run again with the saved settings, or give another --out"
        )
    folder = run / saved["checkpoint"]
    loaders = saved.get("loaders") or []
    if len(loaders) != where.world_size:
        raise TrainError(
            f"{run}: the run was trained on {len(loaders)} processes, this one has {where.world_size}; "
            "resume with the same number of processes"
        )
    weights, moments, rng = (
        folder / name for name in ("model.safetensors", "optimizer.safetensors", f"rng-{where.rank}.safetensors")
    )
    try:
        load_state(unwrap(model), load_tensors(weights), weights)
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
            out += [
                f"{key}.{k}: saved {old.get(k)!r}, now {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        else:
            out.append(f"{key}: saved {old!r}, now {new!r}")
    return out


def _jsonable(value):
    return json.loads(json.dumps(value)) if value is not None else None
