"""What the two command groups share: one error path for fm4npp's errors (the message, then exit status 2)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from fm4npp_data.errors import Fm4nppError


class Failed(click.ClickException):
    """`Error: message` and exit status 2, as every fm4npp command does for a wrong input."""

    exit_code = 2


@contextmanager
def reported():
    """fm4npp's errors, and paths the system refuses (permissions, a full disk, a file for a folder), as Failed."""
    try:
        yield
    except Fm4nppError as error:
        raise Failed(str(error)) from error
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        raise Failed(f"{where}{error.strerror or error}; check the path and its permissions, or choose another one"
                     ) from error  # fmt: skip


class Commands(click.Group):
    """A click group whose commands share one error path for fm4npp's errors: the message, then exit 2."""

    def invoke(self, ctx: click.Context):
        with reported():
            return super().invoke(ctx)


def fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)
