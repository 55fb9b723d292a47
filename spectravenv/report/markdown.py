"""EVALUATION_REPORT.md and the paste-ready score table, rendered from the results document
(`results/document.py`), like the HTML report: every output of a run tells the same story, and
rebuilding from the same run gives the same bytes.

Sections: summary; the score matrix (each score with its 95% interval, `n of N` under a limit,
an average and a rank over the benchmarks every model shares); reported scores beside ours;
per model (sub-scores on the headline's 0-100 scale); a models x categories matrix per
benchmark; failures; provenance (generation settings, backend, judge, spectravenv's revision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spectravenv.console import duration, plural
from spectravenv.report import cells
from spectravenv.results import reported as reported_scores

STATUSES = ("done", "failed", "interrupted", "running", "pending", "skipped")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A GitHub Markdown table; `align` has one letter per column (l or r), default left."""

    def esc(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    rule = [("---:" if a == "r" else "---") for a in align.ljust(len(headers), "l")]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _grid(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["model"], p["benchmark"]): p for p in doc["pairs"]}


def limit_notice(doc: dict[str, Any]) -> str:
    """What the --limit means for the scores shown, said per cell when runs with different limits
    were merged ("" when every score is of a full benchmark)."""
    done = [p for p in doc["pairs"] if p["status"] == "done"]
    limited = [p for p in done if cells.limited(p)]
    if not limited:
        return ""
    limits = ", ".join(str(x) for x in doc["limits"])
    text = (f"Sample limit {limits} per benchmark (a stratified subset, the same for every model): "
            "those scores say `n of N` samples and are not comparable to full runs.")  # fmt: skip
    if len(limited) < len(done) or len(doc["limits"]) > 1:
        text += (f" The runs merged here used different limits: {len(limited)} of {len(done)} "
                 "scores come from a subset, each cell says its own.")  # fmt: skip
    return text


def score_matrix(doc: dict[str, Any], with_ci: bool = True) -> str:
    """Models x benchmarks, with the average and rank where the models share benchmarks."""
    grid, avg = _grid(doc), doc["averages"]
    benches = [b["name"] for b in doc["benchmarks"]]
    ranked = {a["model"]: a for a in avg["models"]}
    extra = ("average", "rank") if ranked else ()
    rows = []
    for m in (m["name"] for m in doc["models"]):
        tail = (cells.score(ranked[m]["average"]), ranked[m]["rank"]) if m in ranked else ("",) * len(extra)
        rows.append((m, *(cells.pair(grid.get((m, b)), with_ci) for b in benches), *tail))
    return md_table(("model", *benches, *extra), rows, "l" + "r" * (len(benches) + len(extra)))


def average_note(doc: dict[str, Any]) -> str:
    avg = doc["averages"]
    if not avg["models"]:
        return ""
    return (f"Average: the mean headline over {', '.join(avg['benchmarks'])} (the benchmarks every "
            "model here has a score on); rank 1 is the highest average.")  # fmt: skip


def _summary(doc: dict[str, Any]) -> list[str]:
    s = doc["summary"]
    shown = [k for k in STATUSES if s["statuses"][k] or k in ("done", "failed")]
    rate = f"{s['success_rate']:.1f}%" if s["success_rate"] is not None else "-"
    return ["## Summary", "", md_table(
        ("pairs", *shown, "success rate", "wall time", "job time", "GPU time"),
        [(s["pairs"], *(s["statuses"][k] for k in shown), rate, duration(s["wall_s"]) if s["wall_s"] else "-",
          duration(s["job_s"]), duration(s["gpu_s"]) if s["gpu_s"] else "- (CPU only)")]), "",
        "Wall time runs from the command's start (env builds included) to its end; job time adds "
        "up each job's runner from its start to its last event; GPU time is job time x GPUs.", ""]  # fmt: skip


def _scores(doc: dict[str, Any]) -> list[str]:
    out = ["## Scores (0-100, 95% interval)", ""]
    notice = limit_notice(doc)
    out += [notice, ""] if notice else []
    out += [score_matrix(doc), ""]
    note = average_note(doc)
    out += [note, ""] if note else []
    out += ["Metrics: " + "; ".join(f"{b['name']}: {b['metric'] or ('no headline metric' if b['known'] else '?')}"
                                     for b in doc["benchmarks"]), ""]  # fmt: skip
    out += ["Each score carries its 95% interval from VLMEvalKit's per-sample results (`± half width`, "
            "or `[low, high]` near the ends of the scale); a score without one says why in the "
            "per-model table.", ""]  # fmt: skip
    return out


def reported_rows(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for p in doc["pairs"]:
        ours = cells.with_interval(p["value"], p["interval"]) if p["status"] == "done" else p["status"]
        for r in p["reported"]:
            rows.append((p["model"], p["benchmark"], ours, f"{r['score']:g}", r["source_kind"],
                         cells.signed(r["delta"]), "gap" if r["flagged"] else "", r["source"]))  # fmt: skip
    return rows


def _reported(doc: dict[str, Any]) -> list[str]:
    rows = reported_rows(doc)
    if not rows:
        return []
    return ["## Reported scores", "",
            f"Scores reported for the exact dataset by the model's authors (`self`) or the OpenVLM "
            f"leaderboard (`opencompass`), beside ours. `gap`: the difference exceeds our 95% "
            f"interval plus {doc['reported_tolerance']:g} points. {reported_scores.CAVEAT}", "",
            md_table(("model", "benchmark", "ours", "reported", "by", "ours - reported", "", "source"),
                     rows, "llrrlrll"), ""]  # fmt: skip


def _subscore_text(s: dict[str, Any]) -> str:
    return f"{s['name']}: {s['value']:.1f}" if s["value"] is not None else f"{s['name']}: {s['raw']:g} (raw)"


def _model_rows(doc: dict[str, Any], model: str) -> list[tuple[Any, ...]]:
    subs: dict[str, list[str]] = {}
    for s in doc["subscores"]:
        if s["model"] == model:
            subs.setdefault(s["benchmark"], []).append(_subscore_text(s))
    rows = []
    for p in (p for p in doc["pairs"] if p["model"] == model):
        shown = cells.with_interval(p["value"], p["interval"]) if p["status"] == "done" else p["status"]
        how = (p["interval"] or {}).get("method") or p["interval_note"] or "-"
        rows.append((p["benchmark"], p["status"], shown, cells.samples(p), how,
                     duration(p["duration_s"]) if p["duration_s"] else "-", p["note"] or "",
                     ", ".join(subs.get(p["benchmark"], [])) or "-"))  # fmt: skip
    return rows


def _per_model(doc: dict[str, Any]) -> list[str]:
    out = ["## Per model", "", "Sub-scores are on the headline's 0-100 scale; `(raw)` where there is "
           "none (counts where the headline is a count per sample scored).", ""]  # fmt: skip
    for m in doc["models"]:
        out += [f"### {m['name']} ({m['env']})", ""]
        out += [f"Loaded with {note}." for note in m["notes"]] + ([""] if m["notes"] else [])
        out += [md_table(("benchmark", "status", "score (95% CI)", "samples", "interval", "time", "note",
                          "sub-scores"), _model_rows(doc, m["name"])), ""]  # fmt: skip
    return out


def category_matrices(doc: dict[str, Any]) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """(benchmark, sub-score names, one row per model) for benchmarks with sub-scores."""
    out = []
    for b in (b["name"] for b in doc["benchmarks"]):
        subs = [s for s in doc["subscores"] if s["benchmark"] == b]
        names = sorted({s["name"] for s in subs})
        if len(names) < 2:
            continue
        value = {(s["model"], s["name"]): s for s in subs}
        rows = [(m["name"], *(_sub_cell(value.get((m["name"], n))) for n in names))
                for m in doc["models"] if any((m["name"], n) in value for n in names)]  # fmt: skip
        out.append((b, names, rows))
    return out


def _sub_cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return ""
    return f"{s['value']:.1f}" if s["value"] is not None else f"{s['raw']:g}"


def _categories(doc: dict[str, Any]) -> list[str]:
    mats = category_matrices(doc)
    if not mats:
        return []
    out = ["## Categories", "", "Each benchmark's sub-scores, models x categories (0-100).", ""]
    for b, names, rows in mats:
        out += [f"### {b}", "", md_table(("model", *names), rows, "l" + "r" * len(names)), ""]
    return out


def _failures(doc: dict[str, Any]) -> list[str]:
    failed = [p for p in doc["pairs"] if p["status"] in ("failed", "interrupted")]
    if not failed:
        return []
    return ["## Failures", "", md_table(("model", "benchmark", "status", "error", "log"),
            [(p["model"], p["benchmark"], p["status"], (p["error"] or "-")[:300], p["log"]) for p in failed]), ""]  # fmt: skip


def spectravenv_text(sv: dict[str, Any]) -> str:
    install = sv.get("install") or {}
    how = f", {install['kind']}" if install.get("kind") else ""
    digest = f", sha256 {install['sha256'][:16]}" if install.get("sha256") else ""
    return f"{sv.get('version') or '?'} (git {str(sv.get('git_revision') or '-')[:12]}{how}{digest})"


def generation_text(m: dict[str, Any]) -> str:
    gen = m.get("generation")
    if not gen:
        return "not recorded by the runner"
    return ", ".join(f"{k} {v}" for k, v in sorted(gen.items()))


def prompt_sources(doc: dict[str, Any], model: str) -> str:
    found = sorted({p["prompt_source"] for p in doc["pairs"] if p["model"] == model and p["prompt_source"]})
    return ", ".join(found) or "not recorded by the runner"


def _generation(doc: dict[str, Any]) -> list[str]:
    rows = [(m["name"], m.get("backend") or "not recorded", generation_text(m), prompt_sources(doc, m["name"]))
            for m in doc["models"]]  # fmt: skip
    return ["### Generation", "", md_table(("model", "backend", "generation settings", "prompt"), rows), "",
            "Prompt `model`: the wrapper's own prompt for the dataset; `dataset`: VLMEvalKit's prompt of the dataset.", ""]  # fmt: skip


def _run_provenance(p: dict[str, Any]) -> list[str]:
    out = [f"### Run {p['run']}", "", md_table(("field", "value"), [
        ("command", f"`{p['command'] or ''}`"),
        ("spectravenv", spectravenv_text(p["spectravenv"])),
        ("started / finished", f"{p['started'] or '?'} / {p['finished'] or '-'}"),
        ("status", p["status"] or "?"),
        ("host", p["host"] or "?"),
        ("GPUs", ", ".join(f"{g['name']} (driver {g.get('driver') or '?'})" for g in p["gpus"] if g.get("used")) or "none (CPU)"),
        ("judge", p["judge"]),
        ("sample limit", p["limit"] or "none (full benchmarks)"),
        ("seed", p["seed"]),
    ]), ""]  # fmt: skip
    env_rows = [(env, (e["lock_sha256"] or "")[:16], e["python"], e["versions"].get("torch"),
                 e["versions"].get("transformers"), e["versions"].get("vlmeval"), e["cuda_runtime"] or "-")
                for env, e in p["envs"].items()]  # fmt: skip
    out += [md_table(("env", "lock sha256", "python", "torch", "transformers", "vlmeval", "CUDA runtime"), env_rows), ""]
    if len(p["attempts"]) > 1:
        out += [f"{plural(len(p['attempts']), 'attempt')} (each keeps its own provenance):", ""]
        out += [md_table(("#", "started", "host", "spectravenv", "envs (key)", "command"), [
            (i, a["started"], a["host"] or "?", str(a["spectravenv"]["git_revision"] or "-")[:12],
             ", ".join(f"{n} ({e['key']})" for n, e in a["envs"].items()) or "-", f"`{a['command'] or ''}`")
            for i, a in enumerate(p["attempts"], 1)]), ""]  # fmt: skip
    return out


def render_markdown(doc: dict[str, Any]) -> str:
    runs = ", ".join(doc["runs"])
    out = ["# Evaluation report", "", f"Run{'s' if len(doc['runs']) > 1 else ''}: {runs}", ""]
    out += _summary(doc) + _scores(doc) + _reported(doc) + _per_model(doc) + _categories(doc)
    out += [*_failures(doc), "## Provenance", "", *_generation(doc)]
    for p in doc["provenance"]:
        out += _run_provenance(p)
    return "\n".join(out).rstrip("\n") + "\n"


def paste_table(doc: dict[str, Any]) -> str:
    """results/scores.md: the score matrix alone, ready to paste into a paper or an issue."""
    parts = [score_matrix(doc)]
    notes = [n for n in (limit_notice(doc), average_note(doc)) if n]
    parts += ["", *notes] if notes else []
    parts += ["", "Scores on 0-100 with 95% intervals (spectravenv, from VLMEvalKit's per-sample results)."]
    return "\n".join(parts) + "\n"
