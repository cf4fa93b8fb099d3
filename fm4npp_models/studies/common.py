"""What the studies share: their output folder (checked, and its settings kept in study.json), atomic writes of the
tables and figures, mean ± std, markdown tables, and the figures of one predictions file.

    check_study_folder(out, data)              TrainError for a folder inside a dataset repository or a run
    keep_settings(out, "data-efficiency", {...})  study.json: a re-run with other settings is refused
    write_text(out / "table.md", text)         atomic (a temporary name, renamed)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from fm4npp_data.errors import TrainError
from fm4npp_data.evaluation.leaderboard import score
from fm4npp_data.files import partial_path, write_json
from fm4npp_data.tasks import TASKS

from ..checkpoints.run import check_output_place, folder_contents, is_run_folder

SETTINGS = "study.json"
#: The model name of the baseline without a backbone.
ADAPTER_ONLY = "AdapterOnly"
#: Per task: the figure the studies plot (the paper's: ARI for track finding, macro recall for PID and noise) and the
#: others they record.
HEADLINE = {name: "ari" if not task.is_classification else "macro_recall" for name, task in TASKS.items()}
RECORDED = {
    name: ("ari", "efficiency", "purity") if not task.is_classification else ("macro_recall", "accuracy")
    for name, task in TASKS.items()
}


def check_study_folder(out: Path, data: str | Path) -> None:
    """TrainError when `out` is a file, a run folder, or lies inside a dataset repository or a run folder."""
    out = Path(out)
    check_output_place(out, data, "--out", TrainError)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file; give a folder for the study")
    if is_run_folder(out):
        raise TrainError(f"--out {out} is a run folder; a study writes its own folder: give another --out")


def keep_settings(out: Path, study: str, settings: dict) -> None:
    """Write OUT/study.json ({"study": study, "settings": settings}) or check it against this run's: a study folder
    holds runs of one set of settings, so a re-run with other settings is refused (TrainError naming the file). A
    new study starts only in a new or empty folder."""
    path = out / SETTINGS
    record = json.loads(json.dumps({"study": study, "settings": settings}))  # as stored (tuples become lists)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainError(
                f"{path}: unreadable ({exc}); remove it and its study folder, or give another --out"
            ) from exc
        if saved != record:
            differ = [
                f"{k}: {saved.get('settings', {}).get(k)!r} there, {v!r} now"
                for k, v in settings.items()
                if saved.get("settings", {}).get(k) != record["settings"][k]
            ] or [f"study: {saved.get('study')!r} there, {study!r} now"]
            raise TrainError(
                f"{path}: the study in {out} was run with other settings ({'; '.join(differ)}); run it with the "
                "same settings to go on, or give another --out"
            )
        return
    held = folder_contents(out)
    if held:
        raise TrainError(
            f"--out {out} holds files ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}) and no {SETTINGS}: a "
            "study starts in a new or empty folder; give another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def read_result(path: Path) -> dict | None:
    """A finished run's result JSON (None when there is none); TrainError when it cannot be read."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path}: unreadable ({exc}); remove it and run the study again (that run is redone)") from exc


def write_text(path: Path, text: str) -> Path:
    """Write `text` under a temporary name, then rename it into place."""
    tmp = partial_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    """The rows as CSV with `columns` (a missing or None value is an empty cell), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return write_text(path, buffer.getvalue())


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as PNG under a temporary name, renamed into place; the figure is closed."""
    import matplotlib.pyplot as plt

    tmp = partial_path(path)
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend; MissingExtraError naming the extra without matplotlib."""
    from fm4npp_data.errors import require

    matplotlib = require("matplotlib", "plot", "the studies' figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """The mean and sample standard deviation (0 for one value) of the values that are not None; their number."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return mean, std, len(xs)


def fmt_mean_std(mean: float | None, std: float | None, n: int) -> str:
    """ "0.4210 ± 0.0123 (3)": mean ± std over n values; "-" without any."""
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f} ({n})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table; None cells are "-"."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("-" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figures(predictions: Path, data: str | Path, split: str, task: str) -> dict[str, float | None]:
    """The recorded figures (RECORDED[task]) of one predictions file scored as the leaderboard scores it."""
    result = score(predictions, data, split)[task]
    return {name: result[name] for name in RECORDED[task]}
