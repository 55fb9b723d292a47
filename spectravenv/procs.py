"""The one place that starts and stops processes.

Short tool calls (uv, nvidia-smi, squeue) go through `run`; long supervised children (runners)
through `spawn` and `stop_trees`. Each supervised child leads a process group of its own, and a
stop signals the whole group (which reaches re-parented grandchildren too) plus any descendant
that left it, escalating interrupt -> terminate -> kill until none is left holding a GPU. A
supervised child is also told to end (SIGTERM) when its supervisor dies without stopping it (a
SIGKILL, the OOM killer): no worker outlives its dispatcher holding a GPU and claims.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

import psutil

from spectravenv.errors import SpectravenvError

KEEP_LOGS = 30
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Loaded once here: the child of a fork must not load a library (locks of other threads).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class StreamMasker(Protocol):
    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = False,
    tick: Callable[[], object] | None = None,
    every: float = 1.0,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output as text; `tick` is called every `every`
    seconds while it runs (a long build says how far it is)."""
    argv = [str(c) for c in cmd]
    try:
        child = subprocess.Popen(argv, env=dict(env) if env is not None else None, cwd=cwd, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise SpectravenvError(f"{argv[0]} not found; is it installed and on PATH?") from None
    with child:
        try:
            stdout, stderr = _communicate(child, timeout, tick, every)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise SpectravenvError(
                f"{Path(argv[0]).name} did not answer within {timeout:g} s: {' '.join(argv[:4])}"
            ) from None
        except BaseException:  # Ctrl-C, or a tick that raised: the tool goes too
            child.kill()
            raise
    proc = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SpectravenvError(f"{Path(argv[0]).name} failed ({proc.returncode}): {tail[0]}")
    return proc


def _communicate(child: subprocess.Popen[str], timeout: float | None, tick: Callable[[], object] | None,
                 every: float) -> tuple[str, str]:  # fmt: skip
    """The child's output once it ends; `tick()` every `every` seconds until then. Raises
    TimeoutExpired after `timeout` seconds (communicate may be retried: no output is lost)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        wait = left if tick is None else every if left is None else min(every, left)
        try:
            return child.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            if tick is None or (deadline is not None and time.monotonic() >= deadline):
                raise
            tick()


def keep_log(folder: Path, name: str, cmd: Sequence[object], proc: subprocess.CompletedProcess[str]) -> Path:
    """Keep a failed tool's whole output (the one-line error names this file); the newest
    KEEP_LOGS are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{name}.log"
    path.write_text(
        f"$ {' '.join(str(c) for c in cmd)}\n# exit code {proc.returncode}\n"
        f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    for old in sorted(folder.glob("*.log"))[:-KEEP_LOGS]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


class _Plain:
    """A stand-in masker that masks nothing."""

    def feed(self, text: str) -> str:
        return text

    def flush(self) -> str:
        return ""


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    masker: StreamMasker | None = None,
) -> tuple[psutil.Popen, threading.Thread]:
    """Start a supervised child leading a new session; its output goes, masked, to `log`.

    Its own session means a Ctrl-C at the terminal reaches only us; we then stop the children in
    order, rather than racing them. The output passes through us (not straight into the file) so
    that a secret the child prints never reaches the disk; the masker holds back a possible
    start of a secret until the next chunk shows whether it is one.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = psutil.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_ends_with(os.getpid()),
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, log, masker or _Plain()), daemon=True)
    pump.start()
    return proc, pump


def _ends_with(parent: int) -> Callable[[], None]:
    """In the child, before exec: SIGTERM when the thread that started it ends (Linux's
    PR_SET_PDEATHSIG; the dispatcher spawns from its main thread, so: when the dispatcher dies).
    It has its own session, so the terminal's signals no longer reach it; this does."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _pump(stream: IO[bytes], log: Path, masker: StreamMasker) -> None:
    """Copy the child's output to its log. Reads whatever is there (not lines), so a progress
    bar written without newlines still arrives; a multi-byte character cut by a read waits."""
    pending = b""
    with log.open("ab") as out, stream:
        fd = stream.fileno()
        while chunk := os.read(fd, 65536):
            data = pending + chunk
            try:
                text, pending = data.decode("utf-8"), b""
            except UnicodeDecodeError as e:
                cut = len(data) - e.start <= 3
                text = data[: e.start].decode("utf-8") if cut else data.decode("utf-8", "replace")
                pending = data[e.start :] if cut else b""
            out.write(masker.feed(text).encode())
            out.flush()
        out.write((masker.feed(pending.decode("utf-8", "replace")) + masker.flush()).encode())


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A group of zombies only (children we have not reaped yet) holds nothing.
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def stop_trees(procs: Sequence[psutil.Process], grace: float = 10.0) -> None:
    """Stop supervised children and everything they started: SIGINT, then SIGTERM, then SIGKILL.

    Each round signals every child's process group (the child is its leader: spawn starts a new
    session), so grandchildren re-parented to init are reached too, and also descendants that
    started a session of their own. All trees are signalled together, so stopping eight jobs
    takes one grace period, not eight.
    """
    groups = {p.pid for p in procs}
    family: dict[int, psutil.Process] = {}

    def gather() -> None:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                for c in p.children(recursive=True):
                    family.setdefault(c.pid, c)

    for sig, wait in ((signal.SIGINT, grace / 2), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5.0)):
        gather()
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for p in list(family.values()):
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for p in procs:  # reap leaders, or their zombies keep the group "alive"
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    p.wait(timeout=0)
            if not any(map(_running, family.values())) and not any(map(_group_alive, groups)):
                return
            time.sleep(0.1)
    for p in procs:
        with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
            p.wait(timeout=1)
