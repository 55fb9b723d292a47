"""VLMEvalKit's per-sample results -> one score per sample: the one reader of those files.

What the evaluation of each kind of dataset leaves beside the score file (ms-vlmeval 0.0.20; the
files listed by the runner's `benchmark_done` as `eval_files`; checked with the real evaluate()
in tests/test_score_files.py):

- MCQ (ImageMCQDataset, custom MCQ TSVs such as the demo's): `{m}_{d}_{judge}_result.xlsx`, one
  row per question with `hit` (1 right, 0 wrong). Circular datasets (MMBench) have one row per
  question group (`g_index`): hit only when every rotation was right, so rows are independent.
- VQA (ImageVQADataset: TextVQA, ChartQA, DocVQA, ...): `{m}_{d}_results.xlsx` with `eval_score`
  per row (the mean of its matches). That is the headline's per-sample score for TextVQA and
  ChartQA; for ANLS (DocVQA, InfoVQA) the headline thresholds it, and the check below says so.
- Y/N (ImageYORNDataset: POPE, HallusionBench, MME, ...): `{m}_{d}_auxmatch.xlsx` with the
  `extracted` yes/no per row; right = extracted == answer. HallusionBench's aAcc is their mean;
  POPE's F1 and MME's sum are not means over samples.
- OCRBench: only `_score.json`: no per-sample results.

A per-sample table is used for an interval only when its mean reproduces the headline (over the
split the headline names, e.g. `validation/Overall`); otherwise the pair says why it has none,
and no interval is invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectravenv.results import uncertainty

# Columns that give a per-sample score, most specific first, and how to read them.
SCORE_COLUMNS = ("hit", "eval_score", "extracted")
TABLE_SUFFIXES = (".xlsx", ".csv", ".tsv")
# Files VLMEvalKit writes only for its own debugging (PRINT_VANILLA=1): not the scored rows.
IGNORED = ("_vanilla_",)
# The headline must equal the per-sample mean within this (0-100 scale; score files round).
TOLERANCE = 0.01
VIEW_TEXT = 400  # characters of a question or prediction kept for the sample viewer


@dataclass(frozen=True)
class Sample:
    index: str
    score: float  # 0-1
    group: str  # samples of one group are not independent (one MMBench question's rotations)
    split: str = ""
    category: str = ""
    question: str = ""
    prediction: str = ""
    answer: str = ""


@dataclass
class SampleSet:
    source: str  # the file, as the run names it
    column: str  # which column gave the score
    samples: list[Sample] = field(default_factory=list)

    def scores(self) -> list[float]:
        return [s.score for s in self.samples]

    def groups(self) -> list[str] | None:
        groups = [s.group for s in self.samples]
        return None if len(set(groups)) == len(groups) else groups


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _score(row: dict[str, Any], column: str) -> float | None:
    if column == "extracted":
        answer, got = _text(row.get("answer")), _text(row.get("extracted"))
        return float(answer == got) if answer else None
    try:
        value = float(row[column])
    except (TypeError, ValueError, KeyError):
        return None
    return value if value == value else None


def _sample(row: dict[str, Any], column: str) -> Sample | None:
    score = _score(row, column)
    if score is None:
        return None
    index = _text(row.get("index"))
    group = _text(row.get("g_index")) or index
    return Sample(index=index, score=score, group=group, split=_text(row.get("split")),
                  category=_text(row.get("category")), question=_text(row.get("question"))[:VIEW_TEXT],
                  prediction=_text(row.get("prediction"))[:VIEW_TEXT], answer=_text(row.get("answer")))  # fmt: skip


def _records(path: Path) -> list[dict[str, Any]]:
    import pandas as pd  # only when a report reads per-sample files (CLI start-up stays fast)

    if path.suffix == ".xlsx":
        df = pd.read_excel(path)
    else:
        df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    return df.to_dict(orient="records")


def _candidates(files: list[Path]) -> list[Path]:
    return sorted(
        (f for f in files if f.suffix in TABLE_SUFFIXES and not any(x in f.name for x in IGNORED)),
        key=lambda f: f.name,
    )


def read(files: list[Path], relative: dict[Path, str] | None = None) -> SampleSet | None:
    """The per-sample scores among a pair's evaluation files (None: there are none)."""
    found: dict[str, tuple[Path, list[dict[str, Any]]]] = {}
    for f in _candidates(files):
        try:
            records = _records(f)
        except (OSError, ValueError, KeyError):
            continue
        cols = set(records[0]) if records else set()
        for column in SCORE_COLUMNS:
            if column in cols and column not in found and (column != "extracted" or "answer" in cols):
                found[column] = (f, records)
    for column in SCORE_COLUMNS:
        if column in found:
            f, records = found[column]
            samples = [s for s in (_sample(r, column) for r in records) if s is not None]
            return SampleSet((relative or {}).get(f, f.name), column, samples)
    return None


def headline_samples(sset: SampleSet, headline_key: str | None) -> list[Sample]:
    """The samples the headline averages: one split's when the key names one (`validation/Overall`)."""
    prefix = (headline_key or "").split("/")[0] if "/" in (headline_key or "") else ""
    splits = {s.split for s in sset.samples}
    if prefix and prefix in splits:
        return [s for s in sset.samples if s.split == prefix]
    return list(sset.samples)


@dataclass(frozen=True)
class Assessed:
    interval: uncertainty.Interval | None
    note: str  # why there is no interval ("" when there is one)
    source: str = ""  # the per-sample file used


def assess(sset: SampleSet | None, headline_key: str | None, value: float | None) -> Assessed:
    """The headline's interval from per-sample scores, when they reproduce it."""
    if value is None:
        return Assessed(None, "")
    if sset is None:
        return Assessed(None, "no per-sample results in VLMEvalKit's files for this dataset")
    mine = headline_samples(sset, headline_key)
    if not mine:
        return Assessed(None, f"{sset.source} holds no scored sample", sset.source)
    mean = 100 * sum(s.score for s in mine) / len(mine)
    if abs(mean - value) > TOLERANCE:
        return Assessed(None, f"the per-sample {sset.column} of {Path(sset.source).name} averages "
                              f"{mean:.2f}, not the headline: the metric is not a mean over samples",
                        sset.source)  # fmt: skip
    groups = [s.group for s in mine]
    clustered = groups if len(set(groups)) < len(groups) else None
    return Assessed(uncertainty.interval([s.score for s in mine], clustered), "", sset.source)
