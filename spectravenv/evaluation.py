"""`spectravenv eval`: names -> plan -> envs -> launch -> results -> report, as ordered steps.

Each step works on one `Eval` state and may end the command with an exit code (a dry run,
nothing left to do, --no-wait). Everything that can be wrong with the request is found before
a folder is made, an env built or a process started; a new run's folder is created atomically
only once the request is known to be good, and the run is locked for as long as this dispatcher
works on it.
What finished is never lost, so `--resume` (or the same command again) continues a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from svrunner import fingerprint
from svrunner.locking import FileLock, LockBusy

from . import __version__, envs, events, gpus, plan, rundir, stats
from . import secrets as secrets_mod
from .catalog import Catalog
from .errors import SpectravenvError
from .launch import job as jobfiles
from .launch.local import Launch, narrate, run_plan
from .paths import PACKAGE_DIR, Paths
from .progress import Display, Tracker

DEFAULT_JUDGE = "exact_matching"
INTERRUPTED = 130


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
    offline: bool = False  # --offline (also on when HF_HUB_OFFLINE=1 is set): see offline.py
    prefetch: bool = False  # --prefetch: download the plan's TSVs and checkpoints first
    argv: list[str] = field(default_factory=list)


@dataclass
class Eval:
    """The state the steps share."""

    req: EvalRequest
    paths: Paths
    catalog: Catalog
    out: TextIO
    err: TextIO
    t0: float = field(default_factory=time.time)
    models: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    run: rundir.RunDir | None = None
    existing: dict[str, Any] | None = None  # the manifest of a run being continued
    created: bool = False  # this command made the run folder
    lock: FileLock | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: secrets_mod.Secrets = field(default_factory=secrets_mod.Secrets)
    inventory: list[gpus.GPU] = field(default_factory=list)
    pool: list[gpus.GPU] = field(default_factory=list)
    plan: plan.Plan | None = None
    states: dict[str, envs.EnvState] = field(default_factory=dict)
    addon_dirs: dict[str, list[Path]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    started_work: bool = False  # a manifest of this attempt is on disk: keep the folder
    offline: bool = False  # the jobs run with the hub's offline switches (check_offline)
    needs: list[Any] = field(default_factory=list)  # prefetch.Need: the plan's data and weights
    stale: list[tuple[str, str]] = field(default_factory=list)  # done pairs whose fingerprint changed

    @property
    def on_slurm(self) -> bool:
        return self.req.launcher == "slurm"

    def say(self, msg: str) -> None:
        self.err.write(msg + "\n")
        self.err.flush()


Step = Callable[[Eval], "int | None"]


# ---- the request ------------------------------------------------------------------------------


def check_request(st: Eval) -> None:
    req = st.req
    if req.limit is not None and req.limit <= 0:
        raise SpectravenvError(f"--limit must be a positive number of samples, not {req.limit}")
    if req.assume_gpus and not (req.dry_run or st.on_slurm):
        raise SpectravenvError("--assume-gpus plans for a machine that is not here: use it with --dry-run")
    if req.run_name is not None and ("/" in req.run_name or req.run_name in ("", ".", "..")):
        raise SpectravenvError(f"--run-name {req.run_name!r} must be a plain folder name")


def choose_run(st: Eval) -> None:
    """The run to continue (--resume, or an existing --run-name); a new one is made later."""
    req = st.req
    if req.output_dir.exists() and not req.output_dir.is_dir():
        raise SpectravenvError(f"--output-dir {req.output_dir} is a file; give a folder (default ./outputs)")
    if req.resume is not None:
        path = Path(req.resume) if req.resume else rundir.latest_run(req.output_dir)
        if not rundir.is_run(path):
            raise SpectravenvError(f"{path} is not a spectravenv run (no run.json); nothing to resume")
        st.run = rundir.RunDir(path.absolute())
    elif req.run_name:
        candidate = rundir.RunDir((req.output_dir / req.run_name).absolute())
        if rundir.is_run(candidate.path):
            st.run = candidate  # the same name again: continue that run
        elif candidate.path.exists() and any(candidate.path.iterdir()):
            raise SpectravenvError(f"{candidate.path} exists and is not a spectravenv run; choose another --run-name")
    if st.run is not None:
        st.existing = st.run.manifest()


def classify_names(cat: Catalog, names: list[str], models: list[str], data: list[str]) -> tuple[list[str], list[str]]:
    """Free names, -m/--model and -d/--data as (models, benchmarks): `eval` and `prefetch` alike."""
    found_models, found_benchmarks = cat.classify(names)
    found_models += [cat.model(m).name for m in models]
    found_benchmarks += [cat.benchmark(b).name for b in data]
    return found_models, found_benchmarks


def matrix(st: Eval) -> None:
    cat, req = st.catalog, st.req
    models, benchmarks = classify_names(cat, req.names, req.models, req.data)
    if st.existing is not None and not models and not benchmarks:
        models, benchmarks = list(st.existing["models"]), list(st.existing["benchmarks"])
        for name in models:
            cat.model(name)  # a model the run had, gone from the catalog: one clear error
        for name in benchmarks:
            cat.benchmark(name)
    if not models or not benchmarks:
        missing = "model" if not models else "benchmark"
        raise SpectravenvError(f"no {missing} given; name at least one model and one benchmark, e.g. "
                               "`spectravenv eval demo-tiny-llava DemoMCQ`")  # fmt: skip
    st.models, st.benchmarks = list(dict.fromkeys(models)), list(dict.fromkeys(benchmarks))


def settle(st: Eval) -> None:
    """Limit, judge and seed of this run; a continued run keeps the ones it was made with."""
    req, old = st.req, st.existing
    given = {"limit": req.limit, "judge": req.judge, "seed": req.seed}
    if old is None:
        st.settings = {"limit": req.limit, "judge": req.judge or DEFAULT_JUDGE, "seed": req.seed or 0}
        return
    st.settings = {k: old.get(k) for k in given}
    for key, value in given.items():
        if value is not None and value != st.settings[key]:
            raise SpectravenvError(
                f"{st.run.path} was made with --{key} {st.settings[key]}, not {value}; predictions of "
                f"different settings never mix: start a new run (another --run-name)"
            )


def read_secrets(st: Eval) -> None:
    st.secrets = secrets_mod.load(st.req.env_file, required=st.req.env_file_given)
    for warning in st.secrets.warnings():
        st.say(f"spectravenv: warning: {warning}")


def gpu_pool(st: Eval) -> None:
    req = st.req
    if st.on_slurm:
        # The compute nodes' GPUs are not visible from here: plan on a description of them
        # (--assume-gpus, default a node of 8 x 80 GB) to size each job's request.
        st.inventory = gpus.assumed(req.assume_gpus or "8x80")
    else:
        st.inventory = gpus.assumed(req.assume_gpus) if req.assume_gpus else gpus.query()
    st.pool = gpus.visible(st.inventory, {} if (req.assume_gpus or st.on_slurm) else None)
    if req.gpus:
        st.pool = gpus.select(st.pool, req.gpus)


# ---- the run folder ---------------------------------------------------------------------------


def lock_run(st: Eval) -> None:
    """One dispatcher per run: a second `eval` of a run is refused while the first works on it,
    and so is a resume while Slurm jobs of the run are still queued or running."""
    if st.req.dry_run or st.run is None:
        return
    st.lock = st.run.lock()
    try:
        st.lock.acquire(0, advice="wait for it to finish (`spectravenv status` shows where it stands)")
    except LockBusy as e:
        st.lock = None
        raise SpectravenvError(f"another spectravenv is working on this run: {e}") from None
    st.existing = st.run.manifest()  # as it is now that no one else changes it
    if st.existing and st.existing.get("slurm_jobs"):
        from .launch import slurm

        live = slurm.live_jobs(list(st.existing["slurm_jobs"].values()))
        if live:
            ids = " ".join(sorted(live))
            raise SpectravenvError(
                f"{st.run.path} still has Slurm jobs queued or running ({ids}); wait for them "
                f"(`spectravenv status {st.run.path}`) or cancel them (`scancel {ids}`), then resume"
            )


def create_run(st: Eval) -> None:
    """A new run's folder, made only now that the request is known to be good: atomically
    (mkdir fails if it exists, so two evals started in the same second get two folders)."""
    if st.run is not None:
        return
    st.run, st.created = rundir.create(st.req.output_dir, st.req.run_name)
    lock_run(st)
    if not st.created:  # another eval made a run of this name a moment ago: plan against it
        make_plan(st)


def make_plan(st: Eval) -> None:
    done = done_pairs(st) if st.existing is not None and st.run is not None else set()
    # Measured speeds on this GPU type (from earlier runs) replace the catalog's guesses.
    measured = stats.apply(st.catalog, stats.load(st.paths), st.pool[0].name if st.pool else None)
    st.plan = plan.build(measured, st.models, st.benchmarks, st.pool, limit=st.settings["limit"],
                         done=done, strict=not st.req.dry_run, skip_unsupported=st.req.skip_unsupported)  # fmt: skip
    if st.run is not None:
        from .launch import work

        if not st.req.dry_run:
            # Its units are done under the old fingerprint: forget them, so workers infer it
            # again (the runner then moves the pair's old files to .superseded/).
            for model, bench in st.stale:
                work.forget(st.run, model, bench)
        work.keep_divisions(st.run, st.plan.jobs)
    st.states = {j.env.name: envs.status(j.env, st.paths) for j in st.plan.jobs}


def done_pairs(st: Eval) -> set[tuple[str, str]]:
    """Pairs finished in this run whose score files are there and whose fingerprint still holds
    (same settings, env, model, checkpoint and data); the others run again, and we say why."""
    done = set()
    st.stale = []
    keys: dict[str, str] = {}
    for (model, bench), o in events.outcomes(st.run).items():
        if o.status != "done" or not all(st.run.resolve(f).exists() for f in o.score_files):
            continue
        m = st.catalog.models.get(model)
        if m is None or bench not in st.benchmarks or model not in st.models:
            continue
        env = st.catalog.envs[m.env]
        if env.name not in keys:
            keys[env.name] = envs.env_key(env)
        now = jobfiles.host_fingerprint(m, env, bench, keys[env.name], st.settings, st.secrets, st.paths)
        changed = fingerprint.changes(o.fingerprint or {}, now) if o.fingerprint else ["unknown"]
        if changed:
            st.say(f"{model} x {bench} runs again: {', '.join(changed)} changed since it was evaluated")
            st.stale.append((model, bench))
            continue
        done.add((model, bench))
    return done


def check_offline(st: Eval) -> None:
    """The TSVs and checkpoints the plan's jobs need: fetched first with --prefetch; in an
    offline run all of them must be on disk, or nothing starts (offline.py). After the plan
    (only what will run is needed), before any folder is made or env built."""
    from . import offline, prefetch

    st.offline = offline.enabled(st.req.offline, os.environ)
    models = list({j.model.name: j.model for j in st.plan.todo}.values())
    benchmarks = list({b.name: b for j in st.plan.todo for b in j.benchmarks}.values())
    if st.req.prefetch and not st.req.dry_run:
        prefetch.fetch(st.catalog, models, benchmarks, st.paths, st.secrets, st.err)
    st.needs = prefetch.needs(models, benchmarks, st.paths)
    if st.offline and not st.req.dry_run:
        offline.check(st.needs, st.secrets)


def job_environ(st: Eval) -> dict[str, str]:
    """The environment the jobs' environments are made from: with the hub's offline switches
    in an offline run."""
    from . import offline

    return offline.job_environ(os.environ) if st.offline else dict(os.environ)


def dry_run(st: Eval) -> int | None:
    if not st.req.dry_run:
        return None
    p = st.plan
    if st.run is not None:
        st.out.write(f"run folder: {st.run.path} (would continue it)\n")
    else:
        where = st.req.output_dir / (st.req.run_name or "<timestamp>")
        st.out.write(f"run folder: would write {where.absolute()}\n")
    st.out.write(plan.format_plan(p, {n: s.state for n, s in st.states.items()}) + "\n")
    from . import offline, prefetch

    st.out.write("\n" + st.secrets.redact(prefetch.describe(st.needs, st.paths)) + "\n")
    if st.offline:
        missing = sum(not n.present for n in st.needs)
        st.out.write(f"offline: the jobs run with {', '.join(f'{k}=1' for k in sorted(offline.JOB_ENV))}"
                     + (f"; this run would be refused: {missing} missing\n" if missing else "\n"))  # fmt: skip
    elif st.req.prefetch:
        st.out.write("--prefetch: a run without --dry-run fetches what is missing first\n")
    if st.on_slurm:
        from .launch import slurm

        run = st.run or rundir.RunDir((st.req.output_dir / (st.req.run_name or "RUN")).absolute())
        for j in p.todo:
            worker = f"{j.id}.w1"
            st.out.write(f"\n# sbatch script of a worker of {j.model.name}\n")
            st.out.write(slurm.script(j, run, st.states[j.env.name].python, run.job_file(worker), st.req.slurm, [],
                                      worker))
    return 0


def nothing_to_do(st: Eval) -> int | None:
    if st.plan.todo:
        return None
    n = len(st.models) * len(st.benchmarks)
    st.say(f"all {n} pair{'s' if n != 1 else ''} of {st.run.path} are already done")
    st.manifest = dict(st.existing or {})
    return finish(st, interrupted=False)


# ---- provenance ---------------------------------------------------------------------------------


def git_revision(package_dir: Path = PACKAGE_DIR) -> str | None:
    """spectravenv's own commit: of the checkout it runs from (an editable install), or what pip
    recorded for an install from git. Never the HEAD of some repository it happens to sit in."""
    from importlib import metadata

    top = package_dir.parent
    pyproject = top / "pyproject.toml"
    if (top / ".git").exists() and pyproject.is_file() and 'name = "spectravenv"' in pyproject.read_text():
        from . import procs

        with contextlib.suppress(SpectravenvError):
            proc = procs.run(["git", "-C", top, "rev-parse", "HEAD"], timeout=5)
            if proc.returncode == 0:
                return proc.stdout.strip()
    with contextlib.suppress(metadata.PackageNotFoundError, ValueError, TypeError):
        import json

        direct = metadata.distribution("spectravenv").read_text("direct_url.json")
        if direct:
            return json.loads(direct).get("vcs_info", {}).get("commit_id")
    return None


def env_provenance(st: Eval) -> dict[str, Any]:
    return {
        name: {
            "lock": str(s.env.lock),
            "lock_sha256": (s.marker or {}).get("lock_sha256"),
            "key": s.key,
            "python": (s.marker or {}).get("python"),
            "versions": (s.marker or {}).get("versions", {}),
            "cuda_runtime": (s.marker or {}).get("cuda_runtime"),
            # base_python envs: the base's path, Python and package versions (part of the key).
            "base_python": (s.marker or {}).get("base_python"),
        }
        for name, s in sorted(st.states.items())
    }


def begin_attempt(st: Eval) -> None:
    """run.json: everything needed to compare two runs from their manifests alone; each attempt
    (the first run and every resume) keeps its own provenance."""
    old = st.existing or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.t0))
    command = st.secrets.redact(" ".join(st.req.argv))
    attempt = {
        "started": now,
        "command": command,
        "host": socket.gethostname(),
        "launcher": st.req.launcher,
        "spectravenv": {"version": __version__, "git_revision": git_revision()},
        "gpus": [{"index": g.index, "name": g.name, "memory_total_mb": g.memory_total_mb,
                  "driver": g.driver, "used": g in st.pool} for g in st.inventory],
        "envs": {},
    }
    st.manifest = {
        **old,
        "schema": 2,
        "run": st.run.path.name,
        "spectravenv": attempt["spectravenv"],
        "command": old.get("command", command),
        "attempts": [*old.get("attempts", []), attempt],
        "started": old.get("started", now),
        "finished": None,
        "status": "running",
        "host": attempt["host"],
        "launcher": st.req.launcher,
        "models": sorted(set(old.get("models", [])) | set(st.models)),
        "benchmarks": sorted(set(old.get("benchmarks", [])) | set(st.benchmarks)),
        "skipped_pairs": sorted({*map(tuple, old.get("skipped_pairs", [])), *st.plan.dropped}),
        **st.settings,
        "gpus": attempt["gpus"],
        "secrets_passed": st.secrets.names,  # names only, never values
    }
    st.run.write_manifest(st.manifest)
    st.started_work = True


def build_envs(st: Eval) -> None:
    """Build what is missing, before anything runs: one build per env, under its file lock."""
    st.states = {name: envs.ensure(st.catalog.envs[name], st.paths, report=st.say) for name in st.states}
    st.addon_dirs = {
        j.id: [envs.ensure_addon(st.catalog.addons[a], st.states[j.env.name], st.paths, report=st.say)
               for a in j.model.addons]
        for j in st.plan.todo
    }  # fmt: skip
    provenance = env_provenance(st)
    st.manifest["attempts"][-1]["envs"] = provenance
    # The run's envs: the latest attempt's provenance per env (every attempt keeps its own).
    st.manifest["envs"] = {**st.manifest.get("envs", {}), **provenance}
    st.run.write_manifest(st.manifest)


def spec_of(st: Eval, j: plan.Job, worker: str | None = None) -> dict[str, Any]:
    return jobfiles.job_spec(j, st.run, st.paths, env_key=st.states[j.env.name].key, settings=st.settings,
                             secrets=st.secrets, nproc=st.req.nproc, worker=worker, limit=st.settings["limit"])  # fmt: skip


def reopen_failed(st: Eval) -> None:
    """A new attempt gives the pairs that failed before another chance (their done units stay)."""
    from .launch import work

    for j in st.plan.todo:
        again = work.reopen(st.run, j)
        if again:
            st.say(f"{j.model.name}: {', '.join(again)} failed before; trying again")


def more_gpus_after_oom(st: Eval, j: plan.Job) -> bool:
    """After a CUDA out-of-memory: one worker over one more GPU when its wrapper can spread over
    GPUs and the pool has one; otherwise say why not (the pairs are then given up)."""
    if not j.model.multi_gpu:
        st.say(f"{j.model.name} ran out of GPU memory on {plan.gpus_word(j.gpus_needed)}; its VLMEvalKit "
               "wrapper loads onto one GPU, so more GPUs cannot help: not retried")  # fmt: skip
        return False
    if j.gpus_needed + 1 > len(st.pool):
        st.say(f"{j.model.name} ran out of GPU memory on {plan.gpus_word(j.gpus_needed)}; no bigger "
               "placement exists here, so it is not retried")  # fmt: skip
        return False
    j.gpus_needed += 1
    j.why = f"retry after CUDA out of memory: one process over {j.gpus_needed} GPUs"
    st.say(f"{j.model.name} ran out of GPU memory: retrying on {j.gpus_needed} GPUs")
    return True


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a killed ssh session) all stop the run
    the same way: children are stopped, what finished is kept."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def live_display(st: Eval) -> Display:
    """The console of the run: workers and an overall bar from the run's events, with the
    plan's expected makespan as the finish estimate until speeds are measured."""
    estimate = st.plan.expected_makespan() if st.plan.todo else None
    return Display(st.err, Tracker(st.run, st.catalog, estimate))


def launch_local(st: Eval) -> int | None:
    if st.on_slurm:
        return None
    launch = Launch(
        run=st.run,
        pythons={n: s.python for n, s in st.states.items()},
        addons=st.addon_dirs,
        secrets=st.secrets,
        child_env=lambda g, a, t: jobfiles.child_env(job_environ(st), st.paths, st.secrets, g, a, t),
        write_job=lambda j, worker: st.run.write_job(spec_of(st, j, worker)),
        timeout=st.req.timeout,
        retries=st.req.retries,
        on_oom=lambda j: more_gpus_after_oom(st, j),
        requery=(lambda: gpus.query()) if st.inventory else None,
    )
    st.say(f"run folder: {st.run.path}")
    display = live_display(st)
    with stop_on_signals() as stop:
        try:
            run_plan(st.plan, launch, display, stop)
        finally:
            display.close()
        interrupted = stop.is_set()
    if interrupted:
        st.say("interrupted: running jobs were stopped; finished pairs are kept. "
               f"Continue with: spectravenv eval --resume {st.run.path}")  # fmt: skip
    return finish(st, interrupted=interrupted)


def launch_slurm(st: Eval) -> int:
    """Submit workers to Slurm, then (unless --no-wait) follow them to the end, submitting more
    as workers end while work is open."""
    from .launch import slurm

    req, run = st.req, st.run
    st.say(f"run folder: {run.path}")
    display = live_display(st)

    def script(j: plan.Job, worker: str) -> str:
        job_file = run.write_job(spec_of(st, j, worker))
        return slurm.script(j, run, st.states[j.env.name].python, job_file, req.slurm,
                            st.addon_dirs.get(j.id, []), worker)  # fmt: skip

    # Secrets and shared paths travel in the job's environment (sbatch --export=ALL), never in
    # the script; CUDA_VISIBLE_DEVICES is Slurm's to set.
    env = jobfiles.child_env(job_environ(st), st.paths, st.secrets, None, [], None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    slurm.check(st.plan.todo, run, {j.id: script(j, f"{j.id}.check") for j in st.plan.todo}, env)
    sr = slurm.SlurmRun(run, script, env, req.slurm.max_gpus or len(st.pool), req.retries,
                        on_oom=lambda j: more_gpus_after_oom(st, j))  # fmt: skip

    def remember() -> None:
        st.manifest["slurm_jobs"] = {**st.manifest.get("slurm_jobs", {}), **{s.worker: s.slurm_id for s in sr.submitted}}
        run.write_manifest(st.manifest)

    sr.on_submit = remember

    def on_event(s: slurm.Submitted, ev: dict[str, Any]) -> None:
        narrate(ev, s.job, run, display)

    with stop_on_signals() as stop:
        try:
            slurm.dispatch(st.plan, sr, display, stop, on_event, wait=req.slurm.wait)
        finally:
            display.close()
            remember()
        interrupted = stop.is_set()
    ids = " ".join(s.slurm_id for s in sr.submitted)
    if not req.slurm.wait:
        st.out.write(f"submitted Slurm jobs {ids}; follow with `spectravenv status {run.path}`, "
                     f"tables with `spectravenv report {run.path}` when they end\n")  # fmt: skip
        return 0
    live = [s for s in sr.submitted if not s.done]
    cancel = req.slurm.cancel_on_interrupt
    if interrupted and live and not cancel and sys.stdin.isatty():
        cancel = input(f"cancel the Slurm jobs {ids}? [y/N] ").strip().lower() in ("y", "yes")
    if interrupted and live and not cancel:
        display.event(f"stopped waiting; the Slurm jobs keep running ({ids}). Cancel them with "
                      f"`scancel {ids}`; see where they stand with `spectravenv status {run.path}`")  # fmt: skip
        return INTERRUPTED
    if interrupted and live:
        slurm.cancel(live)
        slurm.wait_gone(live)
        display.event(f"cancelled Slurm jobs {ids}; continue with: spectravenv eval --resume {run.path}")
    return finish(st, interrupted=interrupted)


def finish(st: Eval, *, interrupted: bool) -> int:
    from . import report

    outs = events.outcomes(st.run)
    # A pair left "running" was cut short: it counts as not done, like a failed one.
    failed = [o for o in outs.values() if o.status in ("failed", "running")]
    st.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    st.manifest["status"] = "interrupted" if interrupted else ("failed" if failed else "finished")
    st.run.write_manifest(st.manifest)
    stats.record(st.paths, st.run, warn=lambda m: st.say(f"spectravenv: warning: {m}"))
    st.out.write(report.write_all(st.run, st.catalog) + "\n")
    st.out.write(f"\nresults: {st.run.path / 'results'}\nreport:  {st.run.path / report.REPORT}\n")
    if interrupted:
        return INTERRUPTED
    return 1 if failed else 0


STEPS: tuple[Step, ...] = (
    check_request, choose_run, matrix, settle, read_secrets, gpu_pool, lock_run, make_plan, check_offline,
    dry_run, create_run, nothing_to_do, begin_attempt, build_envs, reopen_failed, launch_local,
    launch_slurm,
)  # fmt: skip


def evaluate(req: EvalRequest, paths: Paths, catalog: Catalog, out: TextIO, err: TextIO) -> int:
    st = Eval(req, paths, catalog, out, err)
    try:
        for step in STEPS:
            code = step(st)
            if code is not None:
                return code
        return 0  # pragma: no cover - the last step always returns
    except BaseException:
        if st.started_work and st.manifest.get("status") == "running":
            # The request was good but the work broke off (an env build failed, a signal):
            # say so in the manifest; nothing finished is touched.
            st.manifest["status"] = "failed"
            st.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            with contextlib.suppress(OSError):
                st.run.write_manifest(st.manifest)
        raise
    finally:
        if st.lock is not None:
            st.lock.release()
        if st.created and not st.started_work and st.run is not None:
            # Refused before any work: leave no empty run folder behind.
            shutil.rmtree(st.run.path, ignore_errors=True)
