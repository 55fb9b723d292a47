"""Starting the work: the local or Slurm launcher with what they need from the run (job files,
the child environment, OOM escalation), under signal handlers that stop a run cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from spectravenv.errors import SpectravenvError
from spectravenv.plan import backends, gpus, schedule
from spectravenv.plan import jobs as plan
from spectravenv.run import jobfile as jobfiles
from spectravenv.run import work
from spectravenv.run.finish import finish
from spectravenv.run.local import Launch, narrate, run_plan
from spectravenv.run.progress import Display, Tracker
from spectravenv.run.state import INTERRUPTED, Eval
from spectravenv.run.watchdog import Limits


def job_environ(st: Eval) -> dict[str, str]:
    """The environment the jobs' environments are made from: with the hub's offline switches
    in an offline run."""
    from spectravenv.fetch import offline

    return offline.job_environ(os.environ) if st.offline else dict(os.environ)


def spec_of(st: Eval, j: plan.Job, worker: str | None = None) -> dict[str, Any]:
    engine = backends.engine_env([j.model])
    return jobfiles.job_spec(j, st.run, st.paths, env_key=st.states[j.env.name].key, settings=st.settings,
                             secrets=st.secrets, nproc=st.req.nproc, judges=st.judges, worker=worker,
                             limit=st.settings["limit"],
                             engine_python=st.states[engine].python if engine else None)  # fmt: skip


def reopen_failed(st: Eval) -> None:
    """A new attempt gives the pairs that failed before another chance (their done units stay),
    those given up included."""
    for j in st.plan.todo:
        again = work.reopen(st.run, j, given_up=True)
        if again:
            st.say(f"{j.model.name}: {', '.join(again)} failed before; trying again")


def check_max_gpus(st: Eval) -> None:
    """--max-gpus below what one worker of a model needs would leave that model waiting forever:
    refused before anything is built or started."""
    cap = st.req.max_gpus
    if cap is None or st.plan is None:
        return
    for j in st.plan.todo:
        if j.gpus_needed > cap and not j.blocked:
            raise SpectravenvError(f"--max-gpus {cap} is fewer than the {plan.gpus_word(j.gpus_needed)} one "
                                   f"worker of {j.model.name} needs; raise --max-gpus or leave it out")  # fmt: skip


def limits(st: Eval) -> Limits:
    """The watchdog's limits: the defaults, SPECTRAVENV_* overrides, --timeout (local only)."""
    return Limits.from_env(os.environ, None if st.on_slurm else st.req.timeout)


def more_gpus_after_oom(st: Eval, j: plan.Job) -> bool:
    """After a CUDA out-of-memory: one worker over one more GPU when its wrapper can spread over
    GPUs and the pool has one; otherwise say why not (the pairs are then given up)."""
    if not j.model.multi_gpu:
        st.say(f"{j.model.name} ran out of GPU memory on {plan.gpus_word(j.gpus_needed)}; its VLMEvalKit "
               "wrapper loads onto one GPU, so more GPUs cannot help: not retried")  # fmt: skip
        return False
    most = min(len(st.pool), st.req.max_gpus or len(st.pool))
    if j.gpus_needed + 1 > most:
        cap = f" (--max-gpus {st.req.max_gpus})" if most < len(st.pool) else ""
        st.say(f"{j.model.name} ran out of GPU memory on {plan.gpus_word(j.gpus_needed)}; no bigger "
               f"placement exists here{cap}, so it is not retried")  # fmt: skip
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
    estimate = schedule.simulate(st.plan).makespan if st.plan.todo else None
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
        limits=limits(st),
        retries=st.req.retries,
        on_oom=lambda j: more_gpus_after_oom(st, j),
        requery=gpus.readings if st.inventory and not st.req.assume_gpus else None,
        max_gpus=st.req.max_gpus,
    )
    st.say(f"run folder: {st.run.path}")
    for note in gpus.memory_notes(st.pool):
        st.say(f"spectravenv: note: {note}")
    display = live_display(st)
    # The end (run.json, report) is inside the handlers too: a signal once the work is over
    # changes nothing, it neither cuts the report short nor makes a finished run "interrupted".
    with stop_on_signals() as stop:
        try:
            interrupted = run_plan(st.plan, launch, display, stop)
        finally:
            display.close()
        if interrupted:
            st.say("interrupted: running jobs were stopped; finished pairs are kept. "
                   f"Continue with: spectravenv eval --resume {st.run.path}")  # fmt: skip
        return finish(st, interrupted=interrupted)


def launch_slurm(st: Eval) -> int:
    """Submit workers to Slurm, then (unless --no-wait) follow them to the end, submitting more
    as workers end while work is open."""
    from spectravenv.run import slurm

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
    sr = slurm.SlurmRun(run, script, env, req.max_gpus or len(st.pool), req.retries,
                        on_oom=lambda j: more_gpus_after_oom(st, j), limits=limits(st))  # fmt: skip

    def remember() -> None:
        st.manifest["slurm_jobs"] = {**st.manifest.get("slurm_jobs", {}), **{s.worker: s.slurm_id for s in sr.submitted}}
        run.write_manifest(st.manifest)

    sr.on_submit = remember

    def on_event(s: slurm.Submitted, ev: dict[str, Any]) -> None:
        narrate(ev, s.job, run, display)

    with stop_on_signals() as stop:
        try:
            interrupted = slurm.dispatch(st.plan, sr, display, stop, on_event, wait=req.slurm.wait)
        finally:
            display.close()
            remember()
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

