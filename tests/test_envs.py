"""The env manager against real uv, real venvs and real processes (a small transformers env)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spectravenv import procs
from spectravenv.catalog import loader
from spectravenv.envs import locks
from spectravenv.envs import venv as envs
from spectravenv.paths import Paths

from .conftest import Workspace


def env_folders(ws: Workspace) -> list[Path]:
    root = ws.home / "envs"
    return sorted(p for p in root.iterdir() if p.name.startswith("tiny-")) if root.exists() else []


def leftovers(ws: Workspace) -> list[Path]:
    root = ws.home / "envs"
    return sorted(p for p in root.iterdir() if p.name.startswith(".")) if root.exists() else []


def in_process(ws: Workspace):
    paths = Paths.from_env(ws.env, cwd=ws.cwd)
    return paths, loader.load(paths)


def test_sync_builds_a_verified_env_and_envs_shows_it(ws):
    ws.run("sync", "tiny", check=True)
    [folder] = env_folders(ws)
    marker = json.loads((folder / ".spectravenv-env.json").read_text())
    assert marker["versions"]["transformers"] == "4.37.2"
    assert marker["lock_sha256"] == locks.digest(ws.cwd / "tiny.lock")
    assert marker["python"].startswith("3.10.")
    # The env really works, and its console scripts survived the rename from the build folder.
    out = procs.run(
        [folder / "bin" / "python", "-c", "import transformers; print(transformers.__version__)"]
    )
    assert out.stdout.strip() == "4.37.2"
    assert procs.run([folder / "bin" / "huggingface-cli", "--help"]).returncode == 0
    # Bytecode is compiled at build time, kept once in the shared store (hardlinked), and code
    # loaded from it names the env's real files (tracebacks point at real sources).
    pycs = list((folder / "lib").glob("python3.10/site-packages/transformers/__pycache__/*.pyc"))
    assert pycs and all(p.stat().st_nlink >= 2 for p in pycs)
    where = procs.run([folder / "bin" / "python", "-c",
                       "import transformers.utils.versions as v; print(v.require_version.__code__.co_filename)"])
    assert where.stdout.strip() == str(folder / "lib/python3.10/site-packages/transformers/utils/versions.py")

    table = ws.run("envs", check=True).stdout
    row = next(line for line in table.splitlines() if line.startswith("tiny "))
    assert "ready" in row and "4.37.2" in row and marker["lock_sha256"][:12] in row
    assert re.search(r"\d+(\.\d)? MB", row)
    assert not leftovers(ws)


def test_sync_of_a_ready_env_never_calls_uv(ws, monkeypatch):
    ws.run("sync", "tiny", check=True)
    paths, cat = in_process(ws)

    def forbidden(*a, **k):
        raise AssertionError(f"a ready env must not start any process: {a}")

    monkeypatch.setattr(procs, "run", forbidden)
    state = envs.ensure(cat.envs["tiny"], paths)
    assert state.state == "ready"


def test_a_build_says_how_far_it_is_at_most_every_progress_period(ws, monkeypatch):
    """A cold torch env builds for minutes after "building env ..."; the build says how far it
    is (its step; while uv installs, the lock's packages in uv's cache and installed), one line
    per period (30 s; shortened here)."""
    paths, cat = in_process(ws)
    monkeypatch.setattr(envs, "PROGRESS_EVERY", 0.4)
    lines: list[tuple[float, str]] = []
    envs.ensure(cat.envs["tiny"], paths, report=lambda text: lines.append((time.monotonic(), text)))
    n = len(locks.read(ws.cwd / "tiny.lock", "tiny"))
    ticks = [(t, text) for t, text in lines if text.startswith("still building")]
    assert ticks, lines
    shape = (r"still building env tiny: \d+s, (creating the venv|\d+ of (\d+) packages in uv's cache, "
             r"\d+ installed|compiling its bytecode|checking that it imports)")  # fmt: skip
    for _, text in ticks:
        m = re.fullmatch(shape, text)
        assert m and (m.group(2) is None or int(m.group(2)) == n), text
    assert all(b - a >= 0.4 for (a, _), (b, _) in itertools.pairwise(ticks)), ticks
    assert lines[0][1].startswith("building env tiny") and lines[-1][1].startswith("env tiny ready")


def test_build_progress_counts_the_locks_packages_in_uvs_cache_and_installed(tmp_path, monkeypatch):
    cache, tmp = tmp_path / "uv-cache", tmp_path / "env"
    lock = [locks.LockedPackage(n, v, ("sha256:0",)) for n, v in
            (("typing-extensions", "4.9.0"), ("pyyaml", "6.0.1"), ("torch", "2.1.2+cu121"))]  # fmt: skip
    for folder in ("archive-v0/a/typing_extensions-4.9.0.dist-info", "archive-v0/b/PyYAML-6.0.1.dist-info",
                   "archive-v0/c/PyYAML-5.4.dist-info", "archive-v0/d/six-1.16.0.dist-info",
                   "lib/python3.10/site-packages/typing_extensions-4.9.0.dist-info"):  # fmt: skip
        (cache if folder.startswith("archive") else tmp).joinpath(folder).mkdir(parents=True)
    lines: list[str] = []
    monkeypatch.setattr(envs, "PROGRESS_EVERY", 0.0)
    progress = envs.BuildProgress("tf437", lock, tmp, cache, lines.append, step="installing")
    progress.tick()
    assert re.fullmatch(r"still building env tf437: \d+s, 2 of 3 packages in uv's cache, 1 installed", lines[-1])
    monkeypatch.setattr(envs, "PROGRESS_EVERY", 30.0)
    progress.tick()  # within the period: nothing more
    assert len(lines) == 1


def test_concurrent_syncs_build_once_and_all_succeed(ws):
    procs_ = [ws.popen("sync", "tiny") for _ in range(3)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs_]
    assert [rc for rc, _, _ in results] == [0, 0, 0], results
    stderr = "".join(err for _, _, err in results)
    assert len(re.findall(r"^building env tiny", stderr, re.M)) == 1, stderr
    assert re.search(r"waiting for building env tiny \(pid \d+ on \S+, since ", stderr), stderr
    assert len(env_folders(ws)) == 1 and not leftovers(ws)


def test_a_killed_build_leaves_nothing_that_looks_finished(ws):
    p = ws.popen("sync", "tiny")
    deadline = time.monotonic() + 120
    # Kill it while uv is installing into the temporary folder.
    while not any((t / "lib").exists() for t in leftovers(ws)):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert env_folders(ws) == []
    assert "missing" in next(
        ln for ln in ws.run("envs").stdout.splitlines() if ln.startswith("tiny")
    )

    ws.run("sync", "tiny", check=True)
    assert len(env_folders(ws)) == 1 and not leftovers(ws)


def test_a_wrong_hash_is_refused_naming_the_package_and_the_old_env_survives(ws):
    ws.run("sync", "tiny", check=True)
    [old] = env_folders(ws)
    old_marker = (old / ".spectravenv-env.json").read_bytes()

    lock = ws.cwd / "tiny.lock"
    text = lock.read_text()
    # Every file of idna (wheel and sdist) gets a hash that no real file has.
    block = re.search(r"^idna==.*?(?=^\S)", text, re.M | re.S).group(0)
    lock.write_text(text.replace(block, re.sub(r"[0-9a-f]{64}", "0" * 64, block)))
    proc = ws.run("sync", "tiny")
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len([ln for ln in err if ln.startswith("spectravenv: error")]) == 1
    assert "idna" in err[-1] and "sha256" in err[-1], err
    assert "Traceback" not in proc.stderr
    assert env_folders(ws) == [old] and (old / ".spectravenv-env.json").read_bytes() == old_marker
    assert not leftovers(ws)


def test_a_changed_lock_gives_a_new_env_and_gc_removes_the_old(ws):
    ws.run("sync", "tiny", check=True)
    [old] = env_folders(ws)
    with (ws.cwd / "tiny.lock").open("a") as f:
        f.write("# a changed lock, e.g. after `spectravenv lock`\n")
    envs_out = ws.run("envs", check=True).stdout
    assert "stale" in envs_out
    ws.run("sync", "tiny", check=True)
    folders = env_folders(ws)
    assert len(folders) == 2 and old in folders

    # The new env shares the old one's bytecode (same source files, one copy on disk).
    [new] = [f for f in folders if f != old]
    pyc = next((new / "lib").glob("python3.10/site-packages/transformers/__pycache__/__init__*.pyc"))
    twin = old / pyc.relative_to(new)
    assert pyc.stat().st_ino == twin.stat().st_ino

    dry = ws.run("gc", "--dry-run", check=True).stdout
    assert f"would remove {old}" in dry and old.exists()
    ws.run("gc", check=True)
    assert env_folders(ws) == [new] and not old.exists()
    assert "ready" in ws.run("envs", check=True).stdout


def test_relocking_with_the_recorded_date_reproduces_the_lock(ws):
    before = (ws.cwd / "tiny.lock").read_bytes()
    (ws.cwd / "tiny.lock").unlink()
    ws.run("lock", "tiny", check=True)
    assert (ws.cwd / "tiny.lock").read_bytes() == before


# ---- errors: one line on stderr, non-zero exit, no traceback -----------------------------------


def one_line_error(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    # Progress lines may come first; the error is exactly one line, and the last.
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert errors == lines[-1:], proc.stderr
    assert lines[-1].startswith("spectravenv: error: ")
    return lines[-1]


def test_unknown_env_suggests(ws):
    assert "did you mean: tiny" in one_line_error(ws.run("sync", "tinyy"))


def test_missing_python_says_which_and_how(ws):
    (ws.cwd / "spectravenv.toml").write_text(
        (ws.cwd / "spectravenv.toml").read_text().replace('python = "3.10"', 'python = "3.7"')
    )
    ws.env["PYENV_ROOT"] = str(ws.cwd / "no-pyenv")
    msg = one_line_error(ws.run("sync", "tiny"))
    assert "Python 3.7" in msg and "uv python install 3.7" in msg


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "is missing; create it with `spectravenv lock tiny`"),
        ("transformers>=4.37\n", "is not a pinned requirement"),
        ("transformers==4.37.2\n", "has no --hash"),
        ("# nothing\n", "pins no package"),
    ],
)
def test_missing_or_garbled_lock(ws, content, needle):
    lock = ws.cwd / "tiny.lock"
    if content is None:
        lock.unlink()
    else:
        lock.write_text(content)
    assert needle in one_line_error(ws.run("sync", "tiny"))


def test_unwritable_home(ws, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ws.env["SPECTRAVENV_HOME"] = str(blocker / "home")
    assert "is not writable" in one_line_error(ws.run("sync", "tiny"))


def test_no_space_left(ws, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if procs.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root in a namespace that allows it)")
    try:
        ws.env["SPECTRAVENV_HOME"] = str(small / "home")
        ws.env["UV_CACHE_DIR"] = str(small / "home" / "uv-cache")
        assert "no space left" in one_line_error(ws.run("sync", "tiny"))
    finally:
        procs.run(["umount", small])


def test_lock_refuses_to_rewrite_the_installed_package(tmp_path):
    """A non-editable install: `spectravenv lock` must not change what every later sync builds."""
    from spectravenv.envs.uv import uv_bin

    from .conftest import REPO, SHARED_CACHE

    env = {**os.environ, "UV_CACHE_DIR": str(SHARED_CACHE / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never"}
    venv = tmp_path / "venv"
    subprocess.run([uv_bin(), "venv", "-q", "--python", sys.executable, venv], env=env, check=True)
    subprocess.run([uv_bin(), "pip", "install", "-q", "--python", venv / "bin" / "python", REPO],
                   env=env, check=True, timeout=600)  # fmt: skip
    shipped = next((venv / "lib").glob("python*/site-packages/spectravenv/_shipped/locks/tf437.lock"))
    before = shipped.read_bytes()
    proc = subprocess.run([venv / "bin" / "spectravenv", "lock", "tf437"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    msg = one_line_error(proc)
    assert "defined by the installed spectravenv package" in msg and "pip install -e ." in msg
    assert shipped.read_bytes() == before
