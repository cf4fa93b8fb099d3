"""`fm4npp-data display` and `fm4npp-data stats`: figures (the `plot` extra: matplotlib).

Inputs of any kind (ROOT files of every layout, shards, converted sets, datasets) are read by fm4npp_data.plots
through the project's layouts; errors (fm4npp_data.errors.Fm4nppError) take the group's path: `Error: ...`, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from fm4npp_data.errors import require
from fm4npp_data.integrity import is_repository


def _plots():
    require("matplotlib", "plot", "drawing figures")
    from fm4npp_data.plots import events as plots

    return plots


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--event", type=int, default=0, show_default=True, help="Event number (the input's `event`).")
@click.option(
    "--run-number",
    "run",
    type=int,
    default=None,
    help="The event's run number, where event numbers repeat across runs.",
)
@click.option(
    "--run",
    "run_alias",
    type=int,
    default=None,
    hidden=True,
    help="The old spelling of --run-number (--run names a run folder in fm4npp's commands).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
def display(path: Path, event: int, run: int | None, run_alias: int | None, out: Path) -> None:
    """Event display of one event of a ROOT file (any layout), a shard, a set or a dataset: x-y and r-z, by truth
    track where the input has truth; for a prepared event also its raster scan and neighbour targets
    (<out>_order.png)."""
    if run is not None and run_alias is not None and run != run_alias:
        raise click.UsageError(f"--run {run_alias} and --run-number {run} disagree; give --run-number alone")
    run = run if run is not None else run_alias
    plots = _plots()
    written = plots.display_event(path, event, out, run=run)
    click.echo(f"wrote {written}")
    if not plots.is_root(path):
        order = plots.display_serialization(path, event, out.with_name(out.stem + "_order.png"), run=run)
        if order is not None:
            click.echo(f"wrote {order}")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the PNGs.")
@click.option(
    "--compare",
    type=click.Choice(["release"]),
    default=None,
    help="Instead of the figures: set the inputs beside the TPCpp-10M release's published figures (spacepoints and "
    "tracks per event, class and noise fractions; of a repository, its labeled train split). Writes fidelity.png "
    "and fidelity.md (the table: ours, the release's, ours / release) and prints the table.",
)
def stats(paths: tuple[Path, ...], out: Path, compare: str | None) -> None:
    """Figures of ROOT files (or folders of them), shards, sets or datasets: energy vs momentum by species, an event
    display, an overview. Figures that need truth are skipped for inputs without it, each with a line saying why. Of a
    dataset repository (fm4npp-data build): event sizes and class ratios per split, energy vs momentum, an event by
    track, PID and noise. With --compare release: the inputs beside the release's published figures."""
    plots = _plots()
    from fm4npp_data.plots import dataset as dataset_plots

    if compare == "release":
        from fm4npp_data.plots import fidelity

        png, md, table = fidelity.write_fidelity(fidelity.read_fidelity(paths), out)
        click.echo(table, nl=False)
        click.echo(f"wrote {png}")
        click.echo(f"wrote {md}")
        return
    if len(paths) == 1 and is_repository(paths[0]):  # a dataset repository: per-split figures
        for png in dataset_plots.plot_repo(paths[0], out):
            click.echo(f"wrote {png}")
        return
    result = plots.plot_stats(paths, out)
    for png in result.written:
        click.echo(f"wrote {png}")
    for reason in result.skipped:
        click.echo(f"skipped {reason}")
