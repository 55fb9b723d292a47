"""Run a plan's work on this machine: worker processes on the GPUs they get, started as GPUs free up.

The dispatcher keeps its own record of which GPUs it handed out, re-reads real free memory before
it starts workers (another user's process makes a GPU unavailable, not a crash; a re-read that
fails keeps the last readings), and whenever GPUs are free asks the scheduler which model's
worker to start there (schedule.choose_starts: the model with the most open work per worker,
while another load pays off), never holding more than --max-gpus at once. Each worker takes its
model's units until none is left and ends. The dispatcher follows every worker through its
events file, stops one that its watchdog finds not working (run/watchdog.py), retries what
failed (run/retry.py), and on every way out (done, interrupted, an error of its own) stops every
process tree it started; a dispatcher killed outright takes its workers with it (procs.spawn).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from spectravenv import procs
from spectravenv.console import duration
from spectravenv.errors import SpectravenvError
from spectravenv.plan.gpus import GPU
from spectravenv.plan.jobs import Job, Plan
from spectravenv.plan.schedule import Open, choose_starts
from spectravenv.run import events, work
from spectravenv.run.jobfile import runner_command
from spectravenv.run.progress import Display
from spectravenv.run.retry import RetryPolicy
from spectravenv.run.rundir import RunDir
from spectravenv.run.watchdog import Limits, Watch
from spectravenv.secrets import Secrets

POLL = 0.25  # reading event files is cheap
RETHINK = 5.0  # how often the open work is recounted while nothing else changes
REQUERY = 10.0  # nvidia-smi at most this often while work waits (and after each worker ends)


@dataclass
class Active:
    """A worker that runs."""

    job: Job
    worker: str
    proc: psutil.Popen
    pump: threading.Thread
    gpus: list[GPU]
    follower: events.Follower
    watch: Watch
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
    limits: Limits = field(default_factory=Limits)  # the watchdog's (and --timeout)
    requery: Callable[[], list[GPU]] | None = None  # fresh free-memory readings (may raise)
    retries: int = 0  # per model: failures it may have before its pairs are given up
    # After a CUDA out of memory: give the job's workers more GPUs if that can help (False: no).
    on_oom: Callable[[Job], bool] | None = None
    max_gpus: int | None = None  # GPUs held at once at most (--max-gpus)


class LocalDispatch:
    """One local run's dispatcher: the state its steps share, and the steps (rethink, start,
    follow, watch, end, stop_all) as methods."""

    def __init__(self, plan: Plan, launch: Launch, display: Display, stop: threading.Event) -> None:
        self.plan, self.launch, self.display, self.stop = plan, launch, display, stop
        self.run = launch.run
        self.jobs = list(plan.todo)
        self.free = list(plan.gpus)
        self.active: list[Active] = []
        self.counters = {j.id: itertools.count(1) for j in self.jobs}
        self.retry = RetryPolicy(launch.run, launch.retries, display.event, launch.on_oom)
        self.readings: dict[str, GPU] = {}
        self.requery_failed = False
        self.last_query = self.last_think = -math.inf
        cpus = os.cpu_count() or 1
        self.cpu_slots = max(1, cpus // 2)
        self.gpu_threads = max(1, cpus // max(len(plan.gpus), 1))
        self.cpu_threads = max(1, cpus // self.cpu_slots)

    def run_all(self) -> bool:
        """Work until nothing is left or `stop` is set. Returns True when it was stopped with
        work left (interrupted); a stop after every pair ended is no interruption."""
        try:
            while not self.stop.is_set() and not self.rethink():
                self.watch_all()
                self.display.refresh()
                self.stop.wait(POLL)
        except BaseException as e:
            why = f"the dispatcher stopped: {type(e).__name__}" + (f": {e}" if str(e) else "")
            self.stop_all(self.launch.secrets.redact(why))
            raise
        self.stop_all()
        return self.stop.is_set() and self.work_left()

    # -- what to start --
    def rethink(self) -> bool:
        """Every RETHINK s (at once after a worker ended): retries, the open work, new workers.
        True when nothing is left to do."""
        now = time.monotonic()
        if now - self.last_think < RETHINK:
            return False
        self.last_think = now
        self.retry.reopen_failed_pairs(self.jobs, {a.job.id for a in self.active}, self.plan.limit)
        todo = self.open_work()
        if not todo and not self.active:
            return True
        if todo:
            self.start_workers(todo, now)
        if todo and not self.active:
            self.nothing_fits(todo)
        return False

    def open_work(self) -> list[Open]:
        live = {j.id: sum(1 for a in self.active if a.job is j) for j in self.jobs}
        return [o for o in work.open_work(self.run, self.jobs, self.plan.limit, live) if o.units > 0]

    def work_left(self) -> bool:
        return bool(self.open_work())

    def start_workers(self, todo: list[Open], now: float) -> None:
        if self.launch.requery is not None and self.free and now - self.last_query >= REQUERY:
            self.reread_gpus(now)
        cpu_free = self.cpu_slots - sum(1 for a in self.active if not a.gpus)
        budget = self.gpu_budget()
        for job, got in choose_starts(todo, self.free, self.readings, cpu_free):
            if len(got) > budget:
                continue  # --max-gpus: this one waits until GPUs of the run come back
            budget -= len(got)
            for g in got:
                self.free.remove(g)
            self.start(job, got)

    def gpu_budget(self) -> float:
        """GPUs that may still be handed out under --max-gpus."""
        if self.launch.max_gpus is None:
            return math.inf
        return self.launch.max_gpus - sum(len(a.gpus) for a in self.active)

    def reread_gpus(self, now: float) -> None:
        """Fresh free memory; a failed re-read keeps the last readings (said once): the run goes on."""
        self.last_query = now
        try:
            self.readings.update({g.uuid: g for g in self.launch.requery()})
        except SpectravenvError as e:
            if not self.requery_failed:
                self.requery_failed = True
                msg = f"could not re-read GPU memory ({e}); going on with the last readings"
                self.display.event(f"warning: {msg}")
                self.run.log_summary(msg)

    def nothing_fits(self, todo: list[Open]) -> None:
        """Nothing runs and nothing fits: GPUs filled up since planning. Waiting would wait
        forever; say so."""
        for o in todo:
            msg = (f"no GPU with {o.job.per_gpu_gb:.0f} GB free for {o.job.model.name} (other "
                   "processes use them); free GPUs or choose others with --gpus")  # fmt: skip
            self.launch.write_job(o.job, f"{o.job.id}.dispatch")  # the pairs the failure is about
            events.record_dispatcher_failure(self.run, f"{o.job.id}.dispatch", msg)
            work.give_up(self.run, o.job, msg)
            self.display.event(f"FAILED  {o.job.model.name}: {msg}")

    def start(self, job: Job, gpus: list[GPU]) -> None:
        worker = f"{job.id}.w{next(self.counters[job.id])}"
        threads = self.gpu_threads if gpus else self.cpu_threads
        env = self.launch.child_env(gpus, self.launch.addons.get(job.id, []), threads)
        log = self.run.log_file(job.model.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n===== spectravenv: worker {worker} starting at {time.strftime('%F %T')} =====\n")
        job_file = self.launch.write_job(job, worker)
        follower = events.Follower(self.run, worker)  # before the runner can write
        cmd = runner_command(self.launch.pythons[job.env.name], job_file)
        proc, pump = procs.spawn(cmd, log=log, env=env, masker=self.launch.secrets.redactor.stream())
        self.active.append(Active(job, worker, proc, pump, gpus, follower, Watch(time.monotonic())))
        where = "CPU" if not gpus else "GPU " + ",".join(g.label for g in gpus)
        self.display.event(f"started {worker} ({job.env.name}) on {where}")
        self.run.log_summary(f"worker {worker} started on {where} pid {proc.pid}")

    # -- following the workers --
    def watch_all(self) -> None:
        for a in list(self.active):
            self.follow(a)
            if a.proc.poll() is not None:
                self.end(a, "exited")
            elif (verdict := a.watch.verdict(time.monotonic(), self.launch.limits, a.job)) is not None:
                procs.stop_trees([a.proc])
                self.end(a, *verdict)

    def follow(self, a: Active) -> None:
        for ev in a.follower.new():
            a.watch.saw(ev, time.monotonic())
            narrate(ev, a.job, self.run, self.display)
            if ev["event"] in ("job_done", "job_failed"):
                a.terminal = True
                a.failure = ev if ev["event"] == "job_failed" else None

    def end(self, a: Active, status: str, note: str = "", count: bool = True) -> None:
        """A worker has ended (or was stopped): its story told, its GPUs back, its failure
        counted (`count`: not when the whole run stops)."""
        a.pump.join(timeout=5)
        self.follow(a)
        rc = a.proc.returncode if a.proc.returncode is not None else a.proc.poll()
        if status == "exited" and not a.terminal:
            # The runner died without saying why (killed, segfault, out of host memory): record
            # that in its events so every reader folds the same story.
            note = (f"the runner exited with code {rc} without reporting; see "
                    f"{self.run.relative(self.run.log_file(a.job.model.name))}")  # fmt: skip
        if note:
            events.record_dispatcher_failure(self.run, a.worker, note)
            self.display.event(f"FAILED  {a.worker}: {note}")
        self.run.log_summary(f"worker {a.worker} ended: {status} (exit {rc}){_span_text(self.run, a.worker)}")
        self.free = sorted({*self.free, *a.gpus}, key=lambda g: g.order)
        self.active.remove(a)
        self.last_query = self.last_think = -math.inf  # GPUs came back: read them afresh, rethink at once
        if (note or a.failure is not None) and count and not self.stop.is_set():
            failure = a.failure or {}
            self.retry.worker_failed(a.job, note or failure.get("error", ""), bool(failure.get("oom")))

    def stop_all(self, note: str = "") -> None:
        """Every way out: whatever still runs is stopped, all trees together; what finished is
        kept. `note`: why, when the dispatcher itself failed (else: interrupted)."""
        if not self.active:
            return
        self.display.event(f"stopping {len(self.active)} running worker(s) ...")
        procs.stop_trees([a.proc for a in self.active])
        for a in list(self.active):
            self.end(a, "stopped" if note else "interrupted", note, count=False)


def run_plan(plan: Plan, launch: Launch, display: Display, stop: threading.Event) -> bool:
    """Run the plan's work here; True when interrupted with work left (see LocalDispatch)."""
    return LocalDispatch(plan, launch, display, stop).run_all()


def _span_text(run: RunDir, job_id: str) -> str:
    """The job's duration as the report shows it (from its own events), for the summary log."""
    spans = [s for s in events.spans(run) if s.job_id == job_id]
    return f" after {duration(spans[-1].seconds)}" if spans else ""


def narrate(ev: dict[str, Any], job: Job, run: RunDir, display: Display) -> None:
    """What a runner event means for the console and the summary log (both launchers). Events
    are masked by the runner that wrote them."""
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
