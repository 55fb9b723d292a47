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

from spectravenv.catalog.entries import Catalog
from spectravenv.results import reported as reported_scores
from spectravenv.results import rows as results
from spectravenv.results.rows import Row
from spectravenv.results.uncertainty import Interval
from spectravenv.run import events, rundir

SCHEMA = "spectravenv.results/2"
FILE = "results.json"
# The order statuses are counted and shown in (the Markdown report's, see report.STATUSES).
STATUSES = ("done", "failed", "interrupted", "running", "pending", "skipped")
Fingerprints = dict[tuple[str, str, str], dict[str, Any]]  # (run, model, benchmark) -> parts
EXAMPLES = 24  # samples per pair kept for the report's sample viewer (wrong answers first)


def fingerprints(run: rundir.RunDir) -> Fingerprints:
    """Each finished pair's fingerprint, as its benchmark_done event recorded it."""
    return {
        (run.path.name, o.model, o.benchmark): o.fingerprint
        for o in events.outcomes(run).values()
        if o.fingerprint
    }


def _pair(r: Row, fps: Fingerprints, catalog: Catalog) -> dict[str, Any]:
    fp = fps.get((r.run, r.model, r.benchmark))
    return {
        "model": r.model,
        "env": r.env,
        "benchmark": r.benchmark,
        "status": r.status,
        "metric": r.metric or "",
        "value": r.value,
        "interval": _interval(r.interval),
        "interval_note": r.interval_note,
        "samples": r.samples,
        "rows_full": r.rows_full,
        "limit": r.limit,
        "duration_s": round(r.seconds, 1) if r.seconds is not None else None,
        "error": r.error,
        "note": r.note,
        "run": r.run,
        "log": r.log,
        "prediction_file": r.prediction_file,
        "score_files": sorted(r.score_files),
        "samples_file": r.sample_set.source if r.sample_set else None,
        "prompt_source": r.prompt_source,
        "fingerprint": fp,
        "fingerprint_digest": _digest(fp) if fp else None,
        "reported": _reported(r, catalog),
        "examples": _examples(r),
    }


def _interval(iv: Interval | None) -> dict[str, Any] | None:
    if iv is None:
        return None
    return {"low": round(iv.low, 4), "high": round(iv.high, 4), "se": round(iv.se, 4),
            "n": iv.n, "clusters": iv.clusters, "method": iv.method, "level": 0.95}  # fmt: skip


def _reported(r: Row, catalog: Catalog) -> list[dict[str, Any]]:
    m = catalog.models.get(r.model)
    names = (r.model, m.vlmeval_name or "") if m else (r.model,)
    value = r.value if r.status == "done" else None
    return [
        {"score": b.reported.score, "as_printed": b.reported.as_printed,
         "source_kind": b.reported.source_kind, "source": b.reported.source,
         "split_note": b.reported.split_note, "delta": b.delta, "flagged": b.flagged}
        for b in reported_scores.beside(names, r.benchmark, value, r.interval)
    ]  # fmt: skip


def _examples(r: Row) -> list[dict[str, Any]]:
    """Samples for the viewer: the wrong (or partly right) ones first, then in the file's order."""
    if r.sample_set is None:
        return []
    ordered = sorted(r.sample_set.samples, key=lambda s: s.score >= 1.0)[:EXAMPLES]
    return [{"index": s.index, "question": s.question, "prediction": s.prediction,
             "answer": s.answer, "score": round(s.score, 4)} for s in ordered]  # fmt: skip


def sub_scale(catalog: Catalog, benchmark: str) -> float | None:
    """The factor that puts a benchmark's sub-scores on its headline's 0-100 scale; None where
    there is none (a benchmark the catalog does not know, or a count per sample like OCRBench's)."""
    b = catalog.benchmarks.get(benchmark)
    return None if b is None or b.per_sample or not b.headline else b.scale


def _subscore(r: Row, name: str, raw: float, scale: float | None) -> dict[str, Any]:
    scaled = None if scale is None else round(raw * scale, 6)
    return {"model": r.model, "benchmark": r.benchmark, "name": name, "value": scaled, "raw": raw,
            "run": r.run}  # fmt: skip


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
    return {"version": sv.get("version"), "git_revision": sv.get("git_revision"),
            "install": sv.get("install")}


def provenance(name: str, m: dict[str, Any]) -> dict[str, Any]:
    """The manifest's answer to "how was this made", in the documented shape."""
    return {
        "run": name,
        "command": m.get("command"),
        "status": m.get("status"),
        "started": m.get("started"),
        "finished": m.get("finished"),
        "wall_s": round(rundir.wall_seconds(m), 1),
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
    facts: dict[str, dict[str, Any]] | None = None,
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
        # The limits the shown scores were computed under (a merge's rows each keep their run's).
        "limits": sorted({r.limit for r in rows if r.limit is not None}),
        "summary": {
            "pairs": len(rows),
            "statuses": counts,
            "success_rate": round(100 * counts["done"] / len(rows), 1) if rows else None,
            "wall_s": round(sum(p["wall_s"] for p in prov), 1),
            # Milliseconds, not tenths: the report rounds these to whole seconds again, and the
            # summary log rounds the raw span once; 3.499 s kept as 3.5 read "4s" beside "3s".
            "job_s": round(job_s, 3),
            "gpu_s": round(gpu_s, 3),
        },
        "benchmarks": [_benchmark(catalog, b) for b in benches],
        "models": [
            {"name": m, "env": envs_of[m], "notes": list(notes.get(m, [])), **(facts or {}).get(m, _NO_FACTS)}
            for m in sorted(envs_of)
        ],
        "pairs": [_pair(r, fps, catalog) for r in rows],
        "subscores": [_subscore(r, k, v, sub_scale(catalog, r.benchmark))
                      for r in rows for k, v in sorted(r.subscores.items())],
        "averages": averages(rows),
        "reported_tolerance": reported_scores.TOLERANCE,
        "provenance": prov,
    }


_NO_FACTS: dict[str, Any] = {"backend": None, "generation": None}


def averages(rows: Sequence[Row]) -> dict[str, Any]:
    """Each model's mean headline over the benchmarks every model has a score on, and its rank
    (1 = best; equal means share a rank). Empty when they share none, or with one model."""
    scored: dict[str, dict[str, float]] = {}
    for r in rows:
        scored.setdefault(r.model, {})
        if r.status == "done" and r.value is not None:
            scored[r.model][r.benchmark] = r.value
    common = sorted(set.intersection(*(set(v) for v in scored.values()))) if scored else []
    if len(scored) < 2 or not common:
        return {"benchmarks": common if len(scored) == 1 else [], "models": []}
    means = {m: round(sum(v[b] for b in common) / len(common), 6) for m, v in scored.items()}
    return {"benchmarks": common,
            "models": [{"model": m, "average": means[m], "rank": 1 + sum(x > means[m] for x in means.values())}
                       for m in sorted(means, key=lambda m: (-means[m], m))]}  # fmt: skip


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


def for_run(run: rundir.RunDir, catalog: Catalog, rows: list[Row] | None = None) -> dict[str, Any]:
    """The document of one run, straight from its folder (what `write_all` writes); `rows`:
    that run's rows when the caller has them already."""
    rows = results.rows_for_run(run, catalog) if rows is None else rows
    return build(rows, [(run.path.name, run.manifest() or {})], catalog, events.spans(run),
                 events.model_notes(run), fingerprints(run), events.model_facts(run))  # fmt: skip


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write(path: Any, doc: dict[str, Any]) -> None:
    write_atomic(path, dumps(doc))
