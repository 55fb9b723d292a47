"""Where spectravenv keeps things: its home (envs, uv cache, assets), its shipped data, user config.

Everything is derived from the process environment at the moment a `Paths` is made, so tests and
users can redirect it with `SPECTRAVENV_HOME` without any global state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    """Locate `locks/` or `runners/`: inside the wheel, or at the top of a source checkout."""
    inside_wheel = PACKAGE_DIR / "_shipped" / name
    if inside_wheel.is_dir():
        return inside_wheel
    return PACKAGE_DIR.parent / name


SHIPPED_LOCKS = _shipped("locks")
RUNNERS_DIR = _shipped("runners")
CATALOG_DIR = PACKAGE_DIR / "catalog" / "data"
CONFIG_NAME = "spectravenv.toml"


@dataclass(frozen=True)
class Paths:
    home: Path
    config_files: tuple[Path, ...]
    data_root: Path
    hf_home: Path
    cwd: Path
    uv_cache: Path
    # A folder made by `spectravenv wheelhouse export` to build envs from, with no index at all
    # (SPECTRAVENV_WHEELHOUSE, or `sync --wheelhouse`); None: build from the index.
    wheelhouse: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Paths:
        env = os.environ if environ is None else environ
        cwd = Path.cwd() if cwd is None else cwd
        user_home = Path(env.get("HOME", str(Path.home())))
        cache = Path(env.get("XDG_CACHE_HOME") or user_home / ".cache")
        config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config")
        home = Path(env.get("SPECTRAVENV_HOME") or cache / "spectravenv").expanduser()
        # User-level config first, then the working directory's: later files override earlier ones.
        config_files = (config / "spectravenv" / CONFIG_NAME, cwd / CONFIG_NAME)
        data_root = Path(env.get("LMUData") or user_home / "LMUData").expanduser()
        # One Hugging Face cache for every env, so weights are downloaded once, not once per env.
        hf_home = Path(env.get("HF_HOME") or cache / "huggingface").expanduser()
        # uv's cache sits inside home unless the user chose one: uv hardlinks venv files to its
        # cache only when both are on one filesystem, which is what keeps many envs cheap.
        uv_cache = Path(env.get("UV_CACHE_DIR") or home / "uv-cache").expanduser()
        wheelhouse = env.get("SPECTRAVENV_WHEELHOUSE")
        return cls(
            home.absolute(),
            config_files,
            data_root.absolute(),
            hf_home.absolute(),
            cwd,
            uv_cache.absolute(),
            (cwd / Path(wheelhouse).expanduser()).absolute() if wheelhouse else None,
        )

    @property
    def envs(self) -> Path:
        return self.home / "envs"

    @property
    def build_locks(self) -> Path:
        return self.home / "locks"

    @property
    def addons(self) -> Path:
        return self.home / "addons"

    @property
    def assets(self) -> Path:
        return self.home / "assets"

    @property
    def stats(self) -> Path:
        return self.home / "stats.json"

    @property
    def pyc_store(self) -> Path:
        """Bytecode shared by every env (runners/pyc_store.py): on the envs' filesystem."""
        return self.home / "pyc-store"

    @property
    def logs(self) -> Path:
        """Whole outputs of failed tool calls (uv, import checks), the newest few kept."""
        return self.home / "logs"
