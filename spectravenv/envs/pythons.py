"""Finding the Python interpreter an env is built on, and inspecting a site-provided one."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectravenv import procs
from spectravenv.envs.uv import uv_cmd, uv_env
from spectravenv.errors import SpectravenvError
from spectravenv.paths import Paths


def find_python(spec: str, paths: Paths, *, offline: bool = False) -> Path:
    """An interpreter for `spec` ("3.10"): what uv finds, else a pyenv install of that version.

    `offline` (a build from a wheelhouse): uv is told not to touch the network, and the error
    says how to provide an interpreter on a machine where none can be downloaded.
    """
    flags = ["--offline", "--no-python-downloads"] if offline else []
    proc = procs.run(uv_cmd("python", "find", *flags, spec), env=uv_env(paths), timeout=120)
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
    if offline:
        raise SpectravenvError(
            f"Python {spec} not found, and a build from a wheelhouse downloads nothing: put a "
            f"Python {spec} on PATH (your module system, e.g. `module load python/{spec}`), under "
            f"$PYENV_ROOT/versions/, or in UV_PYTHON_INSTALL_DIR (copy a folder that `uv python "
            f"install {spec}` made on a connected machine); keep UV_PYTHON_DOWNLOADS=never on "
            "nodes without network so uv never tries to fetch one"
        )
    raise SpectravenvError(
        f"Python {spec} not found: install it (`uv python install {spec}`, pyenv or your "
        f"cluster's module system), or allow uv to download it (UV_PYTHON_DOWNLOADS=automatic)"
    )


# ---- a site-provided base interpreter (`base_python`) -----------------------------------------

# Runs under the base interpreter (`-I`: no PYTHONPATH, no user site, no working directory), so
# what it sees is what the base itself provides. Stdlib only; any Python 3.
_BASE_PROBE = r"""
import hashlib, json, os, re, site, sys
from importlib import metadata as md
seen = {}
for entry in sys.path:
    try:
        names = sorted(os.listdir(entry or "."))
    except OSError:
        continue
    for n in names:
        if not n.endswith((".dist-info", ".egg-info")):
            continue
        path = os.path.join(entry, n)
        stem = n.rsplit(".", 1)[0]
        name, _, version = stem.partition("-")
        if n.endswith(".egg-info") or not version or "-" in version:
            # an egg-info name may lack the version or add a Python tag: ask its metadata
            dist = md.Distribution.at(path)
            name, version = dist.metadata["Name"] or "", dist.version or ""
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not key or not version or key in seen:
            continue  # shadowed by an earlier entry of sys.path, as an import would be
        try:
            with open(os.path.join(path, "RECORD"), "rb") as f:
                record = hashlib.sha256(f.read()).hexdigest()[:16]
        except OSError:
            record = ""
        seen[key] = [version, record]
print(json.dumps({
    "python": "%d.%d.%d" % sys.version_info[:3],
    "executable": sys.executable,
    "site_dirs": [p for p in site.getsitepackages() if os.path.isdir(p)],
    "packages": seen,
}, sort_keys=True))
"""


@dataclass(frozen=True)
class BaseInterpreter:
    """What a `base_python` provides: its Python version, its site folders, and every
    distribution it can import, with version and a digest of its RECORD (a package rebuilt at
    the same version is still a different base)."""

    path: Path
    python: str
    site_dirs: tuple[str, ...]
    packages: dict[str, tuple[str, str]]

    def version_of(self, name: str) -> str | None:
        got = self.packages.get(name)
        return got[0] if got else None

    def digest(self) -> str:
        return hashlib.sha256(
            json.dumps(self.record(full=True), sort_keys=True).encode()
        ).hexdigest()

    def record(self, *, full: bool = False) -> dict[str, Any]:
        """For markers and run.json (names and versions); `full` adds the RECORD digests."""
        return {
            "path": str(self.path),
            "python": self.python,
            "site_dirs": list(self.site_dirs),
            "packages": {n: (list(v) if full else v[0]) for n, v in sorted(self.packages.items())},
        }


def inspect_base(path: Path, env_name: str) -> BaseInterpreter:
    """Run the base interpreter once to list what it provides (~0.1 s)."""
    if not os.access(path, os.X_OK) or path.is_dir():
        raise SpectravenvError(
            f"env {env_name!r}: base_python {path} is not an executable Python interpreter here; "
            "fix base_python in your spectravenv.toml (an absolute path such as "
            "/opt/site/bin/python3.10)"
        )
    proc = procs.run([path, "-I", "-c", _BASE_PROBE], timeout=120)
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SpectravenvError(
            f"env {env_name!r}: base_python {path} could not list its packages: {last}"
        ) from None
    return BaseInterpreter(
        path=path,
        python=info["python"],
        site_dirs=tuple(info["site_dirs"]),
        packages={k: (v[0], v[1]) for k, v in info["packages"].items()},
    )
