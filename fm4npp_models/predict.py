"""Prediction (`fm4npp predict`): each downstream run (fm4npp_models.adapters.downstream) over a labeled split in the
loader's order, the labels of every event written in the event's stored spacepoint order (the loader's `index`): the
predictions file of the leaderboard, with `track`, `pid` and `noise` columns for the tasks of the runs given.

    predict([TRACKING_RUN, PID_RUN], REPO, "test", "PREDICTIONS.parquet")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fm4npp_data.errors import DatasetError, TrainError
from fm4npp_data.files import partial_path
from fm4npp_data.integrity import WRITE_OPTIONS
from fm4npp_data.schema import PREDICTIONS_SCHEMA
from fm4npp_data.tasks import BY_COLUMN, TASKS

from .adapters.downstream import LOADER_K, Downstream, load_downstream
from .checkpoints.run import check_output_place
from .training import log
from .training.distributed import Dist, device_of, to_device
from .training.options import PredictOptions


@torch.no_grad()
def predict_split(
    model: Downstream,
    data: str | Path,
    split: str,
    batch_tokens: int = PredictOptions.batch_tokens,
    device: str = PredictOptions.device,
    live: bool = False,
) -> dict[tuple[int, int], np.ndarray]:
    """{(run, event): labels in the event's stored spacepoint order} over the labeled `split` of `data`; live: a
    progress bar (events) on the terminal."""
    from fm4npp_data.loader import make_loader

    dev = device_of(device, Dist())
    model = model.to(dev).eval()
    try:
        loader = make_loader(data, "labeled", split, batch_tokens=batch_tokens, shuffle=False, k=LOADER_K)
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    out = {}
    with log.Ticker(loader.num_events, 0, live, print, label=f"predicting {model.task}", stderr=True) as bar:
        for batch in loader:
            out.update(_predict_batch(model, to_device(batch, dev)))
            bar.advance(len(batch["run"]))
    return out


def _predict_batch(model: Downstream, batch: dict) -> dict[tuple[int, int], np.ndarray]:
    """{(run, event): labels in the stored order} of one batch (on the model's device)."""
    labels = model.predict(model(batch["features"], batch["mask"]), batch["mask"]).cpu().numpy()
    index = batch["index"].cpu().numpy()
    lengths = batch["mask"].sum(1).cpu().numpy()
    out = {}
    for b, (run, event) in enumerate(zip(batch["run"].tolist(), batch["event"].tolist(), strict=True)):
        n = int(lengths[b])
        stored = np.empty(n, np.int64)
        stored[index[b, :n]] = labels[b, :n]
        out[(run, event)] = stored
    return out


def predict(
    runs: list[str | Path],
    data: str | Path,
    split: str,
    out: str | Path,
    batch_tokens: int = PredictOptions.batch_tokens,
    device: str = PredictOptions.device,
    echo=print,
) -> dict:
    """Write the predictions file (run, event and a column per task of `runs`) for the labeled `split` of `data`:
    never inside a dataset repository or a run folder, never over a file that is not a predictions file; written
    under a temporary name and renamed. A progress bar on a terminal."""
    out = Path(out)
    check_predictions_out(out, data)
    models = [(run, load_downstream(run)) for run in runs]  # every run checked before any is run
    tasks = [model.task for _, model in models]
    if len(set(tasks)) < len(tasks):
        raise TrainError(f"two runs predict {max(tasks, key=tasks.count)}: give one run per task")
    columns: dict[str, dict] = {}
    for run, model in models:
        echo(f"predicting {model.task} with {run} on {split} ...")
        columns[TASKS[model.task].column] = predict_split(model, data, split, batch_tokens, device, log.is_terminal())
    table = predictions_table(columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    try:
        pq.write_table(table, tmp, **WRITE_OPTIONS)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TrainError(
            f"{out}: cannot write the predictions ({exc.strerror or exc}); free space or check the "
            "folder's permissions, then run again"
        ) from exc
    return {"out": str(out), "events": table.num_rows, "columns": table.column_names[2:]}


def predictions_table(columns: dict[str, dict[tuple[int, int], np.ndarray]]) -> pa.Table:
    """The predictions file's table from {task column: {(run, event): labels}}: PREDICTIONS_SCHEMA's fields (run,
    event and the columns given), one row per event in (run, event) order."""
    keys = sorted(next(iter(columns.values())))
    values = {"run": [r for r, _ in keys], "event": [e for _, e in keys]}
    for name, labels in columns.items():
        cast = bool if pa.types.is_boolean(BY_COLUMN[name].dtype) else None  # 0/1 labels as booleans
        values[name] = [labels[key].astype(cast) if cast else labels[key] for key in keys]
    schema = pa.schema([field for field in PREDICTIONS_SCHEMA if field.name in values])
    return pa.Table.from_arrays([pa.array(values[field.name], field.type) for field in schema], schema=schema)


def check_predictions_out(out: Path, data: str | Path) -> None:
    """TrainError when the predictions file `out` would be written inside a dataset repository (the --data folder,
    or one with a splits.json above it) or a run folder, or over a file that is not a predictions file."""
    check_output_place(out, data, "--out", TrainError)
    if out.is_dir():
        raise TrainError(f"--out {out} is a folder; give the predictions file's name (PREDICTIONS.parquet)")
    if out.exists() and not _is_predictions(out):
        raise TrainError(
            f"--out {out} exists and is not a predictions file of fm4npp predict: it is not replaced; "
            "give another --out"
        )


def _is_predictions(path: Path) -> bool:
    """Whether `path` is a Parquet file with the columns of a predictions file (run, event and task columns)."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return False
    return names[:2] == ["run", "event"] and len(names) > 2 and set(names[2:]) <= set(BY_COLUMN)
