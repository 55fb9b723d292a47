"""The one place that starts and stops processes.

Short tool calls (uv, nvidia-smi, squeue) go through `run`; long supervised children (runners)
through `spawn` and `stop_tree`, which escalates interrupt -> terminate -> kill over the whole
process tree so nothing is left holding a GPU.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from .errors import SpectravenvError


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output as text."""
    argv = [str(c) for c in cmd]
    try:
        proc = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise SpectravenvError(f"{argv[0]} not found; is it installed and on PATH?") from None
    except subprocess.TimeoutExpired:
        raise SpectravenvError(
            f"{Path(argv[0]).name} did not answer within {timeout:g} s: {' '.join(argv[:4])}"
        ) from None
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SpectravenvError(f"{Path(argv[0]).name} failed ({proc.returncode}): {tail[0]}")
    return proc


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    redact: Callable[[str], str] = lambda s: s,
) -> tuple[psutil.Popen, threading.Thread]:
    """Start a supervised child in its own session; its output goes, redacted, to `log`.

    Its own session means a Ctrl-C at the terminal reaches only us; we then stop the children in
    order, rather than racing them. The output passes through us (not straight into the file) so
    that a secret the child prints never reaches the disk.
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
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, log, redact), daemon=True)
    pump.start()
    return proc, pump


def _pump(stream: IO[bytes], log: Path, redact: Callable[[str], str]) -> None:
    with log.open("ab") as out, stream:
        for raw in iter(stream.readline, b""):
            out.write(redact(raw.decode("utf-8", "replace")).encode())
            out.flush()


def stop_trees(procs: Sequence[psutil.Process], grace: float = 10.0) -> None:
    """Stop processes and all their descendants: SIGINT, then SIGTERM, then SIGKILL.

    All trees are signalled together, so stopping eight jobs takes one grace period, not eight.
    """
    family: list[psutil.Process] = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            family += [p, *p.children(recursive=True)]
    for sig, wait in (
        (signal.SIGINT, grace / 2),
        (signal.SIGTERM, grace / 2),
        (signal.SIGKILL, 5.0),
    ):
        # Grandchildren born since the last round join before each escalation.
        for p in list(family):
            with contextlib.suppress(psutil.NoSuchProcess):
                family += [c for c in p.children(recursive=True) if c not in family]
        alive = []
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
                alive.append(p)
        _, family = psutil.wait_procs(alive, timeout=wait)
        if not family:
            break
    for p in procs:  # reap direct children so none lingers as a zombie
        with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
            p.wait(timeout=1)
