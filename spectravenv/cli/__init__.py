"""The command line: one module per group of verbs, each only parsing, calling the domain
modules and printing. Domain modules never import click."""

from __future__ import annotations

import click

from spectravenv import __version__
from spectravenv.cli import catalog, envs, prefetch, results
from spectravenv.cli import eval as eval_
from spectravenv.cli.common import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spectravenv")
def cli() -> None:
    """Evaluate vision-language models across conflicting transformers versions.

    One hash-locked virtualenv per transformers version, built on demand with uv; each model's
    VLMEvalKit inference runs inside its env on the GPUs spectravenv assigns.
    """


for command in (
    catalog.models, catalog.benchmarks, envs.lock, envs.sync, envs.wheelhouse, envs.envs_cmd,
    envs.gc, envs.selftest, eval_.eval_cmd, prefetch.prefetch, results.report, results.compare,
    results.status,
):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    cli(prog_name="spectravenv")


if __name__ == "__main__":
    main()
