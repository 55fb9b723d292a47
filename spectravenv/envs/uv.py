"""How spectravenv calls uv: which binary, and with which cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from spectravenv.errors import SpectravenvError
from spectravenv.paths import Paths


def uv_bin() -> str:
    """The uv that came with spectravenv (the `uv` PyPI package), else one on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise SpectravenvError("uv not found; reinstall spectravenv (it depends on the `uv` package)")


def uv_env(paths: Paths) -> dict[str, str]:
    """The environment for uv calls: our cache on the envs' filesystem, so files hardlink."""
    env = dict(os.environ)
    env["UV_CACHE_DIR"] = str(paths.uv_cache)
    env["UV_LINK_MODE"] = "hardlink"
    env.pop("VIRTUAL_ENV", None)  # never let an activated venv redirect an install
    env.setdefault("UV_NO_PROGRESS", "1")
    return env


def uv_cmd(*args: str | Path) -> list[str]:
    return [uv_bin(), *(str(a) for a in args)]
