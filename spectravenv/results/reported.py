"""Scores the models' authors and the OpenVLM leaderboard reported, beside ours: the one reader of
`results/data/reported_scores.tsv` (how rows are added: docs/reported-scores.md).

A reported score is shown only for the exact VLMEvalKit dataset it was reported on, with its
source. Our difference to it is flagged when it exceeds our 95% interval's half width plus
TOLERANCE points: self-reported numbers often came from other prompts, settings or judges, so a
gap is a question to ask, not a verdict.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from spectravenv.results.uncertainty import Interval

FILE = Path(__file__).resolve().parent / "data" / "reported_scores.tsv"
TOLERANCE = 2.0  # points on 0-100, on top of our interval: prompts and settings differ
CAVEAT = ("Reported scores often used other prompts, settings or judges than VLMEvalKit's "
          "defaults: a gap is a question to ask, not a verdict.")  # fmt: skip


@dataclass(frozen=True)
class Reported:
    model: str  # VLMEvalKit's model name
    benchmark: str
    score: float  # on the headline's 0-100 scale
    as_printed: str
    source_kind: str  # "self" (the authors) or "opencompass" (the OpenVLM leaderboard)
    source: str
    split_note: str


@dataclass(frozen=True)
class Beside:
    """One reported score next to ours."""

    reported: Reported
    delta: float | None  # ours - reported; None without our score
    flagged: bool  # the gap is larger than our interval plus TOLERANCE


def _rows(path: Path) -> list[Reported]:
    with path.open(newline="", encoding="utf-8") as f:
        lines = (line for line in f if not line.startswith("#"))
        return [
            Reported(r["model"], r["benchmark"], float(r["score"]), r["as_printed"],
                     r["source_kind"], r["source"], r["split_note"])
            for r in csv.DictReader(lines, delimiter="\t")
        ]  # fmt: skip


@cache
def table(path: Path = FILE) -> dict[tuple[str, str], tuple[Reported, ...]]:
    """(model, benchmark) -> its reported scores, leaderboard first, then by source."""
    out: dict[tuple[str, str], list[Reported]] = {}
    for r in _rows(path):
        out.setdefault((r.model, r.benchmark), []).append(r)
    return {k: tuple(sorted(v, key=lambda r: (r.source_kind != "opencompass", r.source))) for k, v in out.items()}


def beside(names: tuple[str, ...], benchmark: str, value: float | None,
           interval: Interval | None) -> list[Beside]:  # fmt: skip
    """The reported scores of a model (under any of its names) on this exact benchmark."""
    found: list[Reported] = []
    for name in dict.fromkeys(n for n in names if n):
        found += table().get((name, benchmark), ())
    out = []
    for r in found:
        delta = None if value is None else round(value - r.score, 6)
        allowed = (interval.half_width if interval else 0.0) + TOLERANCE
        out.append(Beside(r, delta, delta is not None and abs(delta) > allowed))
    return out
