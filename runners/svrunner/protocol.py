"""The events format: JSON lines that a runner appends and the dispatcher reads, side by side.

The file on disk is the contract, so a local job, a Slurm job and a restarted dispatcher read a
job's story the same way. Each event is one JSON object on one line with at least "event",
"time", "job_id" and "rank". Paths inside events are relative to the run folder, so a copied,
moved or rsynced run folder still reads as itself.

Writing: one `os.write` per line on an O_APPEND descriptor, then fsync, so concurrent ranks never
interleave within a line and a crash can at worst leave a last line without its newline. Every
event is masked of secret values before it is written: nothing on disk holds a secret.
Reading: only complete lines count; a torn last line is ignored until it is completed.

Kinds (fields beyond the common four):
    job_started        pid, python, versions, world_size, cuda_visible_devices, cuda_available,
                       cuda_runtime, gpu_names
    model_loaded       seconds, import_seconds, build_seconds, model_class, source, backend (hf | vllm),
                       generation (max_new_tokens, ...; null when the wrapper does not say), engine_start_seconds
    pair_reset         benchmark, changed (what differs from the last attempt), moved_to
    benchmark_started  benchmark, total, reused, shards, rows_full, fingerprint, prediction_file,
                       prompt_source (model | dataset), ...
                       (once per pair and preparation, by the first worker to reach it)
    unit_started       benchmark, unit, of, rows, reused
    progress           benchmark, done, total [, shard=[unit, of]]
    unit_done          benchmark, unit, of, samples (inferred, not reused), seconds
    benchmark_done     benchmark, fingerprint, prediction_file, score_files, eval_files,
                       samples, seconds (merge and evaluation), shards, failed_predictions, metrics
    benchmark_failed   benchmark, stage (dataset|infer|eval|runner), error, traceback, oom
    job_failed         stage (job|setup|import|model|dispatch), error, traceback, oom [, source]
    job_done           ok, failed, seconds
    alive              phase (import|model|train|dataset|lock|infer|merge|evaluate|...), detail
                       [, done, total: the steps of a phase that counts them]: the runner is
                       working in a phase that emits nothing else for a while

The same lines, another vocabulary (PREFETCH_KINDS): runners/prefetch_runner.py reports the
download of one checkpoint to `spectravenv prefetch` (job_id is the repo, rank 0). Writer and
reader take the vocabulary as `kinds`.
    repo               commit, files: [{name, size, blob, lfs}]
    file               name, size, cached
    file_progress      name, bytes
    retry              name, message (the connection dropped; continuing where it stopped)
    file_done          name, size, blob, how: checked (hashed now) | kept (verified before)
    repo_done          commit, requires (other repos its config names, e.g. a vision tower)
    repo_failed        kind (gated|not_found|revision|network|corrupt|failed), message
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 2
KINDS = frozenset({
    "job_started", "model_loaded", "pair_reset", "benchmark_started", "unit_started", "progress",
    "unit_done", "benchmark_done", "benchmark_failed", "job_failed", "job_done", "alive",
})  # fmt: skip
TERMINAL = frozenset({"job_done", "job_failed"})
PREFETCH_KINDS = frozenset({"repo", "file", "file_progress", "retry", "file_done", "repo_done",
                            "repo_failed"})  # fmt: skip


def jsonable(obj: Any) -> Any:
    """Plain JSON: no NaN/Infinity, no numpy or pandas objects (converted if already loaded)."""
    # getattr: a module being imported right now (by the main thread, while the heartbeat
    # thread writes) is in sys.modules before it has its classes.
    frame, series = (getattr(sys.modules.get("pandas"), name, None) for name in ("DataFrame", "Series"))
    generic = getattr(sys.modules.get("numpy"), "generic", None)
    if isinstance(frame, type) and isinstance(obj, frame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(series, type) and isinstance(obj, series):
        return jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(generic, type) and isinstance(obj, generic):
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


class EventLog:
    """The writer: append-only, shared by all ranks of a job, masked at the source."""

    def __init__(self, path: str, job_id: str, rank: int, redactor: Any = None,
                 kinds: frozenset[str] = KINDS) -> None:  # fmt: skip
        self.path, self.job_id, self.rank = path, job_id, rank
        self.redactor, self.kinds = redactor, kinds
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A process killed mid-write may have left a line without '\n': start on a fresh line
        # so the first event is not glued to that fragment.
        self._need_newline = False
        self._lock = threading.Lock()  # the heartbeat thread writes too
        size = os.fstat(self.fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                self._need_newline = fh.read(1) != b"\n"

    def emit(self, event: str, at: float | None = None, **fields: Any) -> float:
        """Write one event (stamped `at`, default now); returns its time."""
        if event not in self.kinds:
            raise ValueError(f"unknown event kind {event!r}")
        stamp = time.time() if at is None else at
        obj = {"event": event, "time": stamp, "job_id": self.job_id, "rank": self.rank}
        obj.update(fields)
        obj = jsonable(obj)
        if self.redactor:
            obj = self.redactor.obj(obj)
        line = json.dumps(obj, ensure_ascii=False, allow_nan=False)
        if self.redactor:  # a value JSON escaped differently from its raw form
            line = self.redactor.text(line)
        with self._lock:
            data = ("\n" if self._need_newline else "") + line + "\n"
            self._need_newline = False
            os.write(self.fd, data.encode("utf-8"))  # one write: O_APPEND keeps lines whole
            os.fsync(self.fd)
        return stamp

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class EventReader:
    """The reader, incremental: returns only complete lines, never half of one being written."""

    path: str
    offset: int = 0
    kinds: frozenset[str] = KINDS
    _partial: bytes = field(default=b"", repr=False)

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        out = []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write carries no information
            if isinstance(ev, dict) and ev.get("event") in self.kinds:
                out.append(ev)
        return out


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return EventReader(os.fspath(path)).read()


def relative(path: str, root: str) -> str:
    """`path` relative to the run folder `root` (events never store absolute paths)."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root))
