"""results.json: every pair, every sub-score and the provenance of a run (or of a merge), for
machines, in one documented, versioned schema (docs/results-json.md).

The document is built from the same rows as the tables and the Markdown report (`results.py`),
the manifest (`rundir.py`) and the events (`events.py`: job spans, model notes, each pair's
fingerprint), so every output of a run tells the same story; the HTML report is rendered from
this document. No pandas here: `compare` reads runs through it and the CLI starts fast.

Stable bytes: keys sorted, lists in a fixed order, no time of writing; the same run gives the same
file, so `spectravenv report` rebuilds it byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from svrunner.files import write_atomic

from . import events, results, rundir
from .catalog import Catalog
from .results import Row

SCHEMA = "spectravenv.results/1"
FILE = "results.json"
# The order statuses are counted and shown in (the Markdown report's, see report.STATUSES).
STATUSES = ("done", "failed", "interrupted", "running", "pending", "skipped")
Fingerprints = dict[tuple[str, str, str], dict[str, Any]]  # (run, model, benchmark) -> parts


def fingerprints(run: rundir.RunDir) -> Fingerprints:
    """Each finished pair's fingerprint, as its benchmark_done event recorded it."""
    return {
        (run.path.name, o.model, o.benchmark): o.fingerprint
        for o in events.outcomes(run).values()
        if o.fingerprint
    }


def _pair(r: Row, fps: Fingerprints) -> dict[str, Any]:
    fp = fps.get((r.run, r.model, r.benchmark))
    return {
        "model": r.model,
        "env": r.env,
        "benchmark": r.benchmark,
        "status": r.status,
        "metric": r.metric or "",
        "value": r.value,
        "samples": r.samples,
        "limit": r.limit,
        "duration_s": round(r.seconds, 1) if r.seconds is not None else None,
        "error": r.error,
        "note": r.note,
        "run": r.run,
        "log": r.log,
        "score_files": sorted(r.score_files),
        "fingerprint": fp,
        "fingerprint_digest": _digest(fp) if fp else None,
    }


def _digest(parts: dict[str, Any]) -> str:
    from svrunner import fingerprint

    return fingerprint.digest(parts)


def _envs(envs: dict[str, Any], full: bool) -> dict[str, Any]:
    out = {}
    for name, e in sorted(envs.items()):
        rec = {"key": e.get("key"), "lock_sha256": e.get("lock_sha256")}
        if full:
            rec.update(
                python=e.get("python"),
                cuda_runtime=e.get("cuda_runtime"),
                versions=dict(sorted((e.get("versions") or {}).items())),
            )
        out[name] = rec
    return out


def _spectravenv(m: dict[str, Any]) -> dict[str, Any]:
    sv = m.get("spectravenv") or {}
    return {"version": sv.get("version"), "git_revision": sv.get("git_revision")}


def provenance(name: str, m: dict[str, Any]) -> dict[str, Any]:
    """The manifest's answer to "how was this made", in the documented shape."""
    from .report import _wall_seconds

    return {
        "run": name,
        "command": m.get("command"),
        "status": m.get("status"),
        "started": m.get("started"),
        "finished": m.get("finished"),
        "wall_s": round(_wall_seconds(m), 1),
        "host": m.get("host"),
        "launcher": m.get("launcher"),
        "spectravenv": _spectravenv(m),
        "judge": m.get("judge"),
        "limit": m.get("limit"),
        "seed": m.get("seed"),
        "models": sorted(m.get("models", [])),
        "benchmarks": sorted(m.get("benchmarks", [])),
        "skipped_pairs": sorted([list(p) for p in m.get("skipped_pairs", [])]),
        "secrets_passed": sorted(m.get("secrets_passed", [])),
        "gpus": [
            {k: g.get(k) for k in ("index", "name", "memory_total_mb", "driver", "used")}
            for g in m.get("gpus", [])
        ],
        "envs": _envs(m.get("envs", {}), full=True),
        "attempts": [
            {
                "started": a.get("started"),
                "command": a.get("command"),
                "host": a.get("host"),
                "launcher": a.get("launcher"),
                "spectravenv": _spectravenv(a),
                "envs": _envs(a.get("envs", {}), full=False),
            }
            for a in m.get("attempts", [])
        ],
    }


def build(
    rows: Sequence[Row],
    manifests: Sequence[tuple[str, dict[str, Any]]],
    catalog: Catalog,
    spans: Sequence[events.JobSpan] = (),
    notes: dict[str, list[str]] | None = None,
    fps: Fingerprints | None = None,
) -> dict[str, Any]:
    """The results document of one run or of a merge (rows already merged, one per pair)."""
    notes, fps = notes or {}, fps or {}
    rows = sorted(rows, key=lambda r: (r.model, r.benchmark))
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    job_s = sum(s.seconds for s in spans)
    gpu_s = sum(s.seconds * s.gpus for s in spans)
    benches = sorted({r.benchmark for r in rows})
    envs_of = {r.model: r.env for r in rows}
    prov = [provenance(name, m) for name, m in manifests]
    return {
        "schema": SCHEMA,
        "runs": [name for name, _ in manifests],
        "limits": sorted({p["limit"] for p in prov if p["limit"] is not None}),
        "summary": {
            "pairs": len(rows),
            "statuses": counts,
            "success_rate": round(100 * counts["done"] / len(rows), 1) if rows else None,
            "wall_s": round(sum(p["wall_s"] for p in prov), 1),
            "job_s": round(job_s, 1),
            "gpu_s": round(gpu_s, 1),
        },
        "benchmarks": [_benchmark(catalog, b) for b in benches],
        "models": [
            {"name": m, "env": envs_of[m], "notes": list(notes.get(m, []))} for m in sorted(envs_of)
        ],
        "pairs": [_pair(r, fps) for r in rows],
        "subscores": [
            {"model": r.model, "benchmark": r.benchmark, "name": k, "value": v, "run": r.run}
            for r in rows
            for k, v in sorted(r.subscores.items())
        ],
        "provenance": prov,
    }


def _benchmark(catalog: Catalog, name: str) -> dict[str, Any]:
    b = catalog.benchmarks.get(name)
    return {
        "name": name,
        "known": b is not None,
        "category": b.category if b else None,
        "kind": b.kind if b else None,
        "metric": (b.metric or None) if b else None,
        "headline": b.headline if b else None,
        "scale": [0, 100],
    }


def for_run(run: rundir.RunDir, catalog: Catalog) -> dict[str, Any]:
    """The document of one run, straight from its folder (what `write_all` writes)."""
    rows = results.rows_for_run(run, catalog)
    return build(rows, [(run.path.name, run.manifest() or {})], catalog, events.spans(run),
                 events.model_notes(run), fingerprints(run))  # fmt: skip


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write(path: Any, doc: dict[str, Any]) -> None:
    write_atomic(path, dumps(doc))
