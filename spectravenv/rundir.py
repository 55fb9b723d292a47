"""A run's folder on disk: its layout, its manifest, and the outcome of each (model, benchmark).

Everything a later command needs (`--resume`, `report`, `status`) is read back from here: the
job files the dispatcher wrote and the event files the runners appended.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpectravenvError
from .events import read_all

MANIFEST = "run.json"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Temp file + rename in the same folder: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    tmp.replace(path)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def internal(self) -> Path:
        return self.path / ".spectravenv"

    def job_file(self, job_id: str) -> Path:
        return self.internal / "jobs" / f"{job_id}.json"

    def events_file(self, job_id: str) -> Path:
        return self.internal / "events" / f"{job_id}.jsonl"

    def log_file(self, model: str) -> Path:
        return self.path / "logs" / f"{model}.log"

    @property
    def summary_log(self) -> Path:
        return self.path / "logs" / "evaluation_summary.log"

    def manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise SpectravenvError(
                f"{self.manifest_file} is unreadable ({e}); not a spectravenv run?"
            ) from None

    def write_manifest(self, data: dict[str, Any]) -> None:
        write_atomic(self.manifest_file, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def log_summary(self, line: str) -> None:
        self.summary_log.parent.mkdir(parents=True, exist_ok=True)
        with self.summary_log.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


@dataclass
class PairOutcome:
    """What happened to one (model, benchmark), as the events tell it (latest attempt wins)."""

    model: str
    benchmark: str
    status: str = "pending"  # pending | running | done | failed | interrupted
    score_files: list[str] = field(default_factory=list)
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


def outcomes(
    run: RunDir, job_models: dict[str, str] | None = None
) -> dict[tuple[str, str], PairOutcome]:
    """Fold every job's events into one outcome per pair.

    A pair whose latest attempt started but never ended (the runner was killed) is "interrupted".
    `job_models` maps job ids to model names when they differ (data-parallel shards).
    """
    out: dict[tuple[str, str], PairOutcome] = {}
    events_dir = run.internal / "events"
    if not events_dir.is_dir():
        return out
    for f in sorted(events_dir.glob("*.jsonl")):
        job_id = f.stem
        spec = job_spec(run, job_id)
        model = (job_models or {}).get(job_id) or spec.get("model", {}).get("name", job_id)
        for ev in read_all(f):
            if ev.get("rank", 0) not in (0, None):
                continue
            kind, bench = ev["event"], ev.get("benchmark")
            if kind == "job_started":
                # The job file names what this attempt was asked to do; its pairs exist from now.
                for b in spec.get("benchmarks", []):
                    out.setdefault((model, b["name"]), PairOutcome(model, b["name"]))
                # A new attempt: anything left "running" by the previous one was cut short.
                for o in out.values():
                    if o.model == model and o.status == "running":
                        o.status = "interrupted"
                continue
            if kind == "job_failed":
                for b in spec.get("benchmarks", []):
                    out.setdefault((model, b["name"]), PairOutcome(model, b["name"]))
                for o in out.values():
                    if o.model == model and o.status in ("running", "pending"):
                        o.status, o.error = "failed", ev.get("error", "")
                        o.traceback, o.oom = ev.get("traceback", ""), bool(ev.get("oom"))
                continue
            if bench is None:
                continue
            o = out.setdefault((model, bench), PairOutcome(model, bench))
            if kind == "benchmark_started":
                o.status, o.started, o.attempts = "running", ev["time"], o.attempts + 1
                o.total, o.error, o.traceback = ev.get("total"), "", ""
            elif kind == "benchmark_done":
                o.status, o.finished = "done", ev["time"]
                o.score_files = list(ev.get("score_files", []))
                o.prediction_file = ev.get("prediction_file")
                o.samples, o.seconds = ev.get("samples"), ev.get("seconds")
            elif kind == "benchmark_failed":
                o.status, o.finished = "failed", ev["time"]
                o.error, o.traceback = ev.get("error", ""), ev.get("traceback", "")
                o.oom, o.seconds = bool(ev.get("oom")), ev.get("seconds")
    return out


def job_spec(run: RunDir, job_id: str) -> dict[str, Any]:
    try:
        return json.loads(run.job_file(job_id).read_text())
    except (OSError, ValueError):
        return {}


def latest_run(output_dir: Path) -> Path:
    runs = [p.parent for p in output_dir.glob(f"*/{MANIFEST}")]
    if not runs:
        raise SpectravenvError(
            f"no run to resume in {output_dir}; give the run folder: --resume DIR"
        )
    return max(runs, key=lambda p: p.joinpath(MANIFEST).stat().st_mtime)


@dataclass(frozen=True)
class JobSpan:
    job_id: str
    started: float
    ended: float
    gpus: int  # GPUs the runner was given (0: CPU)

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started)


def job_spans(run: RunDir) -> list[JobSpan]:
    """Each runner attempt's wall time and GPU count, from its events (for job and GPU time)."""
    spans: list[JobSpan] = []
    events_dir = run.internal / "events"
    for f in sorted(events_dir.glob("*.jsonl")) if events_dir.is_dir() else []:
        start: dict[str, Any] | None = None
        last = 0.0
        for ev in read_all(f):
            if ev.get("rank", 0) not in (0, None):
                continue
            if ev["event"] == "job_started":
                if start is not None:
                    spans.append(_span(f.stem, start, last))
                start = ev
            last = ev["time"]
        if start is not None:
            spans.append(_span(f.stem, start, last))
    return spans


def _span(job_id: str, start: dict[str, Any], last: float) -> JobSpan:
    cvd = start.get("cuda_visible_devices") or ""
    return JobSpan(job_id, start["time"], last, len([x for x in cvd.split(",") if x.strip()]))
