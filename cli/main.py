"""`fm4npp`: the model commands (sizes, pretraining, published checkpoints, fine-tuning, prediction, leaderboard)."""

from __future__ import annotations

import click
from fm4npp_cli.checkpoints import import_checkpoint
from fm4npp_cli.common import Commands
from fm4npp_cli.finetune import finetune, predict
from fm4npp_cli.leaderboard import leaderboard
from fm4npp_cli.pretrain import pretrain
from fm4npp_cli.study import study


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fm4npp")
def main() -> None:
    """fm4npp foundation models for the sPHENIX TPC."""


@main.command()
def info() -> None:
    """Versions of the packages the models use, and whether the mamba-ssm GPU kernels are available."""
    from importlib.util import find_spec

    import torch

    click.echo(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    click.echo(f"mamba-ssm kernels: {'installed' if find_spec('mamba_ssm') else 'not installed (CPU SSD path)'}")


@main.command()
def models() -> None:
    """The model sizes: name, width, layers, d_state, heads, parameters (and the paper's Table 1 count)."""
    from fm4npp_data.errors import require

    require("torch", "models", "fm4npp models")
    from rich.console import Console
    from rich.table import Table

    from fm4npp_models.model.backbone import size_table

    table = Table(title="fm4npp model sizes (k = 10 neighbours; 12 layers for m1..m6)")
    for name in ("name", "width", "layers", "d_state", "heads", "parameters", "paper"):
        table.add_column(name, justify="right" if name != "name" else "left")
    for row in size_table():
        paper = f"{row['paper'] / 1e6:.2f}M" if row["paper"] else "-"
        table.add_row(
            row["name"],
            str(row["width"]),
            str(row["layers"]),
            str(row["d_state"]),
            str(row["heads"]),
            f"{row['parameters']:,}",
            paper,
        )
    Console().print(table)


main.add_command(pretrain)
main.add_command(import_checkpoint)
main.add_command(finetune)
main.add_command(predict)
main.add_command(leaderboard)
main.add_command(study)

if __name__ == "__main__":
    main()
