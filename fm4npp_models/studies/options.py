"""The options of the studies with every default, torch-free (the command line reads its defaults here).

StudyOptions   the fine-tuning and prediction settings shared by the runs of data-efficiency and model-size
ProbeOptions   what the linear probe runs with
"""

from __future__ import annotations

from dataclasses import dataclass

from ..training.options import BATCH_TOKENS, DEFAULT_FEATURES, FinetuneOptions

MAX_ITER = 300  # LogisticRegression's iterations at most
MAP_STEPS = 400  # Adam steps of the probe's linear map


@dataclass
class StudyOptions:
    """The fine-tuning and prediction settings shared by every run of a study. lr None: the task's published rate;
    class_weights and features None: the library's defaults (passed on only when given)."""

    steps: int = FinetuneOptions.steps
    batch_tokens: int = BATCH_TOKENS
    lr: float | None = None
    val_every: int = FinetuneOptions.val_every
    queries: int | None = None
    class_weights: str | None = None
    features: str | None = None
    split: str = "test"
    device: str = "auto"


@dataclass
class ProbeOptions:
    """What the probe runs with: train events fitted on, the split scored (its first eval_events; None: all), the
    tasks (None: all), the batches and device of the backbone, the seed, the classifier's and the map's budgets."""

    events: int = 100
    split: str = "test"
    tasks: list[str] | None = None
    eval_events: int | None = None
    batch_tokens: int = BATCH_TOKENS
    device: str = "auto"
    seed: int = 0
    max_iter: int = MAX_ITER
    map_steps: int = MAP_STEPS
    features: str = DEFAULT_FEATURES  # what of the backbone is probed: as the heads read it (FEATURE_KINDS)
