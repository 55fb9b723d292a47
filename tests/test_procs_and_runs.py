"""Process trees, run folders and recorded speeds: real processes, real files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from svrunner.locking import FileLock
from svrunner.protocol import EventLog

from spectravenv import procs
from spectravenv.paths import PACKAGE_DIR, Paths
from spectravenv.plan import stats
from spectravenv.run import rundir
from spectravenv.run.provenance import git_revision

from .conftest import REPO
from .test_locking import holder

# A child that starts a grandchild and exits at once: the grandchild is re-parented to init
# (no parent to walk from), but stays in the child's process group.
ORPHANS = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), flush=True)
time.sleep(1)
"""


def test_stopping_a_tree_reaches_grandchildren_that_were_reparented(tmp_path):
    proc, _pump = procs.spawn([sys.executable, "-c", ORPHANS], log=tmp_path / "log", env=dict(os.environ))
    time.sleep(0.5)
    grandchildren = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    assert grandchildren
    proc.wait(timeout=10)  # the child has exited: its grandchild now belongs to init
    orphan = grandchildren[0]
    assert orphan.is_running() and orphan.ppid() != proc.pid
    procs.stop_trees([proc], grace=2)
    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE


def test_two_runs_made_in_the_same_second_get_two_folders(tmp_path):
    made = [rundir.create(tmp_path / "out", None) for _ in range(3)]
    paths = [r.path for r, created in made]
    assert all(created for _, created in made) and len(set(paths)) == 3
    assert paths[1].name == paths[0].name + "-2"
    run, created = rundir.create(tmp_path / "out", "named")
    assert created
    again, created = rundir.create(tmp_path / "out", "named")
    assert again.path == run.path and not created  # an empty folder of that name is continued


def test_stats_never_wait_forever_and_never_fail_a_run(tmp_path, monkeypatch):
    run = rundir.RunDir(tmp_path / "run")
    run.write_job({"job_id": "m", "model": {"name": "m"}, "benchmarks": []})
    log = EventLog(str(run.events_file("m")), "m", 0)
    log.emit("job_started", gpu_names=[], world_size=1)
    log.emit("model_loaded", seconds=3.0)
    log.emit("unit_done", benchmark="B", unit=0, of=2, samples=6, seconds=3.0)
    log.emit("unit_done", benchmark="B", unit=1, of=2, samples=4, seconds=2.0)
    paths = Paths.from_env({"SPECTRAVENV_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}, cwd=tmp_path)
    p = holder(paths.build_locks / "stats.lock")
    warnings: list[str] = []
    try:
        monkeypatch.setattr(stats, "LOCK_TIMEOUT", 0.5)
        stats.record(paths, run, warnings.append)
    finally:
        p.kill()
        p.wait()
    assert len(warnings) == 1 and f"pid {p.pid}" in warnings[0] and not paths.stats.exists()
    stats.record(paths, run, warnings.append)  # the dead holder's lock is recovered
    assert stats.load(paths)["m|cpu"] == {"load_seconds": 3.0, "loads": 1, "seconds": 5.0, "samples": 10}
    stats.record(paths, run, warnings.append)  # recorded once, however often it is asked
    assert stats.load(paths)["m|cpu"]["samples"] == 10


def test_the_git_revision_is_spectravenvs_own_never_a_surrounding_repository(tmp_path):
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and PACKAGE_DIR.parent == REPO:
        assert git_revision() == head.stdout.strip()
    # An installed copy inside some other repository (a venv in a project folder):
    other = tmp_path / "project"
    pkg = other / ".venv" / "lib" / "site-packages" / "spectravenv"
    pkg.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", other], check=True)
    subprocess.run(["git", "-C", other, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)  # fmt: skip
    assert git_revision(pkg) is None
    (other / ".venv" / "lib" / "site-packages" / ".git").mkdir()
    assert git_revision(pkg) is None


def test_a_second_dispatcher_cannot_take_a_run(tmp_path):
    run = rundir.RunDir(tmp_path / "run")
    first = run.lock()
    first.acquire(0)
    second = FileLock(run.lock().path, "another eval")
    try:
        second.acquire(0.2)
        raise AssertionError("two dispatchers held one run")
    except Exception as e:
        assert "locked by" in str(e) and str(os.getpid()) in str(e)
    first.release()
    second.acquire(0)
    second.release()
    assert not Path(run.lock().path).exists()


def test_an_install_from_a_clone_or_a_wheel_records_what_it_was(tmp_path):
    """pip's direct_url.json (PEP 610) of a non-editable install from a local clone has no
    vcs_info: the clone's HEAD is read (it recorded `git -`); a wheel keeps its sha256."""
    from spectravenv.run.provenance import install_from

    clone = tmp_path / "spectravenv clone"
    subprocess.run(["git", "init", "-q", clone], check=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "spectravenv"\n')
    subprocess.run(["git", "-C", clone, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)  # fmt: skip
    head = subprocess.run(["git", "-C", clone, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    site = tmp_path / "venv" / "lib" / "site-packages" / "spectravenv"
    got = install_from({"url": clone.as_uri(), "dir_info": {}}, "r" * 64, site)
    assert got == {"kind": "clone", "url": clone.as_uri(), "commit": head}
    wheel = {"url": "file:///w/spectravenv-0.1.0-py3-none-any.whl", "archive_info": {"hashes": {"sha256": "ab" * 32}}}
    assert install_from(wheel, None, site) == {"kind": "wheel", "url": wheel["url"], "sha256": "ab" * 32}
    vcs = {"url": "https://example.org/s.git", "vcs_info": {"vcs": "git", "commit_id": "c" * 40}}
    assert install_from(vcs, None, site)["commit"] == "c" * 40
    assert install_from(None, "d" * 64, site) == {"kind": "index", "sha256": "d" * 64}


def test_a_long_tool_call_ticks_while_it_runs_and_still_times_out():
    ticks: list[float] = []
    code = "import sys, time; time.sleep(1.0); print('out'); print('err', file=sys.stderr)"
    proc = procs.run(
        [sys.executable, "-c", code], tick=lambda: ticks.append(time.monotonic()), every=0.2
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "out\n", "err\n")
    assert 3 <= len(ticks) <= 6, ticks
    assert procs.run([sys.executable, "-c", "pass"], tick=lambda: ticks.append(0.0)).returncode == 0

    started = time.monotonic()
    try:
        sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
        procs.run(sleeper, timeout=0.6, tick=lambda: None, every=0.2)
    except procs.SpectravenvError as e:
        assert "did not answer within 0.6 s" in str(e)
    else:
        raise AssertionError("no timeout")
    assert time.monotonic() - started < 5
