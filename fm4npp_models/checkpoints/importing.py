"""`fm4npp import-checkpoint`: a released FM4NPP checkpoint (`published`) written as a run folder of ours (`run`:
config.json + model.safetensors), after the weights have been loaded into our Backbone exactly."""

from __future__ import annotations

from pathlib import Path

from fm4npp_data.files import sha256_file

from ..model.backbone import Backbone, count_parameters
from .published import paper_size, published_weights, read_checkpoint
from .run import check_new_folder, load_state, new_run_folder, save_run


def import_checkpoint(path, out) -> dict:
    """Write a released checkpoint as a run folder of ours; returns a summary of what it holds. A run, or any file of
    the user's, is never replaced: `out` must be a new or empty folder."""
    path = Path(path)
    check_new_folder(out)
    checkpoint = read_checkpoint(path)
    config, state = published_weights(checkpoint.state, path)
    model = Backbone(config)
    load_state(model, state, path)
    parameters = count_parameters(model)
    origin = {
        "published_checkpoint": path.name,
        "sha256": sha256_file(path),
        "iters": checkpoint.iters,
        "epoch": checkpoint.epoch,
        "parameters": parameters,
        "paper_size": paper_size(model.config),
    }
    with new_run_folder(out):
        save_run(out, model, origin)
    return {
        "config": model.config.as_dict(),
        "parameters": parameters,
        "iters": checkpoint.iters,
        "epoch": checkpoint.epoch,
        "paper_size": origin["paper_size"],
        "sha256": origin["sha256"],
        "run": str(out),
    }
