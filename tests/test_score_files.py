"""Score files of every shape, made by VLMEvalKit's own evaluate() in the real tf437 env, read back
by spectravenv.results with the shipped catalog's headline key and scale.

Each benchmark gets a tiny synthetic dataset (a few rows, in the columns the official TSV has)
and a prediction file with known right and wrong answers, so the score is computable by hand.
tests/data/make_score_files.py builds the official dataset class on it (only its download is
replaced) and runs its evaluate() exactly as the runner does; nothing here writes a score file.

Heavy: needs the tf437 env (built once per session, as test_real_envs does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from svrunner import kit

from spectravenv import procs
from spectravenv.catalog import loader
from spectravenv.envs import venv as envs
from spectravenv.paths import Paths
from spectravenv.results import scores as score_files
from spectravenv.results.rows import headline

from .conftest import DATA, REPO, heavy_env, spectravenv_exe

pytestmark = pytest.mark.heavy

ENV = "tf437"
HELPER = DATA / "make_score_files.py"
RUNNERS = REPO / "runners"


# ---- the synthetic datasets ---------------------------------------------------------------------


def mmbench() -> dict:
    """MMBench_DEV_EN: circular evaluation. Each question is asked once per rotation of its
    options (index i, then i + 1e6 with the options rolled); it counts only if every rotation is
    right. Four 2-option questions, the last one wrong in its second rotation: 3/4."""
    questions = [  # (question, right option, wrong option, category, l2-category)
        ("What is the weather?", "sunny", "snowy", "image_scene", "coarse_perception"),
        ("Where is this?", "a beach", "a forest", "image_scene", "coarse_perception"),
        ("What does the sign say?", "STOP", "GO", "ocr", "finegrained_perception (instance-level)"),
        ("What is the word?", "EXIT", "ENTER", "ocr", "finegrained_perception (instance-level)"),
    ]
    rows, preds = [], {}
    for i, (q, right, wrong, cat, l2) in enumerate(questions, start=1):
        for rot, (a, b, answer) in enumerate([(right, wrong, "A"), (wrong, right, "B")]):
            idx = i + rot * 1_000_000
            rows.append(
                dict(
                    index=idx,
                    question=q,
                    hint=None,
                    A=a,
                    B=b,
                    C=None,
                    D=None,
                    answer=answer,
                    category=cat,
                    **{"l2-category": l2},
                    split="dev",
                )
            )
            preds[idx] = answer
    preds[4 + 1_000_000] = "A"  # question 4, second rotation: wrong
    preds[1] = "The answer is A."  # matched by VLMEvalKit's option extraction, still right
    return dict(rows=rows, predictions=preds)


def visonlyqa() -> dict:
    """VisOnlyQA-VLMEvalKit: plain MCQ scored by ImageMCQDataset's evaluate (report_acc), whose
    _acc.csv holds fractions like every MCQ set's: 3 of 4 right is 0.75, a headline of 75."""
    rows = [
        dict(index=i, question=f"Which line is longer, {i}?", A="the red one", B="the blue one",
             answer=answer, category=cat)
        for i, (answer, cat) in enumerate([("A", "geometry"), ("B", "geometry"), ("A", "chart"), ("B", "chart")],
                                          start=1)
    ]  # fmt: skip
    return dict(rows=rows, predictions={1: "A", 2: "B", 3: "A", 4: "A"})


def mmmu() -> dict:
    """MMMU_DEV_VAL: plain MCQ, a `split` column (dev / validation), subjects as `category` and
    disciplines as `l2-category`; an open question (no options) is turned into a 2-option one by
    VLMEvalKit (MMMU_preproc). dev 1/2 right, validation 3/4 right."""

    def row(i, split, answer, cat, l2, a="x", b="y"):
        return dict(
            index=i,
            question=f"Question {i}?",
            A=a,
            B=b,
            C=None,
            D=None,
            answer=answer,
            split=split,
            category=cat,
            **{"l2-category": l2},
        )

    rows = [
        row(1, "dev", "A", "Math", "Science"),
        row(2, "dev", "B", "Art", "Art & Design"),
        row(3, "validation", "A", "Math", "Science"),
        row(4, "validation", "B", "Math", "Science"),
        row(5, "validation", "B", "Art", "Art & Design"),
        row(6, "validation", "42", "Art", "Art & Design", a=None, b=None),  # open question
    ]
    preds = {1: "A", 2: "A", 3: "A", 4: "B", 5: "A", 6: "42"}
    return dict(rows=rows, predictions=preds)


def textvqa() -> dict:
    """TextVQA_VAL: VQA accuracy over 10 human answers, min(1, #other humans agreeing / 3),
    averaged over the 10 leave-one-out subsets. Four rows at 1 or 0, one where 3 of 10 humans
    gave the prediction: (3 * 2/3 + 7 * 1) / 10 = 0.9. (1 + 1 + 1 + 0 + 0.9) / 5 = 78%."""
    cases = [
        (["stop"] * 10, "stop"),
        (["yes"] * 10, "Yes"),
        (["nike"] * 10, "nike"),
        (["adidas"] * 10, "puma"),
        (["red"] * 3 + ["blue"] * 7, "red"),
    ]
    rows = [
        dict(index=i, question=f"Question {i}?", answer=str(ans))
        for i, (ans, _) in enumerate(cases, start=1)
    ]
    return dict(rows=rows, predictions={i: p for i, (_, p) in enumerate(cases, start=1)})


def docvqa() -> dict:
    """DocVQA_VAL: ANLS (1 - normalised edit distance to the closest answer, 0 below 0.5).
    Exact, exact against one of two answers, '1999' for '1998' (1 - 1/4 = 0.75), and a miss:
    (1 + 1 + 0.75 + 0) / 4 = 68.75%."""
    cases = [
        (["$12.50"], "$12.50"),
        (["Invoice", "invoice no."], "invoice"),
        (["1998"], "1999"),
        (["john smith"], "unknown"),
    ]
    rows = [
        dict(index=i, question=f"Question {i}?", answer=str(ans), split="val")
        for i, (ans, _) in enumerate(cases, start=1)
    ]
    return dict(rows=rows, predictions={i: p for i, (_, p) in enumerate(cases, start=1)})


def chartqa() -> dict:
    """ChartQA_TEST: relaxed accuracy (numbers within 5%, text exact up to case), two splits.
    human: '12' for 12, '12.5' for 12 (4.2% off) -> 2/2; augmented: 'yes' for 'Yes', '45%' for
    '40%' (12.5% off) -> 1/2. Overall 3/4 = 75%."""
    cases = [
        ("12", "12", "test_human"),
        ("12", "12.5", "test_human"),
        ("Yes", "yes", "test_augmented"),
        ("40%", "45%", "test_augmented"),
    ]
    rows = [
        dict(index=i, question=f"Question {i}?", answer=ans, split=sp)
        for i, (ans, _, sp) in enumerate(cases, start=1)
    ]
    return dict(rows=rows, predictions={i: p for i, (_, p, _) in enumerate(cases, start=1)})


def pope() -> dict:
    """POPE: F1 of the "Yes" class, computed after a row tagged with several subsets
    ('popular,random') is counted once per subset. Rows after that split (truth, prediction):
    adversarial Y/Y N/N, popular Y/N N/Y, random N/Y Y/Y: tp 2, fp 2, fn 1,
    F1 = 2*2 / (2*2 + 2 + 1) = 4/7 = 57.142857%; accuracy 3/6 = 50%."""
    cases = [
        ("Yes", "Yes", "adversarial"),
        ("No", "No", "adversarial"),
        ("Yes", "No, there is not.", "popular"),
        ("No", "Yes", "popular,random"),
        ("Yes", "Yes, there is.", "random"),
    ]
    rows = [
        dict(index=i, question=f"Is there a thing {i} in the image?", answer=ans, category=c)
        for i, (ans, _, c) in enumerate(cases, start=1)
    ]
    return dict(rows=rows, predictions={i: p for i, (_, p, _) in enumerate(cases, start=1)})


def hallusionbench() -> dict:
    """HallusionBench: aAcc = per-question accuracy; fAcc/qAcc group by figure/question. The
    index encodes {category}_{subcategory}_{n}_{set}_{figure}_{question}. 3 of 4 right: aAcc 75%.
    Figure groups: chart/0/0 ok, chart/0/1 ok, figure/1/0 (one wrong) -> fAcc 2/3; question
    groups: chart/0/0 ok, figure/1/0 wrong, figure/1/1 ok -> qAcc 2/3."""
    cases = [  # index, category, l2-category, truth, prediction
        ("VS_chart_0_0_0_0", "VS", "chart", "Yes", "Yes"),
        ("VS_chart_0_0_1_0", "VS", "chart", "No", "No"),
        ("VD_figure_0_1_0_0", "VD", "figure", "Yes", "No"),
        ("VD_figure_0_1_0_1", "VD", "figure", "No", "No."),
    ]
    rows = [
        dict(index=i, question=f"Is claim {i} true?", answer=ans, category=c, **{"l2-category": l2})
        for i, c, l2, ans, _ in cases
    ]
    return dict(rows=rows, predictions={i: p for i, *_, p in cases})


def ocrbench() -> dict:
    """OCRBench: one point per question whose answer appears in the prediction (math without
    spaces), summed per task; Final Score is the count, Final Score Norm = Final Score / 10 (a
    percentage only of the full 1000-question set). 3 of 4 right: 3 points, Norm 0.3."""
    cases = [
        ("Regular Text Recognition", ["HELLO"], "hello"),
        ("Scene Text-centric VQA", ["coffee"], "The sign says Coffee."),
        ("Key Information Extraction", ["2023-01-05"], "2023-01-06"),
        ("Handwritten Mathematical Expression Recognition", ["x^2 + 1"], "x ^ 2 + 1"),
    ]
    rows = [
        dict(index=i, question=f"Question {i}?", answer=str(ans), category=c, dataset="synthetic")
        for i, (c, ans, _) in enumerate(cases, start=1)
    ]
    return dict(rows=rows, predictions={i: p for i, (*_, p) in enumerate(cases, start=1)})


SPECS = {
    "MMBench_DEV_EN": mmbench,
    "MMMU_DEV_VAL": mmmu,
    "VisOnlyQA-VLMEvalKit": visonlyqa,
    "TextVQA_VAL": textvqa,
    "DocVQA_VAL": docvqa,
    "ChartQA_TEST": chartqa,
    "POPE": pope,
    "HallusionBench": hallusionbench,
    "OCRBench": ocrbench,
}

# benchmark -> (score file suffix after "{model}_{dataset}", headline on 0-100, sub-scores with
# their raw values as VLMEvalKit writes them)
EXPECTED = {
    "MMBench_DEV_EN": (
        "_acc.csv",
        75.0,
        {"Overall": 0.75, "CP": 1.0, "FP-S": 0.5, "image_scene": 1.0, "ocr": 0.5},
    ),
    "MMMU_DEV_VAL": (
        "_acc.csv",
        75.0,
        {
            "validation/Overall": 0.75,
            "dev/Overall": 0.5,
            "validation/Math": 1.0,
            "validation/Art": 0.5,
            "validation/Science": 1.0,
            "validation/Art & Design": 0.5,
            "dev/Math": 1.0,
            "dev/Art": 0.0,
        },
    ),
    # The hand-written catalog had scale 1 here: a headline of 0.75 for 75% right.
    "VisOnlyQA-VLMEvalKit": ("_acc.csv", 75.0, {"Overall": 0.75, "geometry": 1.0, "chart": 0.5}),
    "TextVQA_VAL": ("_acc.csv", 78.0, {"Overall": 78.0}),
    "DocVQA_VAL": ("_acc.csv", 68.75, {"Overall": 68.75, "val": 68.75}),
    "ChartQA_TEST": (
        "_acc.csv",
        75.0,
        {"Overall": 75.0, "test_human": 100.0, "test_augmented": 50.0},
    ),
    "POPE": (
        "_score.csv",
        400 / 7,
        {
            "Overall/Overall": 400 / 7,
            "Overall/acc": 50.0,
            "Overall/precision": 50.0,
            "Overall/recall": 200 / 3,
            "adversarial/Overall": 100.0,
            "adversarial/acc": 100.0,
            "popular/Overall": 0.0,
            "popular/acc": 0.0,
            "random/acc": 50.0,
            "random/Overall": 200 / 3,
        },
    ),
    "HallusionBench": (
        "_score.csv",
        75.0,
        {
            "Overall/aAcc": 75.0,
            "Overall/fAcc": 200 / 3,
            "Overall/qAcc": 200 / 3,
            "VS/aAcc": 100.0,
            "VD/aAcc": 50.0,
            "chart/aAcc": 100.0,
            "figure/fAcc": 0.0,
            "figure/qAcc": 50.0,
        },
    ),
    # Final Score Norm is Final Score / 10 ("% of the 1000 questions": 0.3 here); the headline
    # is Final Score per sample scored, so 3 right of 4 is 75 also under --limit.
    "OCRBench": (
        "_score.json",
        75.0,
        {
            "Final Score": 3,
            "Final Score Norm": 0.3,
            "Text Recognition": 1,
            "Scene Text-centric VQA": 1,
            "Doc-oriented VQA": 0,
            "Key Information Extraction": 0,
            "Handwritten Mathematical Expression Recognition": 1,
        },
    ),
}


# ---- one env subprocess makes every score file --------------------------------------------------


def _runner_score_files(entry: dict, name: str) -> list[Path]:
    """The files among those evaluate() wrote that the runner reports as score files (the
    runner's own selection: `{model}_{dataset}` + a score stem + a score extension)."""
    base = f"{entry['model']}_{name}"
    out = []
    for p in entry["written"]:
        stem, ext = os.path.splitext(os.path.basename(p))
        if ext in kit.SCORE_EXT and stem.startswith(base) and kit.SCORE_STEM.search(stem[len(base) :]):
            out.append(Path(p))
    return out


@pytest.fixture(scope="module")
def made(heavy_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("score-files")
    env = heavy_env(heavy_home)
    env.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True")
    # an empty cwd and config dir: the benchmarks are the shipped catalog's, no user file's
    paths = Paths.from_env(env, cwd=out)
    cat = loader.load(paths)
    assert cat.sources == ()
    proc = procs.run(
        [*spectravenv_exe(), "sync", ENV, "--no-addons"], env=env, cwd=out, timeout=3000
    )
    assert proc.returncode == 0, proc.stderr
    state = envs.status(cat.envs[ENV], paths)
    assert state.state == "ready"

    env["LMUData"] = str(out / "LMUData")
    (out / "LMUData").mkdir()
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps({name: make() for name, make in SPECS.items()}))
    run = procs.run(
        [state.python, str(HELPER), str(spec_file), str(out / "made"), str(RUNNERS)],
        env=env,
        timeout=900,
        cwd=out,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    manifest = json.loads((out / "made" / "manifest.json").read_text())
    return {"catalog": cat, "manifest": manifest}


@pytest.mark.parametrize("name", list(SPECS))
def test_score_file_headline_and_subscores(made, name):
    entry = made["manifest"][name]
    assert "error" not in entry, entry.get("error")
    suffix, expected_headline, expected_subs = EXPECTED[name]

    files = _runner_score_files(entry, name)
    stem = f"{entry['model']}_{name}"
    assert [os.path.basename(f) for f in files] == [stem + suffix], entry["written"]

    table = score_files.read(files)
    assert not table.problems and not table.ambiguous, table
    scores = table.scores
    for key, value in expected_subs.items():
        assert key in scores, f"{key} not in {sorted(scores)}"
        assert scores[key] == pytest.approx(value, abs=1e-6), key

    bench = made["catalog"].benchmarks[name]
    metric, value, note = headline(bench, scores, len(SPECS[name]()["rows"]))
    assert metric == bench.metric
    assert note == "", f"{name}: {note}; sub-scores: {sorted(scores)}"
    assert value == pytest.approx(expected_headline, abs=1e-4), (
        f"{name}: headline {bench.headline!r} x {bench.scale} gave {value}, "
        f"expected {expected_headline} (sub-scores {scores})"
    )
    assert 0 <= value <= 100


# Which kinds of dataset leave per-sample results that reproduce their headline (so the report
# can give an interval), read from the same real files: benchmark -> (column the scores come
# from, scored rows, interval given). DocVQA's ANLS thresholds each sample's score, POPE's F1 is
# not a mean over samples, and OCRBench writes no per-sample file: those say why instead.
PER_SAMPLE = {
    "MMBench_DEV_EN": ("hit", 4, True),  # one row per circular question group
    "VisOnlyQA-VLMEvalKit": ("hit", 4, True),  # plain MCQ: a hit per question
    "MMMU_DEV_VAL": ("hit", 6, True),  # the headline averages the 4 validation rows
    "TextVQA_VAL": ("eval_score", 5, True),
    "DocVQA_VAL": ("eval_score", 4, False),
    "ChartQA_TEST": ("eval_score", 4, True),
    "POPE": ("extracted", 5, False),
    "HallusionBench": ("extracted", 4, True),
    "OCRBench": (None, 0, False),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_per_sample_results_and_the_interval_they_give(made, name):
    from spectravenv.results import samples

    entry = made["manifest"][name]
    assert "error" not in entry, entry.get("error")
    column, rows, has_interval = PER_SAMPLE[name]
    sset = samples.read([Path(p) for p in entry["written"]])
    assert (sset.column if sset else None) == column
    assert (len(sset.samples) if sset else 0) == rows
    bench = made["catalog"].benchmarks[name]
    judged = samples.assess(sset, bench.headline, EXPECTED[name][1])
    assert (judged.interval is not None) == has_interval, judged.note
    if judged.interval:
        assert judged.interval.low <= EXPECTED[name][1] <= judged.interval.high
    else:
        assert judged.note  # says why, never a made-up interval
