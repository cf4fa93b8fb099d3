"""A run folder: a model's weights as safetensors beside a JSON config that says how to build it.

    RUN/config.json          {"format": "fm4npp-run", "version": 1, "kind": "backbone", "backbone": {BackboneConfig},
                              "origin": {...}}   (origin: free-form facts, e.g. the training data or the imported file)
    RUN/model.safetensors    the state dict of the model, every tensor by its module name

Nothing in a run is unpickled. Loading refuses a config with keys it does not know and a state dict whose keys or
shapes differ from the model the config builds, naming the keys, so that a mismatch is an error and never a model that
silently runs with random weights. `fm4npp pretrain` adds its training state beside these two files
(fm4npp_models.train); `fm4npp import-checkpoint` writes the same two files from a published checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fm4npp_data.errors import Fm4nppError
from fm4npp_data.files import partial_path, write_json

from .backbone import Backbone, BackboneConfig

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


class RunError(Fm4nppError):
    """A run folder that cannot be read: missing files, an unknown config, weights that do not fit."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (a temporary name, then a rename)."""
    path = Path(path)
    tmp = partial_path(path)
    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own and OS errors; all mean "unreadable"
        raise RunError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def save_run(run: Path, model: Backbone, origin: dict | None = None) -> Path:
    """Write RUN/config.json and RUN/model.safetensors for the backbone `model`."""
    return write_run(run, model.state_dict(), config_of(model, origin))


def write_run(run: Path, state: dict[str, torch.Tensor], config: dict) -> Path:
    """Write RUN/model.safetensors, then RUN/config.json (weights first, so that a config always has them)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    save_tensors(state, run / WEIGHTS, metadata={"format": FORMAT})
    write_json(run / CONFIG, config)
    return run


def config_of(model: Backbone, origin: dict | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": "backbone", "backbone": model.config.as_dict(),
            "origin": dict(origin or {})}  # fmt: skip


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
    unknown = sorted(set(config) - keys)
    if unknown:
        raise RunError(f"{path}: unknown keys {unknown}; the keys are {sorted(keys)}")
    return config


def backbone_config(config: dict, where) -> BackboneConfig:
    fields = config.get("backbone")
    if not isinstance(fields, dict):
        raise RunError(f"{where}: 'backbone' must be an object of BackboneConfig fields")
    known = set(BackboneConfig.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise RunError(f"{where}: unknown backbone keys {unknown}; the keys are {sorted(known)}")
    try:
        return BackboneConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise RunError(f"{where}: bad backbone config ({exc})") from exc


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where) -> None:
    """Load `state` into `model` exactly: every key present, no extra key, every shape equal (else RunError)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{name} {tuple(state[name].shape)} (model {tuple(t.shape)})" for name, t in expected.items()
              if name in state and state[name].shape != t.shape]  # fmt: skip
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if extra:
        problems.append(f"unknown {_some(extra)}")
    if shapes:
        problems.append(f"wrong shapes {_some(shapes)}")
    if problems:
        raise RunError(f"{where}: the weights do not fit the model of the config: " + "; ".join(problems))
    with torch.no_grad():
        model.load_state_dict(state, strict=True)


def load_backbone(run: Path, map_location: str | torch.device = "cpu") -> Backbone:
    """The backbone of a run folder, its weights loaded exactly (RunError otherwise)."""
    run = Path(run)
    config = read_config(run)
    model = Backbone(backbone_config(config, run / CONFIG))
    load_state(model, load_tensors(run / WEIGHTS), run / WEIGHTS)
    return model.to(map_location)


def _some(names: list[str], at_most: int = 8) -> str:
    shown = ", ".join(names[:at_most])
    return shown + (f" and {len(names) - at_most} more" if len(names) > at_most else "")
