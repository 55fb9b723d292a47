"""Run a plan's jobs on this machine: one supervised runner process per job, on the GPUs it gets.

The loop keeps its own record of which GPUs it handed out, re-reads real free memory before each
start (another user's process makes a GPU unavailable, not a crash), starts the longest jobs
first, follows each job through its events file, enforces timeouts, and on interrupt stops every
process tree it started.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psutil

from .. import events, procs
from ..gpus import GPU
from ..plan import Job, Plan
from ..rundir import RunDir
from ..schedule import choose_starts
from ..secrets import Secrets
from .job import runner_command

POLL = 0.25  # reading event files is cheap
REQUERY = 10.0  # nvidia-smi at most this often while jobs wait (and after each job ends)


@dataclass
class Active:
    job: Job
    proc: psutil.Popen
    pump: threading.Thread
    gpus: list[GPU]
    follower: events.Follower
    started: float
    stage: str = "starting"
    benchmark: str | None = None
    done: int = 0
    total: int | None = None
    terminal: bool = False  # the runner wrote job_done or job_failed


@dataclass
class Launch:
    """Everything the local launcher needs besides the plan."""

    run: RunDir
    job_files: dict[str, Path]
    pythons: dict[str, Path]  # env name -> env's python
    addons: dict[str, list[Path]]  # job id -> add-on folders for PYTHONPATH
    secrets: Secrets
    # (GPUs or [] for CPU, add-on folders, CPU threads) -> the runner's environment
    child_env: Callable[[list[GPU] | None, list[Path], int | None], dict[str, str]]
    timeout: float | None = None
    requery: Callable[[], list[GPU]] | None = None  # fresh free-memory readings
    retries: int = 0  # re-runs of a failed or timed-out job, resuming its finished benchmarks
    # Narrows a job to what is still not done (rewriting its job file); False: nothing left.
    prepare_retry: Callable[[Job], bool] | None = None


class Display:
    """A live line per job on a terminal; plain lines on state changes elsewhere (logs, CI)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = 0
        self.last_plain = time.monotonic()

    def event(self, line: str) -> None:
        self._clear()
        self.stream.write(line + "\n")
        self.stream.flush()

    def refresh(self, active: list[Active], waiting: int) -> None:
        now = time.monotonic()
        lines = [self._line(a, now) for a in active]
        if waiting:
            lines.append(f"  ... {waiting} job(s) waiting for GPUs")
        if self.tty:
            self._clear()
            self.stream.write("".join(ln + "\n" for ln in lines))
            self.stream.flush()
            self.drawn = len(lines)
        elif now - self.last_plain > 30 and lines:  # a heartbeat for logs, not a flood
            self.last_plain = now
            self.stream.write("".join(ln + "\n" for ln in lines))
            self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}A\x1b[J")
            self.drawn = 0

    @staticmethod
    def _line(a: Active, now: float) -> str:
        from ..console import duration

        where = "cpu" if not a.gpus else "gpu " + ",".join(str(g.index) for g in a.gpus)
        what = a.stage
        if a.benchmark:
            count = f"{a.done}/{a.total}" if a.total is not None else "..."
            what = f"{a.benchmark} {count}"
        return (
            f"  {a.job.model.name:<18} {a.job.env.name:<6} {where:<10} {what:<32} "
            f"{duration(now - a.started):>7}"
        )


def run_plan(
    plan: Plan,
    launch: Launch,
    display: Display,
    stop: threading.Event,
) -> None:
    pending = list(plan.todo)  # already in longest-first order
    free = list(plan.gpus)
    active: list[Active] = []
    retried = {j.id: 0 for j in pending}
    cpus = os.cpu_count() or 1
    cpu_slots = max(1, cpus // 2)
    gpu_threads = max(1, cpus // max(len(plan.gpus), 1))
    readings: dict[str, GPU] = {}
    last_query = -REQUERY

    def start(job: Job, gpus: list[GPU]) -> None:
        threads = max(1, gpu_threads // job.replicas) if gpus else max(1, cpus // cpu_slots)
        env = launch.child_env(gpus, launch.addons.get(job.id, []), threads)
        log = launch.run.log_file(job.model.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n===== spectravenv: job {job.id} starting at {time.strftime('%F %T')} =====\n")
        follower = events.Follower(launch.run, job.id)  # before the runner can write
        cmd = runner_command(launch.pythons[job.env.name], launch.job_files[job.id], job.replicas)
        proc, pump = procs.spawn(cmd, log=log, env=env, masker=launch.secrets.redactor.stream())
        active.append(Active(job, proc, pump, gpus, follower, time.monotonic()))
        where = "CPU" if not gpus else "GPU " + ",".join(str(g.index) for g in gpus)
        names = ", ".join(b.name for b in job.benchmarks)
        display.event(f"started {job.model.name} ({job.env.name}) on {where}: {names}")
        launch.run.log_summary(f"job {job.id} started on {where} pid {proc.pid}: {names}")

    def follow(a: Active) -> None:
        for ev in a.follower.new():
            if not events.is_rank0(ev):
                continue
            kind, bench = ev["event"], ev.get("benchmark")
            narrate(ev, a.job, launch.run, display)
            if kind == "model_loaded":
                a.stage = f"model loaded in {ev.get('seconds', 0):.0f}s"
            elif kind == "benchmark_started":
                a.benchmark, a.total, a.done = bench, ev.get("total"), ev.get("reused", 0) or 0
            elif kind == "progress":
                a.done, a.total = ev.get("done", a.done), ev.get("total", a.total)
            elif kind in ("benchmark_done", "benchmark_failed"):
                a.benchmark = None
            elif kind in ("job_done", "job_failed"):
                a.terminal = True

    def finish(a: Active, status: str, note: str = "") -> None:
        nonlocal last_query
        a.pump.join(timeout=5)
        follow(a)
        rc = a.proc.returncode if a.proc.returncode is not None else a.proc.poll()
        if status == "exited":
            status = "done" if rc == 0 else "failed"
            if not a.terminal:
                # The runner died without saying why (killed, segfault, out of host memory):
                # record that in its events so every reader folds the same story.
                note = (f"the runner exited with code {rc} without reporting; see "
                        f"{launch.run.relative(launch.run.log_file(a.job.model.name))}")  # fmt: skip
        if note:
            events.record_dispatcher_failure(launch.run, a.job.id, note)
            display.event(f"FAILED  {a.job.model.name}: {note}")
        launch.run.log_summary(f"job {a.job.id} ended: {status} (exit {rc}){_span_text(launch.run, a.job.id)}")
        free.extend(g for g in a.gpus if g not in free)
        free.sort(key=lambda g: g.index)
        active.remove(a)
        last_query = -REQUERY  # GPUs came back: read their memory afresh before the next start
        job = a.job
        if (status in ("failed", "timeout") and not stop.is_set() and retried[job.id] < launch.retries
                and launch.prepare_retry is not None and launch.prepare_retry(job)):  # fmt: skip
            retried[job.id] += 1
            display.event(f"retry   {job.model.name} ({retried[job.id]}/{launch.retries}): "
                          f"{', '.join(b.name for b in job.benchmarks)}")  # fmt: skip
            launch.run.log_summary(f"job {job.id} retry {retried[job.id]}/{launch.retries}")
            pending.insert(0, job)

    while pending or active:
        if stop.is_set():
            break
        # Start what fits, longest first; smaller jobs may pass a big one that must wait.
        if pending:
            wants_gpu = free and any(j.gpus_needed for j in pending)
            if launch.requery is not None and wants_gpu and time.monotonic() - last_query >= REQUERY:
                readings = {g.uuid: g for g in launch.requery()}
                last_query = time.monotonic()
            cpu_free = cpu_slots - sum(1 for a in active if not a.gpus)
            for job, got in choose_starts(pending, free, readings, cpu_free):
                for g in got:
                    free.remove(g)
                pending.remove(job)
                start(job, got)
        if pending and not active:
            # Nothing runs and nothing fits: GPUs filled up since planning. Waiting would wait
            # forever; say so.
            for job in pending:
                msg = (f"no GPU with {job.per_gpu_gb:.0f} GB free for {job.model.name} (other "
                       "processes use them); free GPUs or choose others with --gpus")  # fmt: skip
                events.record_dispatcher_failure(launch.run, job.id, msg)
                display.event(f"FAILED  {job.model.name}: {msg}")
            pending.clear()
        for a in list(active):
            follow(a)
            if a.proc.poll() is not None:
                finish(a, "exited")
            elif launch.timeout and time.monotonic() - a.started > launch.timeout:
                procs.stop_trees([a.proc])
                finish(a, "timeout", f"timed out after {launch.timeout:g}s (--timeout); stopped")
        display.refresh(active, len(pending))
        stop.wait(POLL)

    if active:  # interrupted: stop every tree together, keep what finished
        display.event(f"stopping {len(active)} running job(s) ...")
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
    if kind == "benchmark_done":
        took = duration(ev.get("seconds") or 0)
        display.event(f"done    {name} x {bench} ({took})")
        run.log_summary(f"pair {name} x {bench} done in {took}")
    elif kind == "benchmark_failed":
        display.event(f"FAILED  {name} x {bench}: {ev.get('error', '')}")
        run.log_summary(f"pair {name} x {bench} failed at {ev.get('stage')}: {ev.get('error', '')}")
    elif kind == "pair_reset":
        what = ", ".join(ev.get("changed", []))
        display.event(f"reset   {name} x {bench}: {what} changed since the last attempt; starting afresh")
        run.log_summary(f"pair {name} x {bench} reset: {what} changed; old files in {ev.get('moved_to')}")
    elif kind == "job_failed" and ev.get("source") != "dispatcher":
        display.event(f"FAILED  {name}: {ev.get('error', '')}")
        run.log_summary(f"job {job.id} failed at {ev.get('stage')}: {ev.get('error', '')}")
