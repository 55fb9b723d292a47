"""`report`, `compare` and `status`: what runs produced, read from their folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spectravenv.cli.common import context, say
from spectravenv.errors import SpectravenvError


@click.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(path_type=Path))  # fmt: skip
@click.option("-o", "--output-dir", type=click.Path(path_type=Path),
              help="Where a merge of several runs is written  [default: ./merged-report]")  # fmt: skip
@click.option("--latex", is_flag=True,
              help="Also write results/scores.tex: the score matrix as a booktabs table (best per column in bold).")  # fmt: skip
@click.option("--latex-intervals/--latex-no-intervals", default=True, show_default=True,
              help="Put each score's 95% interval in the LaTeX table.")  # fmt: skip
def report(run_dirs, output_dir, latex: bool, latex_intervals: bool) -> None:
    """Rebuild tables, EVALUATION_REPORT.md/.html, results.json and results/scores.md (a score
    table ready to paste) from run folders; merge several into one matrix.

    Needs only the run folders (no env, no .env: nothing in them holds a secret). With several
    runs, the newest finished result of each (model, benchmark) wins and names the run it came
    from, with its own sample limit.
    """
    from spectravenv.report import write as report_mod
    from spectravenv.run import rundir

    _, cat = context()
    runs = [rundir.open_run(d) for d in run_dirs]
    opts = report_mod.Options(latex=latex, latex_intervals=latex_intervals)
    if len(runs) == 1 and output_dir is None:
        click.echo(report_mod.write_all(runs[0], cat, opts))
        click.echo(f"\nrebuilt {runs[0].path / report_mod.REPORT}")
        _say_latex(runs[0].path, latex)
        return
    out = (output_dir or Path("merged-report")).absolute()
    if out.exists() and not out.is_dir():
        raise SpectravenvError(f"--output-dir {out} is a file; give a folder")
    click.echo(report_mod.write_merged(runs, cat, out, opts))
    click.echo(f"\nmerged {len(runs)} runs into {out / report_mod.REPORT}")
    _say_latex(out, latex)


def _say_latex(out: Path, latex: bool) -> None:
    if latex:
        click.echo(f"LaTeX table: {out / 'results' / 'scores.tex'} (needs \\usepackage{{booktabs}})")


@click.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON, for machines.")
def compare(run_a: Path, run_b: Path, as_json: bool) -> None:
    """What changed from RUN_A to RUN_B: each pair's score difference with its 95% interval from
    a paired test on the samples both scored (McNemar or a paired bootstrap), whether it is
    significant, its status, and every provenance difference that could explain it (limit,
    seed, judge, locks, versions, GPUs, ...)."""
    from spectravenv.results import compare as compare_mod
    from spectravenv.run import rundir

    _, cat = context()
    a, b = rundir.open_run(run_a), rundir.open_run(run_b)
    c = compare_mod.compare(a, b, cat)
    click.echo(compare_mod.dumps(c) if as_json else compare_mod.render_text(c))


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--watch", is_flag=True,
              help="Follow the run live (workers, samples, rate, ETA) until it ends; Ctrl-C stops watching.")  # fmt: skip
def status(run_dir: Path, watch: bool) -> None:
    """Show where a run stands (each pair's status, score with its 95% interval, and the scores
    reported for it), from disk, writing nothing.

    With --watch, the live view of a run started elsewhere (a Slurm run, from a login node)."""
    from spectravenv.report import write as report_mod
    from spectravenv.results import document
    from spectravenv.results import rows as results
    from spectravenv.run import rundir

    _, cat = context()
    run = rundir.open_run(run_dir)
    if watch:
        from spectravenv.run.progress import watch as follow

        try:
            follow(run, cat, sys.stderr)
        except KeyboardInterrupt:
            say("stopped watching; the run goes on")
    manifest = run.manifest() or {}
    state = manifest.get("status", "?")
    if state == "running" and not results.run_is_live(run, manifest):
        state = "interrupted (its dispatcher is gone; continue with `spectravenv eval --resume`)"
    click.echo(f"{run.path.name}: {state}, started {manifest.get('started')}")
    click.echo(report_mod.console_summary(document.for_run(run, cat)))
