"""Finding the Python interpreter an env is built on."""

from __future__ import annotations

import os
from pathlib import Path

from . import procs
from .errors import SpectravenvError
from .paths import Paths
from .uvtool import uv_cmd, uv_env


def find_python(spec: str, paths: Paths) -> Path:
    """An interpreter for `spec` ("3.10"): what uv finds, else a pyenv install of that version."""
    proc = procs.run(uv_cmd("python", "find", spec), env=uv_env(paths), timeout=120)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip().splitlines()[-1])
    # pyenv shims answer for one version at a time and make uv's discovery fail; its real
    # interpreters are plain folders.
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(
        pyenv_root.glob(f"versions/{spec}.*/bin/python{spec}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parts[-3].split(".")],
    )
    if (pyenv_root / "versions" / spec / "bin" / f"python{spec}").exists():
        candidates.append(pyenv_root / "versions" / spec / "bin" / f"python{spec}")
    if candidates:
        return candidates[-1]
    raise SpectravenvError(
        f"Python {spec} not found: install it (`uv python install {spec}`, pyenv or your "
        f"cluster's module system), or allow uv to download it (UV_PYTHON_DOWNLOADS=automatic)"
    )
