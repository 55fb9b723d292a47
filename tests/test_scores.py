"""Score-file shapes read explicitly (spectravenv.scores); the real files VLMEvalKit writes are
checked in test_score_files.py."""

from __future__ import annotations

import json

import openpyxl

from spectravenv.catalog.entries import Benchmark
from spectravenv.results import scores
from spectravenv.results.rows import headline

MCQ = Benchmark("B", kind="MCQ", metric="acc", headline="Overall", scale=100)


def test_labels_that_look_like_numbers_stay_labels(tmp_path):
    f = tmp_path / "m_B_acc.csv"
    f.write_text("split,Overall,2019,2020\n2019,0.5,0.4,0.6\n2020,0.7,0.8,0.6\n")
    got = scores.read([f]).scores
    assert got == {"2019/Overall": 0.5, "2019/2019": 0.4, "2019/2020": 0.6,
                   "2020/Overall": 0.7, "2020/2019": 0.8, "2020/2020": 0.6}  # fmt: skip
    assert "2019" not in got  # a row label is never a score


def test_several_unlabelled_rows_are_an_error_not_a_guess(tmp_path):
    f = tmp_path / "m_B_acc.csv"
    f.write_text("Overall,cat\n0.5,0.4\n0.7,0.8\n")
    table = scores.read([f])
    assert table.scores == {} and "no label column" in table.problems[0] and "m_B_acc.csv" in table.problems[0]


def test_a_table_of_predictions_holds_no_scores(tmp_path):
    # Video-MME: _score.xlsx is one row per question; the scores are in _rating.json
    rows, rating = tmp_path / "m_B_score.csv", tmp_path / "m_B_rating.json"
    rows.write_text("index,video,answer,prediction,score\n0,v0,A,A,1\n1,v1,B,A,0\n")
    rating.write_text(json.dumps({"short": {"overall": "0.500"}, "overall": {"overall": "0.500"}}))
    table = scores.read([rows, rating])
    assert table.problems == [] and table.scores == {"short/overall": 0.5, "overall/overall": 0.5}
    video = Benchmark("V", kind="MCQ", metric="acc", headline="overall/overall", scale=100)
    assert headline(video, table.scores, 2, table.ambiguous)[1] == 50.0


def test_two_score_files_that_disagree_make_the_headline_ambiguous(tmp_path):
    a, b = tmp_path / "m_B_acc.csv", tmp_path / "m_B_score.csv"
    a.write_text("Overall\n0.5\n")
    b.write_text("Overall,extra\n0.9,1\n")
    for order in ([a, b], [b, a]):  # the same answer whatever the order
        table = scores.read(order)
        assert table.ambiguous == {"Overall"}
        assert table.scores == {"acc:Overall": 0.5, "score:Overall": 0.9, "extra": 1.0}
        _m, value, note = headline(MCQ, table.scores, 10, table.ambiguous)
        assert value is None and "differs between score files" in note
    b.write_text("Overall\n0.5\n")  # agreeing files are fine
    assert scores.read([a, b]).scores == {"Overall": 0.5}


def test_xlsx_tsv_and_json_shapes(tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["split", "Overall", "ocr"])
    book.active.append(["dev", 0.25, 0.5])
    book.save(tmp_path / "m_B_acc.xlsx")
    (tmp_path / "m_C_acc.tsv").write_text("Category\tacc\nocr\t50\nscene\t70\n")
    (tmp_path / "m_D_score.json").write_text(
        json.dumps({"Final Score": 3, "flag": True, "nested": {"a": 1.5, "b": "n/a"}})
    )
    assert scores.read([tmp_path / "m_B_acc.xlsx"]).scores == {"Overall": 0.25, "ocr": 0.5}
    assert scores.read([tmp_path / "m_C_acc.tsv"]).scores == {"ocr/acc": 50.0, "scene/acc": 70.0}
    # JSON booleans are flags, not scores.
    assert scores.read([tmp_path / "m_D_score.json"]).scores == {"Final Score": 3.0, "nested/a": 1.5}
    (tmp_path / "m_E_score.json").write_text("[1, 2]")
    assert "not an object of scores" in scores.read([tmp_path / "m_E_score.json"]).problems[0]


def test_sub_score_tags_of_similar_stems_never_collide(tmp_path):
    """`_metrics` and `_detailed_metrics` (and `_acc` / `_acc_all`) are different files: when
    they disagree on a name, both values are kept, each under its own file's stem."""
    a, b = tmp_path / "m_B_metrics.json", tmp_path / "m_B_detailed_metrics.json"
    a.write_text(json.dumps({"Overall": 0.5}))
    b.write_text(json.dumps({"Overall": 0.9}))
    table = scores.read([a, b])
    assert table.ambiguous == {"Overall"}
    assert table.scores == {"metrics:Overall": 0.5, "detailed_metrics:Overall": 0.9}
    c, d = tmp_path / "m_B_acc.csv", tmp_path / "m_B_acc_all.csv"
    c.write_text("Overall\n0.25\n")
    d.write_text("Overall\n0.75\n")
    assert scores.read([c, d]).scores == {"acc:Overall": 0.25, "acc_all:Overall": 0.75}
    # A stem the runner does not know as a score stem is still told apart by its whole stem.
    assert scores.file_tag(tmp_path / "odd.csv") == "odd"
