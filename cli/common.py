"""What the two command groups share: one error path for fm4npp's errors (the message, then exit status 2)."""

from __future__ import annotations

import math
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
        raise Failed(
            f"{where}{error.strerror or error}; check the path and its permissions, or choose another one"
        ) from error


class Commands(click.Group):
    """A click group whose commands share one error path for fm4npp's errors: the message, then exit 2."""

    def invoke(self, ctx: click.Context):
        with reported():
            return super().invoke(ctx)


def fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


class FiniteRange(click.FloatRange):
    """A float option within a range that is also finite: `nan` and `inf` are option errors (exit 2, the option
    named), as a value out of the range is."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: The numeric option types of the model commands: counts, sizes and rates.
AT_LEAST_1 = click.IntRange(min=1)
AT_LEAST_0 = click.IntRange(min=0)
POSITIVE = FiniteRange(min=0, min_open=True)
NON_NEGATIVE = FiniteRange(min=0)
RATE = FiniteRange(min=0, max=1, max_open=True)  # a dropout probability
