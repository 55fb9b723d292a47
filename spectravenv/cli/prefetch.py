"""`prefetch`: TSVs and checkpoints on disk before a run, for nodes without internet."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spectravenv.cli.common import context, say
from spectravenv.errors import SpectravenvError


@click.command()
@click.argument("names", nargs=-1)
@click.option("-m", "--model", "models", multiple=True, help="A model (repeatable).")
@click.option("-d", "--data", "data", multiple=True, help="A benchmark (repeatable).")
@click.option("--env-file", type=click.Path(path_type=Path),
              help="HF_TOKEN=... for gated models  [default: ./.env if present]")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what is on disk and what would be fetched.")
def prefetch(names, models, data, env_file, dry_run) -> None:
    """Download benchmarks' TSVs into $LMUData and models' checkpoints into $HF_HOME.

    NAMES are models and benchmarks in any order, as for `eval`. For nodes without internet
    access: run it where there is, then `spectravenv eval --offline` there. TSVs are checked
    against VLMEvalKit's md5, checkpoints file by file against the hub; an interrupted download
    continues where it stopped, and what is complete already is skipped.
    """
    from spectravenv import secrets
    from spectravenv.fetch import prefetch as pf
    from spectravenv.run.request import classify_names

    paths, cat = context()
    ms, bs = classify_names(cat, list(names), list(models), list(data))
    if not ms and not bs:
        raise SpectravenvError(
            "name at least one model or benchmark, e.g. `spectravenv prefetch MMBench_DEV_EN qwen_chat`"
        )
    ms, bs = list(dict.fromkeys(ms)), list(dict.fromkeys(bs))
    models_, benchmarks_ = [cat.models[m] for m in ms], [cat.benchmarks[b] for b in bs]
    if dry_run:
        click.echo(pf.describe(pf.needs(models_, benchmarks_, paths), paths))
        return
    sec = secrets.load(env_file or Path(".env"), required=env_file is not None)
    for warning in sec.warnings():
        say(f"spectravenv: warning: {warning}")
    done = pf.fetch(cat, models_, benchmarks_, paths, sec, sys.stderr)
    click.echo(f"prefetch: {len(done)} done; LMUData={paths.data_root}, HF_HOME={paths.hf_home}")
