"""The Markdown, paste-ready and LaTeX outputs of the results document (no env): the sample limit
said per cell when runs of different limits merge, intervals and `n of N` in every table, the
average and rank over shared benchmarks, reported scores beside ours, and a LaTeX table that
compiles where a TeX is installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from spectravenv.catalog.entries import Benchmark, Catalog, Model
from spectravenv.report import cells, latex, write
from spectravenv.report.markdown import paste_table, render_markdown
from spectravenv.results import document
from spectravenv.results import reported as reported_scores
from spectravenv.results.rows import Row
from spectravenv.results.uncertainty import interval

from .conftest import unavailable

CATALOG = Catalog(
    envs={},
    models={"qwen": Model("qwen", env="tf437", vlmeval_name="Qwen2-VL-7B-Instruct")},
    benchmarks={
        "MMB": Benchmark("MMB", metric="Overall accuracy", headline="Overall", scale=100),
        "AI2D_TEST": Benchmark("AI2D_TEST", metric="Overall accuracy", headline="Overall", scale=100),
    },
    addons={},
)


def manifest(name: str, limit: int | None) -> dict:
    return {"command": f"spectravenv eval ... --run-name {name}", "status": "finished", "limit": limit,
            "judge": "exact_matching", "seed": 0, "models": [], "benchmarks": []}  # fmt: skip


def row(model: str, bench: str, value: float | None, run: str, limit: int | None, n: int = 24,
        status: str = "done", hits: int | None = None) -> Row:  # fmt: skip
    iv = None
    if value is not None and hits is not None:
        iv = interval([1.0] * hits + [0.0] * (n - hits))
    return Row(model=model, env="tf437", benchmark=bench, status=status, metric="acc", value=value,
               samples=n if status == "done" else None, limit=limit, seconds=1.0, error="", run=run,
               log="logs/x.log", rows_full=24, interval=iv)  # fmt: skip


def test_a_merge_of_a_limited_and_a_full_run_states_each_cells_limit():
    """Issue 17: `report RUN_limit4 RUN_full` said "Sample limit: 4" for scores of all 24 rows."""
    manifests = [("limit4", manifest("limit4", 4)), ("full", manifest("full", None))]
    every_full = [row("a", "MMB", 75.0, "full", None, hits=18), row("b", "MMB", 50.0, "full", None, hits=12)]
    doc = document.build(every_full, manifests, CATALOG)
    text = render_markdown(doc)
    assert doc["limits"] == [] and "Sample limit" not in text and " of 24" not in text

    mixed = [row("a", "MMB", 75.0, "full", None, hits=18), row("b", "MMB", 50.0, "limit4", 4, n=4, hits=2)]
    doc = document.build(mixed, manifests, CATALOG)
    text = render_markdown(doc)
    assert doc["limits"] == [4]
    assert "different limits: 1 of 2 scores come from a subset" in text
    line_a = next(ln for ln in text.splitlines() if ln.startswith("| a |"))
    line_b = next(ln for ln in text.splitlines() if ln.startswith("| b |"))
    assert "of 24" not in line_a and "(4 of 24)" in line_b
    assert {p["model"]: p["limit"] for p in doc["pairs"]} == {"a": None, "b": 4}


def test_every_score_has_its_interval_and_sample_count():
    rows = [row("a", "MMB", 75.0, "r", 8, n=8, hits=6), row("a", "AI2D_TEST", 50.0, "r", 8, n=8)]
    doc = document.build(rows, [("r", manifest("r", 8))], CATALOG)
    p = {p["benchmark"]: p for p in doc["pairs"]}
    iv = p["MMB"]["interval"]
    assert iv["method"] == "wilson" and iv["low"] < 75 < iv["high"] and iv["n"] == 8
    assert cells.pair(p["MMB"]) == f"75.0 {cells.interval(75.0, iv)} (8 of 24)"
    assert cells.pair(p["AI2D_TEST"]) == "50.0 (8 of 24)"  # no per-sample results: no interval
    md = render_markdown(doc)
    assert "75.0 ± " in md or "75.0 [" in md
    assert "| 8 of 24 |" in md
    console = write.console_summary(doc)
    mmb = next(ln for ln in console.splitlines() if " MMB " in ln)
    assert mmb.count("8 of 24") == 1 and f"75.0 {cells.interval(75.0, iv)}" in mmb  # its own column, once


def test_average_and_rank_cover_only_the_shared_benchmarks():
    rows = [row("a", "MMB", 80.0, "r", None), row("a", "AI2D_TEST", 60.0, "r", None),
            row("b", "MMB", 70.0, "r", None), row("b", "AI2D_TEST", None, "r", None, status="failed"),
            row("c", "MMB", 80.0, "r", None), row("c", "AI2D_TEST", 40.0, "r", None)]  # fmt: skip
    avg = document.build(rows, [("r", manifest("r", None))], CATALOG)["averages"]
    assert avg["benchmarks"] == ["MMB"]  # b has no AI2D score: the average covers MMB only
    assert [(a["model"], a["average"], a["rank"]) for a in avg["models"]] == [("a", 80.0, 1), ("c", 80.0, 1), ("b", 70.0, 3)]
    md = render_markdown(document.build(rows, [("r", manifest("r", None))], CATALOG))
    assert "mean headline over MMB" in md and "| rank |" in md


def test_reported_scores_appear_beside_ours_for_the_exact_dataset():
    known = reported_scores.table()[("Qwen2-VL-7B-Instruct", "AI2D_TEST")]
    assert known and all(r.source for r in known)
    rows = [row("qwen", "AI2D_TEST", 60.0, "r", None, n=400, hits=240), row("qwen", "MMB", 70.0, "r", None)]
    doc = document.build(rows, [("r", manifest("r", None))], CATALOG)
    p = {p["benchmark"]: p for p in doc["pairs"]}
    assert p["MMB"]["reported"] == []  # no row for it: nothing invented
    rep = p["AI2D_TEST"]["reported"]
    assert {r["score"] for r in rep} == {r.score for r in known}
    for r in rep:
        assert r["delta"] == pytest.approx(60.0 - r["score"]) and r["source"]
        assert r["flagged"] == (abs(r["delta"]) > p["AI2D_TEST"]["interval"]["high"] / 2 - p["AI2D_TEST"]["interval"]["low"] / 2 + reported_scores.TOLERANCE)
    assert any(r["flagged"] for r in rep)  # 60 against 80+ reported
    md = render_markdown(doc)
    assert "## Reported scores" in md and "gap" in md and "other prompts" in md


def test_latex_table_structure_and_paste_table():
    rows = [row("m_1", "MMB", 80.0, "r", 8, n=8, hits=8), row("m&2", "MMB", 62.5, "r", 8, n=8, hits=5),
            row("m_1", "AI2D_TEST", 50.0, "r", 8, n=8, hits=4), row("m&2", "AI2D_TEST", None, "r", 8, status="failed")]  # fmt: skip
    doc = document.build(rows, [("r", manifest("r", 8))], CATALOG)
    tex = latex.render(doc)
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    body = tex[tex.index(r"\midrule") : tex.index(r"\bottomrule")].splitlines()[1:]
    # model, two benchmarks, the average over MMB (the benchmark both share)
    assert len(body) == 2 and all(len(re.findall(r"(?<!\\)&", line)) == 3 and line.endswith(r"\\") for line in body)
    assert r"m\_1" in tex and r"m\&2" in tex  # escaped
    first = next(line for line in body if line.startswith(r"m\_1"))
    assert (r"\textbf{80.0}$^\dagger$" in first and r"$\pm$" in tex) or "[" in first  # best in bold
    assert r"\textit{failed}" in tex
    assert r"$\pm$" not in latex.render(doc, intervals=False) and "[" not in latex.render(doc, intervals=False).split(r"\midrule")[1].split(r"\bottomrule")[0]
    paste = paste_table(doc)
    assert paste.startswith("| model | AI2D_TEST | MMB |") and "(8 of 8)" not in paste


def test_latex_table_compiles():
    if shutil.which("pdflatex") is None:
        unavailable("no pdflatex here: apt-get install texlive-latex-recommended (booktabs)")
    rows = [row("m_1", "MMB", 80.0, "r", 8, n=8, hits=8), row("m&2", "MMB", 62.5, "r", 8, n=8, hits=5)]
    doc = document.build(rows, [("r", manifest("r", 8))], CATALOG)
    return_code = _compile(latex.standalone(latex.render(doc)))
    assert return_code == 0


def _compile(source: str) -> int:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.tex").write_text(source)
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                              cwd=tmp, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert (Path(tmp) / "t.pdf").exists() or proc.returncode != 0, proc.stdout[-2000:]
        assert not re.search(r"^! ", proc.stdout, re.M), proc.stdout[-2000:]
        return proc.returncode
