"""Lock files that never hang (svrunner.locking), with real processes holding, dying, racing to
break stale locks, and holding from "another host" (a process whose hostname says so)."""

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


def test_a_holder_on_another_host_without_a_lease_is_reported_never_broken(tmp_path):
    """A lock of an older release on another host: nothing says whether its holder lives."""
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


# A holder on another host: its hostname says node-17, so its pid means nothing here; only its
# lease (the lock file's mtime, renewed by a thread of the holder) tells whether it lives.
FOREIGN = """
import socket, sys, time
socket.gethostname = lambda: "node-17"
sys.path.insert(0, sys.argv[2])
from svrunner.locking import FileLock
lock = FileLock(sys.argv[1], "a worker on node-17", lease=float(sys.argv[3]))
assert lock.try_acquire()
print("held", flush=True)
while True:  # busy in Python, holding the GIL as a model's code would: the lease must go on
    sum(range(10000))
"""


def foreign_holder(path, lease: float) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", FOREIGN, str(path), str(REPO / "runners"), str(lease)],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_live_holder_on_another_host_keeps_its_lease_and_a_dead_one_loses_it(tmp_path):
    path = tmp_path / "x.lock"
    p = foreign_holder(path, lease=2.0)
    try:
        # Waiting longer than the lease: the holder's thread renews it all along.
        with pytest.raises(LockBusy) as e:
            FileLock(path, "me").acquire(5)
        assert "a worker on node-17" in str(e.value) and "renews the lock" in str(e.value)
    finally:
        p.kill()
        p.wait()
    # Killed: nothing renews the lock any more; a lease later it is taken over.
    lock = FileLock(path, "me")
    lock.acquire(60)
    assert json.loads(path.read_text())["token"] == lock.token
    lock.release()
    assert not path.exists() and os.listdir(tmp_path) == []  # no marker or temporary file left


# A finder whose clock is an hour off: it must judge the lease on the file server's clock.
SKEWED = """
import sys, time
real = time.time
time.time = lambda: real() + float(sys.argv[3])
sys.path.insert(0, sys.argv[2])
from svrunner.locking import FileLock, LockBusy
try:
    FileLock(sys.argv[1], "skewed finder").acquire(float(sys.argv[4]))
    print("taken")
except LockBusy:
    print("busy")
"""


def test_a_finder_with_a_skewed_clock_judges_the_lease_on_the_servers_clock(tmp_path):
    path = tmp_path / "x.lock"
    p = foreign_holder(path, lease=2.0)

    def finder(skew: float, timeout: float) -> str:
        args = [sys.executable, "-c", SKEWED, str(path), str(REPO / "runners"), str(skew), str(timeout)]
        return subprocess.run(args, capture_output=True, text=True, timeout=120).stdout.strip()

    try:
        assert finder(+3600, 3) == "busy"  # ahead: a live lease is not taken for an old one
    finally:
        p.kill()
        p.wait()
    assert finder(-3600, 60) == "taken"  # behind: a dead holder's lease still runs out


# Many processes take one lock in turn; some of them die holding it (a forked child that exits
# without releasing), so that all the others find it stale at once and race to break it while
# new holders take it. Each holder logs its entry and exit: two holders at once would show.
RACER = """
import os, random, sys, time
sys.path.insert(0, sys.argv[1])
from svrunner.locking import FileLock
path, log, me, rounds = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
rng = random.Random(me)

def critical(who):
    os.write(fd, f"+ {who}\\n".encode())
    time.sleep(rng.random() * 0.002)
    os.write(fd, f"- {who}\\n".encode())

for i in range(rounds):
    if rng.random() < 0.3:
        pid = os.fork()
        if pid == 0:
            FileLock(path, "dies holding it").acquire(60, poll=0.001)
            critical(f"{me}.{i}")
            os._exit(0)
        os.waitpid(pid, 0)
        continue
    lock = FileLock(path, me)
    lock.acquire(60, poll=0.001)
    critical(me)
    lock.release()
"""


def test_racing_processes_breaking_stale_locks_never_hold_one_together(tmp_path):
    path, log = tmp_path / "x.lock", tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(REPO / "runners"), str(path), str(log), f"w{i}", "150"])
             for i in range(6)]  # fmt: skip
    assert [p.wait(timeout=600) for p in procs] == [0] * 6
    holding, entries = None, 0
    for line in log.read_text().splitlines():
        op, who = line.split()
        if op == "+":
            assert holding is None, f"{who} took the lock while {holding} held it"
            holding, entries = who, entries + 1
        else:
            assert holding == who
            holding = None
    assert entries == 6 * 150
    # What is left: at most the lock of a holder that died last, no marker or temporary file.
    assert set(os.listdir(tmp_path)) <= {"x.lock", "log"}
