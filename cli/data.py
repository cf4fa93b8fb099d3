"""`fm4npp-data`: data commands. Thin: parse, call fm4npp_data, print."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fm4npp")
def main() -> None:
    """fm4npp data toolkit: simulate, convert and prepare sPHENIX TPC data."""


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


@main.command()
@click.option("--events", "n_events", type=int, required=True, help="Number of p+p collisions to simulate.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New (or empty) output directory.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (non-negative).")
@click.option(
    "--layout",
    default="svtx-evaluator",
    show_default=True,
    help="ROOT layout to write: svtx-evaluator (with truth) or trkr-ntuplizer (recorded-data layout, no truth).",
)
@click.option("--events-per-file", type=int, default=1000, show_default=True, help="Events per ROOT file.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes.")
def simulate(n_events: int, out: Path, seed: int, layout: str, events_per_file: int, workers: int) -> None:
    """Simulate p+p collisions at 200 GeV in the sPHENIX TPC and write ROOT files in the sPHENIX layouts."""
    from fm4npp_data.labels import PID_CLASSES
    from fm4npp_data.simulation import SimulationError
    from fm4npp_data.simulation import simulate as run

    columns = (
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("simulate", total=max(n_events, 0))
        try:
            summary = run(
                n_events, out, seed=seed, layout=layout, events_per_file=events_per_file, workers=workers,
                progress=lambda n: bar.advance(task, n),
            )  # fmt: skip
        except SimulationError as error:
            _fail(str(error))
    table = Table(title=f"fm4npp-data simulate: {summary.out}", show_header=False)
    table.add_row("events", f"{summary.events}")
    table.add_row(
        "files",
        f"{len(summary.files)} ({summary.layout}, {sum(f.bytes for f in summary.files) / 1e6:.1f} MB)",
    )
    table.add_row("TPC spacepoints", f"{summary.spacepoints} ({summary.spacepoints / summary.events:.0f} per event)")
    table.add_row("silicon clusters", f"{sum(f.silicon_clusters for f in summary.files)}")
    table.add_row("tracks (particles with TPC spacepoints)", f"{summary.tracks / summary.events:.1f} per event")
    fractions = summary.class_fractions()
    table.add_row("classes (TPC spacepoints)", ", ".join(f"{k} {fractions[k]:.1%}" for k in PID_CLASSES))
    table.add_row("noise (truth p_T < 60 MeV/c)", f"{fractions['noise']:.1%}")
    table.add_row("time", f"{summary.seconds:.1f} s ({summary.events / summary.seconds:.0f} events/s)")
    Console().print(table)


def _root_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.root")) if path.is_dir() else [path])
    if not files:
        _fail(f"no ROOT files found in {', '.join(map(str, paths))}")
    return files


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--event", type=int, default=0, show_default=True, help="Event number (the file's `event` column).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
def display(path: Path, event: int, out: Path) -> None:
    """Event display of one event of a ROOT file: x-y and r-z views of its TPC spacepoints by truth track."""
    from fm4npp_data.plots import display_event

    try:
        written = display_event(path, event, out)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    click.echo(f"wrote {written}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the PNGs.")
def stats(paths: tuple[Path, ...], out: Path) -> None:
    """Distributions of simulated ROOT files: energy vs momentum by species, an event display, an overview."""
    from fm4npp_data.plots import plot_simulation

    out.mkdir(parents=True, exist_ok=True)
    try:
        written = plot_simulation(_root_files(paths), out)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    for png in written:
        click.echo(f"wrote {png}")


if __name__ == "__main__":
    main()
