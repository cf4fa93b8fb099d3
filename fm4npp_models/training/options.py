"""The options of `fm4npp pretrain`, `fm4npp finetune` and `fm4npp predict`, with every default, and their checks.

Torch-free, so that the command line reads its defaults here (`--help` needs no torch) and nowhere repeats them:

    TrainOptions       the loop's (fm4npp_models.training.loop.fit): steps, schedule, clipping, validation, seed, device
    PretrainOptions    TrainOptions plus the backbone, k, the batches and the loader (fm4npp_models.pretrain)
    FinetuneOptions    TrainOptions with the published heads' settings (fm4npp_models.finetune)
    PredictOptions     the batches and the device of prediction (fm4npp_models.predict)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fm4npp_data.errors import TrainError

from ..model.config import PHI_CONVENTIONS

#: Padded spacepoints (events x longest event) per batch and process: pretraining's, fine-tuning's and prediction's.
BATCH_TOKENS = 16_384
#: How fine-tuning weighs the classes of PID and noise in the cross entropy (fm4npp_models.training.class_weights):
#: "balanced", inverse frequency in the training labels; "capped", the same with no weight above
#: class_weights.CAP; "none", plain cross entropy (the published heads).
CLASS_WEIGHTS = ("balanced", "capped", "none")
#: What a head on the backbone reads when --features is not given: one of fm4npp_models.model.config.FEATURE_KINDS.
#: The residual stream x_0..x_L measured best on the labeled validation split (README "Studies and the reference
#: backbone"); the published heads read z ("z").
DEFAULT_FEATURES = "x"
#: What `fm4npp finetune --model` trains: "fm", a head on the frozen --backbone; "adapter-only", the same head on the
#: raw spacepoints (no backbone); or a graph baseline (fm4npp_models.baselines.GRAPH_BASELINES).
MODELS = ("fm", "adapter-only", "exatrkx", "eggnet", "gnn")
FM, ADAPTER_ONLY = MODELS[:2]
#: How summaries and plots name the models (the paper's names).
MODEL_NAMES = {"fm": "FM", "adapter-only": "AdapterOnly", "exatrkx": "Exa.TrkX", "eggnet": "EggNet", "gnn": "SAGEConv"}


@dataclass
class TrainOptions:
    steps: int = 1000
    lr: float = 2e-4
    warmup: int | None = None  # None: steps // 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip: float = 0.1
    val_every: int = 100
    checkpoint_every: int | None = None  # None: val_every
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        for name in ("steps", "val_every"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainError(f"--lr must be a positive finite number, not {self.lr}")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise TrainError(f"--warmup must be between 0 and --steps ({self.steps}), not {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:  # NaN fails too
            raise TrainError(f"min_lr_ratio must be in [0, 1], not {self.min_lr_ratio}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise TrainError(f"--clip must be positive, not {self.clip} (the gradient norm is clipped to it)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise TrainError(f"--weight-decay must be >= 0, not {self.weight_decay}")

    @property
    def warmup_steps(self) -> int:
        return self.steps // 10 if self.warmup is None else self.warmup

    @property
    def checkpoint_steps(self) -> int:
        return self.checkpoint_every or self.val_every


@dataclass
class PretrainOptions(TrainOptions):
    """TrainOptions plus the model, the data and the batches. The defaults suit the CPU demo (`tiny`); the paper's
    m1..m6 runs used lr 2e-4 (tuned on m3, moved to the other widths by μP), 100k steps and 256 events a batch."""

    model: str = "tiny"
    k: int = 10
    batch_tokens: int = BATCH_TOKENS
    dropout: float = 0.1  # the published pretraining configs
    mup: bool = True
    workers: int = 0
    phi: str = "circular"  # fm4npp_models.model.phi (README "The phi seam"): the published backbones are "wrapped"

    def check(self) -> None:
        super().check()
        if self.phi not in PHI_CONVENTIONS:
            raise TrainError(f"--phi must be one of {', '.join(PHI_CONVENTIONS)}, not {self.phi!r}")
        for name in ("k", "batch_tokens"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.dropout < 1:  # NaN fails too
            raise TrainError(f"--dropout must be in [0, 1), not {self.dropout}")
        if self.workers < 0:
            raise TrainError(f"--workers must be >= 0, not {self.workers}")


@dataclass
class FinetuneOptions(TrainOptions):
    """TrainOptions with the published heads' settings; lr None: the task's published rate (Task.published_lr).
    class_weights "balanced" departs from the published heads (plain cross entropy, "none")."""

    lr: float | None = None
    weight_decay: float = 1e-4
    clip: float = 1.0
    batch_tokens: int = BATCH_TOKENS
    train_events: int | None = None
    workers: int = 0
    class_weights: str = "balanced"  # one of CLASS_WEIGHTS; PID and noise only (tracking: "none")

    def check(self) -> None:
        if self.class_weights not in CLASS_WEIGHTS:
            raise TrainError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}, not {self.class_weights!r}")
        if self.train_events is not None and self.train_events < 1:
            raise TrainError(f"--train-events must be at least 1, not {self.train_events}")
        if self.lr is None:
            raise TrainError("no learning rate: finetune sets the task's published one (Task.published_lr)")
        super().check()


@dataclass
class PredictOptions:
    """What `fm4npp predict` runs with besides its runs, data, split and file."""

    batch_tokens: int = BATCH_TOKENS
    device: str = "auto"
