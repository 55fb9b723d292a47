"""The runner protocol: JSON lines appended by `runners/vlmeval_runner.py`, read back here.

The file on disk is the contract, so a local job, a Slurm job and a crashed-and-restarted
dispatcher all read a job's story the same way. The runner never imports this module (it runs in
another Python); the kinds below mirror what it writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
KINDS = {
    "job_started", "model_loaded", "benchmark_started", "progress", "benchmark_done",
    "benchmark_failed", "job_failed", "job_done",
}  # fmt: skip


@dataclass
class EventReader:
    """Incremental reader: returns only complete lines, so a line being written is never half-read."""

    path: Path
    offset: int = 0
    _partial: bytes = field(default=b"", repr=False)

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        out = []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write carries no information
            if isinstance(ev, dict) and ev.get("event") in KINDS:
                out.append(ev)
        return out


def read_all(path: Path) -> list[dict[str, Any]]:
    return EventReader(path).read()
