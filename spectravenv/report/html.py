"""EVALUATION_REPORT.html: the results document (`results_json`) as one self-contained page.

No network, no script: inline CSS and SVG only (sample images inlined as data: URIs, the sample
viewer a <details> element), so the file reads the same in any browser, from a laptop or a
cluster's shared disk, and archived for years. The only links are relative ones to the run's own
prediction and score files. Rendered from the same document as results.json, so the page and the
file machines read never disagree.

Every pair's cell and bar carries `data-model`, `data-benchmark`, `data-status`, `data-value`
(the 0-100 headline as results.json writes it, empty when there is none) and `data-run`, so a
browser test can check what is shown. A pair without a score (failed, interrupted, running,
pending, skipped, missing from a merge, or done without a headline metric) says so in words and
its own style; it is never drawn as 0.

Everything that comes from a run (model names, error texts, commands) is escaped. Stable bytes:
nothing depends on when the page is rendered, and everything is listed in a sorted order.
"""

from __future__ import annotations

import base64
import csv
import html
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectravenv.console import duration, plural
from spectravenv.report import cells
from spectravenv.report.markdown import (
    average_note,
    category_matrices,
    generation_text,
    limit_notice,
    prompt_sources,
    spectravenv_text,
)
from spectravenv.results import reported as reported_scores
from spectravenv.run import rundir

FILE = "EVALUATION_REPORT.html"
# viridis, sampled: a perceptually ordered scale that stays readable in greyscale
PALETTE = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
WORDS = {
    "failed": "failed",
    "interrupted": "interrupted",
    "running": "running",
    "pending": "pending",
    "skipped": "skipped",
    "missing": "not run",
}
STATUS_INK = {"failed": "#8a1111", "interrupted": "#7a4100", "running": "#1e3a8a"}  # others grey
ERROR_EXCERPT = 800  # characters of an error shown; the log has the rest

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:24px auto;max-width:1200px;padding:0 16px}
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:16px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{white-space:pre-wrap;word-break:break-word;margin:0;max-width:720px}
.notice{background:#fff4ce;border:1px solid #e0b600;padding:8px 12px}
table.heatmap td.cell{min-width:64px;text-align:center;font-weight:600;font-variant-numeric:tabular-nums;white-space:nowrap}
table.heatmap th{white-space:nowrap}.wide{overflow-x:auto;max-width:100%}
.st-failed{background:repeating-linear-gradient(45deg,#fbd5d5 0 6px,#f6b3b3 6px 12px);color:#8a1111}
.st-interrupted{background:repeating-linear-gradient(45deg,#fde6c8 0 6px,#f9cf98 6px 12px);color:#7a4100}
.st-running{background:#dbeafe;color:#1e3a8a;font-style:italic}
.st-pending{background:#eef2f7;color:#475569;font-style:italic}
.st-skipped{background:#e5e5e5;color:#555}
.st-missing{background:#fff;color:#999;font-weight:400}
.st-na{background:#f0f0f0;color:#555;font-weight:400}
.metric{font-weight:400;font-size:12px;color:#444}
.scale{display:flex;align-items:center;gap:4px;font-size:11px;font-weight:400;color:#555}
.scale i{display:inline-block;width:56px;height:9px;border:1px solid #bbb}
.legend span{display:inline-block;padding:1px 8px;margin:2px 4px 2px 0;border:1px solid #ccc}
svg text{font:12px system-ui,sans-serif}svg .axis{stroke:#ccc}svg .status{font-style:italic}svg .ci{stroke:#222;stroke-width:1.5}
.ci{display:block;font-weight:400;font-size:11px}.of{font-weight:400;font-size:11px;opacity:.85}
.gap{color:#8a1111;font-weight:600}details{margin:4px 0}summary{cursor:pointer}
table.samples td img{width:48px;height:48px;image-rendering:pixelated}.wrong{background:#fdecec}.right{background:#eefaf0}
"""
IMAGE_BYTES = 48_000  # an image larger than this is not inlined (the page stays light)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def attrs(**kw: Any) -> str:
    """` data-model="..." ...` (underscores become dashes), every value escaped, in a fixed order."""
    return "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in kw.items())


def data_value(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def colour(t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t)) * (len(PALETTE) - 1)
    i = min(int(t), len(PALETTE) - 2)
    f = t - i
    a, b = PALETTE[i], PALETTE[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))  # type: ignore[return-value]


def hexc(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def ink(rgb: tuple[int, int, int]) -> str:
    """Black or white text, whichever reads on this background."""
    lum = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255
    return "#000" if lum > 0.45 else "#fff"


def scale_of(values: Iterable[float]) -> tuple[float, float]:
    """A benchmark's colour scale: its lowest to its highest score here, so the models' order on
    it shows; one score (or all equal) is placed on the whole 0-100 instead."""
    vs = sorted(values)
    if not vs or vs[-1] - vs[0] < 1e-9:
        return 0.0, 100.0
    return vs[0], vs[-1]


def position(value: float, lo: float, hi: float) -> float:
    return (value - lo) / (hi - lo)


def fmt(value: float | None) -> str:
    return cells.score(value)


def gradient() -> str:
    stops = ",".join(hexc(c) for c in PALETTE)
    return f"linear-gradient(90deg,{stops})"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """A plain table; cells are escaped unless they are `Raw`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(c if isinstance(c, Raw) else f"<td>{esc(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table{attrs(**{'class': cls}) if cls else ''}><tr>{head}</tr>{body}</table>"


class Raw(str):
    """Markup built here (already escaped), to pass through `table` as a whole cell."""


# ---- sections -----------------------------------------------------------------------------------


def _summary(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    shown = [k for k in s["statuses"] if s["statuses"][k] or k in ("done", "failed")]
    rate = f"{s['success_rate']:.1f}%" if s["success_rate"] is not None else "-"
    row = (s["pairs"], *(s["statuses"][k] for k in shown), rate,
           duration(s["wall_s"]) if s["wall_s"] else "-", duration(s["job_s"]),
           duration(s["gpu_s"]) if s["gpu_s"] else "- (CPU only)")  # fmt: skip
    cells = [Raw(f'<td class="num"{attrs(data_field=h)}>{esc(v)}</td>')
             for h, v in zip(("pairs", *shown, "success rate", "wall", "job", "gpu"), row, strict=True)]  # fmt: skip
    out = ["<h2>Summary</h2>",
           table(("pairs", *shown, "success rate", "wall time", "job time", "GPU time"), [cells], "summary"),
           "<p>Wall time runs from the command's start (env builds included) to its end; job time "
           "adds up each job's runner from its start to its last event; GPU time is job time x GPUs.</p>"]  # fmt: skip
    notice = limit_notice(doc)
    if notice:
        limits = ", ".join(str(x) for x in doc["limits"])
        out.append(f'<p class="notice" id="limit-notice"{attrs(data_limit=limits)}>{esc(notice)}</p>')
    return "\n".join(out)


def _heat_cell(model: str, bench: str, pair: dict[str, Any] | None, lo: float, hi: float) -> str:
    if pair is None:
        return (f'<td class="cell st-missing"{attrs(data_model=model, data_benchmark=bench, data_status="missing", data_value="", data_run="")}'
                f' title="not part of any run here">{WORDS["missing"]}</td>')  # fmt: skip
    status, value = pair["status"], pair["value"]
    a = attrs(data_model=model, data_benchmark=bench, data_status=status,
              data_value=data_value(value) if status == "done" else "", data_run=pair["run"])  # fmt: skip
    if status == "done" and value is not None:
        bg = colour(position(value, lo, hi))
        iv = pair["interval"]
        extra = attrs(data_low=repr(iv["low"]), data_high=repr(iv["high"])) if iv else ""
        ci = cells.interval(value, iv)
        ci_html = f' <span class="ci">{esc(ci)}</span>' if ci else ""  # its own line: narrow columns
        of = f' <div class="of">{esc(cells.samples(pair))}</div>' if cells.limited(pair) else ""
        title = esc(pair["interval_note"] or f"95% interval: {(iv or {}).get('method', '')}")
        return (f'<td class="cell st-done"{a}{extra} style="background:{hexc(bg)};color:{ink(bg)}" '
                f'title="{title}"><span class="v">{value:.1f}</span>{ci_html}{of}</td>')  # fmt: skip
    if status == "done":
        why = pair["note"] or "no headline metric"
        return f'<td class="cell st-na"{a} title="{esc(why)}">n/a</td>'
    title = (pair["error"] or pair["note"] or status)[:300]
    return f'<td class="cell st-{esc(status)}"{a} title="{esc(title)}">{esc(WORDS.get(status, status))}</td>'


def _heatmap(doc: dict[str, Any]) -> str:
    grid = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    benches = doc["benchmarks"]
    scales = {
        b["name"]: scale_of(p["value"] for p in doc["pairs"]
                            if p["benchmark"] == b["name"] and p["status"] == "done" and p["value"] is not None)
        for b in benches
    }  # fmt: skip
    head = ["<th>model</th><th>env</th>"]
    for b in benches:
        lo, hi = scales[b["name"]]
        metric = b["metric"] or ("no headline metric" if b["known"] else "not in the catalog")
        head.append(
            f"<th{attrs(data_benchmark=b['name'], data_scale_lo=repr(lo), data_scale_hi=repr(hi))}>"
            f'{esc(b["name"])}<div class="metric">{esc(metric)}</div>'
            f'<div class="scale" title="colour scale of this benchmark"><span>{lo:.1f}</span>'
            f'<i style="background:{gradient()}"></i><span>{hi:.1f}</span></div></th>'
        )
    body = []
    for m in doc["models"]:
        cells = "".join(_heat_cell(m["name"], b["name"], grid.get((m["name"], b["name"])), *scales[b["name"]])
                        for b in benches)  # fmt: skip
        body.append(
            f"<tr{attrs(data_model=m['name'])}><th>{esc(m['name'])}</th><td>{esc(m['env'])}</td>{cells}</tr>"
        )
    legend = _legend(doc)
    avg = average_note(doc)
    return "\n".join(s for s in [
        "<h2>Scores (0-100, 95% interval)</h2>",
        "<p>Colour by score, on each benchmark's own scale (its lowest to its highest score here, "
        "shown under its name; one score alone is placed on 0-100). Each score carries its 95% "
        "interval from the per-sample results; a pair without a score says why.</p>",
        f'<div class="wide"><table class="heatmap" id="heatmap"><tr>{"".join(head)}</tr>{"".join(body)}</table></div>',
        f'<p class="legend" id="legend">{legend}</p>' if legend else "",
        _averages(doc),
        f"<p>{esc(avg)}</p>" if avg else "",
    ] if s)  # fmt: skip


def _legend(doc: dict[str, Any]) -> str:
    """Only the statuses that occur in the heatmap."""
    grid = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    seen = {p["status"] for p in doc["pairs"]}
    if len(grid) < len(doc["models"]) * len(doc["benchmarks"]):
        seen.add("missing")
    spans = [f'<span class="st-{k}">{esc(WORDS[k])}</span>' for k in WORDS if k in seen]
    if any(p["status"] == "done" and p["value"] is None for p in doc["pairs"]):
        spans.append('<span class="st-na">n/a: done, no headline metric</span>')
    return "".join(spans)


def _averages(doc: dict[str, Any]) -> str:
    avg = doc["averages"]["models"]
    if not avg:
        return ""
    rows = [(a["rank"], a["model"], Raw(f'<td class="num"{attrs(data_average_model=a["model"])}>{esc(cells.score(a["average"]))}</td>'))
            for a in avg]  # fmt: skip
    return table(("rank", "model", "average"), rows, "averages")


BAR_W, ROW_H, CHAR_W = 420, 22, 7


@dataclass(frozen=True)
class Bar:
    label: str
    model: str
    benchmark: str
    pair: dict[str, Any] | None


def _bars(doc: dict[str, Any]) -> str:
    """Bar charts with 95% whiskers: one per benchmark (a bar per model) when several models
    ran; one chart over the benchmarks when one did (never a chart of a single bar)."""
    grid = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    models = [m["name"] for m in doc["models"]]
    if len(models) < 2:
        bars = [Bar(b["name"], m, b["name"], grid.get((m, b["name"]))) for m in models for b in doc["benchmarks"]]
        title = f"{models[0]}: headline score by benchmark" if models else ""
        return "\n".join(["<h2>Per benchmark</h2>", _chart(bars, title, models[0] if models else "")]) if bars else ""
    out = ["<h2>Per benchmark</h2>"]
    for b in doc["benchmarks"]:
        bars = [Bar(m, m, b["name"], grid.get((m, b["name"]))) for m in models]
        out += [f"<h3>{esc(b['name'])} <small>({esc(b['metric'] or 'no headline metric')})</small></h3>",
                _chart(bars, f"{b['name']}: headline score by model (0-100)", b["name"])]  # fmt: skip
    return "\n".join(out)


def _chart(bars: list[Bar], title: str, key: str) -> str:
    label_w = min(360, max((len(b.label) for b in bars), default=10) * CHAR_W + 12)
    lo, hi = scale_of(b.pair["value"] for b in bars if b.pair and b.pair["status"] == "done" and b.pair["value"] is not None)
    height, width = ROW_H * len(bars) + 28, label_w + BAR_W + 230  # room for "100.0 [67.6, 100.0] (8 of 24)"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img"{attrs(data_chart=key)}>', f"<title>{esc(title)}</title>"]  # fmt: skip
    for tick in (0, 25, 50, 75, 100):
        x = label_w + BAR_W * tick / 100
        parts.append(f'<line class="axis" x1="{x:g}" y1="4" x2="{x:g}" y2="{height - 20}"/>'
                     f'<text x="{x:g}" y="{height - 6}" text-anchor="middle" fill="#666">{tick}</text>')  # fmt: skip
    for i, bar in enumerate(bars):
        parts.append(_bar(bar, 4 + i * ROW_H, label_w, lo, hi))
    return "".join(parts) + "</svg>"


def _bar(bar: Bar, y: int, label_w: int, lo: float, hi: float) -> str:
    p = bar.pair
    status = "missing" if p is None else p["status"]
    value = p["value"] if p and status == "done" else None
    label = bar.label if len(bar.label) * CHAR_W + 12 <= label_w else bar.label[: (label_w - 12) // CHAR_W - 1] + "…"
    a = attrs(**{"class": f"bar st-{status}"}, data_model=bar.model, data_benchmark=bar.benchmark,
              data_status=status, data_value=data_value(value), data_run=p["run"] if p else "")  # fmt: skip
    out = [f"<g{a}><title>{esc(bar.model)} x {esc(bar.benchmark)}: {esc(cells.pair(p) if p and status == 'done' else WORDS.get(status, status))}</title>"
           f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(label)}</text>']  # fmt: skip
    if value is None:
        word = "n/a (no headline metric)" if status == "done" else WORDS.get(status, status)
        out.append(f'<text class="status" x="{label_w + 4}" y="{y + 15}" fill="{STATUS_INK.get(status, "#555")}">{esc(word)}</text></g>')
        return "".join(out)
    w = BAR_W * min(100.0, max(0.0, value)) / 100
    bg = colour(position(value, lo, hi))
    out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.2f}" height="{ROW_H - 6}" fill="{hexc(bg)}"/>')
    end = w
    if p and p["interval"]:
        x0, x1 = (label_w + BAR_W * min(100.0, max(0.0, v)) / 100 for v in (p["interval"]["low"], p["interval"]["high"]))
        out.append(f'<line class="ci" x1="{x0:.2f}" y1="{y + 11}" x2="{x1:.2f}" y2="{y + 11}"/>'
                   f'<line class="ci" x1="{x0:.2f}" y1="{y + 6}" x2="{x0:.2f}" y2="{y + 16}"/>'
                   f'<line class="ci" x1="{x1:.2f}" y1="{y + 6}" x2="{x1:.2f}" y2="{y + 16}"/>')  # fmt: skip
        end = max(w, x1 - label_w)
    out.append(f'<text x="{label_w + end + 4:.2f}" y="{y + 15}">{esc(cells.pair(p))}</text></g>')
    return "".join(out)


def _pair_row(p: dict[str, Any], assets: Assets) -> tuple[Any, ...]:
    name, bench = p["model"], p["benchmark"]
    score = cells.with_interval(p["value"], p["interval"]) if p["status"] == "done" else p["status"]
    how = (p["interval"] or {}).get("method") or p["interval_note"] or "-"
    links = " ".join(f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in assets.links.get((name, bench), []))
    return (bench, p["status"],
            Raw(f'<td class="num"{attrs(data_model=name, data_benchmark=bench, data_status=p["status"], data_value=data_value(p["value"]))}>{esc(score)}</td>'),
            cells.samples(p), how, duration(p["duration_s"]) if p["duration_s"] else "-", p["note"] or "", p["run"],
            Raw(f"<td>{links or '-'}</td>"))  # fmt: skip


def _sub_rows(doc: dict[str, Any], name: str) -> list[tuple[Any, ...]]:
    rows = []
    for s in (s for s in doc["subscores"] if s["model"] == name):
        shown = f"{s['value']:.1f}" if s["value"] is not None else f"{s['raw']:g} (raw)"
        value = s["value"] if s["value"] is not None else s["raw"]
        rows.append((s["benchmark"], s["name"], Raw(f'<td class="num"{attrs(data_model=name, data_benchmark=s["benchmark"], data_subscore=s["name"], data_value=data_value(value))}>{esc(shown)}</td>')))  # fmt: skip
    return rows


def _viewer(p: dict[str, Any], assets: Assets) -> str:
    """The pair's samples, wrong answers first, folded in a <details> (no script needed)."""
    if not p["examples"]:
        return ""
    rows = []
    for e in p["examples"]:
        img = assets.images.get((p["benchmark"], e["index"]))
        pic = f'<img alt="sample {esc(e["index"])}" src="{img}">' if img else "-"
        verdict = "right" if e["score"] >= 1 else "wrong" if e["score"] <= 0 else f"{e['score']:.2f}"
        rows.append(Raw(f'<tr class="{"right" if e["score"] >= 1 else "wrong"}"{attrs(data_index=e["index"], data_score=repr(e["score"]))}>'
                        f"<td>{esc(e['index'])}</td><td>{pic}</td><td>{esc(e['question'])}</td><td>{esc(e['prediction'])}</td>"
                        f"<td>{esc(e['answer'])}</td><td>{esc(verdict)}</td></tr>"))  # fmt: skip
    wrong = sum(1 for e in p["examples"] if e["score"] < 1)
    head = "".join(f"<th>{h}</th>" for h in ("index", "image", "question", "prediction", "answer", "correct"))
    return (f'<details class="viewer"{attrs(data_model=p["model"], data_benchmark=p["benchmark"])}><summary>'
            f"{esc(p['benchmark'])}: {len(p['examples'])} samples from {esc(p['samples_file'] or '')}, "
            f"{wrong} not right first</summary>"
            f'<table class="samples"><tr>{head}</tr>{"".join(rows)}</table></details>')  # fmt: skip


def _per_model(doc: dict[str, Any], assets: Assets) -> str:
    out = ["<h2>Per model</h2>"]
    for m in doc["models"]:
        name = m["name"]
        env = f" ({esc(m['env'])})" if m["env"] else ""
        out.append(f"<h3{attrs(data_model=name)}>{esc(name)}{env}</h3>")
        out += [f"<p>Loaded with {esc(n)}.</p>" for n in m["notes"]]
        mine = [p for p in doc["pairs"] if p["model"] == name]
        out.append(table(("benchmark", "status", "score (95% CI)", "samples", "interval", "time", "note", "run", "files"),
                         [_pair_row(p, assets) for p in mine]))  # fmt: skip
        sub_rows = _sub_rows(doc, name)
        if sub_rows:
            out += ["<p>Sub-scores on the headline's 0-100 scale (raw where there is none: "
                    "counts where the headline is a count per sample scored):</p>", table(("benchmark", "sub-score", "value"), sub_rows, "subscores")]  # fmt: skip
        out += [v for v in (_viewer(p, assets) for p in mine) if v]
    return "\n".join(out)


def _reported(doc: dict[str, Any]) -> str:
    rows = []
    for p in doc["pairs"]:
        ours = cells.with_interval(p["value"], p["interval"]) if p["status"] == "done" else p["status"]
        for r in p["reported"]:
            flag = Raw('<td class="gap">gap</td>') if r["flagged"] else ""
            rows.append(Raw(f'<tr{attrs(data_model=p["model"], data_benchmark=p["benchmark"], data_reported=repr(r["score"]), data_flagged=str(r["flagged"]).lower())}>'
                            + "".join(c if isinstance(c, Raw) else f"<td>{esc(c)}</td>" for c in
                                      (p["model"], p["benchmark"], ours, f"{r['score']:g}", r["source_kind"],
                                       cells.signed(r["delta"]), flag or Raw("<td></td>"), r["source"])) + "</tr>"))  # fmt: skip
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("model", "benchmark", "ours", "reported", "by", "ours - reported", "", "source"))
    return (f"<h2>Reported scores</h2>\n<p>Scores reported for the exact dataset by the model's authors (self) "
            f"or the OpenVLM leaderboard (opencompass). <b>gap</b>: the difference exceeds our 95% interval plus "
            f"{doc['reported_tolerance']:g} points. {esc(reported_scores.CAVEAT)}</p>"
            f'<table id="reported"><tr>{head}</tr>{"".join(rows)}</table>')  # fmt: skip


def _categories(doc: dict[str, Any]) -> str:
    mats = category_matrices(doc)
    if not mats:
        return ""
    out = ["<h2>Categories</h2>", "<p>Each benchmark's sub-scores, models x categories (0-100).</p>"]
    for bench, names, rows in mats:
        out += [f"<h3>{esc(bench)}</h3>", table(("model", *names), rows, "categories")]
    return "\n".join(out)


def _failures(doc: dict[str, Any]) -> str:
    failed = [p for p in doc["pairs"] if p["status"] in ("failed", "interrupted")]
    if not failed:
        return ""
    rows = []
    for p in failed:
        err = p["error"] or "-"
        cut = err[:ERROR_EXCERPT] + (" …" if len(err) > ERROR_EXCERPT else "")
        rows.append(Raw(f'<tr{attrs(data_model=p["model"], data_benchmark=p["benchmark"], data_status=p["status"], data_value="")}>'
                        f'<td>{esc(p["model"])}</td><td>{esc(p["benchmark"])}</td><td>{esc(p["status"])}</td>'
                        f"<td><pre>{esc(cut)}</pre></td><td><code>{esc(p['log'])}</code></td></tr>"))  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("model", "benchmark", "status", "error", "log"))
    return f'<h2>Failures</h2>\n<table id="failures"><tr>{head}</tr>{"".join(rows)}</table>'


def _gpus(gpus: list[dict[str, Any]]) -> str:
    used = [f"{g.get('name')} (driver {g.get('driver') or '?'})" for g in gpus if g.get("used")]
    return ", ".join(used) or "none (CPU)"


def _generation(doc: dict[str, Any]) -> str:
    rows = [(m["name"], m.get("backend") or "not recorded", generation_text(m), prompt_sources(doc, m["name"]))
            for m in doc["models"]]  # fmt: skip
    return ("<h3>Generation</h3>" + table(("model", "backend", "generation settings", "prompt"), rows, "generation")
            + "<p>Prompt <i>model</i>: the wrapper's own prompt for the dataset; <i>dataset</i>: "
            "VLMEvalKit's prompt of the dataset.</p>")  # fmt: skip


def _provenance(doc: dict[str, Any]) -> str:
    out = ["<h2>Provenance</h2>", _generation(doc)]
    for p in doc["provenance"]:
        sv = p["spectravenv"]
        out.append(f"<h3{attrs(data_run=p['run'])}>Run {esc(p['run'])}</h3>")
        out.append(table(("field", "value"), [
            ("command", Raw(f"<td><code>{esc(p['command'] or '')}</code></td>")),
            ("spectravenv", spectravenv_text(sv)),
            ("started / finished", f"{p['started'] or '?'} / {p['finished'] or '-'}"),
            ("status", p["status"] or "?"),
            ("host", p["host"] or "?"),
            ("launcher", p["launcher"] or "?"),
            ("GPUs", _gpus(p["gpus"])),
            ("judge", p["judge"]),
            ("sample limit", p["limit"] or "none (full benchmarks)"),
            ("seed", p["seed"]),
            ("secrets passed (names only)", ", ".join(p["secrets_passed"]) or "none"),
        ], "provenance"))  # fmt: skip
        env_rows = [(name, Raw(f"<td><code>{esc((e['lock_sha256'] or '')[:16])}</code></td>"), e["key"], e["python"],
                     e["versions"].get("torch"), e["versions"].get("transformers"), e["versions"].get("vlmeval"),
                     e["cuda_runtime"] or "-", ", ".join(f"{k} {v}" for k, v in e["versions"].items()))
                    for name, e in p["envs"].items()]  # fmt: skip
        if env_rows:
            out.append(table(("env", "lock sha256", "key", "python", "torch", "transformers", "vlmeval",
                              "CUDA runtime", "packages"), env_rows, "envs"))  # fmt: skip
        if len(p["attempts"]) > 1:
            out.append(
                f"<p>{plural(len(p['attempts']), 'attempt')} (each keeps its own provenance):</p>"
            )
            out.append(table(("#", "started", "host", "spectravenv", "envs (key)", "command"), [
                (i, a["started"], a["host"] or "?", str(a["spectravenv"]["git_revision"] or "-")[:12],
                 ", ".join(f"{n} ({e['key']})" for n, e in a["envs"].items()) or "-",
                 Raw(f"<td><code>{esc(a['command'] or '')}</code></td>"))
                for i, a in enumerate(p["attempts"], 1)
            ], "attempts"))  # fmt: skip
    return "\n".join(out)


@dataclass(frozen=True)
class Assets:
    """What the page shows beyond the document: relative links to each pair's files, and the
    viewer's sample images (from the dataset TSVs the runs read, when they are still there)."""

    links: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    images: dict[tuple[str, str], str] = field(default_factory=dict)  # (benchmark, index) -> data URI

    @classmethod
    def of(cls, runs: Sequence[rundir.RunDir], doc: dict[str, Any], out_dir: Path) -> Assets:
        by_name = {r.path.name: r for r in runs}
        links = {}
        for p in doc["pairs"]:
            run = by_name.get(p["run"])
            if run is not None:
                links[(p["model"], p["benchmark"])] = _links(run, p, out_dir)
        return cls(links, _images(runs, doc))


def _links(run: rundir.RunDir, p: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
    files = [("predictions", p["prediction_file"]), *(("scores", f) for f in p["score_files"]),
             ("per-sample", p["samples_file"])]  # fmt: skip
    out = []
    for label, f in files:
        if f:
            out.append((label, Path(os.path.relpath(run.resolve(f), out_dir)).as_posix()))
    return out


def _data_roots(runs: Sequence[rundir.RunDir]) -> list[Path]:
    roots = []
    for run in runs:
        for job_id in run.job_ids():
            root = run.job_spec(job_id).get("data_root")
            if root and Path(root) not in roots:
                roots.append(Path(root))
    return roots


def _images(runs: Sequence[rundir.RunDir], doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    wanted: dict[str, set[str]] = {}
    for p in doc["pairs"]:
        wanted.setdefault(p["benchmark"], set()).update(e["index"] for e in p["examples"])
    out = {}
    roots = _data_roots(runs)
    for bench, indices in sorted(wanted.items()):
        tsv = next((r / f"{bench}.tsv" for r in roots if (r / f"{bench}.tsv").is_file()), None)
        if indices and tsv is not None:
            out.update({(bench, i): uri for i, uri in tsv_images(tsv, indices).items()})
    return out


def tsv_images(tsv: Path, indices: set[str]) -> dict[str, str]:
    """The images of these rows of a VLMEvalKit TSV as data: URIs (a row whose image cell names
    another row's index shares that row's image; images over IMAGE_BYTES are left out)."""
    csv.field_size_limit(sys.maxsize)
    cells_of: dict[str, str] = {}
    with tsv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            cells_of[str(row.get("index"))] = row.get("image") or ""
    out = {}
    for i in sorted(indices):
        cell = cells_of.get(i, "")
        cell = cells_of.get(cell, cell) if len(cell) < 64 else cell
        uri = _data_uri(cell)
        if uri:
            out[i] = uri
    return out


def _data_uri(b64: str) -> str | None:
    try:
        raw = base64.b64decode(b64, validate=False)
    except ValueError:
        return None
    kind = "png" if raw[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg" if raw[:2] == b"\xff\xd8" else None
    if kind is None or len(raw) > IMAGE_BYTES:
        return None
    return f"data:image/{kind};base64," + base64.b64encode(raw).decode()


def render(doc: dict[str, Any], assets: Assets | None = None) -> str:
    """The whole page, from a results document (results_json.build)."""
    assets = assets or Assets()
    runs = ", ".join(doc["runs"])
    title = f"Evaluation report: {runs}"
    body = [
        "<h1>Evaluation report</h1>",
        f"<p>Run{'s' if len(doc['runs']) > 1 else ''}: {esc(runs)}</p>",
        _summary(doc),
        _heatmap(doc),
        _reported(doc),
        _bars(doc),
        _per_model(doc, assets),
        _categories(doc),
        _failures(doc),
        _provenance(doc),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(s for s in body if s)
        + "\n</body>\n</html>\n"
    )
