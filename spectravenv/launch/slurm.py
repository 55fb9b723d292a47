"""Run a plan's jobs as Slurm jobs: the same runner, job file and events as the local launcher.

Slurm is the engine: each job of the plan becomes one batch job asking for the job's GPUs, and
inside it the runner starts exactly as locally, on the GPUs Slurm assigned (Slurm sets
CUDA_VISIBLE_DEVICES). The submitting command follows the jobs through `squeue`/`scontrol` (never
`sbatch --wait`, which polls slowly) and through the runners' event files on the shared
filesystem. Every Slurm client call has a short timeout: with slurmctld down they hang for
MessageTimeout (10 s by default) and then fail, and we say so in one line.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import procs
from ..errors import SpectravenvError
from ..events import EventReader
from ..plan import Job, Plan
from ..rundir import RunDir, write_atomic
from .job import RUNNERS_DIR, runner_command
from .local import Display, _append_failure

CLIENT_TIMEOUT = 30.0
POLL = 1.0
REDACT = RUNNERS_DIR / "redact.py"
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
    reader: EventReader
    state: str = "PENDING"
    done: bool = False


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
           addons: list[Path]) -> str:  # fmt: skip
    """The batch script of one job. Secrets are not in it: they travel in the job's environment."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name=sv-{run.path.name}-{job.model.name}"[:120]]
    lines.append(f"#SBATCH --output={run.path / 'logs' / job.model.name}.slurm-%j.log")
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
    runner = " ".join(shlex.quote(c) for c in runner_command(python, job_file, job.replicas))
    if addons:  # git-only packages of this model, outside the env
        lines.append("export PYTHONPATH=" + shlex.quote(":".join(str(a) for a in addons)))
    lines += [
        "set -o pipefail",
        "# The runner's output is masked of secret values before it reaches the Slurm log.",
        f"{runner} 2>&1 | {shlex.quote(str(python))} {shlex.quote(str(REDACT))}",
    ]
    return "\n".join(lines) + "\n"


def _sbatch(path: Path, env: dict[str, str], test_only: bool) -> str:
    cmd = (
        ["sbatch", "--parsable", "--export=ALL"]
        + (["--test-only"] if test_only else [])
        + [str(path)]
    )
    return _client(cmd, env).strip().split(";")[0]


def submit(plan: Plan, run: RunDir, scripts: dict[str, str], env: dict[str, str],
           display: Display) -> list[Submitted]:  # fmt: skip
    """Check every job with `sbatch --test-only` first, so an impossible request submits
    nothing; then submit them all."""
    (run.path / "logs").mkdir(parents=True, exist_ok=True)  # Slurm will not create it
    paths = {}
    for job in plan.todo:
        p = run.internal / "slurm" / f"{job.id}.sbatch"
        write_atomic(p, scripts[job.id])
        paths[job.id] = p
    for job in plan.todo:
        try:
            _sbatch(paths[job.id], env, test_only=True)
        except SpectravenvError as e:
            raise SpectravenvError(f"Slurm refuses the job for {job.model.name} "
                                   f"({job.gpus_needed} GPU(s)): {e}") from None  # fmt: skip
    return [submit_one(job, run, scripts[job.id], env, display) for job in plan.todo]


def submit_one(
    job: Job, run: RunDir, text: str, env: dict[str, str], display: Display
) -> Submitted:
    path = run.internal / "slurm" / f"{job.id}.sbatch"
    write_atomic(path, text)
    reader = EventReader(run.events_file(job.id))
    reader.read()  # what earlier attempts wrote is not this job's story
    slurm_id = _sbatch(path, env, test_only=False)
    display.event(f"submitted {job.model.name} as Slurm job {slurm_id}")
    run.log_summary(f"job {job.id} submitted to Slurm as {slurm_id}")
    return Submitted(job, slurm_id, reader)


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


def follow(subs: list[Submitted], run: RunDir, display: Display, stop: threading.Event,
           on_event: Callable[[Submitted, dict], None],
           resubmit: Callable[[Submitted], Submitted | None] | None = None) -> None:  # fmt: skip
    """Wait for the submitted jobs, showing their state and the runners' events. A job that
    ends other than COMPLETED may be resubmitted (`resubmit`, for --retries)."""
    while not all(s.done for s in subs):
        if stop.is_set():
            return
        asked = [s.slurm_id for s in subs if not s.done]
        states = queue(asked)
        for s in list(subs):
            if s.done or s.slurm_id not in asked:  # a resubmission joins in the next round
                continue
            for ev in s.reader.read():
                on_event(s, ev)
            state, reason = states.get(s.slurm_id, ("", ""))
            if state and state != s.state:
                s.state = state
                display.event(f"{state.lower():<9} {s.job.model.name} (Slurm job {s.slurm_id})"
                              + (f": {reason}" if reason and reason != "None" else ""))  # fmt: skip
            if state in FINAL or not state:
                info = job_state(s.slurm_id) if not state else {"JobState": state, "Reason": reason}
                for ev in s.reader.read():  # the runner's last words
                    on_event(s, ev)
                _finish(s, info, run, display)
                again = resubmit(s) if resubmit and info.get("JobState") != "COMPLETED" else None
                if again is not None:
                    subs.append(again)
        stop.wait(POLL)


def _finish(s: Submitted, info: dict[str, str], run: RunDir, display: Display) -> None:
    s.done = True
    state, reason = info.get("JobState", "?"), info.get("Reason", "")
    run.log_summary(f"job {s.job.id} (Slurm {s.slurm_id}) ended: {state} {reason}")
    if state != "COMPLETED":
        terminal = _terminal(run, s.job.id)
        if not terminal:
            why = f"Slurm job {s.slurm_id} {state}" + (
                f" ({reason})" if reason not in ("", "None") else ""
            )
            _append_failure(run.events_file(s.job.id), s.job.id, why)
            display.event(f"FAILED  {s.job.model.name}: {why}")


def _terminal(run: RunDir, job_id: str) -> bool:
    """Did the latest attempt's runner report its own end?"""
    from ..events import read_all

    evs = read_all(run.events_file(job_id))
    last = max((i for i, e in enumerate(evs) if e["event"] == "job_started"), default=-1)
    return (
        any(e["event"] in ("job_done", "job_failed") for e in evs[last + 1 :])
        if last >= 0
        else False
    )


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
