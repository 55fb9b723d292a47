"""When the dispatcher stops a worker that does not work: the rules, their limits, and what the
dispatcher has seen of each worker (both launchers).

A runner shows that it works by its events (svrunner.protocol), and what counts depends on the
phase it is in:
- While it infers a unit (unit_started .. unit_done), `progress` events, written as its generate
  calls return, are the sign: a generate call that hangs is a stall after `stall` seconds
  (default 900), whatever else the runner says meanwhile.
- In every other phase (import, model build, dataset preparation and its lock waits, merge,
  evaluation with an API judge) nothing else is written for minutes, so the runner sends `alive`
  heartbeats every SPECTRAVENV_HEARTBEAT seconds (default 30) from a thread. A worker that has
  sent heartbeats and then nothing at all for `heartbeat_lost` (10 heartbeat periods, at least
  300 s) is hung. A runner that sends no heartbeats (an older one) is not judged by this rule.
- A worker that has not loaded its model within the load limit (default max(1800 s, 10 x the
  catalog's `load_seconds` of the model)) is stopped, with or without --timeout.
- --timeout bounds a worker's whole life.
A stopped worker counts as a failure of its model (run/retry.py: retried, or its pairs given up);
the unit it held is open to the next worker. SPECTRAVENV_STALL and SPECTRAVENV_LOAD_LIMIT
(seconds) replace the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spectravenv.console import duration
from spectravenv.errors import SpectravenvError
from spectravenv.plan.jobs import Job

HEARTBEAT_VAR = "SPECTRAVENV_HEARTBEAT"  # the runner reads the same variable
STALL_VAR = "SPECTRAVENV_STALL"
LOAD_LIMIT_VAR = "SPECTRAVENV_LOAD_LIMIT"
STALL = 900.0
HEARTBEAT = 30.0
HEARTBEATS_LOST = 10  # heartbeat periods without any event: hung
MIN_HEARTBEAT_LOST = 300.0  # a busy node may starve a thread for a while: never judge sooner
MIN_LOAD_LIMIT = 1800.0
LOADS = 10  # times the model's expected load time


@dataclass(frozen=True)
class Limits:
    stall: float = STALL
    heartbeat: float = HEARTBEAT
    heartbeat_lost: float | None = None  # None: HEARTBEATS_LOST periods, at least MIN_HEARTBEAT_LOST
    load: float | None = None  # one load limit for every model; None: per model (load_limit)
    timeout: float | None = None  # --timeout

    @property
    def lost(self) -> float:
        if self.heartbeat_lost is not None:
            return self.heartbeat_lost
        return max(MIN_HEARTBEAT_LOST, HEARTBEATS_LOST * self.heartbeat)

    def load_limit(self, job: Job) -> float:
        if self.load is not None:
            return self.load
        return max(MIN_LOAD_LIMIT, LOADS * job.model.load_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], timeout: float | None = None) -> Limits:
        return cls(stall=_seconds(environ, STALL_VAR) or STALL,
                   heartbeat=_seconds(environ, HEARTBEAT_VAR) or HEARTBEAT,
                   load=_seconds(environ, LOAD_LIMIT_VAR), timeout=timeout)  # fmt: skip

    def describe(self, jobs: list[Job]) -> str:
        """The limits as --dry-run shows them."""
        loads = sorted({self.load_limit(j) for j in jobs}) or [self.load or MIN_LOAD_LIMIT]
        load = duration(loads[0]) if len(loads) == 1 else f"{duration(loads[0])}-{duration(loads[-1])}"
        return (f"watchdog: a worker is stopped when its model is not loaded within {load}, when "
                f"a unit's generate calls make no progress for {duration(self.stall)}, or when a "
                f"runner that sends heartbeats (every {duration(self.heartbeat)}) is silent for "
                f"{duration(self.lost)}"
                + (f"; --timeout {duration(self.timeout)} per worker" if self.timeout else ""))  # fmt: skip


def _seconds(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise SpectravenvError(f"{name}={raw!r} is not a number of seconds; set it like {name}=600, or unset it")
    return value


@dataclass
class Watch:
    """What the dispatcher has seen of one worker (times on the monotonic clock)."""

    started: float  # started here, or (Slurm) seen starting: its job_started
    last_event: float = 0.0
    last_progress: float = 0.0
    loaded: bool = False
    inferring: bool = False
    heartbeats: bool = False

    def __post_init__(self) -> None:
        self.last_event = self.last_progress = self.started

    def saw(self, ev: dict[str, Any], now: float) -> None:
        kind = ev["event"]
        self.last_event = now
        if kind == "alive":
            self.heartbeats = True
        elif kind == "model_loaded":
            self.loaded = True
        elif kind in ("unit_started", "progress"):
            self.inferring, self.last_progress = True, now
        elif kind in ("unit_done", "benchmark_failed", "benchmark_done"):
            self.inferring = False

    def verdict(self, now: float, limits: Limits, job: Job) -> tuple[str, str] | None:
        """(status, why) when the worker must be stopped now; None while it works."""
        if limits.timeout and now - self.started > limits.timeout:
            return "timeout", f"timed out after {limits.timeout:g}s (--timeout); stopped"
        load = limits.load_limit(job)
        if not self.loaded and now - self.started > load:
            return "load limit", (f"its model was not loaded after {load:g}s (the load limit; "
                                  f"{LOAD_LIMIT_VAR} sets it); stopped")  # fmt: skip
        if self.inferring and now - self.last_progress > limits.stall:
            return "stalled", f"no progress for {limits.stall:g}s while inferring (a generate call hangs); stopped"
        if self.heartbeats and now - self.last_event > limits.lost:
            return "hung", f"no event and no heartbeat for {limits.lost:g}s; stopped"
        return None
