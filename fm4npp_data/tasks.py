"""The benchmark's downstream tasks, each defined once: its name, the predictions column and its type, the truth
column it is scored against, its classes and the published head's learning rate. The heads, `fm4npp finetune`,
`fm4npp predict`, the leaderboard, the command line's choices and the predictions schema read this table.

Torch-free (pyarrow only), so that the leaderboard and the command line's help start fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .labels import NOISE_CLASSES, PID_CLASSES


@dataclass(frozen=True)
class Task:
    """One downstream task.

    name: what commands call it (`--task`); column: its column in a predictions file, a list of `dtype` per event
    (one entry per spacepoint); truth: the labeled column it is scored against; classes: the class names of a
    classification (index = label), None for track finding; published_lr: the FM4NPP head's learning rate."""

    name: str
    column: str
    dtype: pa.DataType
    truth: str
    classes: tuple[str, ...] | None
    published_lr: float

    @property
    def field(self) -> pa.Field:
        """The task's field of the predictions schema."""
        return pa.field(self.column, pa.list_(self.dtype))

    @property
    def is_classification(self) -> bool:
        """Whether the task labels each spacepoint with one of `classes` (PID, noise), not with a track."""
        return self.classes is not None


TRACKING = Task("tracking", "track", pa.int64(), "track_id", None, 1e-4)
PID = Task("pid", "pid", pa.int8(), "pid", PID_CLASSES, 1e-3)
NOISE = Task("noise", "noise", pa.bool_(), "noise", NOISE_CLASSES, 1e-3)
#: The tasks by name, in the benchmark's order (tracking, pid, noise).
TASKS: dict[str, Task] = {task.name: task for task in (TRACKING, PID, NOISE)}
#: The tasks by their predictions column ("track", "pid", "noise").
BY_COLUMN: dict[str, Task] = {task.column: task for task in TASKS.values()}
#: The truth columns of the labeled configuration, in the tasks' order.
TRUTH_COLUMNS: tuple[str, ...] = tuple(task.truth for task in TASKS.values())


def task_named(name: str) -> Task:
    """The task `name`; ValueError naming the tasks for another name."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}") from None


__all__ = ["BY_COLUMN", "NOISE", "PID", "TASKS", "TRACKING", "TRUTH_COLUMNS", "Task", "task_named"]
