"""Judged scoring end to end, with VLMEvalKit's real evaluators in the real tf437 env: for each kind
of scoring, a small synthetic TSV in the official format under the official name, served with its
md5 by a local stand-in for the data host (VLMEvalKit downloads and checks it itself), and a
loopback OpenAI-compatible server that is both the answering model and the judge. Its replies
are fixed per question, so every expected score is known in advance and the headline read from
VLMEvalKit's score file must equal it.

The answering model is VLMEvalKit's own OpenAI client (class GPT4V) pointed at the loopback: its
answers are chosen so that no exact matching can read them ("hard to tell"), so the judge really
decides. The built-in demo model answers with letters, which VLMEvalKit matches without asking the
judge; it is used where the judge always runs (MathVista's extraction).

Heavy: needs the tf437 env (built once per session).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import Workspace, heavy_env
from .hubstub import HubStub
from .jsonhttp import JSONHandler
from .test_envs import one_line_error
from .test_eval_demo import events, kinds
from .test_hardening import leaks

pytestmark = pytest.mark.heavy
KEY = "sk-judge-LOOPkQ7vX2mZ9pW4rT8nBjH3"  # no run of 10 characters that ordinary files hold
UNMATCHABLE = "hard to tell"  # no option letter, option text, yes/no or number in it
MARK = re.compile(r"\bQ(\d{3})\b")


# ---- the loopback: model answers and judge verdicts, fixed per question --------------------------


@dataclass
class Loopback:
    answers: dict[str, str]  # question marker -> the model's answer
    verdicts: dict[str, str]  # question marker -> the judge's reply
    seen: list[dict] = field(default_factory=list)
    failing: set[str] = field(
        default_factory=set
    )  # markers the "flaky" route answers with HTTP 500
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, route: str, body: dict) -> tuple[int, str]:
        text = json.dumps(body["messages"])
        marks = MARK.findall(text)
        mark = f"Q{marks[-1]}" if marks else None
        if route == "broken":
            return 401, json.dumps({"error": {"message": "invalid api key (loopback)"}})
        if route == "flaky" and mark in self.failing:
            return 500, json.dumps({"error": {"message": "overloaded (loopback)"}})
        table = self.answers if route == "model" else self.verdicts
        content = table.get(mark, UNMATCHABLE if route == "model" else "OK") if mark else "OK"
        return 200, json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": content}}]}
        )


def handler(state: Loopback) -> type[JSONHandler]:
    class Handler(JSONHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            route = self.path.strip("/").split("/")[0]
            content = body["messages"][-1]["content"]
            images = [c for c in content if isinstance(c, dict) and c.get("type") == "image_url"] \
                if isinstance(content, list) else []  # fmt: skip
            with state.lock:
                state.seen.append({"route": route, "path": self.path, "auth": self.headers.get("Authorization"),
                                   "model": body.get("model"), "images": len(images),
                                   "marks": MARK.findall(json.dumps(body["messages"]))})  # fmt: skip
            self.send_json(*state.reply(route, body))

    return Handler


@contextlib.contextmanager
def serving() -> Iterator[tuple[str, Loopback]]:
    """The loopback model and judge, on a free port, for the block."""
    state = Loopback({}, {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback() -> Iterator[tuple[str, Loopback]]:
    with serving() as served:
        yield served


# ---- the synthetic datasets ----------------------------------------------------------------------


def png(rgb: tuple[int, int, int], size: int = 8) -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip
    return base64.b64encode(data).decode()


IMG, IMG2 = png((200, 30, 30)), png((30, 30, 200))


@dataclass
class Case:
    """One kind of scoring: its rows, what the model says and what the judge says, per question
    marker; the catalog entry it needs; the expected headline."""

    name: str
    rows: list[dict]
    answers: dict[str, str]
    verdicts: dict[str, str]
    entry: str  # the spectravenv.toml lines besides url and md5
    expected: float
    judged: bool = True

    def tsv(self) -> bytes:
        cols = list(dict.fromkeys(["image", *(k for r in self.rows for k in r)]))
        out = io.StringIO()
        w = csv.DictWriter(out, cols, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({"image": IMG, **r})
        return out.getvalue().encode()


def mcq(i: int, answer: str, **extra: str) -> dict:
    return {"index": i, "question": f"Which animal is it? Q{i}", "A": "cat", "B": "dog", "C": "owl",
            "D": "fox", "answer": answer, "category": "animals", **extra}  # fmt: skip


# fmt: off
CASES = [
    # MCQ, answers extracted by the judge: A, B right; the third wrong (C asked, A given); D right.
    Case("AI2D_TEST", [mcq(101, "A"), mcq(102, "B"), mcq(103, "C"), mcq(104, "D")], {},
         {"Q101": "A", "Q102": "B", "Q103": "A", "Q104": "D"},
         'judge = "gpt-4o-mini"\njudge_need = "optional"\n', 75.0),
    # Y/N: truth Yes, No, Yes, No; the judge reads Yes, No, No, No: tp 1, fp 0, fn 1, F1 = 2/3.
    Case("POPE", [{"index": i, "question": f"Is there a dog in the image? Q{i}", "answer": a, "category": "random"}
                  for i, a in ((201, "Yes"), (202, "No"), (203, "Yes"), (204, "No"))], {},
         {"Q201": "Yes", "Q202": "No", "Q203": "No", "Q204": "No"},
         'judge = "gpt-4o-mini"\njudge_need = "optional"\n', 200 / 3),
    # VQA accuracy, no judge: one right of two.
    Case("TextVQA_VAL", [{"index": 301, "question": "What does the sign say? Q301", "answer": str(["stop"] * 10)},
                         {"index": 302, "question": "What colour is it? Q302", "answer": str(["red"] * 10)}],
         {"Q301": "stop", "Q302": "blue"}, {}, "", 50.0, judged=False),
    # OCRBench, no judge: two of three answers found in the prediction.
    Case("OCRBench", [
        {"index": 401, "question": "Read the word. Q401", "answer": str(["HELLO"]), "category": "Regular Text Recognition", "dataset": "synthetic"},
        {"index": 402, "question": "What drink? Q402", "answer": str(["coffee"]), "category": "Scene Text-centric VQA", "dataset": "synthetic"},
        {"index": 403, "question": "Which year? Q403", "answer": str(["2023"]), "category": "Key Information Extraction", "dataset": "synthetic"},
    ], {"Q401": "hello", "Q402": "tea", "Q403": "2023"}, {}, "", 200 / 3, judged=False),
    # MathVista: the judge extracts the answer from each response: 3 of 4 right.
    Case("MathVista_MINI", [
        {"index": 500 + k, "question": f"How many shapes are there? Q{500 + k}", "answer": str(a),
         "question_type": "free_form", "answer_type": "integer", "task": "figure question answering",
         "skills": "['arithmetic reasoning']"} for k, a in ((1, 3), (2, 5), (3, 7), (4, 9))
    ], {}, {"Q501": "3", "Q502": "4", "Q503": "7", "Q504": "9"},
        'category = "Math"\nkind = "VQA"\nmetric = "Accuracy"\nheadline = "Overall/acc"\nscale = 1\n'
        'judge = "gpt-4o-mini"\njudge_need = "required"\n', 75.0),
    # MMVet: the judge grades each answer: 1.0, 0.0, 0.5, 1.0 -> 62.5.
    Case("MMVet", [
        {"index": 600 + k, "question": f"Describe the image. Q{600 + k}", "answer": "a red square",
         "category": "rec,ocr,know,gen,spat,math"} for k in (1, 2, 3, 4)
    ], {}, {"Q601": "1.0", "Q602": "0.0", "Q603": "0.5", "Q604": "1.0"},
        'category = "General VQA"\nkind = "VQA"\nmetric = "GPT score"\nheadline = "Overall/acc"\nscale = 1\n'
        'judge = "gpt-4-turbo"\njudge_need = "required"\n', 62.5),
    # MMMU with open questions (VLMEvalKit turns them into "answer / Other Answers"): validation
    # 2 of 4 right through the judge (one dev row keeps the split table two rows long).
    Case("MMMU_DEV_VAL", [
        {**mcq(701, "A", split="validation"), "C": None, "D": None},
        {**mcq(702, "B", split="validation"), "C": None, "D": None},
        {"index": 703, "question": "What is six times seven? Q703", "answer": "42", "split": "validation", "category": "Math"},
        {"index": 704, "question": "What is three plus four? Q704", "answer": "7", "split": "validation", "category": "Math"},
        {**mcq(705, "A", split="dev"), "C": None, "D": None},
    ], {}, {"Q701": "A", "Q702": "A", "Q703": "A", "Q704": "B", "Q705": "A"},
        'judge = "gpt-4o-mini"\njudge_need = "optional"\n', 50.0),
    # Multi-image MCQ: two images per question reach the model; the judge reads A, A: 1 of 2.
    Case("BLINK", [{**mcq(801, "A"), "image": str([IMG, IMG2])}, {**mcq(802, "B"), "image": str([IMG, IMG2])}],
         {}, {"Q801": "A", "Q802": "A"}, 'judge = "gpt-4o-mini"\njudge_need = "optional"\n', 50.0),
]
# fmt: on


def config(ws: Workspace, hub: HubStub, base: str, cases: list[Case]) -> None:
    """The loopback model, and each case's TSV served with its md5 (a lab mirror, as a user
    would declare it)."""
    text = f"""
[models.loopback-vlm]
env = "tf437"
class = "GPT4V"
kind = "api"
cpu = true
gpu_memory_gb = 0
kwargs = {{ model = "loopback-vlm", api_base = "{base}/model/v1/chat/completions", retry = 2 }}
"""
    for c in cases:
        data = c.tsv()
        url = hub.add_file(f"{c.name}.tsv", data)
        text += f'\n[benchmarks.{c.name}]\nurl = "{url}"\nmd5 = "{hashlib.md5(data).hexdigest()}"\nsamples = {len(c.rows)}\n'
        text += c.entry
    (ws.cwd / "spectravenv.toml").write_text(text)


def judged_workspace(heavy_home: Path, folder: Path) -> Workspace:
    """The session's envs, but data of its own: official names hold synthetic TSVs here,
    downloaded from the stand-in (so not an offline run; nothing here needs the hub)."""
    (folder / "work").mkdir(parents=True)
    ws = Workspace(folder / "work", heavy_home, heavy_env(heavy_home))
    ws.env["LMUData"] = str(folder / "LMUData")
    ws.env.pop("HF_HUB_OFFLINE", None)
    return ws


@pytest.fixture
def jws(heavy_home: Path, tmp_path: Path) -> Workspace:
    return judged_workspace(heavy_home, tmp_path)


def headlines(run: Path) -> dict[str, dict]:
    with (run / "results" / "summary.csv").open() as f:
        return {r["benchmark"]: r for r in csv.DictReader(f)}


def no_key_anywhere(ws: Workspace, run: Path, *procs) -> None:
    assert leaks(run, KEY) == [] and leaks(ws.home, KEY) == []
    for proc in procs:
        assert KEY not in proc.stdout + proc.stderr


# ---- every kind of scoring, one run --------------------------------------------------------------


@pytest.fixture(scope="module")
def judged_run(
    heavy_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Loopback, object, Workspace]]:
    """One run of every case (its tests read it; a run of eight benchmarks per test would cost
    minutes each)."""
    jws = judged_workspace(heavy_home, tmp_path_factory.mktemp("judged"))
    with serving() as (base, state):
        yield from _judged(jws, base, state)


def _judged(
    jws: Workspace, base: str, state: Loopback
) -> Iterator[tuple[Path, Loopback, object, Workspace]]:
    for c in CASES:
        state.answers.update(c.answers)
        state.verdicts.update(c.verdicts)
    (jws.cwd / ".env").write_text(f"OPENAI_API_KEY={KEY}\n")
    with HubStub() as hub:
        config(jws, hub, base, CASES)
        proc = jws.run("eval", "loopback-vlm", *[c.name for c in CASES], "--judge-base-url", f"{base}/judge/v1",
                       "--run-name", "judged", timeout=1800)  # fmt: skip
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-6000:]}"
        # VLMEvalKit downloaded every TSV from the stand-in and found its md5.
        assert {r["path"] for r in hub.requests if r["method"] == "GET"} >= {
            f"/files/{c.name}.tsv" for c in CASES
        }
    yield jws.cwd / "outputs" / "judged", state, proc, jws


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_kind_of_scoring_gives_the_score_known_in_advance(judged_run, case):
    run, state, _, _ = judged_run
    row = headlines(run)[case.name]
    assert row["status"] == "done", row
    assert float(row["value"]) == pytest.approx(case.expected, abs=1e-4), row
    [done] = kinds(events(run, "loopback-vlm"), "benchmark_done", case.name)
    judge_calls = [
        s for s in state.seen if s["route"] == "judge" and str(case.rows[0]["index"]) in s["marks"]
    ]
    if case.judged:
        # The judge it was given scored it: run.py's default for the benchmark, at the loopback.
        version = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4-turbo": "gpt-4-1106-preview"}
        name = re.search(r'judge = "([^"]+)"', case.entry).group(1)
        assert done["judged_by"] == name and "judge_note" not in done
        assert done["fingerprint"]["judge"]["model"] == name
        assert done["fingerprint"]["judge"]["version"] == version[name]
        assert done["fingerprint"]["judge"]["endpoint"] == state_host(run)
        assert judge_calls and all(c["model"] == version[name] for c in judge_calls)
    else:
        assert done["fingerprint"]["judge"] is None and not judge_calls
    if case.name == "BLINK":
        asked = [s for s in state.seen if s["route"] == "model" and "801" in s["marks"]]
        assert asked and all(s["images"] == 2 for s in asked)


def state_host(run: Path) -> str:
    manifest = json.loads((run / "run.json").read_text())
    return manifest["judge_base_url"].split("//", 1)[1].split("/", 1)[0]


def test_the_judges_key_reaches_the_judge_and_nothing_else(judged_run):
    run, state, proc, jws = judged_run
    judge = [s for s in state.seen if s["route"] == "judge"]
    assert judge and {s["auth"] for s in judge} == {f"Bearer {KEY}"}
    no_key_anywhere(jws, run, proc)
    # Provenance: each benchmark's judge with its endpoint's host, never a key.
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["judges"]["MathVista_MINI"]["model"] == "gpt-4o-mini"
    assert manifest["judges"]["OCRBench"] == {"model": "exact_matching", "used": False,
                                              "why": "its scoring calls no judge"}  # fmt: skip
    assert "spectravenv: judges: " in proc.stderr


# ---- the demo model, a required judge, from the command line -------------------------------------


def test_demo_mathvista_needs_its_judge_and_scores_with_one_of_ones_own(jws, loopback):
    base, state = loopback
    [case] = [c for c in CASES if c.name == "MathVista_MINI"]
    state.verdicts.update(case.verdicts)
    with HubStub() as hub:
        config(jws, hub, base, [case])
        line = one_line_error(
            jws.run("eval", "demo-tiny-llava", "MathVista_MINI", "--judge", "gpt-4o-mini")
        )
        assert "MathVista_MINI is judged by gpt-4o-mini, which needs OPENAI_API_KEY" in line
        assert not (jws.cwd / "outputs").exists()
        # An endpoint of one's own needs no key.
        proc = jws.run("eval", "demo-tiny-llava", "MathVista_MINI", "--judge", "gpt-4o-mini",
                       "--judge-base-url", f"{base}/judge/v1", "--run-name", "demo", timeout=1800)  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-6000:]}"
    run = jws.cwd / "outputs" / "demo"
    # The demo model's answers are not numbers, so the judge extracted every one.
    assert sorted(m for s in state.seen if s["route"] == "judge" for m in s["marks"]) == [
        "501",
        "502",
        "503",
        "504",
    ]
    assert float(headlines(run)["MathVista_MINI"]["value"]) == pytest.approx(75.0)
    [done] = kinds(events(run, "demo-tiny-llava"), "benchmark_done", "MathVista_MINI")
    assert (
        done["judged_by"] == "gpt-4o-mini"
        and done["fingerprint"]["judge"]["endpoint"] == base.split("//")[1]
    )


# ---- a judge that does not work: never a silent fallback -----------------------------------------


def test_a_judge_that_does_not_work_is_recorded_or_fails_and_a_working_one_rescores(jws, loopback):
    """A judge whose every call is refused (HTTP 401): VLMEvalKit's MCQ evaluator falls back to
    exact matching, so the pair is scored by exact matching and says so (files, record, report);
    MathVista cannot be scored without its judge, so that pair fails with the judge's error. The
    same command with the judge's endpoint fixed in .env re-scores both with the judge, from the
    predictions already made (the model is not asked again)."""
    base, state = loopback
    cases = [c for c in CASES if c.name in ("AI2D_TEST", "MathVista_MINI")]
    for c in cases:
        state.verdicts.update(c.verdicts)
    args = ("eval", "loopback-vlm", "AI2D_TEST", "MathVista_MINI", "--run-name", "fallback")
    with HubStub() as hub:
        config(jws, hub, base, cases)
        (jws.cwd / ".env").write_text(
            f"OPENAI_API_KEY={KEY}\nSPECTRAVENV_JUDGE_BASE_URL={base}/broken/v1\n"
        )
        first = jws.run(*args, timeout=1800)
        assert first.returncode == 1, f"{first.stdout}\n{first.stderr[-6000:]}"
        run = jws.cwd / "outputs" / "fallback"
        rows = headlines(run)
        evs = events(run, "loopback-vlm")
        [done] = kinds(evs, "benchmark_done", "AI2D_TEST")
        assert (
            done["judged_by"] == "exact_matching"
            and "gpt-4o-mini not working: HTTP 401" in done["judge_note"]
        )
        assert done["fingerprint"]["judge"]["model"] == "exact_matching"
        assert done["fingerprint"]["judge"]["instead_of"] == "gpt-4o-mini"
        pair = run / "loopback-vlm" / "AI2D_TEST"
        assert list(pair.glob("*_exact_matching_result.*")) and not list(pair.glob("*gpt-4o-mini*"))
        assert rows["AI2D_TEST"]["status"] == "done" and float(rows["AI2D_TEST"]["value"]) == 0.0
        assert "judged by exact matching" in (run / "EVALUATION_REPORT.md").read_text()
        [failed] = kinds(evs, "benchmark_failed", "MathVista_MINI")
        assert "judge gpt-4o-mini not working: HTTP 401" in failed["error"], failed["error"]
        assert not list((run / "loopback-vlm" / "MathVista_MINI").glob("*_score.csv"))
        asked = len([s for s in state.seen if s["route"] == "model"])

        (jws.cwd / ".env").write_text(
            f"OPENAI_API_KEY={KEY}\nSPECTRAVENV_JUDGE_BASE_URL={base}/judge/v1\n"
        )
        second = jws.run(*args, timeout=1800)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr[-6000:]}"
    assert "AI2D_TEST runs again: judge" in second.stderr
    assert len([s for s in state.seen if s["route"] == "model"]) == asked  # predictions reused
    rows = headlines(run)
    assert float(rows["AI2D_TEST"]["value"]) == pytest.approx(75.0)
    assert float(rows["MathVista_MINI"]["value"]) == pytest.approx(75.0)
    no_key_anywhere(jws, run, first, second)


def test_judge_calls_that_fail_fail_the_pair_and_a_retry_asks_the_judge_again(jws, loopback):
    """The judge answers its test prompt but fails one question (HTTP 500 after all retries):
    VLMEvalKit would count that row as wrong; the pair fails with the judge's error instead, and
    what the evaluation cached is gone, so the next attempt asks the judge again and scores it."""
    base, state = loopback
    [case] = [c for c in CASES if c.name == "POPE"]
    state.verdicts.update(case.verdicts)
    state.failing.add("Q203")
    args = ("eval", "loopback-vlm", "POPE", "--run-name", "flaky", "--judge-base-url")
    with HubStub() as hub:
        config(jws, hub, base, [case])
        (jws.cwd / ".env").write_text(f"OPENAI_API_KEY={KEY}\n")
        first = jws.run(*args, f"{base}/flaky/v1", timeout=1800)
        assert first.returncode == 1, f"{first.stdout}\n{first.stderr[-6000:]}"
        run = jws.cwd / "outputs" / "flaky"
        [failed] = kinds(events(run, "loopback-vlm"), "benchmark_failed", "POPE")
        assert re.search(
            r"judge gpt-4o-mini failed \d+ of \d+ calls after VLMEvalKit's retries: HTTP 500",
            failed["error"],
        )
        pair = run / "loopback-vlm" / "POPE"
        assert not list(pair.glob("*_score.csv")) and not list(pair.glob("*_auxmatch.*"))
        # The judge is fixed (same endpoint, same run): the failed pair is evaluated again.
        state.failing.clear()
        second = jws.run(*args, f"{base}/flaky/v1", timeout=1800)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr[-6000:]}"
    assert float(headlines(run)["POPE"]["value"]) == pytest.approx(200 / 3)
    no_key_anywhere(jws, run, first, second)
