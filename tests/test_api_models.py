"""An API model end to end: VLMEvalKit's GPT-4o wrapper in the api env, talking to a local
OpenAI-compatible server on 127.0.0.1 (no real API is reachable here), its key from .env.

Heavy: the api env is built from its shipped lock."""

from __future__ import annotations

import base64
import csv
import threading
from http.server import ThreadingHTTPServer
from typing import ClassVar

import pytest

from .jsonhttp import JSONHandler
from .test_eval_demo import eval_ok, events, kinds
from .test_hardening import leaks

pytestmark = pytest.mark.heavy
KEY = "sk-test-LOCALkQ7vX2mZ9pW4rT8nBjH3"  # no run of 10 characters that ordinary files hold


class FakeOpenAI(JSONHandler):
    """/v1/chat/completions: answers "A" and remembers what each request carried."""

    seen: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.read_json()
        content = body["messages"][-1]["content"]
        images = [c for c in content if isinstance(c, dict) and c.get("type") == "image_url"]
        texts = [c["text"] for c in content if isinstance(c, dict) and c.get("type") == "text"]
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "model": body["model"],
                          "images": [i["image_url"]["url"][:40] for i in images], "text": " ".join(texts)})  # fmt: skip
        self.send_json(200, {"choices": [{"message": {"role": "assistant", "content": "A"}}]})


@pytest.fixture
def fake_api():
    FakeOpenAI.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions", FakeOpenAI.seen
    server.shutdown()


def test_gpt4o_runs_against_a_local_openai_compatible_server(demo_ws, fake_api):
    url, seen = fake_api
    (demo_ws.cwd / ".env").write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_API_BASE={url}\n")
    proc = eval_ok(demo_ws, "GPT4o", "DemoMCQ", "--limit", "6", "--run-name", "api")
    run = demo_ws.cwd / "outputs" / "api"
    [started] = kinds(events(run, "GPT4o"), "job_started")
    assert started["cuda_visible_devices"] == "" and started["versions"]["transformers"] == "5.20.2"
    # Six questions reached the server with the key from .env, each with its image.
    assert len(seen) == 6 and {s["auth"] for s in seen} == {f"Bearer {KEY}"}
    assert all(
        s["model"] == "gpt-4o-2024-05-13" and s["path"] == "/v1/chat/completions" for s in seen
    )
    assert all(
        len(s["images"]) == 1 and s["images"][0].startswith("data:image/jpeg;base64,") for s in seen
    )
    assert all("colour" in s["text"] for s in seen)
    # Always "A": the score is the share of chosen questions whose answer is A, as VLMEvalKit counts.
    [done] = kinds(events(run, "GPT4o"), "benchmark_done", "DemoMCQ")
    import openpyxl

    book = openpyxl.load_workbook(run / done["prediction_file"])
    rows = list(book.active.values)
    answers = [r[rows[0].index("answer")] for r in rows[1:]]
    assert {r[rows[0].index("prediction")] for r in rows[1:]} == {"A"}
    with (run / "results" / "summary.csv").open() as f:
        [row] = list(csv.DictReader(f))
    assert float(row["value"]) == pytest.approx(100 * answers.count("A") / 6)
    # The key went to the server only: nothing written holds it (VLMEvalKit's wrapper logs
    # "API Key: <key>" at INFO level; that and everything else is masked before the disk).
    assert leaks(run, KEY) == [] and leaks(demo_ws.home, KEY) == []
    assert KEY not in proc.stdout + proc.stderr
    assert base64.b64encode(KEY.encode()).decode() not in (run / "logs" / "GPT4o.log").read_text()
