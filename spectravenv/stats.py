"""Measured speeds, learned from finished runs: model load time and seconds per sample, per
(model, GPU type). The next plan's estimates (order, replicas, expected makespan) use them in
place of the catalog's first guesses."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

from .catalog import Catalog
from .envs import lock_for
from .events import read_all
from .paths import Paths
from .rundir import RunDir, job_spec, write_atomic


def _key(model: str, gpu: str | None) -> str:
    return f"{model}|{gpu or 'cpu'}"


def load(paths: Paths) -> dict[str, dict[str, float]]:
    try:
        return json.loads(paths.stats.read_text())
    except (OSError, ValueError):
        return {}


def measurements(run: RunDir) -> dict[str, dict[str, float]]:
    """One run's (model, GPU type) -> load seconds and inference seconds per sample (per replica)."""
    out: dict[str, dict[str, float]] = {}
    events_dir = run.internal / "events"
    for f in sorted(events_dir.glob("*.jsonl")) if events_dir.is_dir() else []:
        key, world = None, 1
        for ev in read_all(f):
            if ev.get("rank", 0) not in (0, None):
                continue
            kind = ev["event"]
            if kind == "job_started":
                names = ev.get("gpu_names") or []
                key = _key(
                    job_spec(run, f.stem).get("model", {}).get("name", f.stem),
                    names[0] if names else None,
                )
                world = int(ev.get("world_size") or 1)
            elif key and kind == "model_loaded":
                m = out.setdefault(key, {})
                m["load_seconds"] = m.get("load_seconds", 0.0) + float(ev.get("seconds", 0.0))
                m["loads"] = m.get("loads", 0) + 1
            elif key and kind == "benchmark_done" and ev.get("samples"):
                m = out.setdefault(key, {})
                # Wall seconds x replicas: what one replica would take per sample.
                m["seconds"] = m.get("seconds", 0.0) + float(ev.get("seconds", 0.0)) * world
                m["samples"] = m.get("samples", 0) + int(ev["samples"])
    return out


def record(paths: Paths, run: RunDir) -> None:
    """Add a run's measurements to the totals in $SPECTRAVENV_HOME (under a lock: runs overlap).

    Only what this run measured since it was last recorded counts, so recording twice (a
    resumed run) never counts an attempt twice.
    """
    new = measurements(run)
    if not new:
        return
    with contextlib.suppress(OSError), lock_for(paths, "stats"):
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


def apply(catalog: Catalog, stats: dict[str, Any], gpu: str | None) -> Catalog:
    """The catalog with measured speeds for this GPU type where there are any."""
    models = dict(catalog.models)
    for name, model in models.items():
        m = stats.get(_key(name, gpu))
        if not m:
            continue
        changes: dict[str, float] = {}
        if m.get("loads"):
            changes["load_seconds"] = m["load_seconds"] / m["loads"]
        if m.get("samples"):
            changes["seconds_per_sample"] = m["seconds"] / m["samples"]
        models[name] = dataclasses.replace(model, **changes)
    return dataclasses.replace(catalog, models=models)
