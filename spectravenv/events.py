"""What a run's event files mean: the one place that interprets them.

The format (writer and line reader) is `svrunner.protocol`, shared with the runner. Here the
events of each job become attempts, the attempts become one outcome per (model, benchmark), job
spans (for job and GPU time) and speed measurements (for the cost model). The launchers, `status`,
`report`, `--resume` and the stats all ask this module, so they all tell the same story.

Only rank 0 speaks for a job (other ranks write progress of their shard); the dispatcher adds a
`job_failed` with source "dispatcher" when a runner could not start or died without reporting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from svrunner.protocol import TERMINAL, EventLog, EventReader, read_events

from .rundir import RunDir


def is_rank0(ev: dict[str, Any]) -> bool:
    return ev.get("rank", 0) in (0, None)


def job_model(run: RunDir, job_id: str) -> str:
    return run.job_spec(job_id).get("model", {}).get("name", job_id)


@dataclass
class Attempt:
    """One start of a job's runner (or a dispatcher failure before any start)."""

    job_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == "job_started"), None)

    @property
    def ended(self) -> bool:
        return any(e["event"] in TERMINAL for e in self.events)

    @property
    def start_time(self) -> float | None:
        s = self.started
        return s["time"] if s else None

    @property
    def end_time(self) -> float:
        return self.events[-1]["time"]

    @property
    def gpus(self) -> int:
        cvd = (self.started or {}).get("cuda_visible_devices") or ""
        return len([x for x in cvd.split(",") if x.strip()])


def attempts(run: RunDir, job_id: str) -> list[Attempt]:
    out: list[Attempt] = []
    for ev in read_events(run.events_file(job_id)):
        if not is_rank0(ev):
            continue
        if ev["event"] == "job_started" or not out or (out[-1].ended and ev["event"] != "job_failed"):
            out.append(Attempt(job_id))
        out[-1].events.append(ev)
    return out


@dataclass
class PairOutcome:
    """What happened to one (model, benchmark), as the events tell it (latest attempt wins)."""

    model: str
    benchmark: str
    status: str = "pending"  # pending | running | done | failed | interrupted
    score_files: list[str] = field(default_factory=list)  # relative to the run folder
    prediction_file: str | None = None
    samples: int | None = None
    total: int | None = None
    seconds: float | None = None
    error: str = ""
    traceback: str = ""
    oom: bool = False
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    fingerprint: dict[str, Any] | None = None


def _fold(out: dict[tuple[str, str], PairOutcome], model: str, spec: dict[str, Any], ev: dict[str, Any]) -> None:
    kind, bench = ev["event"], ev.get("benchmark")
    mine = [o for o in out.values() if o.model == model]
    if kind in ("job_started", "job_failed"):
        # The job file names what this attempt was asked to do; its pairs exist from now.
        for b in spec.get("benchmarks", []):
            out.setdefault((model, b["name"]), PairOutcome(model, b["name"]))
        mine = [o for o in out.values() if o.model == model]
    if kind == "job_started":
        for o in mine:  # a new attempt: anything left "running" by the previous one was cut short
            if o.status == "running":
                o.status = "interrupted"
        return
    if kind == "job_failed":
        for o in mine:
            if o.status in ("running", "pending"):
                o.status, o.error = "failed", ev.get("error", "")
                o.traceback, o.oom = ev.get("traceback", ""), bool(ev.get("oom"))
        return
    if bench is None:
        return
    o = out.setdefault((model, bench), PairOutcome(model, bench))
    if kind == "benchmark_started":
        o.status, o.started, o.attempts = "running", ev["time"], o.attempts + 1
        o.total, o.error, o.traceback, o.oom = ev.get("total"), "", "", False
    elif kind == "benchmark_done":
        o.status, o.finished = "done", ev["time"]
        o.score_files = list(ev.get("score_files", []))
        o.prediction_file = ev.get("prediction_file")
        o.samples, o.seconds = ev.get("samples"), ev.get("seconds")
        o.fingerprint = ev.get("fingerprint")
    elif kind == "benchmark_failed":
        o.status, o.finished = "failed", ev["time"]
        o.error, o.traceback = ev.get("error", ""), ev.get("traceback", "")
        o.oom, o.seconds = bool(ev.get("oom")), ev.get("seconds")


def outcomes(run: RunDir) -> dict[tuple[str, str], PairOutcome]:
    """Fold every job's events into one outcome per pair.

    A pair whose latest attempt started but never ended (the runner was killed) stays "running"
    here; readers of a finished run show it as interrupted.
    """
    out: dict[tuple[str, str], PairOutcome] = {}
    for job_id in run.job_ids():
        spec = run.job_spec(job_id)
        model = spec.get("model", {}).get("name", job_id)
        for attempt in attempts(run, job_id):
            for ev in attempt.events:
                _fold(out, model, spec, ev)
    return out


@dataclass(frozen=True)
class JobSpan:
    job_id: str
    started: float
    ended: float
    gpus: int  # GPUs the runner was given (0: CPU)

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started)


def spans(run: RunDir) -> list[JobSpan]:
    """Each runner attempt from its job_started to its last event: the one duration of a job that
    the summary log, the job_done event and the report all use."""
    return [
        JobSpan(a.job_id, a.start_time, a.end_time, a.gpus)
        for job_id in run.job_ids()
        for a in attempts(run, job_id)
        if a.start_time is not None
    ]


def measurements(run: RunDir) -> Iterator[tuple[str, str | None, str, float, int]]:
    """(model, GPU type, kind, value, count) for the cost model: kind "load" (seconds per load)
    or "infer" (wall seconds x replicas over samples: what one replica takes per sample)."""
    for job_id in run.job_ids():
        model = job_model(run, job_id)
        for a in attempts(run, job_id):
            start = a.started
            if start is None:
                continue
            names = start.get("gpu_names") or []
            gpu = names[0] if names else None
            world = int(start.get("world_size") or 1)
            for ev in a.events:
                if ev["event"] == "model_loaded":
                    yield model, gpu, "load", float(ev.get("seconds", 0.0)), 1
                elif ev["event"] == "benchmark_done" and ev.get("samples"):
                    yield model, gpu, "infer", float(ev.get("seconds", 0.0)) * world, int(ev["samples"])


def model_notes(run: RunDir) -> dict[str, list[str]]:
    """What the runner changed about how a model was loaded (the attention it used), by model:
    the report says it next to the model's scores."""
    out: dict[str, list[str]] = {}
    for job_id in run.job_ids():
        model = job_model(run, job_id)
        for a in attempts(run, job_id):
            for ev in a.events:
                if ev["event"] == "model_loaded" and ev.get("attention"):
                    notes = out.setdefault(model, [])
                    if ev["attention"] not in notes:
                        notes.append(ev["attention"])
    return out


class Follower:
    """New events of one job as they are written (launchers follow running jobs with it)."""

    def __init__(self, run: RunDir, job_id: str) -> None:
        self.reader = EventReader(str(run.events_file(job_id)))
        self.reader.read()  # what earlier attempts wrote is not this attempt's story

    def new(self) -> list[dict[str, Any]]:
        return self.reader.read()


def record_dispatcher_failure(run: RunDir, job_id: str, message: str) -> None:
    """A job the dispatcher saw fail without its runner saying so (no start, killed, Slurm)."""
    log = EventLog(str(run.events_file(job_id)), job_id, 0)
    try:
        log.emit("job_failed", stage="dispatch", error=message, traceback="", oom=False, source="dispatcher")
    finally:
        log.close()
