"""Result rows: headline lookup and merging several runs (pure functions)."""

from __future__ import annotations

from spectravenv.catalog.entries import Benchmark
from spectravenv.results.rows import Row, headline, merge


def row(model: str, bench: str, status: str, run: str, value: float | None = None) -> Row:
    return Row(model, "tf437", bench, status, "acc", value, 10, None, 1.0, "", run, "log")


def test_headline_is_read_never_guessed():
    b = Benchmark("X", kind="MCQ", metric="Overall accuracy", headline="Overall", scale=100)
    assert headline(b, {"Overall": 0.8125, "cat": 0.5}) == ("Overall accuracy", 81.25, "")
    assert headline(b, {"dev/Overall": 0.5})[1] == 50.0  # one split row: split/metric
    _name, value, note = headline(b, {"dev/Overall": 0.5, "test/Overall": 0.7})
    assert value is None and "ambiguous" in note
    _name, value, note = headline(b, {"acc": 0.5})
    assert value is None and note.startswith("no headline metric")
    assert headline(Benchmark("Y", headline=None), {"a": 1.0})[2] == "no headline metric"


def test_merge_newest_result_wins_but_never_erases_a_done_one():
    old = [
        row("m", "A", "done", "r1", 50.0),
        row("m", "B", "done", "r1", 10.0),
        row("m", "C", "failed", "r1"),
    ]
    new = [
        row("m", "A", "done", "r2", 60.0),
        row("m", "B", "failed", "r2"),
        row("m", "C", "done", "r2", 5.0),
    ]
    merged = {r.benchmark: (r.run, r.value) for r in merge([old, new], [1.0, 2.0])}
    assert merged == {"A": ("r2", 60.0), "B": ("r1", 10.0), "C": ("r2", 5.0)}


def test_a_count_headline_is_scaled_by_the_samples_scored():
    b = Benchmark("OCRBench", kind="OCR", headline="Final Score", per_sample=True)
    assert headline(b, {"Final Score": 6.0}, samples=8)[1] == 75.0  # a --limit 8 run
    assert headline(b, {"Final Score": 823.0}, samples=1000)[1] == 82.3
    assert headline(b, {"Final Score": 6.0})[1] is None
