"""The downstream model: a trainable head on the frozen backbone (or, backbone None, the AdapterOnly baseline, or a
graph baseline of fm4npp_models.baselines), and its run folder.

    model = Downstream.build("tracking", backbone=Backbone.from_run(RUN))   # or backbone=None: AdapterOnly
    model = Downstream("tracking", None, {}, model="exatrkx")              # a graph baseline, its options as head's
    outputs = model(batch["features"], batch["mask"])                      # the backbone runs frozen, in eval mode
    loss = model.loss(outputs, batch); labels = model.predict(outputs, batch["mask"])

A downstream run folder (`save_downstream`, `load_downstream`) holds config.json (kind "downstream": the task, the
model (training.options.MODELS; a config without it is "fm" with a backbone, "adapter-only" without), the
backbone's config or null, the head's options) and model.safetensors with the backbone's weights too, so that it
predicts on its own. The head option "features" says what a head on the backbone reads (Backbone.features: "z",
"x" or "both"); a config without it reads "z", as the published heads and the runs written before the option.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fm4npp_data.errors import RunError, TrainError
from fm4npp_data.tasks import TASKS

from ..baselines import GRAPH_BASELINES, baseline_class, make_baseline
from ..baselines.adapter_only import AdapterOnly
from ..checkpoints.run import (
    CONFIG,
    FORMAT,
    POSITIVE,
    RATE,
    VERSION,
    WEIGHTS,
    backbone_config,
    check_fields,
    load_state,
    load_tensors,
    read_config,
    write_run,
)
from ..model.backbone import Backbone, n_feature_blocks
from ..model.config import FEATURE_KINDS, PUBLISHED_FEATURES
from ..training.options import ADAPTER_ONLY, FM, MODELS
from . import make_head

#: The AdapterOnly baseline's width (the published heads' internal width).
ADAPTER_ONLY_WIDTH = 256
#: The head options a downstream config.json may hold: the heads' constructors' JSON-valued arguments, and what a
#: head on the backbone reads ("features", not an option of AdapterOnly).
_HEAD = {"width": POSITIVE, "n_heads": POSITIVE, "dropout": RATE, "features": FEATURE_KINDS}
_TRACK_FINDER = {**_HEAD, "n_queries": POSITIVE, "n_layers": POSITIVE, "ffn": POSITIVE}
_SEGMENTATION = {**_HEAD, "n_classes": POSITIVE}
HEAD_OPTIONS = {name: _SEGMENTATION if task.is_classification else _TRACK_FINDER for name, task in TASKS.items()}
#: Loader neighbours for downstream batches (the targets are not used; 1 keeps them small).
LOADER_K = 1


def model_name(model: str | None, backbone) -> str:
    """The model of a downstream run (MODELS): `model`, or when None (a run written before the key) "fm" with a
    backbone and "adapter-only" without."""
    if model is None:
        return ADAPTER_ONLY if backbone is None else FM
    if model not in MODELS:
        raise TrainError(f"unknown model {model!r}; the models are {', '.join(MODELS)}")
    return model


class Downstream(nn.Module):
    """A frozen backbone and a trainable head, or (backbone None) AdapterOnly or (`model`) a graph baseline: features,
    mask -> the head's outputs. `head` is the module trained (the graph baseline itself for those)."""

    def __init__(
        self, task: str, backbone: Backbone | None, head_options: dict | None = None, model: str | None = None
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise TrainError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
        self.task, self.head_options = task, dict(head_options or {})
        self.model = model_name(model, backbone)
        if (self.model == FM) != (backbone is not None):
            raise TrainError(f"model {self.model!r} {'reads no' if backbone is not None else 'needs a'} backbone")
        self.backbone = backbone
        options = {k: v for k, v in self.head_options.items() if k != "features"}
        self.features = None  # what the head reads of the backbone (FEATURE_KINDS); None: no backbone
        if self.model in GRAPH_BASELINES:
            if "features" in self.head_options:
                raise TrainError(f"'features' is an option of a head on a backbone; {self.model} reads the spacepoints")
            self.head = make_baseline(self.model, task, **options)
        elif backbone is None:
            if "features" in self.head_options:
                raise TrainError("'features' is an option of a head on a backbone; AdapterOnly reads the spacepoints")
            self.head = AdapterOnly(task, d_model=ADAPTER_ONLY_WIDTH, **options)
        else:
            backbone.requires_grad_(False)
            self.features = self.head_options.get("features", PUBLISHED_FEATURES)
            n_features = n_feature_blocks(self.features, backbone.config.n_layers)
            self.head = make_head(task, backbone.config.d_model, n_features, **options)

    @classmethod
    def build(cls, task: str, backbone: Backbone | None = None, **head_options) -> Downstream:
        return cls(task, backbone, head_options)

    def train(self, mode: bool = True) -> Downstream:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: no dropout
        return self

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages trained in order (a multi-stage baseline's, else one)."""
        return tuple(getattr(self.head, "stages", ("train",)))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        if self.backbone is None:
            return self.head(features, mask)
        with torch.no_grad():
            feats = self.backbone.features(features, mask, kind=self.features)
        return self.head(feats, mask)

    def loss(self, outputs: dict, batch: dict, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The head's loss; class_weight (C,): the classification heads' class weights (None: plain cross entropy)."""
        if class_weight is None:
            return self.head.loss(outputs, batch)
        return self.head.loss(outputs, batch, class_weight=class_weight)

    def predict(self, outputs: dict, mask: torch.Tensor) -> torch.Tensor:
        return self.head.predict(outputs, mask)

    def config(self, origin: dict | None = None) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": "downstream",
            "task": self.task,
            "model": self.model,
            "backbone": None if self.backbone is None else self.backbone.config.as_dict(),
            "head": self.head_options,
            "origin": dict(origin or {}),
        }


def save_downstream(run: Path, model: Downstream, origin: dict) -> None:
    write_run(run, model.state_dict(), model.config(origin))


def load_downstream(run: str | Path, map_location: str | torch.device = "cpu") -> Downstream:
    """A downstream run folder (`fm4npp finetune`) as a model, its weights loaded exactly."""
    run = Path(run)
    path = run / CONFIG
    if not path.is_file() and (run / "training.json").is_file():
        raise RunError(
            f"{run}: fine-tuning has not validated yet, so there is no selected model; go on with "
            "`fm4npp finetune ... --resume`"
        )
    config = read_config(run, "downstream")
    task, head = config["task"], config["head"]
    if task not in TASKS:
        raise RunError(f"{path}: task {task!r} is not one of {', '.join(TASKS)}")
    if not isinstance(head, dict):
        raise RunError(f"{path}: 'head' must be an object of head options, not {type(head).__name__}")
    try:
        name = model_name(config.get("model"), config["backbone"])
    except TrainError as exc:
        raise RunError(f"{path}: {exc}") from exc
    if name in GRAPH_BASELINES:
        check_fields(head, baseline_class(name).OPTIONS, path, f"{name} option", required=False)
    else:
        check_fields(head, HEAD_OPTIONS[task], path, f"{task} head option", required=False)
    if config["backbone"] is None and "features" in head:
        raise RunError(
            f"{path}: head option 'features' with no backbone (AdapterOnly reads the spacepoints); remove it"
        )
    backbone = None if config["backbone"] is None else Backbone.from_config(backbone_config(config, path), path)
    try:
        model = Downstream(task, backbone, head, model=name)
    except ValueError as exc:  # sizes that do not fit together (a width not a multiple of the heads)
        raise RunError(f"{path}: the head options do not fit together ({exc})") from exc
    except TrainError as exc:
        raise RunError(f"{path}: {exc}") from exc
    load_state(model, load_tensors(run / WEIGHTS), run / WEIGHTS)
    return model.to(map_location)
