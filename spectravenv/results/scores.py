"""VLMEvalKit's score files -> named sub-scores: the one reader of that format, shape by shape.

The shapes VLMEvalKit writes (checked against files its own evaluate() wrote, tests/test_score_files):
- a table whose first column labels rows (header `split`, `Category`, ..., or non-numeric
  labels): each row's metrics as `label/metric`, or bare `metric` when there is one row;
- a table of one row of numbers and no label column: bare metric names;
- a JSON object, possibly nested: `a/b/metric` paths to numbers.
A table with a `prediction` column is one row per question (Video-MME's `_score.xlsx`: the
questions with their 0/1 score; its rating is in `_rating.json`): no aggregate scores, skipped.
Tables come as .csv, .tsv or .xlsx. Anything else (several unlabelled rows, a JSON list, a file
that does not parse) is an error that names the file: a score is never guessed from it. JSON
booleans are flags, not scores. When two score files of a pair give one name different values,
both are kept under `<file tag>:<name>` and the name is ambiguous, never silently overwritten.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svrunner.kit import SCORE_STEM

LABEL_HEADERS = {"", "split", "Split", "category", "Category", "task", "Task", "type", "Type", "subset"}


class ScoreFileError(Exception):
    pass


@dataclass
class ScoreTable:
    scores: dict[str, float] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)  # names two files disagree on
    problems: list[str] = field(default_factory=list)  # files that could not be read


def number(cell: Any) -> float | None:
    if isinstance(cell, bool) or cell is None:
        return None
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def from_rows(rows: list[list[Any]], name: str) -> dict[str, float]:
    rows = [r for r in rows if any(c not in (None, "") for c in r)]
    if len(rows) < 2:
        return {}
    header = ["" if h is None else str(h) for h in rows[0]]
    if "prediction" in header:
        return {}  # per-question rows, not scores (see the module's docstring)
    body = rows[1:]
    labelled = header[0] in LABEL_HEADERS or any(
        number(r[0]) is None and r[0] not in (None, "") for r in body
    )
    if not labelled and len(body) > 1:
        raise ScoreFileError(
            f"{name}: {len(body)} rows and no label column (first header {header[0]!r}); "
            "not a score table spectravenv knows how to read"
        )
    out: dict[str, float] = {}
    for r in body:
        prefix = f"{r[0]}/" if labelled and len(body) > 1 else ""
        for i, (metric, cell) in enumerate(zip(header, r)):
            if labelled and i == 0:
                continue
            value = number(cell)
            if value is not None:
                out[f"{prefix}{metric}"] = value
    return out


def from_json(data: Any, name: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise ScoreFileError(f"{name}: a JSON {type(data).__name__}, not an object of scores")
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}/", v)
            elif isinstance(v, list):
                raise ScoreFileError(f"{name}: {prefix}{k} is a list, not a score")
            else:
                value = number(v)
                if value is not None:
                    out[f"{prefix}{k}"] = value

    walk("", data)
    return out


def read_file(path: Path) -> dict[str, float]:
    name = path.name
    try:
        if path.suffix in (".csv", ".tsv"):
            with path.open(newline="") as f:
                rows = list(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
            return from_rows(rows, name)
        if path.suffix == ".json":
            return from_json(json.loads(path.read_text()), name)
        if path.suffix == ".xlsx":
            import openpyxl

            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
            return from_rows([list(r) for r in book.worksheets[0].iter_rows(values_only=True)], name)
    except (OSError, ValueError, KeyError) as e:
        raise ScoreFileError(f"{name}: cannot be read ({e})") from None
    raise ScoreFileError(f"{name}: score files of type {path.suffix} are not known")


def file_tag(path: Path) -> str:
    """What tells two score files of a pair apart: the score stem the runner chose the file by
    (`acc` for `model_Bench_acc.csv`, `detailed_metrics` for `..._detailed_metrics.json`; the
    runner's `SCORE_STEM` is the one list of them), else the whole stem. The last `_` word alone
    would give `_metrics` and `_detailed_metrics` one tag, and one of their values would be lost.
    """
    found = SCORE_STEM.search(path.stem)
    return found.group(1) if found else path.stem


def read(paths: list[Path]) -> ScoreTable:
    table = ScoreTable()
    seen: dict[str, tuple[float, str]] = {}
    for path in sorted(paths, key=lambda p: p.name):
        if not path.exists():
            table.problems.append(f"{path.name}: missing")
            continue
        try:
            values = read_file(path)
        except ScoreFileError as e:
            table.problems.append(str(e))
            continue
        tag = file_tag(path)
        for key, value in values.items():
            if key in table.ambiguous:
                table.scores[f"{tag}:{key}"] = value
            elif key in seen and seen[key][0] != value:
                old_value, old_tag = seen.pop(key)
                del table.scores[key]
                table.ambiguous.add(key)
                table.scores[f"{old_tag}:{key}"] = old_value
                table.scores[f"{tag}:{key}"] = value
            else:
                seen[key] = (value, tag)
                table.scores[key] = value
    return table
