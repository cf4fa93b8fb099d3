"""What a training run shows: RUN/log.csv (`Log`, one row per step, validation rows filled at validation;
`read_log`), RUN/loss.png (`plot_log`) and the progress bar on a terminal (`Ticker`, `is_terminal`).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from fm4npp_data.errors import TrainError

#: The files of a run folder: the log of every step and its plot.
LOG = "log.csv"
PLOT = "loss.png"
LOG_FIELDS = ["step", "epoch", "events", "tokens", "lr", "loss", "grad_norm", "val_loss", "tokens_per_s", "elapsed_s"]


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
        raise TrainError(
            f"{path}: not a training log of fm4npp ({type(exc).__name__}: {exc}); correct it, or remove "
            "it (its rows are then lost), and resume again"
        ) from exc


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def read_log(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_log(run: Path, baselines: dict[str, float | None] | None = None, title: str = "") -> Path | None:
    """RUN/loss.png: training loss (and its running mean) and validation loss against step, and a dashed line for
    each baseline {label: validation loss} given; None without matplotlib."""
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
    running = [
        sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1]) for i in range(len(loss))
    ]
    ax.plot(step, running, color="C0", lw=1.5, label=f"training loss (mean of {window})")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="C1", ms=4, label="validation loss")
    for i, (label, value) in enumerate((baselines or {}).items()):
        if value is not None:
            ax.axhline(value, color=f"C{3 + i}", ls="--", lw=1, label=label)
    if all(v > 0 for v in [*loss, *(v for _, v in val)]):
        ax.set_yscale("log")  # a loss that reaches 0 (a baseline's stage with no edge to score) stays linear
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(frameon=False)
    out = run / PLOT
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


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
            self.bar = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=True,
                console=console,
            )
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


def is_terminal() -> bool:
    return sys.stderr.isatty()
