"""`spectravenv report --latex`: the score matrix as a booktabs table to \\input into a paper.

Rendered from the results document like every other output. The best score of each column is in
bold (ties all bold); 95% intervals follow each score unless left out; a score from a --limit
subset is marked with a dagger and the note under the table says n of N. Needs
`\\usepackage{booktabs}` in the paper's preamble; `standalone()` wraps the table into a whole
document (what the tests compile).
"""

from __future__ import annotations

from typing import Any

from spectravenv.report import cells

FILE = "scores.tex"
SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def tex(text: Any) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join(SPECIAL.get(c, c) for c in str(text))


def _best(doc: dict[str, Any]) -> dict[str, float]:
    best: dict[str, float] = {}
    for p in doc["pairs"]:
        if p["status"] == "done" and p["value"] is not None:
            best[p["benchmark"]] = max(best.get(p["benchmark"], p["value"]), p["value"])
    return best


def _interval(p: dict[str, Any]) -> str:
    ci = cells.interval(p["value"], p["interval"])
    if not ci:
        return ""
    ci = ci.replace("± ", r"$\pm$")
    return r" {\scriptsize " + ci + "}"


def cell(p: dict[str, Any] | None, best: float | None, intervals: bool) -> str:
    if p is None:
        return "--"
    if p["status"] != "done" or p["value"] is None:
        return r"\textit{" + tex(p["status"] if p["status"] != "done" else "n/a") + "}"
    value = cells.score(p["value"])
    if best is not None and abs(p["value"] - best) < 1e-9:
        value = r"\textbf{" + value + "}"
    mark = r"$^\dagger$" if cells.limited(p) else ""
    return value + mark + (_interval(p) if intervals else "")


def _notes(doc: dict[str, Any]) -> list[str]:
    notes = [r"Scores on 0--100; best per column in bold."]
    limited = [p for p in doc["pairs"] if cells.limited(p) and p["value"] is not None]
    if limited:
        counts = sorted({cells.samples(p) for p in limited})
        notes.append(r"$^\dagger$ scored on a sample-limit subset: " + tex(", ".join(counts)) + " samples.")
    if doc["averages"]["models"]:
        notes.append("Avg.: mean over " + tex(", ".join(doc["averages"]["benchmarks"])) + ".")
    return notes


def render(doc: dict[str, Any], intervals: bool = True) -> str:
    benches = [b["name"] for b in doc["benchmarks"]]
    grid = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    best = _best(doc)
    avg = {a["model"]: a for a in doc["averages"]["models"]}
    top = max((a["average"] for a in avg.values()), default=None)
    head = ["Model", *(tex(b) for b in benches)] + (["Avg."] if avg else [])
    lines = ["% spectravenv score table; needs \\usepackage{booktabs}",
             r"\begin{table}[t]", r"\centering",
             r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(head) + r" \\", r"\midrule"]  # fmt: skip
    for m in (m["name"] for m in doc["models"]):
        row = [tex(m), *(cell(grid.get((m, b)), best.get(b), intervals) for b in benches)]
        if avg:
            a = avg.get(m)
            row.append("" if a is None else (r"\textbf{%s}" if a["average"] == top else "%s") % cells.score(a["average"]))
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + " ".join(_notes(doc)) + "}", r"\end{table}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def standalone(table: str) -> str:
    """A whole document around the table (to compile it alone)."""
    return ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
            + table + "\\end{document}\n")  # fmt: skip
