"""Model size (`fm4npp study model-size`, the paper's Figure 6): backbones of several sizes pretrained with the same
budget (steps, batch tokens), each frozen under the downstream heads of the data-efficiency study's machinery at one
labeled count.

    model_size(REPO, ["tiny", "m1"], OUT, PretrainOptions(steps=2_000, k=10), ["pid"], None, 1, StudyOptions())

OUT/pretrain/SIZE holds each pretraining run (resumed from its last checkpoint when the study is run again),
OUT/results/pretrain-SIZE.json its figures once finished; the fine-tuning runs are those of
fm4npp_models.studies.data_efficiency (OUT/runs, OUT/predictions, OUT/results). Tables: model-size.csv (a row per
size and task: parameters, the pretraining validation loss and own-coordinates loss, the downstream figure's mean ±
std, pretraining seconds), model-size-runs.csv (a row per fine-tuning run), model-size.md, model-size.png (the
downstream figure against parameters, log x).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from fm4npp_data.errors import TrainError
from fm4npp_data.files import write_json

from ..pretrain import pretrain
from ..training.options import PretrainOptions
from .common import (
    HEADLINE,
    check_study_folder,
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
from .data_efficiency import COLUMNS, plan, run_grid, study_settings
from .options import StudyOptions

NAME = "model-size"
SIZE_COLUMNS = (
    "size",
    "parameters",
    "pretrain_steps",
    "val_loss",
    "own_loss",
    "pretrain_seconds",
    "task",
    "events",
    "metric",
    "mean",
    "std",
    "seeds",
)


def pretrain_one(size: str, data: Path, out: Path, options: PretrainOptions, echo=print) -> dict:
    """Pretrain `size` into OUT/pretrain/SIZE (skipped when OUT/results/pretrain-SIZE.json exists; a half-done run is
    resumed); its figures."""
    result_path = out / "results" / f"pretrain-{size}.json"
    done = read_result(result_path)
    if done is not None:
        echo(f"pretraining {size}: done before, skipped")
        return done
    folder = out / "pretrain" / size
    resume = (folder / "training.json").is_file()
    echo(f"pretraining {size}{' (resuming)' if resume else ''}: {options.steps} steps into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    s = pretrain(data, folder, replace(options, model=size), resume=resume, echo=lambda line: echo(f"    {line}"))
    if s["interrupted"]:
        raise TrainError(f"{folder}: pretraining was interrupted; run the study again to resume it")
    row = {
        "size": size,
        "run": str(folder),
        "parameters": s["parameters"],
        "pretrain_steps": s["step"],
        "val_loss": s["val_loss"],
        "own_loss": s["own_loss"],
        "best_val_loss": s["best_val_loss"],
        "pretrain_seconds": round(s["elapsed_s"], 2),
    }
    result_path.parent.mkdir(exist_ok=True)
    write_json(result_path, row)
    echo(f"pretraining {size}: validation loss {row['val_loss']:.5f} (own coordinates {row['own_loss']:.5f})")
    return row


def table_rows(pretrained: list[dict], rows: list[dict]) -> list[dict]:
    """A row per (size, task): the pretraining figures and the downstream headline's mean ± std over seeds."""
    out = []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    for p in pretrained:
        for task in tasks:
            mine = [r for r in rows if r["model"] == p["size"] and r["task"] == task]
            mean, std, n = mean_std(r["value"] for r in mine)
            out.append(
                {
                    **{k: p[k] for k in ("size", "parameters", "pretrain_steps", "val_loss", "own_loss")},
                    "pretrain_seconds": p["pretrain_seconds"],
                    "task": task,
                    "events": mine[0]["events"] if mine else None,
                    "metric": HEADLINE[task],
                    "mean": mean,
                    "std": std,
                    "seeds": n,
                }
            )
    return out


def markdown(table: list[dict], split: str, title: str) -> str:
    body = [
        [
            t["size"],
            f"{t['parameters']:,}",
            f"{t['val_loss']:.5f}",
            f"{t['own_loss']:.5f}",
            t["task"],
            t["events"],
            t["metric"],
            fmt_mean_std(t["mean"], t["std"], t["seeds"]),
            f"{t['pretrain_seconds']:.0f}",
        ]
        for t in table
    ]
    header = [
        "size",
        "parameters",
        "pretrain val loss",
        "own-coordinates loss",
        "task",
        "labeled events",
        "metric",
        f"mean ± std on {split} (seeds)",
        "pretrain s",
    ]
    return f"## {title}\n\n" + markdown_table(header, body)


def plot(table: list[dict], path: Path, title: str) -> Path:
    """One panel per task: the downstream figure (mean, ±1 std bars) against the backbone's parameters (log x)."""
    plt = pyplot()
    tasks = list(dict.fromkeys(t["task"] for t in table))
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(7, 5 * len(tasks)), 4.5), layout="constrained", squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        points = sorted((t["parameters"], t["mean"], t["std"], t["size"]) for t in table if t["task"] == task)
        points = [p for p in points if p[1] is not None]
        if points:
            x, y, s, names = zip(*points, strict=True)
            ax.errorbar(x, y, yerr=s, marker="o", capsize=3)
            for xi, yi, name in zip(x, y, names, strict=True):
                ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks([p[0] for p in points], [f"{p[0] / 1e6:.3g}M" for p in points])
        ax.minorticks_off()
        ax.set_xlabel("backbone parameters")
        ax.set_ylabel(HEADLINE[task].replace("_", " "))
        ax.set_title(task)
    fig.suptitle(title.replace("; ", "\n", 1) if len(title) > 60 * len(tasks) else title)
    return save_figure(fig, path)


def model_size(
    data: str | Path,
    sizes: list[str],
    out: str | Path,
    pretraining: PretrainOptions,
    tasks: list[str],
    events: int | None,
    seeds: int,
    options: StudyOptions,
    echo=print,
) -> dict:
    """The study (module docstring); a summary: the pretraining figures, the fine-tuning rows, the table, the
    outputs' paths and the markdown table."""
    data, out = Path(data), Path(out)
    check_study_folder(out, data)
    if len(set(sizes)) < len(sizes):
        raise TrainError(f"--sizes {','.join(sizes)} names a size twice; give each once")
    pretraining.check()
    settings = {**study_settings(data, options), "pretraining": asdict(replace(pretraining, model="(each size)"))}
    keep_settings(out, NAME, settings)
    echo(
        f"{NAME}: {len(sizes)} sizes pretrained {pretraining.steps} steps each, then {', '.join(tasks)} on "
        f"{'all' if events is None else events} labeled events x {seeds} seeds, in {out}"
    )
    pretrained = [pretrain_one(size, data, out, pretraining, echo) for size in sizes]
    runs = plan({p["size"]: Path(p["run"]) for p in pretrained}, tasks, [events], seeds, adapter_only=False)
    rows = run_grid(runs, data, out, options, echo)
    table = table_rows(pretrained, rows)
    counts = ", ".join(sorted({f"{r['train_events']:,}" for r in rows}))
    title = (
        f"Model size: {pretraining.steps} pretraining steps each; heads on {counts} labeled events, "
        f"scored on {options.split}"
    )
    text = markdown(table, options.split, title)
    paths = {
        "csv": str(write_csv(out / f"{NAME}.csv", table, SIZE_COLUMNS)),
        "runs_csv": str(write_csv(out / f"{NAME}-runs.csv", rows, COLUMNS)),
        "markdown": str(write_text(out / f"{NAME}.md", text)),
        "plot": str(plot(table, out / f"{NAME}.png", title)),
    }
    return {"pretrained": pretrained, "rows": rows, "sizes": table, **paths, "table": text}


__all__ = ["model_size", "pretrain_one", "table_rows"]
