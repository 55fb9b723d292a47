"""Run a plan's work on this machine: worker processes on the GPUs they get, started as GPUs free up.

The loop keeps its own record of which GPUs it handed out, re-reads real free memory before it
starts workers (another user's process makes a GPU unavailable, not a crash), and whenever GPUs
are free asks the scheduler which model's worker to start there (schedule.choose_starts: the
model with the most open work per worker, while another load pays off). Each worker takes its
model's units until none is left and ends. The loop follows every worker through its events
file, stops one that runs past --timeout or stops making progress, retries what failed
(--retries), and on interrupt stops every process tree it started.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .. import events, procs
from ..gpus import GPU
from ..plan import Job, Plan
from ..progress import Display
from ..rundir import RunDir
from ..schedule import choose_starts
from ..secrets import Secrets
from . import work
from .job import runner_command

POLL = 0.25  # reading event files is cheap
RETHINK = 5.0  # how often the open work is recounted while nothing else changes
REQUERY = 10.0  # nvidia-smi at most this often while work waits (and after each worker ends)
STALL = 900.0  # a loaded worker silent this long (no progress, no unit) is stopped and replaced


@dataclass
class Active:
    job: Job
    worker: str
    proc: psutil.Popen
    pump: threading.Thread
    gpus: list[GPU]
    follower: events.Follower
    started: float
    last_sign: float = field(default_factory=time.monotonic)
    loaded: bool = False
    stage: str = "starting"
    benchmark: str | None = None
    done: int = 0
    total: int | None = None
    terminal: bool = False  # the runner wrote job_done or job_failed
    failure: dict[str, Any] | None = None  # its job_failed, if any


@dataclass
class Launch:
    """Everything the local launcher needs besides the plan."""

    run: RunDir
    pythons: dict[str, Path]  # env name -> env's python
    addons: dict[str, list[Path]]  # job id -> add-on folders for PYTHONPATH
    secrets: Secrets
    # (GPUs or [] for CPU, add-on folders, CPU threads) -> the runner's environment
    child_env: Callable[[list[GPU] | None, list[Path], int | None], dict[str, str]]
    # (job, worker id) -> the worker's job file
    write_job: Callable[[Job, str], Path]
    timeout: float | None = None
    requery: Callable[[], list[GPU]] | None = None  # fresh free-memory readings
    retries: int = 0  # per model: failures it may have before its pairs are given up
    # After a CUDA out of memory: give the job's workers more GPUs if that can help (False: no).
    on_oom: Callable[[Job], bool] | None = None
    stall: float = STALL


def run_plan(plan: Plan, launch: Launch, display: Display, stop: threading.Event) -> None:
    jobs = list(plan.todo)
    free = list(plan.gpus)
    active: list[Active] = []
    failures = {j.id: 0 for j in jobs}
    counters = {j.id: itertools.count(1) for j in jobs}
    cpus = os.cpu_count() or 1
    cpu_slots = max(1, cpus // 2)
    gpu_threads = max(1, cpus // max(len(plan.gpus), 1))
    readings: dict[str, GPU] = {}
    last_query = -REQUERY
    last_think = -RETHINK
    run = launch.run

    def start(job: Job, gpus: list[GPU]) -> None:
        worker = f"{job.id}.w{next(counters[job.id])}"
        threads = gpu_threads if gpus else max(1, cpus // cpu_slots)
        env = launch.child_env(gpus, launch.addons.get(job.id, []), threads)
        log = run.log_file(job.model.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n===== spectravenv: worker {worker} starting at {time.strftime('%F %T')} =====\n")
        job_file = launch.write_job(job, worker)
        follower = events.Follower(run, worker)  # before the runner can write
        cmd = runner_command(launch.pythons[job.env.name], job_file)
        proc, pump = procs.spawn(cmd, log=log, env=env, masker=launch.secrets.redactor.stream())
        active.append(Active(job, worker, proc, pump, gpus, follower, time.monotonic()))
        where = "CPU" if not gpus else "GPU " + ",".join(str(g.index) for g in gpus)
        display.event(f"started {worker} ({job.env.name}) on {where}")
        run.log_summary(f"worker {worker} started on {where} pid {proc.pid}")

    def follow(a: Active) -> None:
        for ev in a.follower.new():
            a.last_sign = time.monotonic()
            kind, bench = ev["event"], ev.get("benchmark")
            narrate(ev, a.job, run, display)
            if kind == "model_loaded":
                a.loaded = True
                a.stage = f"model loaded in {ev.get('seconds', 0):.0f}s"
            elif kind == "unit_started":
                a.benchmark, a.total, a.done = bench, ev.get("rows"), ev.get("reused", 0) or 0
            elif kind == "progress":
                a.done, a.total = ev.get("done", a.done), ev.get("total", a.total)
            elif kind in ("unit_done", "benchmark_done", "benchmark_failed"):
                a.benchmark = None
            elif kind in ("job_done", "job_failed"):
                a.terminal = True
                if kind == "job_failed":
                    a.failure = ev

    def finish(a: Active, status: str, note: str = "") -> None:
        nonlocal last_query, last_think
        a.pump.join(timeout=5)
        follow(a)
        rc = a.proc.returncode if a.proc.returncode is not None else a.proc.poll()
        if status == "exited" and not a.terminal:
            # The runner died without saying why (killed, segfault, out of host memory): record
            # that in its events so every reader folds the same story.
            note = (f"the runner exited with code {rc} without reporting; see "
                    f"{run.relative(run.log_file(a.job.model.name))}")  # fmt: skip
        if note:
            events.record_dispatcher_failure(run, a.worker, note)
            display.event(f"FAILED  {a.worker}: {note}")
        run.log_summary(f"worker {a.worker} ended: {status} (exit {rc}){_span_text(run, a.worker)}")
        free.extend(g for g in a.gpus if g not in free)
        free.sort(key=lambda g: g.index)
        active.remove(a)
        last_query = last_think = -REQUERY  # GPUs came back: read them afresh, rethink at once
        job = a.job
        if note or a.failure is not None:
            failed_worker(job, a, note or (a.failure or {}).get("error", ""))

    def failed_worker(job: Job, a: Active, error: str) -> None:
        """A worker that could not load its model, or was stopped: its model may try again."""
        if stop.is_set():
            return
        oom = bool((a.failure or {}).get("oom"))
        failures[job.id] += 1
        if failures[job.id] > launch.retries or (oom and not (launch.on_oom and launch.on_oom(job))):
            gave = work.give_up(run, job, error)
            # Given up means given up: no retries left for retry_failed_pairs to reopen them with.
            failures[job.id] = max(failures[job.id], launch.retries)
            if gave:
                run.log_summary(f"job {job.id} gave up on {', '.join(gave)}: {error}")
        else:
            display.event(f"retry   {job.model.name} ({failures[job.id]}/{launch.retries})")
            run.log_summary(f"job {job.id} retry {failures[job.id]}/{launch.retries}")

    def retry_failed_pairs() -> None:
        """Pairs that failed inside a worker (a unit's generate raised): open again while the
        model has retries left."""
        for job in jobs:
            if any(a.job is job for a in active):
                continue
            lf = work.left(run, job, plan.limit)
            if lf.failed and lf.finished and failures[job.id] < launch.retries and not stop.is_set():
                failures[job.id] += 1
                again = work.reopen(run, job)
                display.event(f"retry   {job.model.name} ({failures[job.id]}/{launch.retries}): {', '.join(again)}")
                run.log_summary(f"job {job.id} retry {failures[job.id]}/{launch.retries}: {', '.join(again)}")

    while True:
        if stop.is_set():
            break
        now = time.monotonic()
        if now - last_think >= RETHINK:
            last_think = now
            retry_failed_pairs()
            live = {j.id: sum(1 for a in active if a.job is j) for j in jobs}
            todo = [o for o in work.open_work(run, jobs, plan.limit, live) if o.units > 0]
            if not todo and not active:
                break
            if todo and (free or any(not o.job.gpus_needed for o in todo)):
                if launch.requery is not None and free and now - last_query >= REQUERY:
                    readings = {g.uuid: g for g in launch.requery()}
                    last_query = now
                cpu_free = cpu_slots - sum(1 for a in active if not a.gpus)
                for job, got in choose_starts(todo, free, readings, cpu_free):
                    for g in got:
                        free.remove(g)
                    start(job, got)
            if todo and not active:
                # Nothing runs and nothing fits: GPUs filled up since planning. Waiting would
                # wait forever; say so.
                for o in todo:
                    msg = (f"no GPU with {o.job.per_gpu_gb:.0f} GB free for {o.job.model.name} (other "
                           "processes use them); free GPUs or choose others with --gpus")  # fmt: skip
                    launch.write_job(o.job, f"{o.job.id}.dispatch")  # the pairs the failure is about
                    events.record_dispatcher_failure(run, f"{o.job.id}.dispatch", msg)
                    work.give_up(run, o.job, msg)
                    display.event(f"FAILED  {o.job.model.name}: {msg}")
                continue
        for a in list(active):
            follow(a)
            if a.proc.poll() is not None:
                finish(a, "exited")
            elif launch.timeout and time.monotonic() - a.started > launch.timeout:
                procs.stop_trees([a.proc])
                finish(a, "timeout", f"timed out after {launch.timeout:g}s (--timeout); stopped")
            elif a.loaded and time.monotonic() - a.last_sign > launch.stall:
                procs.stop_trees([a.proc])
                finish(a, "stalled", f"no progress for {launch.stall:g}s; stopped (its unit goes to another worker)")
        display.refresh()
        stop.wait(POLL)

    if active:  # interrupted: stop every tree together, keep what finished
        display.event(f"stopping {len(active)} running worker(s) ...")
        procs.stop_trees([a.proc for a in active])
        for a in list(active):
            finish(a, "interrupted")


def _span_text(run: RunDir, job_id: str) -> str:
    """The job's duration as the report shows it (from its own events), for the summary log."""
    from ..console import duration

    spans = [s for s in events.spans(run) if s.job_id == job_id]
    return f" after {duration(spans[-1].seconds)}" if spans else ""


def narrate(ev: dict[str, Any], job: Job, run: RunDir, display: Display) -> None:
    """What a runner event means for the console and the summary log (both launchers). Events
    are masked by the runner that wrote them."""
    from ..console import duration

    kind, bench, name = ev["event"], ev.get("benchmark"), job.model.name
    # Finished and failed pairs reach the console through the progress view (with their score).
    if kind == "benchmark_done":
        run.log_summary(f"pair {name} x {bench} done in {duration(ev.get('seconds') or 0)}")
    elif kind == "benchmark_failed":
        run.log_summary(f"pair {name} x {bench} failed at {ev.get('stage')}: {ev.get('error', '')}")
    elif kind == "pair_reset":
        what = ", ".join(ev.get("changed", []))
        display.event(f"reset   {name} x {bench}: {what} changed since the last attempt; starting afresh")
        run.log_summary(f"pair {name} x {bench} reset: {what} changed; old files in {ev.get('moved_to')}")
    elif kind == "job_failed" and ev.get("source") != "dispatcher":
        display.event(f"FAILED  {name}: {ev.get('error', '')}")
        run.log_summary(f"job {job.id} failed at {ev.get('stage')}: {ev.get('error', '')}")
