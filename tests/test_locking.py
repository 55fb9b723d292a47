"""Lock files that never hang (svrunner.locking), with real processes holding and dying."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from svrunner.locking import FileLock, LockBusy

from .conftest import REPO
from .test_envs import one_line_error

HOLD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from svrunner.locking import FileLock
lock = FileLock(sys.argv[1], "a test holder")
assert lock.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def holder(path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(REPO / "runners")],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_busy_lock_times_out_saying_who_holds_it(tmp_path):
    path = tmp_path / "x.lock"
    p = holder(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockBusy) as e:
            FileLock(path, "building env tf437").acquire(0.5)
        assert 0.5 <= time.monotonic() - t0 < 5
        msg = str(e.value)
        assert msg.startswith("building env tf437: locked by a test holder")
        assert f"pid {p.pid} on {socket.gethostname()}, since " in msg and f"kill {p.pid}" in msg
    finally:
        p.kill()
        p.wait()


def test_the_lock_of_a_killed_process_is_recovered_at_once(tmp_path):
    path = tmp_path / "x.lock"
    p = holder(path)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert path.exists()  # left behind: a kill gives no chance to clean up
    lock = FileLock(path, "me")
    lock.acquire(0)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": "1", "since": 0, "token": "t"}
    path.write_text(json.dumps(me))  # our pid, but a process that started at another time
    FileLock(path, "me").acquire(0)


def test_a_holder_on_another_host_is_reported_never_broken(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": "node-17", "pid": 4242, "what": "spectravenv eval", "since": 0}))
    with pytest.raises(LockBusy) as e:
        FileLock(path, "run r1").acquire(0.3)
    assert "pid 4242 on node-17" in str(e.value) and f"remove {path}" in str(e.value)
    assert path.exists()


def test_an_env_build_waits_a_bounded_time_with_a_clear_error(ws):
    lock_dir = ws.home / "locks"
    lock_dir.mkdir(parents=True)
    # The build lock of the env's key, held by a live process elsewhere on this host.
    ws.run("sync", "tiny", check=True)
    key = next((ws.home / "envs").glob("tiny-*")).name
    import shutil

    shutil.rmtree(ws.home / "envs" / key)
    p = holder(lock_dir / f"env-{key}.lock")
    try:
        ws.env["SPECTRAVENV_LOCK_TIMEOUT"] = "2"
        msg = one_line_error(ws.run("sync", "tiny", timeout=60))
        assert "building env tiny: locked by a test holder" in msg and f"pid {p.pid}" in msg
        assert "SPECTRAVENV_LOCK_TIMEOUT" in msg
    finally:
        p.kill()
        p.wait()
    ws.run("sync", "tiny", check=True)  # the dead holder's lock is recovered
