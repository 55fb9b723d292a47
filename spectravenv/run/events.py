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

from spectravenv.run.rundir import RunDir


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
    eval_files: list[str] = field(default_factory=list)  # every file evaluate() wrote
    prediction_file: str | None = None
    samples: int | None = None
    total: int | None = None
    rows_full: int | None = None  # rows of the whole dataset (total is after --limit)
    prompt_source: str | None = None  # benchmark_started's, when the runner records it
    seconds: float | None = None
    error: str = ""
    traceback: str = ""
    oom: bool = False
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    fingerprint: dict[str, Any] | None = None
    judge_note: str = ""  # VLMEvalKit scored without the judge it was given, and why (judging.py)


def _fold(out: dict[tuple[str, str], PairOutcome], model: str, spec: dict[str, Any], ev: dict[str, Any]) -> None:
    kind, bench = ev["event"], ev.get("benchmark")
    if kind in ("job_started", "job_failed"):
        # The job file names what this worker was asked to do; its pairs exist from now.
        for b in spec.get("benchmarks", []):
            out.setdefault((model, b["name"]), PairOutcome(model, b["name"]))
    if kind == "job_failed":
        # A worker that could not load its model (or was stopped): what nobody has finished
        # fails with it; another worker that finishes a pair later makes it done again.
        for o in out.values():
            if o.model == model and o.status in ("running", "pending"):
                o.status, o.error = "failed", ev.get("error", "")
                o.traceback, o.oom = ev.get("traceback", ""), bool(ev.get("oom"))
        return
    if bench is None:
        return
    o = out.setdefault((model, bench), PairOutcome(model, bench))
    if kind == "benchmark_started":  # the pair prepared (again): a fresh start
        o.status, o.started, o.attempts = "running", ev["time"], o.attempts + 1
        o.total, o.error, o.traceback, o.oom, o.seconds = ev.get("total"), "", "", False, 0.0
        o.rows_full, o.prompt_source = ev.get("rows_full"), ev.get("prompt_source")
    elif kind in ("unit_started", "progress"):
        if o.status not in ("done",):
            o.status = "running"
            o.started = o.started or ev["time"]
    elif kind == "unit_done":
        o.seconds = (o.seconds or 0.0) + float(ev.get("seconds") or 0.0)
    elif kind == "benchmark_done":
        o.status, o.finished = "done", ev["time"]
        o.score_files = list(ev.get("score_files", []))
        o.eval_files = list(ev.get("eval_files") or [])
        o.prediction_file = ev.get("prediction_file")
        o.samples = ev.get("samples")
        o.seconds = (o.seconds or 0.0) + float(ev.get("seconds") or 0.0)
        o.fingerprint = ev.get("fingerprint")
        o.error, o.judge_note = "", ev.get("judge_note", "")
    elif kind == "benchmark_failed":
        o.status, o.finished = "failed", ev["time"]
        o.error, o.traceback = ev.get("error", ""), ev.get("traceback", "")
        o.oom = bool(ev.get("oom"))


def outcomes(run: RunDir) -> dict[tuple[str, str], PairOutcome]:
    """Fold every worker's events into one outcome per pair, in the order they happened (the
    workers of a model run at the same time).

    A pair some worker started and none finished stays "running" here; readers of a run that
    has ended show it as interrupted.
    """
    out: dict[tuple[str, str], PairOutcome] = {}
    timeline: list[tuple[float, int, str, dict[str, Any], dict[str, Any]]] = []
    for n, job_id in enumerate(run.job_ids()):
        spec = run.job_spec(job_id)
        model = spec.get("model", {}).get("name", job_id)
        for a in attempts(run, job_id):
            timeline += [(ev["time"], n, model, spec, ev) for ev in a.events]
    for _, _, model, spec, ev in sorted(timeline, key=lambda t: (t[0], t[1])):
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
    or "infer" (a unit's wall seconds over the samples it inferred). A served model's speeds are
    its own: its name is `<model>@vllm` (stats.speed_name), a wrapper's stays the model's."""
    for job_id in run.job_ids():
        model = job_model(run, job_id)
        for a in attempts(run, job_id):
            start = a.started
            if start is None:
                continue
            names = start.get("gpu_names") or []
            gpu, who = (names[0] if names else None), model
            for ev in a.events:
                if ev["event"] == "model_loaded":
                    who = speed_name(model, ev.get("backend"))
                    yield who, gpu, "load", float(ev.get("seconds", 0.0)), 1
                elif ev["event"] == "unit_done" and ev.get("samples"):
                    yield who, gpu, "infer", float(ev.get("seconds", 0.0)), int(ev["samples"])


def speed_name(model: str, backend: str | None) -> str:
    """Whose speeds these are: a served model's differ from its wrapper's."""
    return model if backend in (None, "hf") else f"{model}@{backend}"


def model_notes(run: RunDir) -> dict[str, list[str]]:
    """What the runner changed about how a model was loaded or answered (the attention it used,
    the compatibility fixes its wrapper needed), by model: the report says it next to the
    model's scores."""
    out: dict[str, list[str]] = {}
    for job_id in run.job_ids():
        model = job_model(run, job_id)
        for a in attempts(run, job_id):
            for ev in a.events:
                for key in ("attention", "compat"):
                    if ev["event"] in ("model_loaded", "job_done") and ev.get(key):
                        notes = out.setdefault(model, [])
                        if ev[key] not in notes:
                            notes.append(ev[key])
    return out


# What the runner may say about how a model generates (model_loaded's `backend` and `generation`:
# max_new_tokens, temperature, do_sample, ...): read when present, null in the report otherwise.
FACT_KEYS = ("backend", "generation")


def model_facts(run: RunDir) -> dict[str, dict[str, Any]]:
    """How each model generated, as its latest model_loaded event recorded it (keys FACT_KEYS)."""
    out: dict[str, dict[str, Any]] = {}
    for job_id in run.job_ids():
        model = job_model(run, job_id)
        for a in attempts(run, job_id):
            for ev in a.events:
                if ev["event"] == "model_loaded":
                    out[model] = {k: ev.get(k) for k in FACT_KEYS}
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
