"""Score files -> one tidy table. Scores are read from VLMEvalKit's files, never from logs.

Every score file is flattened into named sub-scores (`dev/Overall`, `Final Score Norm`, ...),
kept whole in the long table. The headline metric of a benchmark is the sub-score its catalog
entry names, scaled to 0-100; a benchmark whose file has no such sub-score gets none, marked so,
rather than a guessed number.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Benchmark, Catalog
from .rundir import PairOutcome, RunDir


@dataclass
class Row:
    """One (model, benchmark) of a run, as it goes into every table and the report."""

    model: str
    env: str
    benchmark: str
    status: str
    metric: str
    value: float | None  # headline, 0-100; None when failed or no headline metric
    samples: int | None
    limit: int | None
    seconds: float | None
    error: str
    run: str
    log: str
    subscores: dict[str, float] = field(default_factory=dict)  # raw values as VLMEvalKit wrote
    score_files: list[str] = field(default_factory=list)
    note: str = ""


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def flatten_csv(path: Path) -> dict[str, float]:
    """A VLMEvalKit score table: one row per split (or per category), one column per metric.

    The first column labels rows when it is not numeric (`split`, `Category`, ...). A single-row
    table gives bare metric names; several rows give `row/metric`.
    """
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        return {}
    header, body = rows[0], rows[1:]
    first_is_label = any(_number(r[0]) is None for r in body) and header[0] not in ("",)
    label_col = 0 if first_is_label or header[0] == "" else None
    out: dict[str, float] = {}
    for r in body:
        prefix = "" if len(body) == 1 or label_col is None else f"{r[label_col]}/"
        for i, (name, cell) in enumerate(zip(header, r, strict=False)):
            if i == label_col:
                continue
            value = _number(cell)
            if value is not None:
                out[f"{prefix}{name}"] = value
    return out


def flatten_json(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text())
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}/" if isinstance(v, dict) else f"{prefix}{k}", v)
        else:
            value = _number(node)
            if value is not None:
                out[prefix.rstrip("/")] = value

    walk("", data)
    return out


def read_scores(files: list[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name in files:
        p = Path(name)
        if not p.exists():
            continue
        if p.suffix == ".csv":
            scores.update(flatten_csv(p))
        elif p.suffix == ".json":
            scores.update(flatten_json(p))
    return scores


def headline(
    bench: Benchmark | None, scores: dict[str, float], samples: int | None = None
) -> tuple[str, float | None, str]:
    """(metric name, value on 0-100, note). The key must be found, never guessed."""
    if bench is None or not bench.headline:
        return "", None, "no headline metric"
    key = bench.headline
    hits = [k for k in scores if k == key] or [k for k in scores if k.endswith("/" + key)]
    if len(hits) != 1:
        why = "not in the score file" if not hits else f"ambiguous ({', '.join(hits)})"
        return bench.metric or key, None, f"no headline metric: {key} {why}"
    raw = scores[hits[0]]
    if bench.per_sample:
        if not samples:
            return bench.metric or key, None, f"no headline metric: {key} needs the sample count"
        return bench.metric or key, round(raw * 100 / samples, 6), ""
    return bench.metric or key, round(raw * bench.scale, 6), ""


def rows_for_run(run: RunDir, catalog: Catalog) -> list[Row]:
    from .rundir import outcomes

    manifest = run.manifest() or {}
    limit = manifest.get("limit")
    outs = outcomes(run)  # a pair still "running" once the run ended reads as interrupted (_row)
    # Pairs the run asked for but never started (it was interrupted first, or their job could
    # not start) are listed as skipped: a table that silently drops them would overstate a run.
    if manifest.get("status") in ("finished", "failed", "interrupted"):
        for model in manifest.get("models", []):
            for bench in manifest.get("benchmarks", []):
                outs.setdefault((model, bench), PairOutcome(model, bench, status="skipped"))
    rows = []
    for (model, bench), o in sorted(outs.items()):
        rows.append(_row(run, catalog, o, model, bench, limit))
    return rows


def _row(run: RunDir, catalog: Catalog, o: PairOutcome, model: str, bench: str,
         limit: int | None) -> Row:  # fmt: skip
    b = catalog.benchmarks.get(bench)
    m = catalog.models.get(model)
    scores = read_scores(o.score_files) if o.status == "done" else {}
    metric, value, note = (
        headline(b, scores, o.samples)
        if o.status == "done"
        else ((b.metric or "") if b else "", None, "")
    )
    if o.status == "done" and not scores:
        note = "score files missing or empty"
    return Row(
        model=model,
        env=m.env if m else "",
        benchmark=bench,
        status=o.status if o.status != "running" else "interrupted",
        metric=metric,
        value=value,
        samples=o.samples,
        limit=limit,
        seconds=o.seconds,
        error=o.error,
        run=run.path.name,
        log=str(run.log_file(model).relative_to(run.path)),
        subscores=scores,
        score_files=[
            str(Path(f).relative_to(run.path)) if Path(f).is_relative_to(run.path) else f
            for f in o.score_files
        ],
        note=note,
    )


def merge(runs: list[list[Row]], finished: list[float]) -> list[Row]:
    """Several runs into one matrix: per pair, the newest run's finished result wins.

    A done result beats a failed or interrupted one of any age: a re-run that failed does not
    erase a good number, and the row names the run it came from.
    """
    best: dict[tuple[str, str], tuple[tuple[int, float], Row]] = {}
    for rows, when in zip(runs, finished, strict=True):
        for r in rows:
            rank = (1 if r.status == "done" else 0, when)
            key = (r.model, r.benchmark)
            if key not in best or rank > best[key][0]:
                best[key] = (rank, r)
    return [r for _, r in sorted(best.values(), key=lambda x: (x[1].model, x[1].benchmark))]
