"""The engine server's lifecycle (runners/svrunner/serve.py) with a stand-in server program.

The stand-in (tests/data/standin_engine.py) is a real subprocess serving real loopback HTTP with
vLLM's flags and endpoints; it starts in a second instead of minutes, so every way a server can
start, fail and stop is covered here. tests/test_serve_vllm.py repeats the essential cases with
the real vLLM engine (heavy).
"""

from __future__ import annotations

import http.server
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from svrunner import serve

from .jsonhttp import JSONHandler

DATA = Path(__file__).resolve().parent / "data"
RUNNERS = Path(__file__).resolve().parent.parent / "runners"
STANDIN = [
    sys.executable,
    str(DATA / "standin_engine.py"),
    "--port",
    "{port}",
    "--served-model-name",
    "{name}",
]


def standin(*flags: str):
    def command(port: int, name: str) -> list[str]:
        return [a.replace("{port}", str(port)).replace("{name}", name) for a in (*STANDIN, *flags)]

    return command


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group, from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def wait_for(predicate, seconds: float = 60.0) -> bool:
    """Poll a condition (a bound on waiting, not a timing assertion)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def chat(server: serve.Server, text: str = "hello") -> dict:
    payload = {
        "model": server.served_name,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
    }
    req = urllib.request.Request(server.api_base, data=json.dumps(payload).encode(),
                                 headers={"Authorization": f"Bearer {server.key}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def quick(**kw) -> serve.Settings:
    return serve.Settings(**{"health_seconds": 120, "stop_seconds": 10, **kw})


def test_a_healthy_server_answers_and_is_gone_with_its_children_after_the_block():
    sink = io.StringIO()
    with serve.Server(standin("--grandchild"), settings=quick(), sink=sink) as server:
        pgid = server.proc.pid
        assert len(group_members(pgid)) == 3  # the guard, the server and the process it forked
        assert chat(server)["choices"][0]["message"]["content"] == "echo 5"
        assert server.api_base == f"http://127.0.0.1:{server.port}/v1/chat/completions"
    assert group_members(pgid) == []
    log = sink.getvalue()
    # its output went to the sink (the job log), line by line, marked as the engine's
    assert (
        "[engine] standin: listening on 127.0.0.1:" in log and "healthy at http://127.0.0.1:" in log
    )


def test_the_key_keeps_other_clients_out_and_the_models_check_wants_our_name():
    with serve.Server(standin(), settings=quick(), sink=io.StringIO()) as server:
        status, _ = serve._http_get(f"{server.base_url}/v1/models", "another-key")
        assert status == 401
        status, body = serve._http_get(f"{server.base_url}/v1/models", server.key)
        assert status == 200 and json.loads(body)["data"][0]["id"] == server.served_name
        assert (
            server.served_name.startswith("served-")
            and server.served_name != serve.Server(standin()).served_name
        )


def test_a_server_that_exits_at_start_fails_at_once_with_its_last_lines():
    server = serve.Server(
        standin("--exit-at-start", "3"), settings=quick(health_seconds=600), sink=io.StringIO()
    )
    with pytest.raises(serve.ServerFailed) as err:
        server.start()
    msg = str(err.value)
    # the liveness check, not the deadline, ended the wait
    assert "exited with code 3 while starting" in msg and "not healthy after" not in msg
    assert "cannot load the checkpoint" in msg


def test_a_server_never_healthy_is_stopped_at_the_deadline():
    sink = io.StringIO()
    server = serve.Server(
        standin("--never-healthy", "--grandchild"), settings=quick(health_seconds=3), sink=sink
    )
    with pytest.raises(serve.ServerFailed, match=r"not healthy after 3 s and was stopped") as err:
        server.start()
    assert "standin: listening on" in str(err.value)
    assert group_members(server.proc.pid) == []


def test_a_server_that_dies_mid_unit_makes_check_fail_with_its_log():
    with serve.Server(
        standin("--die-after", "2", "--grandchild"), settings=quick(), sink=io.StringIO()
    ) as server:
        pgid = server.proc.pid
        chat(server)
        chat(server)
        server.check()  # still serving
        with pytest.raises(OSError):  # the third request: the server dies while answering
            chat(server)
        assert wait_for(lambda: not server.alive())
        with pytest.raises(serve.ServerFailed, match="exited with code 137 while serving") as err:
            server.check()
        assert "engine core died" in str(err.value)
        assert group_members(pgid) == []  # what the dead server forked went with it


class _Foreign(JSONHandler):
    """Someone else's server on the port we wanted: healthy, but not ours."""

    def do_GET(self):
        self.send_json(200, {"data": [{"id": "someone-else"}]})


def test_a_port_taken_by_another_server_is_not_mistaken_for_ours_and_another_port_is_used():
    foreign = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    taken = foreign.server_address[1]
    sink = io.StringIO()
    try:
        with serve.Server(standin(), settings=quick(), sink=sink) as server:
            server.stop()
            server.start(port=taken)  # told to try the taken port first
            assert server.port != taken
            assert chat(server)["choices"][0]["message"]["content"] == "echo 5"
    finally:
        foreign.shutdown()
    assert f"port {taken} was taken before the server bound it; trying another" in sink.getvalue()


def test_a_port_taken_on_every_try_fails_with_the_servers_words():
    blockers = []
    try:
        server = serve.Server(standin(), settings=quick(port_tries=2), sink=io.StringIO())
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        blockers.append(blocker)
        port = blocker.getsockname()[1]
        # every free port the server would be given next is taken too
        real_free_port = serve.free_port
        serve.free_port = lambda: port
        try:
            with pytest.raises(serve.ServerFailed, match="Address already in use"):
                server.start(port=port)
        finally:
            serve.free_port = real_free_port
    finally:
        for b in blockers:
            b.close()


def test_client_settings_for_lmdeploywrapper_are_greedy_and_capped():
    server = serve.Server(standin())
    server.port = 8123
    kw = serve.client_kwargs(server, max_new_tokens=16384, max_model_len=2048)
    assert kw["max_tokens"] == 2047 and kw["temperature"] == 0.0
    assert kw["api_base"] == "http://127.0.0.1:8123/v1/chat/completions"
    assert kw["model"] == server.served_name and kw["key"] == server.key and kw["verbose"] is False
    assert serve.client_kwargs(server, max_new_tokens=6, max_model_len=2048)["max_tokens"] == 6


def test_the_vllm_command_line_carries_the_wrappers_settings(tmp_path):
    spec = serve.EngineSpec(python="/env/bin/python", model="/ckpt", max_model_len=2048, tensor_parallel=2,
                            mm_processor_kwargs={"min_pixels": 3136, "max_pixels": 50176}, limit_images=4,
                            chat_template=str(tmp_path / "t.jinja"), media_root="/data",
                            enforce_eager=True)  # fmt: skip
    cmd = spec.command(8123, "served-x")
    assert cmd[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert (
        flags["--host"] == "127.0.0.1"
        and flags["--port"] == "8123"
        and flags["--served-model-name"] == "served-x"
    )
    assert flags["--tensor-parallel-size"] == "2" and flags["--max-model-len"] == "2048"
    assert json.loads(flags["--mm-processor-kwargs"]) == {"min_pixels": 3136, "max_pixels": 50176}
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 4}
    assert flags["--allowed-local-media-path"] == "/data" and cmd[-1] == "--enforce-eager"
    env = spec.environment({"PYTHONPATH": "/runners", "HOME": "/root"})
    assert (
        "PYTHONPATH" not in env and env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["HOME"] == "/root"
    )


# ---- the worker's ways to end: the server never outlives it --------------------------------------


def start_worker(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, dict]:
    state = tmp_path / "state.json"
    worker = subprocess.Popen(
        [sys.executable, str(DATA / "serve_worker.py"), str(RUNNERS), str(state), "--", *STANDIN, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert wait_for(lambda: state.exists() or worker.poll() is not None), "worker never served"
    assert state.exists(), worker.communicate()[0]
    return worker, json.loads(state.read_text())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_server_outlives_its_worker(tmp_path, sig):
    worker, state = start_worker(tmp_path, "--grandchild")
    pgid = state["pid"]
    assert len(group_members(pgid)) == 3
    worker.send_signal(sig)
    worker.wait(timeout=60)
    out = worker.stdout.read()
    assert wait_for(lambda: group_members(pgid) == []), f"left behind: {group_members(pgid)}\n{out}"
    # SIGTERM and Ctrl-C unwind the worker, which stops the server itself; SIGKILL runs no code in
    # the worker: the guard gets the kernel's parent-death signal and stops the group.
    assert ("stopping the engine server" in out) == (sig != signal.SIGKILL), out
    # Python's exit status for an uncaught KeyboardInterrupt is death by SIGINT
    assert worker.returncode == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: -2}[sig]
