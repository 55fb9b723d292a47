"""Writers: per-model and summary tables (CSV, XLSX), EVALUATION_REPORT.md, the console summary.

Everything is derived from what is on disk (run.json, events, VLMEvalKit's score files), written
atomically, and deterministic: rebuilding a report from the same run gives the same bytes.
pandas and openpyxl are imported here only, so the CLI starts fast.
"""

from __future__ import annotations

import datetime
import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from svrunner.files import write_atomic

from . import events, results, rundir
from .catalog import Catalog
from .console import duration, plural, table
from .results import Row

PAIR_COLUMNS = [
    "model", "env", "benchmark", "status", "metric", "value", "samples", "limit",
    "duration_s", "error", "run", "log",
]  # fmt: skip
REPORT = "EVALUATION_REPORT.md"
# A fixed timestamp inside XLSX files (zip entries and document properties): the same table
# gives the same bytes, so `spectravenv report` can be checked against the original.
FIXED_TIME = (2000, 1, 1, 0, 0, 0)


def _pair_record(r: Row) -> dict[str, Any]:
    return {
        "model": r.model, "env": r.env, "benchmark": r.benchmark, "status": r.status,
        "metric": r.metric or "", "value": r.value, "samples": r.samples, "limit": r.limit,
        "duration_s": round(r.seconds, 1) if r.seconds is not None else None,
        "error": r.error or r.note, "run": r.run, "log": r.log,
    }  # fmt: skip


def _long_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [
        {"model": r.model, "benchmark": r.benchmark, "subscore": k, "value": v, "run": r.run}
        for r in rows
        for k, v in r.subscores.items()
    ]


def _write_csv(df: Any, path: Path) -> None:
    write_atomic(path, df.to_csv(index=False, lineterminator="\n"))


def _write_xlsx(sheets: dict[str, Any], path: Path) -> None:
    import pandas as pd

    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as xw:
        for name, df in sheets.items():
            df.to_excel(xw, sheet_name=name[:31], index=False)
        props = xw.book.properties
        props.creator = "spectravenv"
        props.created = props.modified = datetime.datetime(*FIXED_TIME)
    write_atomic(path, _stable_zip(buf.getvalue()))


def _stable_zip(data: bytes) -> bytes:
    """Re-pack a zip with fixed entry times (openpyxl stamps the current time on each entry)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME)
            fixed.compress_type, fixed.external_attr = zipfile.ZIP_DEFLATED, info.external_attr
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                # openpyxl stamps "modified" with the time of saving, whatever we set.
                data = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*",
                    rb"\g<1>2000-01-01T00:00:00Z",
                    data,
                )
            dst.writestr(fixed, data)
    return out.getvalue()


def write_tables(rows: list[Row], out_dir: Path) -> None:
    import pandas as pd

    results_dir = out_dir / "results"
    pairs = pd.DataFrame([_pair_record(r) for r in rows], columns=PAIR_COLUMNS)
    long = pd.DataFrame(
        _long_records(rows), columns=["model", "benchmark", "subscore", "value", "run"]
    )
    matrix = matrix_frame(rows)
    for model in sorted({r.model for r in rows}):
        mine = pairs[pairs.model == model]
        _write_csv(mine, results_dir / f"{model}_results.csv")
        _write_xlsx({"results": mine, "subscores": long[long.model == model]},
                    results_dir / f"{model}_results.xlsx")  # fmt: skip
    _write_csv(pairs, results_dir / "summary.csv")
    _write_xlsx({"matrix": matrix, "pairs": pairs, "long": long}, results_dir / "summary.xlsx")


def matrix_frame(rows: list[Row]) -> Any:
    import pandas as pd

    benches = sorted({r.benchmark for r in rows})
    by_model: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_model.setdefault(r.model, {"model": r.model})[r.benchmark] = r.value
    return pd.DataFrame([by_model[m] for m in sorted(by_model)], columns=["model", *benches])


# ---- EVALUATION_REPORT.md ----------------------------------------------------------------------


def _cell(r: Row | None) -> str:
    if r is None:
        return ""
    if r.status != "done":
        return r.status
    return f"{r.value:.2f}" if r.value is not None else "n/a"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def esc(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


STATUSES = ("done", "failed", "interrupted", "running", "pending", "skipped")


def render_markdown(
    rows: list[Row],
    manifests: list[tuple[str, dict[str, Any]]],
    catalog: Catalog,
    spans: list[events.JobSpan],
    notes: dict[str, list[str]] | None = None,
) -> str:
    notes = notes or {}
    done = [r for r in rows if r.status == "done"]
    failed = [r for r in rows if r.status in ("failed", "interrupted")]
    job_seconds = sum(s.seconds for s in spans)
    gpu_seconds = sum(s.seconds * s.gpus for s in spans)
    wall = sum(_wall_seconds(m) for _, m in manifests)
    out = ["# Evaluation report", ""]
    runs = ", ".join(name for name, _ in manifests)
    counts = {status: sum(r.status == status for r in rows) for status in STATUSES}
    shown = [s for s in STATUSES if counts[s] or s in ("done", "failed")]
    out += [
        f"Run{'s' if len(manifests) > 1 else ''}: {runs}",
        "",
        "## Summary",
        "",
        _md_table(
            ("pairs", *shown, "success rate", "wall time", "job time", "GPU time"),
            [(len(rows), *(counts[s] for s in shown),
              f"{100 * len(done) / len(rows):.1f}%" if rows else "-",
              duration(wall) if wall else "-", duration(job_seconds),
              duration(gpu_seconds) if gpu_seconds else "- (CPU only)")],
        ),
        "",
        "Wall time runs from the command's start (env builds included) to its end; job time adds "
        "up each job's runner from its start to its last event; GPU time is job time x GPUs.",
        "",
    ]
    limits = {m.get("limit") for _, m in manifests}
    if limits != {None}:
        out += [f"Sample limit: {', '.join(str(x) for x in sorted(limits, key=str))} per benchmark "
                "(a stratified subset, the same for every model): not comparable to full runs.", ""]  # fmt: skip

    benches = sorted({r.benchmark for r in rows})
    grid = {(r.model, r.benchmark): r for r in rows}
    out += ["## Scores (0-100)", ""]
    headers = ["model", *benches]
    out.append(_md_table(headers, [(m, *(_cell(grid.get((m, b))) for b in benches))
                                   for m in sorted({r.model for r in rows})]))  # fmt: skip
    out += ["", "Metrics: " + "; ".join(
        f"{b}: {catalog.benchmarks[b].metric or 'no headline metric'}" if b in catalog.benchmarks else f"{b}: ?"
        for b in benches
    ), ""]  # fmt: skip

    out += ["## Per model", ""]
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model]
        out += [f"### {model} ({mine[0].env})", ""]
        out += [f"Loaded with {note}." for note in notes.get(model, [])] + ([""] if notes.get(model) else [])
        detail = []
        for r in mine:
            subs = ", ".join(f"{k}: {v:.4g}" for k, v in r.subscores.items())
            detail.append((r.benchmark, r.status, _cell(r), r.samples if r.samples is not None else "-",
                           duration(r.seconds) if r.seconds else "-", r.note or "", subs or "-"))  # fmt: skip
        out += [
            _md_table(
                ("benchmark", "status", "score", "samples", "time", "note", "sub-scores"), detail
            ),
            "",
        ]

    if failed:
        out += ["## Failures", ""]
        out.append(_md_table(("model", "benchmark", "status", "error", "log"),
                             [(r.model, r.benchmark, r.status, (r.error or "-")[:300], r.log) for r in failed]))  # fmt: skip
        out.append("")

    out += ["## Provenance", ""]
    for name, m in manifests:
        sv = m.get("spectravenv", {})
        out += [f"### Run {name}", "", _md_table(("field", "value"), [
            ("command", f"`{m.get('command', '')}`"),
            ("spectravenv", f"{sv.get('version', '?')} (git {str(sv.get('git_revision') or '-')[:12]})"),
            ("started / finished", f"{m.get('started', '?')} / {m.get('finished') or '-'}"),
            ("status", m.get("status", "?")),
            ("host", m.get("host", "?")),
            ("GPUs", ", ".join(f"{g['name']} (driver {g.get('driver') or '?'})" for g in m.get("gpus", []) if g.get("used")) or "none (CPU)"),
            ("judge", m.get("judge")),
            ("sample limit", m.get("limit") or "none (full benchmarks)"),
            ("seed", m.get("seed")),
        ]), ""]  # fmt: skip
        env_rows = []
        for env, e in sorted(m.get("envs", {}).items()):
            v = e.get("versions", {})
            env_rows.append((env, (e.get("lock_sha256") or "")[:16], e.get("python"), v.get("torch"),
                             v.get("transformers"), v.get("vlmeval"), e.get("cuda_runtime") or "-"))  # fmt: skip
        out += [_md_table(("env", "lock sha256", "python", "torch", "transformers", "vlmeval", "CUDA runtime"),
                          env_rows), ""]  # fmt: skip
        attempts = m.get("attempts", [])
        if len(attempts) > 1:
            out += [f"{plural(len(attempts), 'attempt')} (each keeps its own provenance):", ""]
            out += [_md_table(("#", "started", "host", "spectravenv", "envs (key)", "command"), [
                (i, a.get("started"), a.get("host", "?"),
                 str((a.get("spectravenv") or {}).get("git_revision") or "-")[:12],
                 ", ".join(f"{n} ({e.get('key')})" for n, e in sorted(a.get("envs", {}).items())) or "-",
                 f"`{a.get('command', '')}`")
                for i, a in enumerate(attempts, 1)
            ]), ""]  # fmt: skip
    return "\n".join(out)


def _wall_seconds(m: dict[str, Any]) -> float:
    """Each attempt from its start to the next attempt's start (or the run's end), summed."""
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


# ---- entry points ------------------------------------------------------------------------------


def console_summary(rows: list[Row]) -> str:
    return table(
        ("model", "benchmark", "status", "metric", "score", "samples", "time", "error"),
        [(r.model, r.benchmark, r.status, r.metric, _cell(r), r.samples if r.samples is not None else "-",
          duration(r.seconds) if r.seconds else "-", (r.error or r.note)[:60]) for r in rows],
    )  # fmt: skip


def write_all(run: rundir.RunDir, catalog: Catalog) -> str:
    """Tables and report of one run, into that run's folder; returns the console summary.

    Nothing here needs the secrets: the runner masked every event before writing it."""
    rows = results.rows_for_run(run, catalog)
    write_tables(rows, run.path)
    manifest = run.manifest() or {}
    spans, notes = events.spans(run), events.model_notes(run)
    write_atomic(run.path / REPORT,
                 render_markdown(rows, [(run.path.name, manifest)], catalog, spans, notes) + "\n")  # fmt: skip
    _write_machine_and_html(run.path, rows, [(run.path.name, manifest)], catalog, spans, notes, [run])
    return console_summary(rows)


def _write_machine_and_html(
    out_dir: Path,
    rows: list[Row],
    manifests: list[tuple[str, dict[str, Any]]],
    catalog: Catalog,
    spans: list[events.JobSpan],
    notes: dict[str, list[str]],
    runs: list[rundir.RunDir],
) -> None:
    """results.json and EVALUATION_REPORT.html, both from one results document."""
    from . import report_html, results_json

    fps: results_json.Fingerprints = {}
    for r in runs:
        fps.update(results_json.fingerprints(r))
    doc = results_json.build(rows, manifests, catalog, spans, notes, fps)
    results_json.write(out_dir / results_json.FILE, doc)
    write_atomic(out_dir / report_html.FILE, report_html.render(doc))


def write_merged(runs: list[rundir.RunDir], catalog: Catalog, out_dir: Path) -> str:
    """Several runs merged into one matrix (newest finished result per pair), into `out_dir`."""
    manifests = [(r.path.name, r.manifest() or {}) for r in runs]
    order = [m.get("finished") or m.get("started") or "" for _, m in manifests]
    rank = {s: i for i, s in enumerate(sorted(order))}
    rows = results.merge([results.rows_for_run(r, catalog) for r in runs], [rank[s] for s in order])
    write_tables(rows, out_dir)
    spans = [s for r in runs for s in events.spans(r)]
    notes: dict[str, list[str]] = {}
    for r in runs:
        for model, ns in events.model_notes(r).items():
            notes.setdefault(model, []).extend(n for n in ns if n not in notes.get(model, []))
    write_atomic(out_dir / REPORT, render_markdown(rows, manifests, catalog, spans, notes) + "\n")
    _write_machine_and_html(out_dir, rows, manifests, catalog, spans, notes, runs)
    return console_summary(rows)
