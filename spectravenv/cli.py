"""The command line: parse, call the domain modules, print. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import SpectravenvError


def _say(msg: str) -> None:
    click.echo(msg, err=True)


class _Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpectravenvError as e:
            _say(f"spectravenv: error: {e}")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _say("spectravenv: interrupted")
            sys.exit(130)
        except OSError as e:
            if e.errno == 28:  # ENOSPC
                _say(
                    "spectravenv: error: no space left on device; free some or move SPECTRAVENV_HOME"
                )
                sys.exit(2)
            raise


def _context():
    from . import catalog
    from .paths import Paths

    paths = Paths.from_env()
    return paths, catalog.load(paths)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spectravenv")
def cli() -> None:
    """Evaluate vision-language models across conflicting transformers versions.

    One hash-locked virtualenv per transformers version, built on demand with uv; each model's
    VLMEvalKit inference runs inside its env on the GPUs spectravenv assigns.
    """


# ---- catalog -----------------------------------------------------------------------------------


@cli.command()
@click.option("--env", "env_name", metavar="ENV", help="Only the models of this env.")
@click.option("--family", help="Only this family (VLMEvalKit's registry groups, e.g. qwen2vl_series).")
@click.option("--kind", type=click.Choice(["local", "api"]), help="Only local (weights) or API models.")
@click.option("--runnable", is_flag=True, help="Only the models the shipped envs can run.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per model (env, needs, evidence, ...).")
def models(env_name, family, kind, runnable, as_json) -> None:
    """List the models in the catalog: env, GPU memory, what each still needs, how far verified."""
    from . import catalog
    from .console import table

    _, cat = _context()
    chosen = cat.select_models(env=env_name, family=family, kind=kind, runnable=runnable)
    if as_json:
        import json

        click.echo(json.dumps([catalog.model_record(m) for m in chosen], indent=1))
        return
    rows = [
        (m.name, m.env, m.family, "-" if m.kind == "api" else f"{m.gpu_memory_gb:g} GB",
         "api" if m.kind == "api" else ("yes" if m.multi_gpu else ""),
         m.verified if not m.blocked else "blocked: " + m.blocked[:70])
        for m in chosen
    ]  # fmt: skip
    click.echo(table(("model", "env", "family", "GPU memory", "spreads", "status"), rows))
    blocked = sum(1 for m in chosen if m.blocked)
    click.echo(f"\n{len(chosen)} models, {len(chosen) - blocked} runnable; `--json` for needs and evidence")


@cli.command()
def benchmarks() -> None:
    """List the benchmarks in the catalog."""
    from .console import table

    _, cat = _context()
    rows = [
        (b.name, b.category, b.kind, b.metric or "(none)", b.samples,
         ("experimental " if b.experimental else "") + (f"VLMEvalKit>={b.since_vlmeval}" if b.since_vlmeval else ""))
        for b in sorted(cat.benchmarks.values(), key=lambda b: (b.category, b.name))
    ]  # fmt: skip
    click.echo(
        table(("benchmark", "category", "kind", "headline metric", "samples", "notes"), rows)
    )


# ---- environments ------------------------------------------------------------------------------


@cli.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option(
    "--upgrade", is_flag=True, help="Re-resolve every pin instead of keeping the current ones."
)
def lock(env_names: tuple[str, ...], upgrade: bool) -> None:
    """Compile hash-locked requirements for ENVs (all when none named) with uv."""
    from . import locks

    paths, cat = _context()
    for name in env_names or tuple(cat.envs):
        env = cat.env(name)
        _say(f"locking {name} from {env.source} ...")
        out = locks.compile_lock(env, paths, upgrade=upgrade)
        n = len(locks.read(out, name))
        click.echo(f"{name}: {n} packages pinned with sha256 hashes in {out}")


@cli.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option("--no-addons", is_flag=True, help="Skip git-only add-ons (they need network access).")
@click.option("--wheelhouse", type=click.Path(path_type=Path), metavar="DIR",
              help="Build from this `wheelhouse export` folder, with no index at all  [env: SPECTRAVENV_WHEELHOUSE]")  # fmt: skip
def sync(env_names: tuple[str, ...], no_addons: bool, wheelhouse: Path | None) -> None:
    """Build ENVs (all when none named) if missing or out of date; a no-op when ready."""
    import dataclasses

    from . import envs

    paths, cat = _context()
    if wheelhouse is not None:
        from . import wheelhouse as wh

        paths = dataclasses.replace(paths, wheelhouse=wheelhouse.absolute())
        wh.read_manifest(paths.wheelhouse)  # a wrong folder is an error now, not after a build
    chosen = [cat.env(n) for n in env_names] or list(cat.envs.values())
    failed = []
    for env in chosen:
        st = envs.ensure(env, paths, report=_say)
        click.echo(f"{env.name}: ready ({st.path})")
        if no_addons:
            continue
        for addon in (a for a in cat.addons.values() if a.env == env.name):
            try:
                envs.ensure_addon(addon, st, paths, report=_say)
            except SpectravenvError as e:
                _say(f"spectravenv: error: {e}")
                failed.append(addon.name)
    if failed:
        sys.exit(1)


@cli.group()
def wheelhouse() -> None:
    """Wheelhouses: every file of some envs' locks in one folder, to build them with no index."""


@wheelhouse.command(name="export")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
def wheelhouse_export(folder: Path, env_names: tuple[str, ...]) -> None:
    """Put every file the ENVs (all when none named) need into DIR: the lock's files, hash-checked,
    wheels built here from sdist-only packages, add-ons, and a manifest. Files already there with
    the right sha256 are kept; run it again to finish an interrupted export."""
    from . import wheelhouse as wh
    from .console import size

    paths, cat = _context()
    summary = wh.export(cat, paths, folder, env_names, report=_say)
    for e in summary.envs:
        built = f", {len(e.built)} built from sdists ({', '.join(e.built)})" if e.built else ""
        base = f", {len(e.left_to_base)} left to base_python" if e.left_to_base else ""
        click.echo(f"{e.name}: {e.packages} packages in {e.files} files{built}{base}; {e.requirements}")
    for name, why in summary.addons_missing:
        _say(f"spectravenv: warning: add-on {name} was not exported: {why}")
    click.echo(
        f"{summary.folder}: {size(summary.total_bytes)} in all; downloaded {summary.downloaded_files} "
        f"files ({size(summary.downloaded_bytes)}), {summary.already_there} were already there; "
        f"{summary.seconds:.0f} s. Build from it with `spectravenv sync --wheelhouse {summary.folder}` "
        f"or SPECTRAVENV_WHEELHOUSE={summary.folder}"
    )


@cli.command(name="envs")
def envs_cmd() -> None:
    """Show every env: transformers, Python, lock hash, state, disk use and its models."""
    from . import envs, locks
    from .console import size, table

    paths, cat = _context()
    rows, folders = [], []
    for env in cat.envs.values():
        try:
            st = envs.status(env, paths)
        except SpectravenvError as e:
            rows.append((env.name, env.transformers, env.python, "-", "broken", "-", str(e)[:60]))
            continue
        folder = [st.path] if st.path.exists() else []
        folders += folder
        python = (st.marker or {}).get("python", env.python)
        state = st.state + (f" ({st.reason})" if st.reason and st.state != "ready" else "")
        rows.append((
            env.name, env.transformers, python, locks.digest(env.lock)[:12], state,
            size(envs.disk_usage(folder)) if folder else "-",
            ", ".join(cat.models_of_env(env.name)),
        ))  # fmt: skip
    click.echo(table(("env", "transformers", "python", "lock", "state", "disk", "models"), rows))
    if folders:
        click.echo(f"\n{len(folders)} env(s) on disk take {size(envs.disk_usage(folders))} together "
                   f"(files shared through hardlinks counted once) under {paths.envs}")  # fmt: skip


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(dry_run: bool) -> None:
    """Remove envs that no catalog lock references any more, and left-overs of killed builds."""
    from . import envs
    from .console import size

    paths, cat = _context()
    doomed = envs.garbage(cat, paths)
    if not doomed:
        click.echo("nothing to remove")
        return
    freed = envs.freed_by_removing(doomed)
    if dry_run:
        for p in doomed:
            click.echo(f"would remove {p}")
        click.echo(f"would free about {size(freed)}")
        return
    removed = envs.collect(cat, paths, report=_say)
    for p in removed:
        click.echo(f"removed {p}")
    click.echo(f"freed about {size(freed)}")


@cli.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option("--family", "families", multiple=True, help="Only this family or recipe (repeatable).")
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="Also write the results as JSON here.")
def selftest(env_names, families, json_file) -> None:
    """Check every env (all when none named): each family's VLMEvalKit wrapper runs on a tiny
    checkpoint made here, on the GPU if one is visible, else the CPU; nothing is downloaded."""
    from . import selftest as st

    paths, cat = _context()
    results = st.run(cat, paths, list(env_names), set(families) or None, report=_say)
    click.echo(st.table(results))
    if json_file:
        from svrunner.files import write_atomic

        write_atomic(json_file, st.as_json(results))
    sys.exit(st.exit_code(results))


# ---- evaluation --------------------------------------------------------------------------------


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:].lower() in units:
            seconds = float(value[:-1]) * units[value[-1].lower()]
        else:
            seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration like 90, 30m or 2h") from None
    if seconds <= 0:
        raise click.BadParameter("must be positive")
    return seconds


@cli.command(name="eval")
@click.argument("names", nargs=-1)
@click.option("-m", "--model", "models", multiple=True, help="A model (repeatable).")
@click.option("-d", "--data", "data", multiple=True, help="A benchmark (repeatable).")
@click.option(
    "--limit",
    type=int,
    help="Evaluate N samples per benchmark (the same N for every model, spread over categories).",
)
@click.option(
    "--gpus", help="Use only these GPUs: indices as this process sees them (e.g. 0,2) or UUIDs."
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path),
    default="outputs",
    show_default=True,
)
@click.option(
    "--run-name",
    help="Name of the run folder (default: a timestamp). An existing run of that name is continued.",
)
@click.option(
    "--judge",
    help="VLMEvalKit judge for answer matching  [default: exact_matching, needs no API key]",
)
@click.option(
    "--env-file",
    type=click.Path(path_type=Path),
    help="KEY=VALUE secrets for the child processes only  [default: ./.env if present]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (jobs, envs, GPUs, what is done) and start nothing.",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[RUN_DIR]",
    help="Continue a run (default: the latest in --output-dir); finished pairs are skipped.",
)
@click.option(
    "--timeout", callback=_duration, help="Stop a job that runs longer than this (e.g. 90m, 2h)."
)
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Re-run a failed or timed-out job this many times; finished benchmarks are kept.")  # fmt: skip
@click.option("--skip-unsupported", is_flag=True,
              help="Leave out pairs whose env's VLMEvalKit lacks the benchmark, instead of refusing.")  # fmt: skip
@click.option("--assume-gpus", metavar="NxGB",
              help="With --dry-run: plan for N GPUs of GB each (e.g. 8x80) instead of this machine's.")  # fmt: skip
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="Run jobs here, or submit each as a Slurm job.")  # fmt: skip
@click.option("--partition", help="Slurm partition.")
@click.option("--account", help="Slurm account.")
@click.option("--qos", help="Slurm QOS.")
@click.option("--time", "time_limit", help="Slurm time limit per job, e.g. 04:00:00.")
@click.option(
    "--slurm-arg",
    "slurm_args",
    multiple=True,
    help='Extra sbatch option, e.g. "--constraint=a100" (repeatable).',
)
@click.option("--cpus-per-gpu", type=click.IntRange(min=1), default=8, show_default=True,
              help="Slurm: CPUs to ask for per GPU (at least one per job).")  # fmt: skip
@click.option("--no-wait", is_flag=True, help="Slurm: submit and return; see `spectravenv status`.")
@click.option("--max-gpus", type=click.IntRange(min=1),
              help="Slurm: GPUs the run's workers hold at most at once  [default: the --assume-gpus count]")  # fmt: skip
@click.option(
    "--cancel-on-interrupt", is_flag=True, help="Slurm: Ctrl-C while waiting cancels the jobs."
)
@click.option("--seed", type=int, help="Seed for choosing the --limit samples  [default: 0]")
@click.option("--offline", is_flag=True,
              help="For nodes without internet: every TSV and checkpoint must be on disk (checked before "
                   "anything starts); jobs run with the hub offline  [on when HF_HUB_OFFLINE=1]")  # fmt: skip
@click.option("--prefetch", "prefetch_first", is_flag=True,
              help="Download the TSVs and checkpoints the plan needs first (as `spectravenv prefetch`).")  # fmt: skip
def eval_cmd(
    names,
    models,
    data,
    limit,
    gpus,
    output_dir,
    run_name,
    judge,
    env_file,
    dry_run,
    resume,
    timeout,
    retries,
    skip_unsupported,
    assume_gpus,
    launcher,
    partition,
    account,
    qos,
    time_limit,
    slurm_args,
    cpus_per_gpu,
    no_wait,
    max_gpus,
    cancel_on_interrupt,
    seed,
    offline,
    prefetch_first,
) -> None:
    """Evaluate models on benchmarks, each model in its env, on the GPUs it gets.

    NAMES are models and benchmarks in any order, e.g.
    `spectravenv eval qwen_chat llava_v1.5_7b MMBench_DEV_EN TextVQA_VAL` runs the 2x2 matrix.
    """
    from .evaluation import EvalRequest, evaluate
    from .launch.slurm import SlurmOptions

    if launcher != "slurm" and (partition or account or qos or time_limit or slurm_args or no_wait
                                or cancel_on_interrupt or max_gpus):  # fmt: skip
        raise SpectravenvError("Slurm options need --launcher slurm")

    paths, cat = _context()
    req = EvalRequest(
        names=list(names), models=list(models), data=list(data), limit=limit, gpus=gpus,
        output_dir=output_dir, run_name=run_name, judge=judge,
        env_file=env_file or Path(".env"), env_file_given=env_file is not None,
        dry_run=dry_run, resume=resume, timeout=timeout, retries=retries, seed=seed,
        skip_unsupported=skip_unsupported, assume_gpus=assume_gpus, launcher=launcher,
        slurm=SlurmOptions(partition=partition, account=account, qos=qos, time=time_limit,
                           extra=list(slurm_args), wait=not no_wait, cpus_per_gpu=cpus_per_gpu,
                           cancel_on_interrupt=cancel_on_interrupt, max_gpus=max_gpus),
        offline=offline, prefetch=prefetch_first,
        argv=["spectravenv", *sys.argv[1:]],
    )  # fmt: skip
    code = evaluate(req, paths, cat, sys.stdout, sys.stderr)
    sys.exit(code)


@cli.command()
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
    from . import prefetch as pf
    from . import secrets
    from .evaluation import classify_names

    paths, cat = _context()
    ms, bs = classify_names(cat, list(names), list(models), list(data))
    if not ms and not bs:
        raise SpectravenvError("name at least one model or benchmark, e.g. `spectravenv prefetch MMBench_DEV_EN qwen_chat`")
    ms, bs = list(dict.fromkeys(ms)), list(dict.fromkeys(bs))
    models_, benchmarks_ = [cat.models[m] for m in ms], [cat.benchmarks[b] for b in bs]
    if dry_run:
        click.echo(pf.describe(pf.needs(models_, benchmarks_, paths), paths))
        return
    sec = secrets.load(env_file or Path(".env"), required=env_file is not None)
    for warning in sec.warnings():
        _say(f"spectravenv: warning: {warning}")
    done = pf.fetch(cat, models_, benchmarks_, paths, sec, sys.stderr)
    click.echo(f"prefetch: {len(done)} done; LMUData={paths.data_root}, HF_HOME={paths.hf_home}")


@cli.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(path_type=Path))  # fmt: skip
@click.option("-o", "--output-dir", type=click.Path(path_type=Path),
              help="Where a merge of several runs is written  [default: ./merged-report]")  # fmt: skip
def report(run_dirs, output_dir) -> None:
    """Rebuild tables, EVALUATION_REPORT.md/.html and results.json from run folders; merge
    several into one matrix.

    Needs only the run folders (no env, no .env: nothing in them holds a secret). With several
    runs, the newest finished result of each (model, benchmark) wins and names the run it came from.
    """
    from . import report as report_mod
    from . import rundir

    _, cat = _context()
    runs = [rundir.open_run(d) for d in run_dirs]
    if len(runs) == 1 and output_dir is None:
        click.echo(report_mod.write_all(runs[0], cat))
        click.echo(f"\nrebuilt {runs[0].path / report_mod.REPORT}")
        return
    out = (output_dir or Path("merged-report")).absolute()
    if out.exists() and not out.is_dir():
        raise SpectravenvError(f"--output-dir {out} is a file; give a folder")
    click.echo(report_mod.write_merged(runs, cat, out))
    click.echo(f"\nmerged {len(runs)} runs into {out / report_mod.REPORT}")


@cli.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON, for machines.")
def compare(run_a: Path, run_b: Path, as_json: bool) -> None:
    """What changed from RUN_A to RUN_B: each pair's score difference and status, and every
    provenance difference that could explain it (limit, seed, judge, locks, versions, GPUs, ...)."""
    from . import compare as compare_mod
    from . import rundir

    _, cat = _context()
    a, b = rundir.open_run(run_a), rundir.open_run(run_b)
    c = compare_mod.compare(a, b, cat)
    click.echo(compare_mod.dumps(c) if as_json else compare_mod.render_text(c))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--watch", is_flag=True,
              help="Follow the run live (workers, samples, rate, ETA) until it ends; Ctrl-C stops watching.")  # fmt: skip
def status(run_dir: Path, watch: bool) -> None:
    """Show where a run stands (each pair's status and score), from disk, writing nothing.

    With --watch, the live view of a run started elsewhere (a Slurm run, from a login node)."""
    from . import report as report_mod
    from . import results, rundir

    _, cat = _context()
    run = rundir.open_run(run_dir)
    if watch:
        from .progress import watch as follow

        try:
            follow(run, cat, sys.stderr)
        except KeyboardInterrupt:
            _say("stopped watching; the run goes on")
    manifest = run.manifest() or {}
    state = manifest.get("status", "?")
    if state == "running" and not results.run_is_live(run, manifest):
        state = "interrupted (its dispatcher is gone; continue with `spectravenv eval --resume`)"
    click.echo(f"{run.path.name}: {state}, started {manifest.get('started')}")
    click.echo(report_mod.console_summary(results.rows_for_run(run, cat)))


def main() -> None:
    cli(prog_name="spectravenv")


if __name__ == "__main__":
    main()
