"""Shared fixtures: a private SPECTRAVENV_HOME per test, one warm uv cache per machine, and the
real `spectravenv` command run as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from spectravenv import procs
from spectravenv.catalog import loader
from spectravenv.catalog.entries import Catalog
from spectravenv.envs import venv as envs
from spectravenv.paths import Paths

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REPO = TESTS.parent

# uv's cache is shared by every test (and kept between runs) so the real downloads happen once;
# it must be on the same filesystem as the test homes for hardlinks, hence next to them.
SHARED_CACHE = Path(
    os.environ.get("SPECTRAVENV_TEST_CACHE") or Path.home() / ".cache" / "spectravenv-tests"
)


def unavailable(why: str) -> NoReturn:
    """A test whose tool is missing here: skipped on a developer's machine, failed under CI=true,
    where .ci/run installs everything the tests need (a skip there would hide a broken install)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; under CI=true it must run (.ci/run provides it)", pytrace=False)
    pytest.skip(why)


def spectravenv_exe() -> list[str]:
    exe = Path(sys.executable).with_name("spectravenv")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "spectravenv.cli"]


@dataclass
class Workspace:
    """A working directory with the test catalog, a private home, and a CLI runner."""

    cwd: Path
    home: Path
    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 900, check: bool | None = None, **kw
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*spectravenv_exe(), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )
        if check:
            assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*spectravenv_exe(), *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


def base_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPECTRAVENV_", "CUDA_", "SLURM_")) or k == "SLURM_CONF"
    }
    env.update(
        SPECTRAVENV_HOME=str(home),
        UV_CACHE_DIR=str(SHARED_CACHE / "uv-cache"),
        XDG_CONFIG_HOME=str(home / "xdg-config"),
        UV_PYTHON_DOWNLOADS=env.get("UV_PYTHON_DOWNLOADS", "never"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    cwd = tmp_path / "work"
    cwd.mkdir()
    for name in ("spectravenv.toml", "tiny.in", "tiny.lock"):
        shutil.copy(DATA / name, cwd / name)
    return Workspace(cwd, tmp_path / "home", base_env(tmp_path / "home"))


@pytest.fixture
def make_ws(tmp_path: Path) -> Callable[[str], Workspace]:
    def make(name: str) -> Workspace:
        cwd = tmp_path / name
        cwd.mkdir()
        return Workspace(cwd, tmp_path / "home", base_env(tmp_path / "home"))

    return make


# ---- the real torch envs, built once per test session ------------------------------------------


@pytest.fixture(scope="session")
def heavy_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh SPECTRAVENV_HOME for the session: the shipped envs are really built into it (from
    the shared, warm uv cache), and every end-to-end test then runs in them."""
    return tmp_path_factory.mktemp("heavy-home")


def heavy_env(home: Path) -> dict[str, str]:
    env = base_env(home)
    env.update(
        LMUData=str(home / "LMUData"),
        HF_HOME=str(home / "hf"),
        HF_HUB_OFFLINE="1",  # the demo must never need the hub
    )
    return env


def sync_shipped(
    heavy_home: Path, env_name: str, cwd: Path
) -> tuple[Catalog, envs.EnvState, dict[str, str]]:
    """Build a shipped env into the session's heavy home through the CLI, as a user would: the
    catalog, the env's state, and the process environment to run its Python with."""
    env = heavy_env(heavy_home)
    paths = Paths.from_env(env, cwd=cwd)
    cat = loader.load(paths)
    proc = procs.run(
        [*spectravenv_exe(), "sync", env_name, "--no-addons"], env=env, timeout=3000, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr
    return cat, envs.status(cat.envs[env_name], paths), env


@pytest.fixture
def demo_ws(heavy_home: Path, tmp_path: Path) -> Workspace:
    cwd = tmp_path / "work"
    cwd.mkdir()
    return Workspace(cwd, heavy_home, heavy_env(heavy_home))
