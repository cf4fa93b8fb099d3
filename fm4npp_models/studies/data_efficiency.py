"""Data efficiency (`fm4npp study data-efficiency`, the paper's Figure 7): each downstream head trained on the first
n labeled training events, for several n and seeds, on each frozen backbone given and as the AdapterOnly baseline,
predicted and scored on a labeled split.

    data_efficiency(REPO, {"m1": RUN}, OUT, [30, 100, None], seeds=3, tasks=["pid"], options=StudyOptions(steps=500))

OUT/ holds study.json (the settings: a re-run with other settings is refused), runs/NAME (the fine-tuning runs),
predictions/NAME.parquet, results/NAME.json (one per finished run, written last and atomically: a re-run skips the
runs that have one and resumes a half-done run folder from its last checkpoint), and the tables and figure:
data-efficiency.csv (a row per run), data-efficiency.md (mean ± std over seeds, and each backbone's ratio to
AdapterOnly) and data-efficiency.png. NAME is MODEL-TASK-nN-sSEED (N "all" for the whole train split).

`run_grid` (train, predict and score a list of `Run`s, resumably) is what `fm4npp study model-size` reuses.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fm4npp_data.errors import TrainError
from fm4npp_data.files import write_json
from fm4npp_data.tasks import TASKS, TRACKING

from ..finetune import finetune
from ..predict import predict
from ..training.options import FinetuneOptions
from .common import (
    ADAPTER_ONLY,
    HEADLINE,
    RECORDED,
    check_study_folder,
    figures,
    fmt_mean_std,
    keep_settings,
    markdown_table,
    mean_std,
    pyplot,
    read_result,
    save_figure,
    write_csv,
    write_text,
)
from .options import StudyOptions

NAME = "data-efficiency"
#: The CSV's columns: a row per run.
COLUMNS = (
    "model",
    "task",
    "events",
    "train_events",
    "seed",
    "metric",
    "value",
    "ari",
    "efficiency",
    "purity",
    "macro_recall",
    "accuracy",
    "train_seconds",
    "steps",
    "best_val_loss",
    "run",
)


@dataclass(frozen=True)
class Run:
    """One cell of the grid: a model (a backbone run, or None for AdapterOnly), a task, a labeled count, a seed."""

    model: str
    backbone: Path | None
    task: str
    events: int | None  # None: the whole train split
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.task}-n{'all' if self.events is None else self.events}-s{self.seed}"


def plan(
    backbones: dict[str, Path], tasks: list[str], events: list[int | None], seeds: int, adapter_only: bool = True
) -> list[Run]:
    """Every (task, events, seed, model) cell, the backbones in the order given and AdapterOnly last."""
    models = [*backbones.items(), *([(ADAPTER_ONLY, None)] if adapter_only else [])]
    return [
        Run(model, None if backbone is None else Path(backbone), task, n, seed)
        for task in tasks
        for n in events
        for seed in range(seeds)
        for model, backbone in models
    ]


def model_names(backbones: list[str | Path]) -> dict[str, Path]:
    """{name: run folder}: each backbone named by its folder's name; TrainError when two share one or one is named
    like the baseline."""
    named: dict[str, Path] = {}
    for run in map(Path, backbones):
        name = run.resolve().name
        if name == ADAPTER_ONLY or name in named:
            other = "the AdapterOnly baseline" if name == ADAPTER_ONLY else str(named[name])
            raise TrainError(
                f"--backbone {run}: its folder's name {name!r} is also {other}'s; the study names models by their "
                "folder: rename or link one of them"
            )
        named[name] = run
    return named


def check_grid(runs: list[Run], options: StudyOptions) -> None:
    """Options that apply to none of the tasks are refused before anything runs (each run takes those of its task)."""
    if options.queries is not None and all(TASKS[r.task].is_classification for r in runs):
        raise TrainError(f"--queries is an option of the track finder: give it with the {TRACKING.name} task")
    if options.class_weights is not None and not any(TASKS[r.task].is_classification for r in runs):
        raise TrainError("--class-weights is an option of the PID and noise heads: give it with one of those tasks")


def _finetune_options(run: Run, options: StudyOptions) -> FinetuneOptions:
    given = {} if options.class_weights is None else {"class_weights": options.class_weights}  # else the default
    return FinetuneOptions(
        steps=options.steps,
        lr=options.lr,
        val_every=min(options.val_every, options.steps),
        seed=run.seed,
        device=options.device,
        batch_tokens=options.batch_tokens,
        train_events=run.events,
        **given,
    )


def _head_options(run: Run, options: StudyOptions) -> dict:
    head = {}
    if options.queries is not None and not TASKS[run.task].is_classification:
        head["n_queries"] = options.queries
    if options.features is not None and run.backbone is not None:  # AdapterOnly reads the spacepoints
        head["features"] = options.features
    return head


def run_one(run: Run, data: Path, out: Path, options: StudyOptions, echo=print) -> tuple[dict, bool]:
    """Train, predict and score one run in OUT (skipped when OUT/results/NAME.json exists); (its row, whether it
    was done now)."""
    result_path = out / "results" / f"{run.name}.json"
    done = read_result(result_path)
    if done is not None:
        return done, False
    folder = out / "runs" / run.name
    resume = (folder / "training.json").is_file()
    started = time.monotonic()
    summary = finetune(
        run.task,
        data,
        folder,
        run.backbone,
        _finetune_options(run, options),
        head_options=_head_options(run, options),
        resume=resume,
        echo=lambda line: echo(f"    {line}"),
    )
    if summary["interrupted"]:
        raise TrainError(f"{folder}: fine-tuning was interrupted; run the study again to resume it")
    (out / "predictions").mkdir(exist_ok=True)
    predictions = out / "predictions" / f"{run.name}.parquet"
    predict([folder], data, options.split, predictions, options.batch_tokens, options.device, echo=lambda *_: None)
    values = figures(predictions, data, options.split, run.task)
    row = {
        "model": run.model,
        "backbone": None if run.backbone is None else str(run.backbone),
        "task": run.task,
        "events": "all" if run.events is None else run.events,
        "train_events": summary["train_events"],
        "seed": run.seed,
        "metric": HEADLINE[run.task],
        "value": values[HEADLINE[run.task]],
        **values,
        "train_seconds": round(summary["elapsed_s"], 2),
        "wall_seconds": round(time.monotonic() - started, 2),
        "steps": summary["step"],
        "best_val_loss": summary["best_val_loss"],
        "split": options.split,
        "run": str(folder),
        "predictions": str(predictions),
        "resumed": resume,
    }
    result_path.parent.mkdir(exist_ok=True)
    write_json(result_path, row)  # last: the run counts as finished only now
    return row, True


def run_grid(runs: list[Run], data: Path, out: Path, options: StudyOptions, echo=print) -> list[dict]:
    """Every run of the grid (finished ones skipped), with a line per run; their rows in the grid's order."""
    rows = []
    for i, run in enumerate(runs, 1):
        where = f"[{i}/{len(runs)}] {run.name}"
        if (out / "results" / f"{run.name}.json").is_file():
            echo(f"{where}: done before, skipped")
        else:
            echo(f"{where}: training{' (resuming)' if (out / 'runs' / run.name / 'training.json').is_file() else ''}")
        row, now = run_one(run, data, out, options, echo)
        if now:
            echo(f"{where}: {row['metric']} {_fmt(row['value'])} in {row['wall_seconds']:.0f} s")
        rows.append(row)
    return rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean ± std of the headline figure over seeds per (task, events, model), in the rows' first-seen order, with
    the mean labeled count (the x of the figure) and, for backbones, the ratio of their mean to AdapterOnly's."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], str(row["events"]), row["model"]), []).append(row)
    out = []
    for (task, events, model), members in groups.items():
        mean, std, n = mean_std(r["value"] for r in members)
        out.append(
            {
                "task": task,
                "events": events,
                "train_events": sum(r["train_events"] for r in members) / len(members),
                "model": model,
                "metric": HEADLINE[task],
                "mean": mean,
                "std": std,
                "n": n,
                "train_seconds": sum(r["train_seconds"] for r in members) / len(members),
            }
        )
    baseline = {(g["task"], g["events"]): g["mean"] for g in out if g["model"] == ADAPTER_ONLY}
    for g in out:
        ao = baseline.get((g["task"], g["events"]))
        g["ratio_to_adapter_only"] = (
            g["mean"] / ao if g["model"] != ADAPTER_ONLY and g["mean"] is not None and ao else None
        )
    return out


def markdown(groups: list[dict], split: str, title: str = "Data efficiency") -> str:
    """The study's table: a row per (task, labeled events, model)."""
    body = [
        [
            g["task"],
            g["events"],
            f"{g['train_events']:,.0f}",
            g["model"],
            g["metric"],
            fmt_mean_std(g["mean"], g["std"], g["n"]),
            None if g["ratio_to_adapter_only"] is None else f"{g['ratio_to_adapter_only']:.2f}x",
            f"{g['train_seconds']:.0f}",
        ]
        for g in groups
    ]
    header = ["task", "events", "labeled events", "model", "metric", f"mean ± std on {split} (seeds)", "FM / AO", "s"]
    return f"## {title}\n\n" + markdown_table(header, body)


def plot(groups: list[dict], path: Path, title: str) -> Path:
    """One panel per task: the headline figure against labeled events (log x), a mean line and a ±1 std band per
    model, backbones solid and AdapterOnly dashed."""
    plt = pyplot()
    tasks = list(dict.fromkeys(g["task"] for g in groups))
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(7, 5 * len(tasks)), 4.5), layout="constrained", squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [g for g in groups if g["task"] == task and g["mean"] is not None]
        for i, model in enumerate(dict.fromkeys(g["model"] for g in mine)):
            points = sorted((g["train_events"], g["mean"], g["std"]) for g in mine if g["model"] == model)
            x, y, s = (list(v) for v in zip(*points, strict=True))
            baseline = model == ADAPTER_ONLY
            color = "0.3" if baseline else f"C{i}"
            ax.plot(x, y, "--" if baseline else "-", marker="o", ms=3, color=color, label=model)
            ax.fill_between(
                x,
                [a - b for a, b in zip(y, s, strict=True)],
                [a + b for a, b in zip(y, s, strict=True)],
                color=color,
                alpha=0.15,
                lw=0,
            )
        ax.set_xscale("log")
        ticks = sorted({g["train_events"] for g in mine})
        ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labeled training events")
        ax.set_ylabel(HEADLINE[task].replace("_", " "))
        ax.set_title(task)
        ax.legend(frameon=False)
    fig.suptitle(title.replace("; ", "\n", 1) if len(title) > 60 * len(tasks) else title)
    return save_figure(fig, path)


def write_outputs(rows: list[dict], groups: list[dict], out: Path, name: str, title: str, split: str) -> dict:
    """OUT/NAME.csv, NAME.md and NAME.png; their paths."""
    return {
        "csv": str(write_csv(out / f"{name}.csv", rows, COLUMNS)),
        "markdown": str(write_text(out / f"{name}.md", markdown(groups, split, title))),
        "plot": str(plot(groups, out / f"{name}.png", title)),
    }


def study_settings(data: Path, options: StudyOptions) -> dict:
    """What every run of a study folder shares (study.json): the data and the fine-tuning settings."""
    return {"data": str(Path(data).resolve()), **asdict(options)}


def data_efficiency(
    data: str | Path,
    backbones: list[str | Path],
    out: str | Path,
    events: list[int | None],
    seeds: int,
    tasks: list[str],
    options: StudyOptions,
    echo=print,
) -> dict:
    """The study (module docstring); a summary: rows (one per run), groups (mean ± std), the outputs' paths and the
    markdown table."""
    data, out = Path(data), Path(out)
    check_study_folder(out, data)
    named = model_names(backbones)
    runs = plan(named, tasks, events, seeds)
    check_grid(runs, options)
    keep_settings(out, NAME, study_settings(data, options))
    echo(
        f"{NAME}: {len(runs)} runs ({len(named)} backbones + AdapterOnly, {len(tasks)} tasks, {len(events)} "
        f"labeled counts, {seeds} seeds) in {out}"
    )
    rows = run_grid(runs, data, out, options, echo)
    groups = aggregate(rows)
    sizes = ", ".join(sorted({f"{g['train_events']:,.0f}" for g in groups}, key=lambda s: float(s.replace(",", ""))))
    title = f"Data efficiency on {options.split} (labeled training events: {sizes}; {seeds} seeds)"
    paths = write_outputs(rows, groups, out, NAME, title, options.split)
    return {"rows": rows, "groups": groups, **paths, "table": markdown(groups, options.split, title)}


__all__ = ["RECORDED", "Run", "StudyOptions", "aggregate", "data_efficiency", "plan", "run_grid"]
