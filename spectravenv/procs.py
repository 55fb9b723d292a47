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
from collections.abc import Mapping, Sequence
from pathlib import Path

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
) -> psutil.Popen:
    """Start a supervised child in its own session, its stdout and stderr appended to `log`.

    Its own session means a Ctrl-C at the terminal reaches only us; we then stop the children in
    order, rather than racing them.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return psutil.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def stop_tree(proc: psutil.Process, grace: float = 10.0) -> None:
    """Stop a process and every descendant: SIGINT, then SIGTERM, then SIGKILL."""
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for sig, wait in ((signal.SIGINT, grace / 2), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5)):
        alive = []
        for p in family:
            try:
                # Late-born grandchildren join the list before each escalation.
                alive += [c for c in p.children(recursive=True) if c not in family]
                p.send_signal(sig)
                alive.append(p)
            except psutil.NoSuchProcess:
                pass
        _, family = psutil.wait_procs(alive, timeout=wait)
        if not family:
            break
    # Reap the direct child so it does not linger as a zombie.
    with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
        proc.wait(timeout=1)
