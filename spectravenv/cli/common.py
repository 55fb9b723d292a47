"""What every command shares: one-line errors instead of tracebacks, the catalog and paths of
this process, and messages on stderr."""

from __future__ import annotations

import sys
from typing import Any

import click

from spectravenv.errors import SpectravenvError


def say(msg: str) -> None:
    click.echo(msg, err=True)


class Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpectravenvError as e:
            say(f"spectravenv: error: {e}")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            say("spectravenv: interrupted")
            sys.exit(130)
        except OSError as e:
            if e.errno == 28:  # ENOSPC
                say(
                    "spectravenv: error: no space left on device; free some or move SPECTRAVENV_HOME"
                )
                sys.exit(2)
            raise


def context():
    """This process's paths and catalog (the environment and working directory decide both)."""
    from spectravenv.catalog import loader
    from spectravenv.paths import Paths

    paths = Paths.from_env()
    return paths, loader.load(paths)
