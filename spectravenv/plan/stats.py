"""Measured speeds, learned from finished runs: model load time and seconds per sample, per
(model, backend, GPU type). The next plan's estimates (order, replicas, expected makespan) use them in
place of the catalog's first guesses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from svrunner.files import write_atomic
from svrunner.locking import FileLock, LockBusy

from spectravenv.catalog.entries import Catalog
from spectravenv.paths import Paths
from spectravenv.run import events
from spectravenv.run.rundir import RunDir

LOCK_TIMEOUT = 30.0  # recording takes milliseconds; a longer wait means something is stuck


def _key(model: str, gpu: str | None) -> str:
    return f"{model}|{gpu or 'cpu'}"


def load(paths: Paths) -> dict[str, Any]:
    try:
        return json.loads(paths.stats.read_text())
    except (OSError, ValueError):
        return {}


def measurements(run: RunDir) -> dict[str, dict[str, float]]:
    """One run's totals per (model, GPU type): loads and their seconds, samples and seconds."""
    out: dict[str, dict[str, float]] = {}
    for model, gpu, kind, value, count in events.measurements(run):
        m = out.setdefault(_key(model, gpu), {})
        total, n = ("load_seconds", "loads") if kind == "load" else ("seconds", "samples")
        m[total] = m.get(total, 0.0) + value
        m[n] = m.get(n, 0) + count
    return out


def record(paths: Paths, run: RunDir, warn: Callable[[str], None]) -> None:
    """Add a run's measurements to the totals in $SPECTRAVENV_HOME (under a lock: runs overlap).

    Only what this run measured since it was last recorded counts, so recording twice (a
    resumed run) never counts an attempt twice. The run's results never depend on this: when
    the lock cannot be had, the measurements are skipped with a warning.
    """
    new = measurements(run)
    if not new:
        return
    lock = FileLock(paths.build_locks / "stats.lock", f"recording speeds in {paths.stats}")
    try:
        with lock.hold(LOCK_TIMEOUT):
            data = load(paths)
            seen = data.setdefault("_runs", {})
            previous = seen.get(str(run.path), {})
            for key, m in new.items():
                old = previous.get(key, {})
                total = data.setdefault(key, {})
                for field, value in m.items():
                    total[field] = total.get(field, 0) + value - old.get(field, 0)
            seen[str(run.path)] = new
            write_atomic(paths.stats, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except LockBusy as e:
        warn(f"speeds of this run not recorded for later plans: {e}")
    except OSError as e:
        warn(f"speeds of this run not recorded for later plans: {e}")


def apply(catalog: Catalog, stats: dict[str, Any], gpu: str | None) -> Catalog:
    """The catalog with measured speeds for this GPU type where there are any."""
    models = dict(catalog.models)
    for name, model in models.items():
        m = stats.get(_key(events.speed_name(name, model.backend), gpu))
        if not m:
            continue
        changes: dict[str, float] = {}
        if m.get("loads"):
            changes["load_seconds"] = m["load_seconds"] / m["loads"]
        if m.get("samples"):
            changes["seconds_per_sample"] = m["seconds"] / m["samples"]
        models[name] = dataclasses.replace(model, **changes)
    return dataclasses.replace(catalog, models=models)
