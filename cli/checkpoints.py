"""`fm4npp import-checkpoint`: a released FM4NPP backbone as a run folder of ours (fm4npp_models.checkpoints)."""

from __future__ import annotations

from pathlib import Path

import click
from fm4npp_cli.common import reported


@click.command("import-checkpoint")
@click.argument("published", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    metavar="RUN",
    type=click.Path(file_okay=False, path_type=Path),
    help="the run folder to write (config.json and model.safetensors)",
)
def import_checkpoint(published: Path, out: Path) -> None:
    """Import a released FM4NPP backbone (PUBLISHED, e.g. pp_nerf_m1_k30.ckpt) as the run folder RUN.

    The file is read with torch.load(weights_only=True): one that would need unpickling code is refused. The sizes are
    read off the tensor shapes; the model is then loaded by `Backbone.from_run(RUN)` or `--backbone RUN`.
    """
    from fm4npp_data.errors import require

    with reported():  # also when the command is called on its own, outside the `fm4npp` group
        require("torch", "models", "fm4npp import-checkpoint")
        from fm4npp_models.checkpoints.importing import import_checkpoint as import_published
        from fm4npp_models.checkpoints.published import RELEASE_TO_PAPER

        summary = import_published(published, out)
    config, size = summary["config"], summary["paper_size"]
    released = {paper: name for name, paper in RELEASE_TO_PAPER.items()}.get(size)
    trained = ", ".join(f"{key} {summary[key]:,}" for key in ("iters", "epoch") if summary[key] is not None)
    click.echo(f"Imported {published.name}" + (f" ({trained})" if trained else ""))
    click.echo(
        f"  width {config['d_model']}, {config['n_layers']} layers, d_state {config['d_state']}, "
        f"headdim {config['headdim']}, k {config['k']}: {summary['parameters']:,} parameters"
    )
    if size is None:
        click.echo("  paper size: none (not a size of the paper's ladder m1 .. m6)")
    else:
        note = f" (the release calls it {released})" if released and released != size else ""
        click.echo(f"  paper size: {size}{note}")
    click.echo(f"  written to {out} (config.json, model.safetensors)")
