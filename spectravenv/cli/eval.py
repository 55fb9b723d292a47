"""`eval`: models x benchmarks, each model in its env, on the GPUs it gets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spectravenv.cli.common import context
from spectravenv.errors import SpectravenvError


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


@click.command(name="eval")
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
    help="VLMEvalKit judge for every judged benchmark (gpt-4o-mini, gpt-4-turbo, qwen-72b, exact_matching, "
         "any model name your endpoint serves)  [default: each benchmark's VLMEvalKit default where its key "
         "is set; see docs/judges.md]",
)
@click.option(
    "--judge-base-url", metavar="URL",
    help="Send judge requests to this OpenAI-compatible server (a lab's vLLM or LMDeploy, a gateway), "
         "e.g. http://judge-host:8000/v1  [default: SPECTRAVENV_JUDGE_BASE_URL from .env, else "
         "OPENAI_API_BASE, else the OpenAI API]",
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
              help="GPUs the run's workers hold at most at once  [default: every usable GPU here; "
                   "Slurm: the --assume-gpus count]")  # fmt: skip
@click.option(
    "--cancel-on-interrupt", is_flag=True, help="Slurm: Ctrl-C while waiting cancels the jobs."
)
@click.option("--backend", type=click.Choice(["hf", "vllm"]),
              help="How every model of the run generates: hf (its VLMEvalKit wrapper) or vllm (its checkpoint "
                   "served by vLLM, many requests in flight)  [default: each model's own backend, else hf]")  # fmt: skip
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
    judge_base_url,
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
    backend,
) -> None:
    """Evaluate models on benchmarks, each model in its env, on the GPUs it gets.

    NAMES are models and benchmarks in any order, e.g.
    `spectravenv eval qwen_chat llava_v1.5_7b MMBench_DEV_EN TextVQA_VAL` runs the 2x2 matrix.
    """
    from spectravenv.run.evaluate import evaluate
    from spectravenv.run.slurm import SlurmOptions
    from spectravenv.run.state import EvalRequest

    if launcher != "slurm" and (partition or account or qos or time_limit or slurm_args or no_wait
                                or cancel_on_interrupt):  # fmt: skip
        raise SpectravenvError("Slurm options need --launcher slurm")

    paths, cat = context()
    req = EvalRequest(
        names=list(names), models=list(models), data=list(data), limit=limit, gpus=gpus,
        output_dir=output_dir, run_name=run_name, judge=judge, judge_base_url=judge_base_url,
        env_file=env_file or Path(".env"), env_file_given=env_file is not None,
        dry_run=dry_run, resume=resume, timeout=timeout, retries=retries, seed=seed,
        skip_unsupported=skip_unsupported, assume_gpus=assume_gpus, launcher=launcher, max_gpus=max_gpus,
        slurm=SlurmOptions(partition=partition, account=account, qos=qos, time=time_limit,
                           extra=list(slurm_args), wait=not no_wait, cpus_per_gpu=cpus_per_gpu,
                           cancel_on_interrupt=cancel_on_interrupt),
        offline=offline, prefetch=prefetch_first, backend=backend,
        argv=["spectravenv", *sys.argv[1:]],
    )  # fmt: skip
    code = evaluate(req, paths, cat, sys.stdout, sys.stderr)
    sys.exit(code)
