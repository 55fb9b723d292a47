"""Score files -> one tidy table. Scores are read from VLMEvalKit's files, never from logs.

Every score file is read into named sub-scores (`dev/Overall`, `Final Score Norm`, ...; see
`scores.py`), kept whole in the long table. The headline metric of a benchmark is the sub-score its catalog
entry names, scaled to 0-100; a benchmark whose file has no such sub-score gets none, marked so,
rather than a guessed number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spectravenv.catalog.entries import Benchmark, Catalog
from spectravenv.results import samples as sample_files
from spectravenv.results import scores
from spectravenv.results.uncertainty import Interval
from spectravenv.run import events
from spectravenv.run.events import PairOutcome
from spectravenv.run.rundir import RunDir


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
    limit: int | None  # the --limit of the run this row comes from (each row its own in a merge)
    seconds: float | None
    error: str
    run: str
    log: str
    subscores: dict[str, float] = field(default_factory=dict)  # raw values as VLMEvalKit wrote
    score_files: list[str] = field(default_factory=list)
    note: str = ""
    rows_full: int | None = None  # rows of the whole dataset: "samples of rows_full"
    interval: Interval | None = None  # the headline's 95% interval, from per-sample results
    interval_note: str = ""  # why a headline has no interval
    sample_set: sample_files.SampleSet | None = None  # per-sample results (viewer, compare)
    prediction_file: str | None = None
    eval_files: list[str] = field(default_factory=list)
    prompt_source: str | None = None  # "model" (the wrapper's own prompt) or "dataset"


def headline(
    bench: Benchmark | None,
    scores: dict[str, float],
    samples: int | None = None,
    ambiguous: set[str] | frozenset[str] = frozenset(),
) -> tuple[str, float | None, str]:
    """(metric name, value on 0-100, note). The key must be found, never guessed."""
    if bench is None or not bench.headline:
        return "", None, "no headline metric"
    key = bench.headline
    clash = [k for k in ambiguous if k == key or k.endswith("/" + key)]
    if clash:
        return bench.metric or key, None, f"no headline metric: {clash[0]} differs between score files"
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


def run_is_live(run: RunDir, manifest: dict[str, Any]) -> bool:
    """Is someone still working on this run? Its dispatcher holds the run lock while it does; a
    Slurm run may go on without one (--no-wait), as long as its manifest says running."""
    if manifest.get("status") != "running":
        return False
    if manifest.get("launcher") == "slurm":
        return True
    from svrunner.locking import holder_alive, read_holder

    holder = read_holder(str(run.lock().path))
    return holder is not None and holder_alive(holder) is not False


def rows_for_run(run: RunDir, catalog: Catalog) -> list[Row]:
    manifest = run.manifest() or {}
    limit = manifest.get("limit")
    live = run_is_live(run, manifest)
    outs = events.outcomes(run)
    # Pairs the run asked for but never started are pending while it runs and skipped once it
    # has ended: a table that silently dropped them would overstate a run.
    for model in manifest.get("models", []):
        for bench in manifest.get("benchmarks", []):
            if (model, bench) not in outs and (model, bench) not in _dropped(manifest):
                outs[(model, bench)] = PairOutcome(model, bench, status="pending" if live else "skipped")
    for key in _dropped(manifest):
        if key not in outs or outs[key].status == "pending":
            outs[key] = PairOutcome(*key, status="skipped", error="unsupported by the env's VLMEvalKit")
    return [_row(run, catalog, o, limit, live) for _, o in sorted(outs.items())]


def _dropped(manifest: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, b) for m, b in manifest.get("skipped_pairs", [])}


def _row(run: RunDir, catalog: Catalog, o: PairOutcome, limit: int | None, live: bool) -> Row:
    b = catalog.benchmarks.get(o.benchmark)
    m = catalog.models.get(o.model)
    table = scores.read([run.resolve(f) for f in o.score_files]) if o.status == "done" else scores.ScoreTable()
    metric, value, note = (b.metric or "") if b else "", None, ""
    if o.status == "done":
        metric, value, note = headline(b, table.scores, o.samples, table.ambiguous)
        if table.problems:
            note = "; ".join(table.problems) + (f"; {note}" if note else "")
        elif not table.scores:
            note = "score files missing or empty"
        note = "; ".join(n for n in (o.judge_note, note) if n)
    status = o.status
    if status == "running" and not live:
        status = "interrupted"  # the run ended (or its dispatcher died) while this pair ran
    sset = _samples(run, o) if o.status == "done" else None
    judged = sample_files.assess(sset, b.headline if b else None, value) if o.status == "done" else None
    return Row(
        model=o.model,
        env=m.env if m else "",
        benchmark=o.benchmark,
        status=status,
        metric=metric,
        value=value,
        samples=o.samples,
        limit=limit,
        seconds=o.seconds,
        error=o.error,
        run=run.path.name,
        log=run.relative(run.log_file(o.model)),
        subscores=table.scores,
        score_files=list(o.score_files),
        note=note,
        rows_full=o.rows_full,
        interval=judged.interval if judged else None,
        interval_note=judged.note if judged else "",
        sample_set=sset,
        prediction_file=o.prediction_file,
        eval_files=list(o.eval_files),
        prompt_source=o.prompt_source,
    )


def _samples(run: RunDir, o: PairOutcome) -> sample_files.SampleSet | None:
    files = {run.resolve(f): f for f in o.eval_files}
    return sample_files.read(list(files), files)


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
