"""Runs that go wrong and recover, end to end in the real envs: a worker stopped by SIGTERM
releases what it held, a run resumed after its fingerprint changed infers its done units again,
prediction files torn by a kill are set aside, VLMEvalKit's failure message is never a score, and
the heartbeat speaks in every silent phase. Heavy: the demo model (and an API model against a
local server) through the real runner and VLMEvalKit."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
from http.server import ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import openpyxl
import pytest

from .conftest import REPO, Workspace
from .jsonhttp import JSONHandler
from .test_eval_demo import SPLIT_MODEL, USER_MODELS, eval_ok, events, kinds, wait_for

pytestmark = pytest.mark.heavy


def after(evs: list[dict], start: float) -> list[dict]:
    return [e for e in evs if e["time"] >= start]


def test_a_worker_stopped_by_sigterm_releases_its_claim_and_a_resume_after_a_fingerprint_change_finishes(
    demo_ws,
):
    # A model of its own: speeds measured for split-demo by other tests would make one unit of it.
    model = SPLIT_MODEL.replace("split-demo", "sigterm-demo")
    (demo_ws.cwd / "spectravenv.toml").write_text(model)  # 16 rows, 16 units
    p = demo_ws.popen("eval", "sigterm-demo", "DemoShapes", "--limit", "16", "--run-name", "r")
    run = demo_ws.cwd / "outputs" / "r"
    # The first use of the demo in a session trains it: minutes.
    wait_for(
        lambda: kinds(events(run, "sigterm-demo"), "unit_done"), what="a finished unit", timeout=900
    )
    wait_for(
        lambda: len(kinds(events(run, "sigterm-demo"), "unit_started")) > 1, what="the next unit"
    )
    [started] = kinds(events(run, "sigterm-demo"), "job_started")
    os.kill(started["pid"], signal.SIGTERM)  # scancel, or a Slurm time limit
    _, err = p.communicate(timeout=300)
    log = (run / "logs" / "sigterm-demo.log").read_text()
    assert "stopped by signal SIGTERM" in log and "exited with code 143" in err, err
    # Its claim and every lock were released on the way out, not left for a lease to expire.
    internal = run / ".spectravenv" / "units"
    assert not list(internal.rglob("*.claim")) and not list(internal.rglob("*.lock"))
    assert not list((demo_ws.home / "LMUData" / ".spectravenv").rglob("*.lock"))
    done_before = {e["unit"] for e in kinds(events(run, "sigterm-demo"), "unit_done")}
    assert 0 < len(done_before) < 16

    # The model changes (its kwargs are part of the fingerprint): the units done before were
    # inferred under the old one, and their files move to .superseded/ with the rest.
    (demo_ws.cwd / "spectravenv.toml").write_text(model.replace("sleep = 0.25", "sleep = 0.2"))
    demo_ws.env["SPECTRAVENV_HEARTBEAT"] = "0.3"
    t0 = max(e["time"] for e in events(run, "sigterm-demo"))
    eval_ok(demo_ws, "--resume", str(run))
    evs = after(events(run, "sigterm-demo"), t0)
    assert kinds(evs, "pair_reset", "DemoShapes") and kinds(evs, "benchmark_done", "DemoShapes")
    assert {e["unit"] for e in kinds(evs, "unit_done")} == set(range(16))  # all of them again
    # The heartbeat spoke in every phase without progress, and went on while vlmeval imported.
    alive = kinds(evs, "alive")
    assert {"import", "model", "dataset", "merge", "evaluate"} <= {e["phase"] for e in alive}
    assert len([e for e in alive if e["phase"] == "import"]) >= 2


def torn_xlsx(rows: int) -> bytes:
    """A real prediction workbook, cut short as a kill in the middle of its write leaves it."""
    book = openpyxl.Workbook()
    book.active.append(["index", "question", "prediction"])
    for i in range(rows):
        book.active.append([i, f"question {i}", "A"])
    buf = io.BytesIO()
    book.save(buf)
    data = buf.getvalue()
    return data[: len(data) // 2]


def test_torn_prediction_files_are_set_aside_and_the_pair_finishes(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    p = demo_ws.popen("eval", "slow-demo", "DemoMCQ", "--limit", "20", "--run-name", "t")
    run = demo_ws.cwd / "outputs" / "t"
    wait_for(
        lambda: kinds(events(run, "slow-demo"), "progress", "DemoMCQ"), what="progress", timeout=900
    )
    os.kill(p.pid, signal.SIGINT)
    p.communicate(timeout=120)
    assert p.returncode == 130
    # What a kill during VLMEvalKit's own (non-atomic) writes leaves: a cut prediction workbook
    # and a cut _PREV.pkl.
    pair = run / "slow-demo" / "DemoMCQ"
    torn = torn_xlsx(20)
    (pair / "slow-demo_DemoMCQ.xlsx").write_bytes(torn)
    prev = pair / "slow-demo_DemoMCQ_PREV.pkl"
    prev.write_bytes(pickle.dumps({i: "A" for i in range(20)})[:15])

    eval_ok(demo_ws, "--resume", str(run))
    [done] = kinds(events(run, "slow-demo"), "benchmark_done", "DemoMCQ")
    book = openpyxl.load_workbook(run / done["prediction_file"])
    assert len(list(book.active.values)) == 1 + 20
    # Kept for inspection, and the log says where.
    assert (pair / ".broken" / "slow-demo_DemoMCQ.xlsx.1").read_bytes() == torn
    assert (pair / ".broken" / "slow-demo_DemoMCQ_PREV.pkl.1").is_file()
    log = (run / "logs" / "slow-demo.log").read_text()
    assert (
        "slow-demo_DemoMCQ.xlsx is unreadable" in log
        and "moved to .broken/slow-demo_DemoMCQ.xlsx.1" in log
    )


class Unauthorized(JSONHandler):
    """An OpenAI-compatible endpoint that refuses every request: no key was given."""

    def do_POST(self) -> None:
        self.read_json()
        self.send_json(
            401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
        )


def test_an_api_model_without_a_key_fails_and_is_asked_again_instead_of_scoring_zero(demo_ws):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    try:
        (demo_ws.cwd / ".env").write_text(f"OPENAI_API_BASE={url}\n")  # and no OPENAI_API_KEY
        (demo_ws.cwd / "spectravenv.toml").write_text(
            '[models.gpt-nokey]\nenv = "api"\nvlmeval_name = "GPT4o"\nkind = "api"\ncpu = true\n'
            "kwargs = { retry = 1, wait = 0 }\n"
        )
        proc = demo_ws.run(
            "eval", "gpt-nokey", "DemoMCQ", "--limit", "6", "--run-name", "k", timeout=900
        )
    finally:
        server.shutdown()
    assert proc.returncode == 1, proc.stderr
    run = demo_ws.cwd / "outputs" / "k"
    evs = events(run, "gpt-nokey")
    assert not kinds(evs, "benchmark_done")
    [failed] = kinds(evs, "benchmark_failed", "DemoMCQ")
    assert failed["stage"] == "infer"
    assert failed["error"].startswith("6 of 6 answers are VLMEvalKit's failure message")
    assert "--resume asks those rows again" in failed["error"]
    with (run / "results" / "summary.csv").open() as f:
        assert ",failed," in f.read()


GUARDED = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from svrunner.kit import circular_eval_guard
from vlmeval.dataset.utils import multiple_choice
from vlmeval.smp import dump
with circular_eval_guard("MMBench_DEV_EN"):
    # What mcq_circular_eval does: /tmp/{timestr()}.xlsx, never deleted by VLMEvalKit ...
    ours = f"/tmp/{multiple_choice.timestr()}.xlsx"
    dump(__import__("pandas").DataFrame({"index": [1]}), ours)
    made = os.path.exists(ours)
    # ... while another program writes a file of the same pattern meanwhile.
    other = "/tmp/" + time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() + 86400 * 365)) + ".xlsx"
    open(other, "w").close()
print(json.dumps({"made": made, "ours": os.path.exists(ours), "other": os.path.exists(other), "other_path": other}))
"""


def test_the_circular_guard_removes_the_files_vlmeval_made_for_it_and_no_other(demo_ws: Workspace):
    demo_ws.run("sync", "tf437", check=True)
    [python] = (demo_ws.home / "envs").glob("tf437-*/bin/python")
    out = subprocess.run([str(python), "-c", GUARDED, str(REPO / "runners")], env=demo_ws.env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    Path(got["other_path"]).unlink()
    assert got == {"made": True, "ours": False, "other": True, "other_path": got["other_path"]}
