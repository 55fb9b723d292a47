"""`spectravenv eval`: names -> plan -> envs -> launch -> results -> report, in that order.

Everything that can be wrong with the request is found before an env is built or a process
started; what finished is never lost, so `--resume` (or the same command again) continues a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import __version__, envs, gpus, plan, rundir, stats
from . import secrets as secrets_mod
from .catalog import Catalog
from .errors import SpectravenvError
from .launch import job as jobfiles
from .launch.local import Display, Launch, run_plan
from .paths import PACKAGE_DIR, Paths


@dataclass
class EvalRequest:
    names: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    limit: int | None = None
    gpus: str | None = None
    output_dir: Path = Path("outputs")
    run_name: str | None = None
    judge: str | None = None
    env_file: Path = Path(".env")
    env_file_given: bool = False
    dry_run: bool = False
    resume: str | None = None  # None: a new run; "": the latest run in output_dir; else a run dir
    timeout: float | None = None
    retries: int = 0
    skip_unsupported: bool = False
    assume_gpus: str | None = None
    launcher: str = "local"
    slurm: Any = None  # launch.slurm.SlurmOptions when launcher == "slurm"
    seed: int | None = None
    nproc: int = 4
    argv: list[str] = field(default_factory=list)


DEFAULT_JUDGE = "exact_matching"


def _matrix(req: EvalRequest, catalog: Catalog) -> tuple[list[str], list[str]]:
    models, benchmarks = catalog.classify(req.names)
    models += [catalog.model(m).name for m in req.models]
    benchmarks += [catalog.benchmark(b).name for b in req.data]
    return list(dict.fromkeys(models)), list(dict.fromkeys(benchmarks))


def _choose_run(req: EvalRequest) -> tuple[rundir.RunDir, dict[str, Any] | None]:
    out = req.output_dir
    if out.exists() and not out.is_dir():
        raise SpectravenvError(f"--output-dir {out} is a file; give a folder (default ./outputs)")
    if req.resume is not None:
        path = Path(req.resume) if req.resume else rundir.latest_run(out)
        run = rundir.RunDir(path.absolute())
        manifest = run.manifest()
        if manifest is None:
            raise SpectravenvError(
                f"{path} is not a spectravenv run (no run.json); nothing to resume"
            )
        return run, manifest
    if req.run_name:
        if "/" in req.run_name or req.run_name in (".", ".."):
            raise SpectravenvError(f"--run-name {req.run_name!r} must be a plain folder name")
        run = rundir.RunDir((out / req.run_name).absolute())
        manifest = run.manifest()
        if manifest is None and run.path.exists() and any(run.path.iterdir()):
            raise SpectravenvError(
                f"{run.path} exists and is not a spectravenv run; choose another --run-name"
            )
        return run, manifest  # same name again: continue that run
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = out / stamp, 1
    while path.exists():
        n += 1
        path = out / f"{stamp}-{n}"
    return rundir.RunDir(path.absolute()), None


def _settle(
    req: EvalRequest, manifest: dict[str, Any] | None, run: rundir.RunDir
) -> dict[str, Any]:
    """Limit, judge and seed of this run; a continued run must keep the ones it was made with."""
    given = {"limit": req.limit, "judge": req.judge, "seed": req.seed}
    if manifest is None:
        return {"limit": req.limit, "judge": req.judge or DEFAULT_JUDGE, "seed": req.seed or 0}
    settled = {k: manifest.get(k) for k in given}
    for key, value in given.items():
        if value is not None and value != settled[key]:
            flag = f"--{key}"
            raise SpectravenvError(
                f"{run.path} was made with {flag} {settled[key]}, not {value}; predictions of "
                f"different settings never mix: start a new run (another --run-name)"
            )
    return settled


def _done_pairs(run: rundir.RunDir) -> set[tuple[str, str]]:
    done = set()
    for key, o in rundir.outcomes(run).items():
        if o.status == "done" and all(Path(f).exists() for f in o.score_files):
            done.add(key)
    return done


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _git_revision() -> str | None:
    from . import procs

    try:
        proc = procs.run(["git", "-C", PACKAGE_DIR.parent, "rev-parse", "HEAD"], timeout=5)
    except SpectravenvError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def evaluate(req: EvalRequest, paths: Paths, catalog: Catalog, out: TextIO, err: TextIO) -> int:
    def say(msg: str) -> None:
        err.write(msg + "\n")
        err.flush()

    if req.limit is not None and req.limit <= 0:
        raise SpectravenvError(f"--limit must be a positive number of samples, not {req.limit}")
    models, benchmarks = _matrix(req, catalog)
    run, manifest = _choose_run(req)
    if manifest is not None and not models and not benchmarks:
        models, benchmarks = list(manifest["models"]), list(manifest["benchmarks"])
    if not models or not benchmarks:
        missing = "model" if not models else "benchmark"
        raise SpectravenvError(
            f"no {missing} given; name at least one model and one benchmark, e.g. "
            "`spectravenv eval demo-tiny-llava DemoMCQ`"
        )
    settings = _settle(req, manifest, run)
    secrets = secrets_mod.load(req.env_file, required=req.env_file_given)

    on_slurm = req.launcher == "slurm"
    if req.assume_gpus and not (req.dry_run or on_slurm):
        raise SpectravenvError(
            "--assume-gpus plans for a machine that is not here: use it with --dry-run"
        )
    if on_slurm:
        # The compute nodes' GPUs are not visible from here: plan on a description of them
        # (--assume-gpus, default a node of 8 x 80 GB) to size each job's request.
        inventory = gpus.assumed(req.assume_gpus or "8x80")
    else:
        inventory = gpus.assumed(req.assume_gpus) if req.assume_gpus else gpus.query()
    pool = gpus.visible(inventory, {} if (req.assume_gpus or on_slurm) else None)
    if req.gpus:
        pool = gpus.select(pool, req.gpus)
    done = _done_pairs(run) if manifest is not None else set()
    # Measured speeds on this GPU type (from earlier runs) replace the catalog's guesses.
    measured = stats.apply(catalog, stats.load(paths), pool[0].name if pool else None)
    the_plan = plan.build(
        measured,
        models,
        benchmarks,
        pool,
        limit=settings["limit"],
        done=done,
        strict=not req.dry_run,
        skip_unsupported=req.skip_unsupported,
        spread_idle=not on_slurm,
    )
    states = {j.env.name: envs.status(j.env, paths) for j in the_plan.jobs}

    if req.dry_run:
        out.write(f"run folder: {run.path}" + (" (continuing)" if manifest else "") + "\n")
        out.write(plan.format_plan(the_plan, {n: s.state for n, s in states.items()}) + "\n")
        if on_slurm:
            from .launch import slurm

            for j in the_plan.todo:
                out.write(f"\n# sbatch script for {j.model.name}\n")
                out.write(slurm.script(j, run, states[j.env.name].python, run.job_file(j.id),
                                       req.slurm, []))  # fmt: skip
        return 0
    if not the_plan.todo:
        say(f"all {len(models) * len(benchmarks)} pairs of {run.path} are already done")
        return _finish(run, manifest or {}, catalog, paths, out, secrets, interrupted=False)

    # Build what is missing, before anything runs: one build per env, under its file lock.
    ready = {name: envs.ensure(catalog.envs[name], paths, report=say) for name in states}
    addon_dirs = {
        j.id: [envs.ensure_addon(catalog.addons[a], ready[j.env.name], paths, report=say)
               for a in j.model.addons]
        for j in the_plan.todo
    }  # fmt: skip

    run.path.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(
        req, run, manifest, models, benchmarks, settings, inventory, pool, ready, secrets
    )
    run.write_manifest(manifest)

    def spec(j: plan.Job) -> dict[str, Any]:
        return jobfiles.job_spec(j, run, paths, limit=settings["limit"], judge=settings["judge"],
                                 seed=settings["seed"], nproc=req.nproc)  # fmt: skip

    def prepare_retry(j: plan.Job) -> bool:
        """Narrow a failed job to what is not done; after a CUDA out-of-memory, give one replica
        one more GPU (device_map="auto") when the pool has it, else give up on it."""
        outs = rundir.outcomes(run)
        latest = [outs.get((j.model.name, b.name)) for b in j.benchmarks]
        oom = any(o is not None and o.oom and o.status == "failed" for o in latest)
        j.benchmarks = [b for b, o in zip(j.benchmarks, latest, strict=True)
                        if getattr(o, "status", None) != "done"]  # fmt: skip
        if oom:
            per_replica = j.gpus_needed // j.replicas
            if per_replica + 1 > len(pool):
                say(f"{j.model.name} ran out of GPU memory on {per_replica} GPU(s); no bigger "
                    "placement exists here, so it is not retried")  # fmt: skip
                return False
            j.replicas, j.gpus_needed = 1, per_replica + 1
            j.why = f"retry after CUDA out of memory: one process over {j.gpus_needed} GPUs"
            say(f"{j.model.name} ran out of GPU memory: retrying on {j.gpus_needed} GPUs")
        if j.benchmarks:
            jobfiles.write_job(run, spec(j))
        return bool(j.benchmarks)

    job_files = {
        j.id: jobfiles.write_job(
            run, jobfiles.job_spec(j, run, paths, limit=settings["limit"], judge=settings["judge"],
                                   seed=settings["seed"], nproc=req.nproc)
        )
        for j in the_plan.todo
    }  # fmt: skip
    launch = Launch(
        run=run,
        job_files=job_files,
        pythons={n: s.python for n, s in ready.items()},
        addons=addon_dirs,
        secrets=secrets,
        child_env=lambda g, a, t: jobfiles.child_env(os.environ, paths, secrets, g, a, t),
        timeout=req.timeout,
        retries=req.retries,
        prepare_retry=prepare_retry,
        requery=(lambda: gpus.query()) if inventory else None,
    )
    say(f"run folder: {run.path}")
    if on_slurm:
        return _run_slurm(req, the_plan, run, manifest, catalog, paths, ready, addon_dirs, job_files,
                          secrets, out, err, prepare_retry)  # fmt: skip
    with _stop_on_signals() as stop:
        run_plan(the_plan, launch, Display(err), stop)
        interrupted = stop.is_set()
    if interrupted:
        say("interrupted: running jobs were stopped; finished pairs are kept. "
            f"Continue with: spectravenv eval --resume {run.path}")  # fmt: skip
    return _finish(run, manifest, catalog, paths, out, secrets, interrupted=interrupted)


def _run_slurm(req: EvalRequest, the_plan: plan.Plan, run: rundir.RunDir, manifest: dict[str, Any],
               catalog: Catalog, paths: Paths, ready: dict[str, envs.EnvState],
               addon_dirs: dict[str, list[Path]], job_files: dict[str, Path],
               secrets: secrets_mod.Secrets, out: TextIO, err: TextIO,
               prepare_retry: Callable[[plan.Job], bool]) -> int:  # fmt: skip
    """Submit every job to Slurm, then (unless --no-wait) follow them to the end."""
    from .launch import slurm
    from .launch.local import narrate

    display = Display(err)
    scripts = {j.id: slurm.script(j, run, ready[j.env.name].python, job_files[j.id], req.slurm,
                                  addon_dirs.get(j.id, []))
               for j in the_plan.todo}  # fmt: skip
    # Secrets and shared paths travel in the job's environment (sbatch --export=ALL), never in
    # the script; CUDA_VISIBLE_DEVICES is Slurm's to set.
    env = jobfiles.child_env(os.environ, paths, secrets, None, [], None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    subs = slurm.submit(the_plan, run, scripts, env, display)
    manifest = {**manifest, "launcher": "slurm",
                "slurm_jobs": {**manifest.get("slurm_jobs", {}), **{s.job.id: s.slurm_id for s in subs}}}  # fmt: skip
    run.write_manifest(manifest)
    ids = " ".join(s.slurm_id for s in subs)
    if not req.slurm.wait:
        out.write(f"submitted Slurm jobs {ids}; follow with `spectravenv status {run.path}`, "
                  f"tables with `spectravenv report {run.path}` when they end\n")  # fmt: skip
        return 0

    def on_event(s: slurm.Submitted, ev: dict[str, Any]) -> None:
        if ev.get("rank", 0) in (0, None):
            narrate(ev, s.job, run, secrets.redact, display)

    retried = {j.id: 0 for j in the_plan.todo}

    def resubmit(s: slurm.Submitted) -> slurm.Submitted | None:
        j = s.job
        if retried[j.id] >= req.retries or not prepare_retry(j):
            return None
        retried[j.id] += 1
        display.event(f"retry   {j.model.name} ({retried[j.id]}/{req.retries})")
        text = slurm.script(j, run, ready[j.env.name].python, job_files[j.id], req.slurm,
                            addon_dirs.get(j.id, []))  # fmt: skip
        again = slurm.submit_one(j, run, text, env, display)
        manifest["slurm_jobs"][j.id] = again.slurm_id
        run.write_manifest(manifest)
        return again

    with _stop_on_signals() as stop:
        slurm.follow(subs, run, display, stop, on_event, resubmit)
        interrupted = stop.is_set()
    cancel = req.slurm.cancel_on_interrupt
    if interrupted and not cancel and sys.stdin.isatty():
        cancel = input(f"cancel the Slurm jobs {ids}? [y/N] ").strip().lower() in ("y", "yes")
    if interrupted and not cancel:
        display.event(f"stopped waiting; the Slurm jobs keep running ({ids}). Cancel them with "
                      f"`scancel {ids}`; see where they stand with `spectravenv status {run.path}`")  # fmt: skip
        return 130
    if interrupted:
        subs = [s for s in subs if not s.done]
        slurm.cancel(subs)
        slurm.wait_gone(subs)
        display.event(
            f"cancelled Slurm jobs {ids}; continue with: spectravenv eval --resume {run.path}"
        )
    return _finish(run, manifest, catalog, paths, out, secrets, interrupted=interrupted)


def _manifest(
    req: EvalRequest,
    run: rundir.RunDir,
    old: dict[str, Any] | None,
    models: list[str],
    benchmarks: list[str],
    settings: dict[str, Any],
    inventory: list[gpus.GPU],
    pool: list[gpus.GPU],
    ready: dict[str, envs.EnvState],
    secrets: secrets_mod.Secrets,
) -> dict[str, Any]:
    """run.json: everything needed to compare two runs from their manifests alone."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    attempts = list((old or {}).get("attempts", []))
    attempts.append({"started": now, "command": secrets.redact(" ".join(req.argv))})
    return {
        "schema": 1,
        "run": run.path.name,
        "spectravenv": {"version": __version__, "git_revision": _git_revision()},
        "command": secrets.redact(" ".join(req.argv)),
        "attempts": attempts,
        "started": (old or {}).get("started", now),
        "finished": None,
        "status": "running",
        "host": socket.gethostname(),
        "models": sorted(set((old or {}).get("models", [])) | set(models)),
        "benchmarks": sorted(set((old or {}).get("benchmarks", [])) | set(benchmarks)),
        **settings,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "memory_total_mb": g.memory_total_mb,
                "driver": g.driver,
                "used": g in pool,
            }
            for g in inventory
        ],
        "envs": {
            name: {
                "lock": str(st.env.lock),
                "lock_sha256": (st.marker or {}).get("lock_sha256"),
                "key": st.key,
                "python": (st.marker or {}).get("python"),
                "versions": (st.marker or {}).get("versions", {}),
                "cuda_runtime": (st.marker or {}).get("cuda_runtime"),
            }
            for name, st in ready.items()
        },
        "secrets_passed": secrets.names,  # names only, never values
    }


def _finish(
    run: rundir.RunDir,
    manifest: dict[str, Any],
    catalog: Catalog,
    paths: Paths,
    out: TextIO,
    secrets: secrets_mod.Secrets,
    *,
    interrupted: bool,
) -> int:
    from . import report

    # A pair left "running" was cut short: it counts as not done, like a failed one.
    failed = [o for o in rundir.outcomes(run).values() if o.status in ("failed", "running")]
    manifest = dict(manifest)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["status"] = "interrupted" if interrupted else ("failed" if failed else "finished")
    run.write_manifest(manifest)
    stats.record(paths, run)
    out.write(report.write_all(run, catalog, secrets) + "\n")
    out.write(f"\nresults: {run.path / 'results'}\nreport:  {run.path / report.REPORT}\n")
    if interrupted:
        return 130
    return 1 if failed else 0
