"""A run folder: a model's weights as safetensors beside a JSON config that says how to build it.

    RUN/config.json          {"format": "fm4npp-run", "version": 1, "kind": "backbone", "backbone": {BackboneConfig},
                              "origin": {...}}   (origin: free-form facts, e.g. the training data or the imported file)
    RUN/model.safetensors    the state dict of the model, every tensor by its module name

Nothing in a run is unpickled. Loading refuses a config with keys it does not know and a state dict whose keys or
shapes differ from the model the config builds, naming the keys, so that a mismatch is an error and never a model that
silently runs with random weights, and weights that are not finite (NaN, inf) are refused, naming the tensor. A
config's values are checked too (types, ranges, every key present). A run is written only into a new or empty folder
outside any dataset repository and run (`new_run_folder`), under the folder's lock (`hold_run`), which every command
that writes a run takes. `fm4npp pretrain` adds its training state beside these two files
(fm4npp_models.training.checkpoint); `fm4npp import-checkpoint` writes the same two files from a published checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fm4npp_data.errors import RunError, TrainError
from fm4npp_data.files import LOCK, FolderLock, is_partial, partial_path, write_json
from fm4npp_data.integrity import is_repository

from ..model.config import PHI_CONVENTIONS, PUBLISHED_PHI, BackboneConfig

FORMAT = "fm4npp-run"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
#: Per kind of run: the keys of its config.json, and the commands that write it.
KINDS = {
    "backbone": (
        {"format", "version", "kind", "backbone", "origin"},
        "`fm4npp pretrain` or `fm4npp import-checkpoint`",
    ),
    "downstream": ({"format", "version", "kind", "task", "backbone", "head", "origin"}, "`fm4npp finetune`"),
}
#: Per kind of run: the keys its config.json may hold besides KINDS' (a run written before them lacks them).
OPTIONAL_KEYS = {"backbone": set(), "downstream": {"model"}}


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (a temporary name, then a rename): a write that fails (a full disk) leaves
    the file that was there as it was, removes the temporary file and is a RunError naming the path."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = "the disk is full: free space on it (or write elsewhere) and run the command again"
        else:
            advice = "check the folder and its permissions, then run the command again"
        kept = "; the file that was there is kept" if path.exists() else ""
        raise RunError(f"{path}: cannot write it ({exc.strerror or exc}); {advice}{kept}") from exc


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own and OS errors; all mean "unreadable"
        raise RunError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def save_run(run: Path, model: torch.nn.Module, origin: dict | None = None) -> Path:
    """Write RUN/config.json and RUN/model.safetensors for the backbone `model` (a Backbone: its state and config)."""
    return write_run(run, model.state_dict(), config_of(model, origin))


def write_run(run: Path, state: dict[str, torch.Tensor], config: dict) -> Path:
    """Write RUN/model.safetensors, then RUN/config.json (weights first, so that a config always has them)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    save_tensors(state, run / WEIGHTS, metadata={"format": FORMAT})
    write_json(run / CONFIG, config)
    return run


def config_of(model: torch.nn.Module, origin: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "backbone",
        "backbone": model.config.as_dict(),
        "origin": dict(origin or {}),
    }


def read_config(run: Path, kind: str = "backbone") -> dict:
    """The config.json of a run of `kind` ("backbone" or "downstream"), checked: its format, version, kind and keys."""
    keys, writers = KINDS[kind]
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run}: not a run folder (no {CONFIG}); give a folder written by {writers}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise RunError(f"{path}: not an fm4npp run config (format {found!r})")
    if config.get("version") != VERSION:
        raise RunError(f"{path}: run format version {config.get('version')!r}; this fm4npp reads version {VERSION}")
    if config.get("kind") != kind:
        raise RunError(f"{path}: a run of kind {config.get('kind')!r}, not a {kind} (a run of {writers})")
    unknown = sorted(set(config) - keys - OPTIONAL_KEYS[kind])
    if unknown:
        raise RunError(f"{path}: unknown keys {unknown}; the keys are {sorted(keys | OPTIONAL_KEYS[kind])}")
    missing = sorted(keys - set(config))
    if missing:
        raise RunError(f"{path}: missing keys {missing}; a run written by {writers} has {sorted(keys)}")
    if not isinstance(config["origin"], dict):
        raise RunError(f"{path}: 'origin' must be an object, not {type(config['origin']).__name__}")
    return config


#: The kinds of value a config.json field may hold (JSON values); a bool is not an integer.
POSITIVE, POSITIVE_OR_NONE, RATE, BOOL, POSITIVE_NUMBER = (
    "a positive integer",
    "a positive integer or null",
    "a number in [0, 1)",
    "true or false",
    "a positive number",
)
BACKBONE_FIELDS = {
    "d_model": POSITIVE,
    "n_layers": POSITIVE,
    "d_state": POSITIVE_OR_NONE,
    "headdim": POSITIVE,
    "expand": POSITIVE,
    "d_conv": POSITIVE,
    "ngroups": POSITIVE,
    "chunk_size": POSITIVE,
    "k": POSITIVE,
    "dropout": RATE,
    "trainable_embedding": BOOL,
    "phi": PHI_CONVENTIONS,
}
#: The fields a run written before them may lack, and the value it then had.
BACKBONE_DEFAULTS = {"phi": PUBLISHED_PHI}


def one_of(kind) -> str:
    """How a kind reads in a message: its words, or (a tuple of the strings allowed) "one of 'a', 'b'"."""
    return f"one of {', '.join(repr(v) for v in kind)}" if isinstance(kind, tuple) else kind


def check_value(value, kind: str) -> bool:
    """Whether a JSON value is of `kind` (POSITIVE, POSITIVE_OR_NONE, RATE, BOOL, POSITIVE_NUMBER, or a tuple of the
    strings allowed)."""
    if isinstance(kind, tuple):
        return isinstance(value, str) and value in kind
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == POSITIVE_OR_NONE and value is None:
        return True
    if kind in (POSITIVE, POSITIVE_OR_NONE):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    if kind == RATE:
        return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1
    if kind == POSITIVE_NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    raise ValueError(kind)


def check_fields(fields: dict, kinds: dict[str, str], where, what: str, required: bool = True) -> None:
    """RunError naming each field of `fields` that is unknown, missing (with `required`: every field of `kinds`) or
    not of its kind."""
    unknown = sorted(set(fields) - set(kinds))
    if unknown:
        raise RunError(f"{where}: unknown {what} keys {unknown}; the keys are {sorted(kinds)}")
    missing = sorted(set(kinds) - set(fields)) if required else []
    if missing:
        raise RunError(f"{where}: missing {what} keys {missing}; a run's config.json has all of {sorted(kinds)}")
    wrong = [
        f"{name} {fields[name]!r} (must be {one_of(kinds[name])})"
        for name in kinds
        if name in fields and not check_value(fields[name], kinds[name])
    ]
    if wrong:
        raise RunError(
            f"{where}: bad {what} values: {', '.join(wrong)}; write the run again with the command that "
            "made it, or correct config.json"
        )


def check_options(options: dict, kinds: dict, who: str) -> None:
    """TrainError naming the options of a model's constructor (`who`) that are unknown or not of their kind."""
    unknown = sorted(set(options) - set(kinds))
    if unknown:
        raise TrainError(f"{who}: unknown options {unknown}; the options are {sorted(kinds)}")
    wrong = [f"{k} {v!r} (must be {one_of(kinds[k])})" for k, v in options.items() if not check_value(v, kinds[k])]
    if wrong:
        raise TrainError(f"{who}: bad options: {'; '.join(wrong)}")


def backbone_config(config: dict, where) -> BackboneConfig:
    fields = config.get("backbone")
    if not isinstance(fields, dict):
        raise RunError(f"{where}: 'backbone' must be an object of BackboneConfig fields")
    fields = {**BACKBONE_DEFAULTS, **fields}
    check_fields(fields, BACKBONE_FIELDS, where, "backbone")
    return BackboneConfig(**fields)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where) -> None:
    """Load `state` into `model` exactly: every key present, no extra key, every shape equal (else RunError)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [
        f"{name} {tuple(state[name].shape)} (model {tuple(t.shape)})"
        for name, t in expected.items()
        if name in state and state[name].shape != t.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if extra:
        problems.append(f"unknown {_some(extra)}")
    if shapes:
        problems.append(f"wrong shapes {_some(shapes)}")
    if problems:
        raise RunError(f"{where}: the weights do not fit the model of the config: " + "; ".join(problems))
    check_finite(state, where)
    with torch.no_grad():
        model.load_state_dict(state, strict=True)


def check_finite(state: dict[str, torch.Tensor], where) -> None:
    """RunError naming the tensors of `state` that hold NaN or infinite values: such weights give NaN outputs."""
    bad = [
        f"{name} ({int((~torch.isfinite(t)).sum()):,} of {t.numel():,} values)"
        for name, t in state.items()
        if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise RunError(
            f"{where}: non-finite weights (NaN or inf) in {_some(bad)}: the file is damaged, or was saved "
            "by a training that diverged; use another run or checkpoint, or train again (lower --lr)"
        )


def _some(names: list[str], at_most: int = 8) -> str:
    shown = ", ".join(names[:at_most])
    return shown + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


# ------------------------------------------------------------------------------------------------------------
# Output folders: which a command may write into, and one lock per run folder
# ------------------------------------------------------------------------------------------------------------


def hold_run(folder: Path, error: type[Exception] = RunError) -> FolderLock:
    """The lock of a run folder, held by the one command writing it (`with hold_run(RUN):`); a second command on the
    same folder is refused with `error` while the first runs. Every command that writes a run takes it."""
    return FolderLock(folder, error)


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` is a run of fm4npp: a config.json of the run format, or a training run's training.json."""
    folder = Path(folder)
    if (folder / "training.json").is_file():
        return True
    try:
        return json.loads((folder / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def folder_contents(folder: Path) -> list[str]:
    """The names in `folder` (none when it does not exist), its lock file and the temporary files of an interrupted
    fm4npp command (`.NAME.partial`) left out."""
    folder = Path(folder)
    return (
        sorted(p.name for p in folder.iterdir() if p.name != LOCK and not is_partial(p.name)) if folder.is_dir() else []
    )


def enclosing_owner(path: Path, data: str | Path | None = None) -> str | None:
    """What `path` would be written into that is not the user's to give away: a dataset repository (a folder with
    splits.json and data/ at or above `path`, or the --data folder) or a run folder above it; None when neither."""
    path = Path(path).resolve()
    data = Path(data).resolve() if data is not None else None
    for folder in (path, *path.parents):
        if folder == data or is_repository(folder):
            return f"the dataset repository {folder}"
        if folder != path and is_run_folder(folder):
            return f"the run folder {folder}"
    return None


def check_output_place(out: Path, data: str | Path | None, option: str, error: type[Exception] = RunError) -> None:
    """`error` when `out` lies inside a dataset repository or a run folder (whose files it could overwrite)."""
    owner = enclosing_owner(out, data)
    if owner is not None:
        raise error(
            f"{option} {out} is inside {owner}: fm4npp does not write into a dataset repository or another "
            f"run; give a {option} outside it"
        )


def check_new_folder(out: Path, data: str | Path | None = None, option: str = "--out") -> None:
    """RunError unless `out` is a new or empty folder outside any dataset repository and run folder."""
    out = Path(out)
    check_output_place(out, data, option)
    if out.exists() and not out.is_dir():
        raise RunError(f"{option} {out} is a file; give a new folder")
    held = folder_contents(out)
    if held:
        raise RunError(
            f"{option} {out} is not empty ({_some(held, 4)}); fm4npp writes a run only into a new or empty "
            "folder and never replaces what is there: give another folder"
        )


@contextmanager
def new_run_folder(out: Path, data: str | Path | None = None, option: str = "--out"):
    """Create (or take an empty) run folder `out` and hold its lock while the block writes it. A folder that holds
    anything is refused before anything is touched, and again under the lock (another command may have begun)."""
    out = Path(out)
    check_new_folder(out, data, option)
    out.mkdir(parents=True, exist_ok=True)
    with hold_run(out):
        check_new_folder(out, data, option)
        yield out
