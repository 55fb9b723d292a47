"""EVALUATION_REPORT.html: the results document (`results_json`) as one self-contained page.

No network, no script: inline CSS and SVG only, so the file reads the same in any browser, from
a laptop or a cluster's shared disk, and archived for years. Rendered from the same document as
results.json, so the page and the file machines read never disagree.

Every pair's cell and bar carries `data-model`, `data-benchmark`, `data-status`, `data-value`
(the 0-100 headline as results.json writes it, empty when there is none) and `data-run`, so a
browser test can check what is shown. A pair without a score (failed, interrupted, running,
pending, skipped, missing from a merge, or done without a headline metric) says so in words and
its own style; it is never drawn as 0.

Everything that comes from a run (model names, error texts, commands) is escaped. Stable bytes:
nothing depends on when the page is rendered, and everything is listed in a sorted order.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from .console import duration, plural

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
table.heatmap td.cell{min-width:72px;text-align:center;font-weight:600;font-variant-numeric:tabular-nums}
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
svg text{font:12px system-ui,sans-serif}svg .axis{stroke:#ccc}svg .status{font-style:italic}
"""


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
    return "n/a" if value is None else f"{value:.2f}"


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
    if doc["limits"]:
        limits = ", ".join(str(x) for x in doc["limits"])
        out.append(f'<p class="notice" id="limit-notice"{attrs(data_limit=limits)}>Sample limit: '
                   f"{esc(limits)} per benchmark (a stratified subset, the same for every model): "
                   "not comparable to full runs.</p>")  # fmt: skip
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
        return f'<td class="cell st-done"{a} style="background:{hexc(bg)};color:{ink(bg)}">{value:.2f}</td>'
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
    legend = "".join(
        f'<span class="st-{k}">{esc(WORDS[k])}</span>' for k in ("failed", "interrupted", "running", "pending", "skipped", "missing")
    ) + '<span class="st-na">n/a: done, no headline metric</span>'  # fmt: skip
    return "\n".join([
        "<h2>Scores (0-100)</h2>",
        "<p>Colour by score, on each benchmark's own scale (its lowest to its highest score here, "
        "shown under its name; one score alone is placed on 0-100). A pair without a score says why.</p>",
        f'<table class="heatmap" id="heatmap"><tr>{"".join(head)}</tr>{"".join(body)}</table>',
        f'<p class="legend">{legend}</p>',
    ])  # fmt: skip


BAR_W, ROW_H, CHAR_W = 420, 22, 7


def _bars(doc: dict[str, Any]) -> str:
    out = ["<h2>Per benchmark</h2>"]
    grid = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    models = [m["name"] for m in doc["models"]]
    label_w = min(360, max((len(m) for m in models), default=10) * CHAR_W + 12)
    for b in doc["benchmarks"]:
        name = b["name"]
        mine = [(m, grid.get((m, name))) for m in models]
        lo, hi = scale_of(
            p["value"] for _, p in mine if p and p["status"] == "done" and p["value"] is not None
        )
        height = ROW_H * len(mine) + 28
        width = label_w + BAR_W + 70
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 f'viewBox="0 0 {width} {height}" role="img"{attrs(data_benchmark=name)}>',
                 f"<title>{esc(name)}: headline score by model (0-100)</title>"]  # fmt: skip
        for tick in (0, 25, 50, 75, 100):
            x = label_w + BAR_W * tick / 100
            parts.append(f'<line class="axis" x1="{x:g}" y1="4" x2="{x:g}" y2="{height - 20}"/>'
                         f'<text x="{x:g}" y="{height - 6}" text-anchor="middle" fill="#666">{tick}</text>')  # fmt: skip
        for i, (m, p) in enumerate(mine):
            y = 4 + i * ROW_H
            status = "missing" if p is None else p["status"]
            value = p["value"] if p and status == "done" else None
            label = (
                m if len(m) * CHAR_W + 12 <= label_w else m[: (label_w - 12) // CHAR_W - 1] + "…"
            )
            a = attrs(**{"class": f"bar st-{status}"}, data_model=m, data_benchmark=name, data_status=status,
                      data_value=data_value(value), data_run=p["run"] if p else "")  # fmt: skip
            parts.append(f"<g{a}><title>{esc(m)}: {esc(fmt(value) if status == 'done' else WORDS.get(status, status))}</title>"
                         f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(label)}</text>')  # fmt: skip
            if value is not None:
                w = BAR_W * min(100.0, max(0.0, value)) / 100
                bg = colour(position(value, lo, hi))
                parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.2f}" height="{ROW_H - 6}" fill="{hexc(bg)}"/>'
                             f'<text x="{label_w + w + 4:.2f}" y="{y + 15}">{value:.2f}</text>')  # fmt: skip
            else:
                word = "n/a (no headline metric)" if status == "done" else WORDS.get(status, status)
                parts.append(
                    f'<text class="status" x="{label_w + 4}" y="{y + 15}" fill="{STATUS_INK.get(status, "#555")}">{esc(word)}</text>'
                )
            parts.append("</g>")
        parts.append("</svg>")
        metric = b["metric"] or "no headline metric"
        out += [f"<h3>{esc(name)} <small>({esc(metric)})</small></h3>", "".join(parts)]
    return "\n".join(out)


def _per_model(doc: dict[str, Any]) -> str:
    out = ["<h2>Per model</h2>"]
    subs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in doc["subscores"]:
        subs.setdefault((s["model"], s["benchmark"]), []).append(s)
    for m in doc["models"]:
        name = m["name"]
        env = f" ({esc(m['env'])})" if m["env"] else ""
        out.append(f"<h3{attrs(data_model=name)}>{esc(name)}{env}</h3>")
        out += [f"<p>Loaded with {esc(n)}.</p>" for n in m["notes"]]
        rows = []
        for p in (p for p in doc["pairs"] if p["model"] == name):
            score = fmt(p["value"]) if p["status"] == "done" else p["status"]
            rows.append((p["benchmark"], p["status"],
                         Raw(f'<td class="num"{attrs(data_model=name, data_benchmark=p["benchmark"], data_status=p["status"], data_value=data_value(p["value"]))}>{esc(score)}</td>'),
                         "-" if p["samples"] is None else p["samples"],
                         duration(p["duration_s"]) if p["duration_s"] else "-", p["note"] or "", p["run"]))  # fmt: skip
        out.append(table(("benchmark", "status", "score", "samples", "time", "note", "run"), rows))
        sub_rows = [
            (s["benchmark"], s["name"],
             Raw(f'<td class="num"{attrs(data_model=name, data_benchmark=s["benchmark"], data_subscore=s["name"], data_value=data_value(s["value"]))}>{s["value"]:.4g}</td>'))
            for p in doc["pairs"] if p["model"] == name
            for s in subs.get((name, p["benchmark"]), [])
        ]  # fmt: skip
        if sub_rows:
            out += ["<p>Sub-scores, as VLMEvalKit's score files hold them:</p>",
                    table(("benchmark", "sub-score", "value"), sub_rows, "subscores")]  # fmt: skip
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


def _provenance(doc: dict[str, Any]) -> str:
    out = ["<h2>Provenance</h2>"]
    for p in doc["provenance"]:
        sv = p["spectravenv"]
        out.append(f"<h3{attrs(data_run=p['run'])}>Run {esc(p['run'])}</h3>")
        out.append(table(("field", "value"), [
            ("command", Raw(f"<td><code>{esc(p['command'] or '')}</code></td>")),
            ("spectravenv", f"{sv['version'] or '?'} (git {str(sv['git_revision'] or '-')[:12]})"),
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


def render(doc: dict[str, Any]) -> str:
    """The whole page, from a results document (results_json.build)."""
    runs = ", ".join(doc["runs"])
    title = f"Evaluation report: {runs}"
    body = [
        "<h1>Evaluation report</h1>",
        f"<p>Run{'s' if len(doc['runs']) > 1 else ''}: {esc(runs)}</p>",
        _summary(doc),
        _heatmap(doc),
        _bars(doc),
        _per_model(doc),
        _failures(doc),
        _provenance(doc),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(s for s in body if s)
        + "\n</body>\n</html>\n"
    )
