"""`fm4npp`: model commands (pretraining, fine-tuning, prediction, leaderboard), added by later issues."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


if __name__ == "__main__":
    main()
