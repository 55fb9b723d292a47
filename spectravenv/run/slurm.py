"""Run a plan's work on Slurm: workers are batch jobs claiming units from the shared run folder.

Each worker is one batch job asking for one worker's GPUs (one, or several for a model whose
wrapper spreads over them); inside it the runner starts exactly as locally, on the GPUs Slurm
assigned, and claims units of its model from the run folder (svrunner.units: O_EXCL claims, safe
on NFS) until none is left. The submitting command is the dispatcher: it submits workers by the
same rule as the local launcher (schedule.choose_starts, with `--max-gpus` GPUs in flight at
most), submits new ones as workers end while work is open, releases the claims of a worker whose
job Slurm ended, and follows everything through `squeue`/`scontrol` (never `sbatch --wait`, which
polls slowly) and the runners' event files. Why batch jobs of one worker each: a job of one GPU
starts sooner on a shared queue than an allocation of eight, a preempted or failed job loses one
unit's unsaved samples, and `--max-gpus` caps what a run takes from the queue. Every Slurm
client call has a short timeout: with slurmctld down they hang for MessageTimeout (10 s by
default) and then fail, and we say so in one line.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from svrunner import units
from svrunner.files import write_atomic

from spectravenv import procs
from spectravenv.errors import SpectravenvError
from spectravenv.plan.gpus import assumed
from spectravenv.plan.jobs import Job, Plan, gpus_word
from spectravenv.plan.schedule import Open, choose_starts
from spectravenv.run import events, work
from spectravenv.run.jobfile import RUNNERS_DIR, runner_command
from spectravenv.run.progress import Display
from spectravenv.run.retry import RetryPolicy
from spectravenv.run.rundir import RunDir
from spectravenv.run.watchdog import Limits, Watch

CLIENT_TIMEOUT = 30.0
POLL = 1.0
# A controller that does not answer (restarting, overloaded) is waited for, with growing pauses,
# for this long before `follow` gives up; the jobs themselves keep running meanwhile.
OUTAGE_LIMIT = float(os.environ.get("SPECTRAVENV_SLURM_OUTAGE", 600))
REDACT = RUNNERS_DIR / "svrunner" / "redact.py"
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}  # fmt: skip
# Slurm states after which a job will not run again.
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE"}  # fmt: skip


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    extra: list[str] = field(default_factory=list)
    cpus_per_gpu: int = 8
    mem_per_gpu: str | None = None
    wait: bool = True
    cancel_on_interrupt: bool = False


@dataclass
class Submitted:
    job: Job
    slurm_id: str
    follower: events.Follower
    state: str = "PENDING"
    done: bool = False
    worker: str = ""
    reported_end: bool = False  # this submission's runner wrote job_done or job_failed
    load_failed: dict | None = None  # its job_failed (the model could not be loaded, say)
    watch: Watch | None = None  # from its runner's job_started on (the time in the queue aside)
    stopped: str = ""  # why the watchdog cancelled it

    def new_events(self) -> list[dict]:
        return self.follower.new()

    def see(self, ev: dict, now: float) -> None:
        if ev["event"] == "job_started":
            self.watch = Watch(now)
        elif self.watch is not None:
            self.watch.saw(ev, now)
        if ev["event"] in ("job_done", "job_failed"):
            self.reported_end = True
        if ev["event"] == "job_failed":
            self.load_failed = ev


def _client(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """A Slurm client call: stdout, or one clear line about what went wrong."""
    proc = procs.run(cmd, env=env, timeout=CLIENT_TIMEOUT)
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout).split())
        if "Unable to contact slurm controller" in msg:
            raise SpectravenvError(
                f"the Slurm controller is not reachable ({cmd[0]}: {msg[:160]}); check `sinfo` "
                "and SLURM_CONF, or ask your admins"
            )
        if "Could not establish a configuration source" in msg:
            raise SpectravenvError(
                f"{cmd[0]} finds no Slurm configuration here (no slurm.conf, SLURM_CONF unset); "
                "run on a login node of the cluster"
            )
        raise SpectravenvError(f"{cmd[0]} failed: {msg[:300]}")
    return proc.stdout


def script(job: Job, run: RunDir, python: Path, job_file: Path, opts: SlurmOptions,
           addons: list[Path], worker: str | None = None) -> str:  # fmt: skip
    """The batch script of one worker. Secrets are not in it: they travel in the job's environment."""
    # sbatch reads #SBATCH lines with shell-like quoting: a path with spaces stays one value.
    name = f"sv-{run.path.name}-{worker or job.model.name}"[:120]
    lines = ["#!/bin/bash", f"#SBATCH --job-name={_quote(name)}"]
    log = f"{run.path / 'logs' / job.model.name}.slurm-%j.log"
    lines.append(f"#SBATCH --output={_quote(log)}")
    if job.gpus_needed:
        lines.append(f"#SBATCH --gres=gpu:{job.gpus_needed}")
    lines.append(f"#SBATCH --cpus-per-task={max(1, opts.cpus_per_gpu * max(job.gpus_needed, 1))}")
    if opts.mem_per_gpu and job.gpus_needed:
        lines.append(f"#SBATCH --mem-per-gpu={opts.mem_per_gpu}")
    for flag, value in (("partition", opts.partition), ("account", opts.account),
                        ("qos", opts.qos), ("time", opts.time)):  # fmt: skip
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {a}" for a in opts.extra]
    runner = " ".join(shlex.quote(c) for c in runner_command(python, job_file))
    if addons:  # git-only packages of this model, outside the env
        lines.append("export PYTHONPATH=" + shlex.quote(":".join(str(a) for a in addons)))
    lines += [
        "set -o pipefail",
        "# The runner's output is masked of secret values before it reaches the Slurm log.",
        f"{runner} 2>&1 | {shlex.quote(str(python))} {shlex.quote(str(REDACT))}",
    ]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sbatch(path: Path, env: dict[str, str], test_only: bool) -> str:
    cmd = (
        ["sbatch", "--parsable", "--export=ALL"]
        + (["--test-only"] if test_only else [])
        + [str(path)]
    )
    return _client(cmd, env).strip().split(";")[0]


def check(jobs: list[Job], run: RunDir, scripts: dict[str, str], env: dict[str, str]) -> None:
    """`sbatch --test-only` for each job's worker shape first: an impossible request (more GPUs
    than the partition has) is one clear error, and nothing is submitted."""
    (run.path / "logs").mkdir(parents=True, exist_ok=True)  # Slurm will not create it
    for job in jobs:
        p = run.internal / "slurm" / f"{job.id}.test.sbatch"
        write_atomic(p, scripts[job.id])
        try:
            _sbatch(p, env, test_only=True)
        except SpectravenvError as e:
            raise SpectravenvError(f"Slurm refuses the job for {job.model.name} "
                                   f"({gpus_word(job.gpus_needed)}): {e}") from None  # fmt: skip


def submit_one(job: Job, worker: str, run: RunDir, text: str, env: dict[str, str], display: Display) -> Submitted:
    path = run.internal / "slurm" / f"{worker}.sbatch"
    write_atomic(path, text)
    follower = events.Follower(run, worker)
    slurm_id = _sbatch(path, env, test_only=False)
    display.event(f"submitted {worker} as Slurm job {slurm_id}")
    run.log_summary(f"worker {worker} submitted to Slurm as {slurm_id}")
    return Submitted(job, slurm_id, follower, worker=worker)


def job_state(slurm_id: str) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict (JobState, Reason, ExitCode, ...); once Slurm has
    forgotten the job (MinJobAge), `sacct` where accounting exists."""
    try:
        text = _client(["scontrol", "show", "job", "-o", slurm_id])
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", text))
    except SpectravenvError as e:
        if "Invalid job id" not in str(e):
            raise
    try:
        line = _client(["sacct", "-n", "-P", "-X", "-j", slurm_id, "-o", "State,ExitCode"]).strip()
    except SpectravenvError:
        return {
            "JobState": "UNKNOWN",
            "Reason": "Slurm no longer knows the job and has no accounting",
        }
    state, _, code = line.partition("|")
    return {"JobState": state.split()[0] if state else "UNKNOWN", "Reason": "", "ExitCode": code}


def queue(ids: list[str]) -> dict[str, tuple[str, str]]:
    """Jobs still known to squeue: id -> (state, reason)."""
    text = _client(["squeue", "-h", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%r"])
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def live_jobs(ids: list[str]) -> dict[str, str]:
    """Those of `ids` that Slurm still runs or will run: id -> state."""
    if not ids:
        return {}
    return {i: st for i, (st, _) in queue(ids).items() if st in ACTIVE}


@dataclass
class SlurmRun:
    """What the Slurm dispatcher needs besides the plan."""

    run: RunDir
    script: Callable[[Job, str], str]  # (job, worker id) -> batch script (writes the job file)
    env: dict[str, str]
    max_gpus: int
    retries: int = 0
    on_oom: Callable[[Job], bool] | None = None
    # Called after each submission: the manifest records the job id at once, so a dispatcher
    # killed a second later still leaves `--resume` the live jobs to wait for.
    on_submit: Callable[[], None] | None = None
    limits: Limits = field(default_factory=Limits)  # the watchdog's (no --timeout: --time is Slurm's)
    submitted: list[Submitted] = field(default_factory=list)


class SlurmDispatch:
    """One Slurm run's dispatcher: the state its steps share, and the steps (poll, follow,
    watch, end, submit) as methods. The local launcher's rules, with batch jobs for workers."""

    def __init__(self, plan: Plan, sr: SlurmRun, display: Display, stop: threading.Event,
                 on_event: Callable[[Submitted, dict], None], wait: bool = True) -> None:  # fmt: skip
        self.plan, self.sr, self.display, self.stop = plan, sr, display, stop
        self.on_event, self.wait, self.run = on_event, wait, sr.run
        self.jobs = list(plan.todo)
        self.counters = {j.id: 0 for j in self.jobs}
        self.retry = RetryPolicy(sr.run, sr.retries, display.event, sr.on_oom)
        self.pool = plan.gpus or assumed(f"{max(sr.max_gpus, 1)}x80")
        self.down_since: float | None = None
        self.pause = POLL

    def live(self) -> list[Submitted]:
        return [s for s in self.sr.submitted if not s.done]

    def run_all(self) -> bool:
        """Submit workers while work is open and GPUs (of --max-gpus) are not all in flight;
        follow them; release the claims of workers Slurm ended. With `wait` False: submit the
        first workers and return. True when stopped with work left or jobs live (interrupted)."""
        self.loop()
        return self.stop.is_set() and bool(self.live() or self.open_work())

    def loop(self) -> None:
        first = True
        while not self.stop.is_set():
            states = self.poll()
            if states is None:  # the controller does not answer: the runners' events still come
                self.follow_events()
                self.stop.wait(self.pause)
                self.pause = min(self.pause * 2, 60.0)
                continue
            self.follow_all(states)
            self.retry.reopen_failed_pairs(self.jobs, {s.job.id for s in self.live()}, self.plan.limit)
            todo = self.open_work()
            if not todo and not self.live():
                return
            if first or self.wait:
                self.submit_more(todo)
            if first and not self.wait:
                return
            first = False
            self.display.refresh()
            self.stop.wait(POLL)

    def poll(self) -> dict[str, tuple[str, str]] | None:
        """squeue's view of the live workers; None while the controller does not answer. It is
        waited for (pauses of 1, 2, 4, ... up to 60 s), OUTAGE_LIMIT seconds in all, before this
        gives up with the jobs left running."""
        live = self.live()
        try:
            states = queue([s.slurm_id for s in live]) if live else {}
        except SpectravenvError as e:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
                self.display.event(f"warning: Slurm did not answer ({e}); waiting for it, the jobs keep running")
            if now - self.down_since > OUTAGE_LIMIT:
                raise SpectravenvError(
                    f"Slurm has not answered for {now - self.down_since:.0f} s ({e}); the jobs keep running: "
                    f"see `spectravenv status {self.run.path}`, continue with `spectravenv eval --resume {self.run.path}`"
                ) from None
            return None
        if self.down_since is not None:
            self.display.event(f"Slurm answers again after {time.monotonic() - self.down_since:.0f} s")
            self.down_since, self.pause = None, POLL
        return states

    def follow_events(self) -> None:
        for s in self.live():
            self.follow(s)

    def follow(self, s: Submitted) -> None:
        for ev in s.new_events():
            s.see(ev, time.monotonic())
            self.on_event(s, ev)

    def follow_all(self, states: dict[str, tuple[str, str]]) -> None:
        for s in self.live():
            self.follow(s)
            state, reason = states.get(s.slurm_id, ("", ""))
            if state and state != s.state:
                s.state = state
                self.display.event(f"{state.lower():<9} {s.worker} (Slurm job {s.slurm_id})"
                                   + (f": {reason}" if reason and reason != "None" else ""))  # fmt: skip
            if state in FINAL or not state:
                info = job_state(s.slurm_id) if not state else {"JobState": state, "Reason": reason}
                self.follow(s)  # the runner's last words
                self.end(s, info)
            else:
                self.watch(s)

    def watch(self, s: Submitted) -> None:
        """The watchdog's rules (run/watchdog.py), from the runner's first event on: a worker
        that does not work is cancelled and ends like one Slurm cancelled."""
        if s.watch is None or s.stopped or s.state != "RUNNING":
            return  # a suspended job says nothing and is no hung worker
        verdict = s.watch.verdict(time.monotonic(), self.sr.limits, s.job)
        if verdict is None:
            return
        try:
            _client(["scancel", s.slurm_id])
        except SpectravenvError as e:  # tried again at the next poll
            self.display.event(f"warning: could not cancel {s.worker} (Slurm job {s.slurm_id}): {e}")
            return
        s.stopped = verdict[1]
        events.record_dispatcher_failure(self.run, s.worker, s.stopped)
        self.display.event(f"FAILED  {s.worker}: {s.stopped} (scancel {s.slurm_id})")

    def end(self, s: Submitted, info: dict[str, str]) -> None:
        """A worker's batch job has ended: its claims released (its units open to others), its
        failure counted."""
        _finish(s, info, self.run, self.display)
        units.release_claims_of(work.units_dir(self.run), s.worker)
        if s.stopped or not s.reported_end or s.load_failed is not None:
            # Died without a word, was stopped, or could not load its model: it may try again.
            failure = s.load_failed or {}
            error = s.stopped or failure.get("error") or f"Slurm job {s.slurm_id} {info.get('JobState')}"
            self.retry.worker_failed(s.job, error, bool(failure.get("oom")))

    def open_work(self) -> list[Open]:
        per_model = {j.id: sum(1 for s in self.live() if s.job is j) for j in self.jobs}
        return [o for o in work.open_work(self.run, self.jobs, self.plan.limit, per_model) if o.units > 0]

    def submit_more(self, todo: list[Open]) -> None:
        in_flight = sum(max(s.job.gpus_needed, 0) for s in self.live())
        free = self.pool[: max(0, min(len(self.pool), self.sr.max_gpus) - in_flight)]
        for job, _got in choose_starts(todo, free, {}, cpu_free=8):
            self.counters[job.id] += 1
            worker = f"{job.id}.w{self.counters[job.id]}"
            self.sr.submitted.append(submit_one(job, worker, self.run, self.sr.script(job, worker), self.sr.env,
                                                self.display))  # fmt: skip
            if self.sr.on_submit is not None:
                self.sr.on_submit()


def dispatch(plan: Plan, sr: SlurmRun, display: Display, stop: threading.Event,
             on_event: Callable[[Submitted, dict], None], wait: bool = True) -> bool:  # fmt: skip
    """Run the plan's work as Slurm batch jobs (see SlurmDispatch); True when interrupted."""
    return SlurmDispatch(plan, sr, display, stop, on_event, wait).run_all()


def _finish(s: Submitted, info: dict[str, str], run: RunDir, display: Display) -> None:
    s.done = True
    state, reason = info.get("JobState", "?"), info.get("Reason", "")
    run.log_summary(f"worker {s.worker} (Slurm {s.slurm_id}) ended: {state} {reason}")
    if state != "COMPLETED" and not s.reported_end and not s.stopped:
        why = f"Slurm job {s.slurm_id} {state}" + (f" ({reason})" if reason not in ("", "None") else "")
        events.record_dispatcher_failure(run, s.worker, why)
        display.event(f"FAILED  {s.worker}: {why}")


def cancel(subs: list[Submitted]) -> None:
    ids = [s.slurm_id for s in subs if not s.done]
    if ids:
        _client(["scancel", *ids])


def wait_gone(subs: list[Submitted], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = queue([s.slurm_id for s in subs])
        if all(st in FINAL for st, _ in live.values()):
            return
        time.sleep(POLL)
