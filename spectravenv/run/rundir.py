"""A run's folder on disk: its layout, and the one reader and writer of each of its own files
(the manifest, job files, the summary log, the run lock).

Everything a later command needs (`--resume`, `report`, `status`) is read back from here and from
the runners' events (`events.py`). Nothing inside refers to the folder's own absolute location:
paths are stored relative to it, so a run folder copied, moved or rsynced elsewhere reads as
itself.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svrunner.files import write_json
from svrunner.locking import FileLock

from spectravenv.errors import SpectravenvError

MANIFEST = "run.json"
INTERNAL = ".spectravenv"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def internal(self) -> Path:
        return self.path / INTERNAL

    @property
    def events_dir(self) -> Path:
        return self.internal / "events"

    def job_file(self, job_id: str) -> Path:
        return self.internal / "jobs" / f"{job_id}.json"

    def events_file(self, job_id: str) -> Path:
        return self.events_dir / f"{job_id}.jsonl"

    def log_file(self, model: str) -> Path:
        return self.path / "logs" / f"{model}.log"

    @property
    def summary_log(self) -> Path:
        return self.path / "logs" / "evaluation_summary.log"

    def resolve(self, stored: str) -> Path:
        """A path from an event or job file: relative to this folder (absolute: as written)."""
        p = Path(stored)
        return p if p.is_absolute() else self.path / p

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.path)

    def manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise SpectravenvError(f"{self.manifest_file} is unreadable ({e}); not a spectravenv run?") from None

    def write_manifest(self, data: dict[str, Any]) -> None:
        write_json(self.manifest_file, data)

    def job_spec(self, job_id: str) -> dict[str, Any]:
        """A job file as the dispatcher wrote it; {} if missing or unreadable."""
        try:
            return json.loads(self.job_file(job_id).read_text())
        except (OSError, ValueError):
            return {}

    def write_job(self, spec: dict[str, Any]) -> Path:
        path = self.job_file(spec["job_id"])
        write_json(path, spec)
        return path

    def job_ids(self) -> list[str]:
        return sorted(p.stem for p in self.events_dir.glob("*.jsonl")) if self.events_dir.is_dir() else []

    def log_summary(self, line: str) -> None:
        self.summary_log.parent.mkdir(parents=True, exist_ok=True)
        with self.summary_log.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def lock(self) -> FileLock:
        """Held by the dispatcher that works on this run, for as long as it does."""
        return FileLock(self.internal / "dispatcher.lock", f"run {self.path}")


def is_run(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def create(output_dir: Path, name: str | None) -> tuple[RunDir, bool]:
    """The folder of a new run, made atomically (mkdir fails if it exists: two evals started in
    the same second get two folders), or an existing run of `name` to continue.

    Returns (run, created).
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise SpectravenvError(f"--output-dir {output_dir} is a file; give a folder (default ./outputs)")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpectravenvError(f"cannot create --output-dir {output_dir}: {e.strerror}") from None
    if name is not None:
        run = RunDir((output_dir / name).absolute())
        try:
            run.path.mkdir()
            return run, True
        except FileExistsError:
            if is_run(run.path) or not any(run.path.iterdir()):
                return run, False
            raise SpectravenvError(f"{run.path} exists and is not a spectravenv run; choose another --run-name") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = output_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return RunDir(path.absolute()), True
        except FileExistsError:
            continue
    raise SpectravenvError(f"cannot find a free run folder name in {output_dir}")  # pragma: no cover


def latest_run(output_dir: Path) -> Path:
    runs = [p.parent for p in output_dir.glob(f"*/{MANIFEST}")]
    if not runs:
        raise SpectravenvError(f"no run to resume in {output_dir}; give the run folder: --resume DIR")
    return max(runs, key=lambda p: p.joinpath(MANIFEST).stat().st_mtime)


def open_run(path: Path) -> RunDir:
    """An existing run folder for `status`, `report` and `--resume`; one clear error otherwise."""
    run = RunDir(path.absolute())
    if not run.path.is_dir():
        raise SpectravenvError(f"{path} does not exist; give a run folder (outputs/<run>)")
    if run.manifest() is None:
        raise SpectravenvError(f"{path} is not a spectravenv run folder (no {MANIFEST})")
    return run


def wall_seconds(m: dict[str, Any]) -> float:
    """A run's wall time from its manifest: each attempt from its start to the next attempt's start (or the run's end), summed."""
    fmt = "%Y-%m-%dT%H:%M:%S%z"

    def when(text: Any) -> datetime.datetime | None:
        try:
            return datetime.datetime.strptime(text, fmt)
        except (TypeError, ValueError):
            return None

    starts = [when(a.get("started")) for a in m.get("attempts", [])] or [when(m.get("started"))]
    end = when(m.get("finished"))
    total = 0.0
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else end
        if start is not None and stop is not None:
            total += max(0.0, (stop - start).total_seconds())
    return total
