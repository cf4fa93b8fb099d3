"""What the two command groups share: one error path for fm4npp's errors (the message, then exit status 2)."""

from __future__ import annotations

import sys

import click

from fm4npp_data.errors import Fm4nppError


class Commands(click.Group):
    """A click group whose commands share one error path for fm4npp's errors: the message, then exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Fm4nppError as error:
            fail(str(error))
        except OSError as error:  # a path the system refuses (permissions, a full disk, a file for a folder)
            where = f"{error.filename}: " if error.filename else ""
            fail(f"{where}{error.strerror or error}; check the path and its permissions, or choose another one")


def fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)
