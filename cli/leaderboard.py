"""`fm4npp leaderboard PREDICTIONS... --data REPO [--split test] [--json OUT|-]`: score predictions files. No torch.

Thin: parse, call fm4npp_data.evaluation.leaderboard.score, print its markdown tables, write the JSON (the figures
and what they were scored on: fm4npp_data.evaluation.leaderboard.scored_on). With `--json -` the JSON goes to
standard output and the tables to standard error, so that a script can read the one from the other.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from fm4npp_cli.common import Failed, reported

from fm4npp_data.files import write_json
from fm4npp_data.splits import SPLITS


@click.command("leaderboard")
@click.argument("predictions", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "repo",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The dataset repository (a folder with data/labeled/) holding the truth.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(SPLITS),
    help="The labeled split the predictions are for.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Also write the figures, and what they were scored on, as JSON to this file (written "
    "atomically); - writes the JSON to standard output and the tables to standard error.",
)
def leaderboard(predictions: tuple[Path, ...], repo: Path, split: str, json_out: Path | None) -> None:
    """Score PREDICTIONS (Parquet: run, event and any of track, pid, noise) against a split of REPO.

    Prints the paper's tables as markdown (Table 2; Table 5's tracking diagnostics; the per-class Tables 3 and 4;
    the efficiency in p_T bins), a row per file (named by the file's stem); the figures are defined in
    fm4npp_data/evaluation/metrics.py and docs/commands.md."""
    from fm4npp_data.evaluation.leaderboard import markdown_rows, score, scored_on

    if json_out is not None and len(predictions) > 1:
        raise Failed("--json writes the figures of one predictions file; give one file, or leave --json out")
    names = [p.stem for p in predictions]
    if len(set(names)) < len(names):
        raise Failed(f"two predictions files have the same name ({', '.join(names)}); rows are named by file: rename")
    to_stdout = json_out is not None and str(json_out) == "-"
    with reported():  # also when the command is called on its own, outside the `fm4npp` group
        results = {p.stem: score(p, repo, split) for p in predictions}
        document = {"scored_on": scored_on(predictions[0], repo, split), **results[names[0]]} if json_out else None
    if to_stdout:
        click.echo(json.dumps(document, indent=1))
    elif json_out is not None:
        try:
            write_json(json_out, document)
        except OSError as exc:  # the JSON's folder is missing or not writable
            raise Failed(f"{json_out}: {exc.strerror or exc}; check that its folder exists and is writable") from exc
    click.echo(markdown_rows(results), nl=False, err=to_stdout)
    written = "standard output" if to_stdout else json_out
    where = f"; JSON written to {written}" if json_out is not None else ""
    for path, result in zip(predictions, results.values(), strict=True):
        click.echo(f"Scored {path} ({', '.join(result)}) against the {split} split of {repo}{where}.", err=True)
