"""Writing a run's report (or a merge of several runs): tables, EVALUATION_REPORT.md and .html,
results.json, the paste-ready score table (and with --latex its booktabs twin) and the console
summary, all from one results document and written atomically.
Nothing here needs secrets: the runner masked every event before writing it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svrunner.files import write_atomic

from spectravenv.catalog.entries import Catalog
from spectravenv.console import duration, table
from spectravenv.report import cells, latex
from spectravenv.report import html as report_html
from spectravenv.report.markdown import paste_table, render_markdown
from spectravenv.report.tables import write_tables
from spectravenv.results import document as results_json
from spectravenv.results import rows as results
from spectravenv.results.rows import Row
from spectravenv.run import events, rundir

REPORT = "EVALUATION_REPORT.md"
PASTE = "scores.md"  # under results/


@dataclass(frozen=True)
class Options:
    latex: bool = False  # also results/scores.tex
    latex_intervals: bool = True


def console_summary(doc: dict[str, Any]) -> str:
    """The pairs as the console shows them (`eval`, `report`, `status`), reported scores beside."""
    rows = []
    for p in doc["pairs"]:
        reported = "; ".join(f"{r['score']:g} {r['source_kind']} ({cells.signed(r['delta'])}{', gap' if r['flagged'] else ''})"
                             for r in p["reported"])  # fmt: skip
        rows.append((p["model"], p["benchmark"], p["status"], p["metric"], cells.with_interval(p["value"], p["interval"]) if p["status"] == "done" else p["status"],
                     cells.samples(p), duration(p["duration_s"]) if p["duration_s"] else "-",
                     reported or "-", (p["error"] or p["note"] or p["interval_note"])[:60]))  # fmt: skip
    return table(("model", "benchmark", "status", "metric", "score (95% CI)", "samples", "time",
                  "reported (ours - it)", "note"), rows)  # fmt: skip


def document(rows: list[Row], manifests: list[tuple[str, dict[str, Any]]], catalog: Catalog,
             runs: list[rundir.RunDir]) -> dict[str, Any]:  # fmt: skip
    """The results document of these rows, with what the runs' events add (spans, notes,
    fingerprints, how each model generated)."""
    spans = [s for r in runs for s in events.spans(r)]
    notes: dict[str, list[str]] = {}
    fps: results_json.Fingerprints = {}
    facts: dict[str, dict[str, Any]] = {}
    for r in runs:
        for model, ns in events.model_notes(r).items():
            notes.setdefault(model, []).extend(n for n in ns if n not in notes.get(model, []))
        fps.update(results_json.fingerprints(r))
        facts.update(events.model_facts(r))
    return results_json.build(rows, manifests, catalog, spans, notes, fps, facts)


def _write(out_dir: Path, rows: list[Row], doc: dict[str, Any], runs: list[rundir.RunDir],
           opts: Options) -> None:  # fmt: skip
    write_tables(rows, doc, out_dir)
    write_atomic(out_dir / "results" / PASTE, paste_table(doc))
    if opts.latex:
        write_atomic(out_dir / "results" / latex.FILE, latex.render(doc, opts.latex_intervals))
    write_atomic(out_dir / REPORT, render_markdown(doc))
    results_json.write(out_dir / results_json.FILE, doc)
    write_atomic(out_dir / report_html.FILE, report_html.render(doc, report_html.Assets.of(runs, doc, out_dir)))


def write_all(run: rundir.RunDir, catalog: Catalog, opts: Options = Options()) -> str:
    """Tables and report of one run, into that run's folder; returns the console summary."""
    rows = results.rows_for_run(run, catalog)
    doc = document(rows, [(run.path.name, run.manifest() or {})], catalog, [run])
    _write(run.path, rows, doc, [run], opts)
    return console_summary(doc)


def write_merged(runs: list[rundir.RunDir], catalog: Catalog, out_dir: Path,
                 opts: Options = Options()) -> str:  # fmt: skip
    """Several runs merged into one matrix (newest finished result per pair), into `out_dir`."""
    manifests = [(r.path.name, r.manifest() or {}) for r in runs]
    order = [m.get("finished") or m.get("started") or "" for _, m in manifests]
    rank = {s: i for i, s in enumerate(sorted(order))}
    rows = results.merge([results.rows_for_run(r, catalog) for r in runs], [rank[s] for s in order])
    doc = document(rows, manifests, catalog, runs)
    _write(out_dir, rows, doc, runs, opts)
    return console_summary(doc)
