"""What a run records about itself (run.json): spectravenv's revision, each attempt's command,
host and GPUs, and every env's lock, key and versions; and building the envs it needs."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from spectravenv import __version__
from spectravenv.envs import venv as envs
from spectravenv.errors import SpectravenvError
from spectravenv.paths import PACKAGE_DIR
from spectravenv.run.state import Eval


def _checkout_head(top: Path) -> str | None:
    """HEAD of a spectravenv checkout at `top` (None: not one, or git cannot tell)."""
    pyproject = top / "pyproject.toml"
    if not ((top / ".git").exists() and pyproject.is_file() and 'name = "spectravenv"' in pyproject.read_text()):
        return None
    from spectravenv import procs

    with contextlib.suppress(SpectravenvError):
        proc = procs.run(["git", "-C", top, "rev-parse", "HEAD"], timeout=5)
        if proc.returncode == 0:
            return proc.stdout.strip()
    return None


def install_from(direct: dict[str, Any] | None, record_sha256: str | None,
                 package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:  # fmt: skip
    """How spectravenv was installed, from pip's direct_url.json (PEP 610): `vcs` (pip recorded
    the commit), `clone` (a local folder: its HEAD now), `wheel` (a file: its sha256 as pip
    recorded it) or `index` (a registry: the sha256 of the installed RECORD identifies the files)."""
    direct = direct or {}
    url = str(direct.get("url") or "")
    if "vcs_info" in direct:
        return {"kind": "vcs", "url": url, "commit": direct["vcs_info"].get("commit_id")}
    if "dir_info" in direct and url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        folder = Path(unquote(urlparse(url).path))
        if direct["dir_info"].get("editable") and folder != package_dir.parent:
            return {"kind": "unknown"}  # an editable install of another copy than this one
        kind = "editable" if direct["dir_info"].get("editable") else "clone"
        return {"kind": kind, "url": url, "commit": _checkout_head(folder)}
    if "archive_info" in direct:
        hashes = direct["archive_info"].get("hashes") or {}
        legacy = str(direct["archive_info"].get("hash") or "")
        sha = hashes.get("sha256") or (legacy.split("=", 1)[1] if legacy.startswith("sha256=") else None)
        return {"kind": "wheel", "url": url, "sha256": sha}
    return {"kind": "index", "sha256": record_sha256}


def install_info(package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """spectravenv's own install: a checkout it runs from (its HEAD), or what pip recorded."""
    import hashlib
    import json
    from importlib import metadata

    head = _checkout_head(package_dir.parent)
    if head is not None:
        return {"kind": "checkout", "commit": head}
    with contextlib.suppress(metadata.PackageNotFoundError, ValueError, TypeError):
        dist = metadata.distribution("spectravenv")
        direct = dist.read_text("direct_url.json")
        record = dist.read_text("RECORD")
        digest = hashlib.sha256(record.encode()).hexdigest() if record else None
        return install_from(json.loads(direct) if direct else None, digest, package_dir)
    return {"kind": "unknown"}


def git_revision(package_dir: Path = PACKAGE_DIR) -> str | None:
    """spectravenv's own commit: of the checkout it runs from (an editable install), of the clone
    it was installed from, or what pip recorded for an install from git. Never the HEAD of some
    repository it happens to sit in."""
    return install_info(package_dir).get("commit")


def env_provenance(st: Eval) -> dict[str, Any]:
    return {
        name: {
            "lock": str(s.env.lock),
            "lock_sha256": (s.marker or {}).get("lock_sha256"),
            "key": s.key,
            "python": (s.marker or {}).get("python"),
            "versions": (s.marker or {}).get("versions", {}),
            "cuda_runtime": (s.marker or {}).get("cuda_runtime"),
            # base_python envs: the base's path, Python and package versions (part of the key).
            "base_python": (s.marker or {}).get("base_python"),
        }
        for name, s in sorted(st.states.items())
    }


def _spectravenv() -> dict[str, Any]:
    install = install_info()
    return {"version": __version__, "git_revision": install.get("commit"), "install": install}


def begin_attempt(st: Eval) -> None:
    """run.json: everything needed to compare two runs from their manifests alone; each attempt
    (the first run and every resume) keeps its own provenance."""
    old = st.existing or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.t0))
    command = st.secrets.redact(" ".join(st.req.argv))
    attempt = {
        "started": now,
        "command": command,
        "host": socket.gethostname(),
        "launcher": st.req.launcher,
        "spectravenv": _spectravenv(),
        "gpus": [{"index": g.index, "name": g.name, "memory_total_mb": g.memory_total_mb,
                  "driver": g.driver, "used": g in st.pool} for g in st.inventory],
        "envs": {},
    }
    st.manifest = {
        **old,
        "schema": 2,
        "run": st.run.path.name,
        "spectravenv": attempt["spectravenv"],
        "command": old.get("command", command),
        "attempts": [*old.get("attempts", []), attempt],
        "started": old.get("started", now),
        "finished": None,
        "status": "running",
        "host": attempt["host"],
        "launcher": st.req.launcher,
        "models": sorted(set(old.get("models", [])) | set(st.models)),
        "benchmarks": sorted(set(old.get("benchmarks", [])) | set(st.benchmarks)),
        "skipped_pairs": sorted({*map(tuple, old.get("skipped_pairs", [])), *st.plan.dropped}),
        **st.settings,
        "gpus": attempt["gpus"],
        "secrets_passed": st.secrets.names,  # names only, never values
    }
    st.run.write_manifest(st.manifest)
    st.started_work = True


def build_envs(st: Eval) -> None:
    """Build what is missing, before anything runs: one build per env, under its file lock."""
    st.states = {name: envs.ensure(st.catalog.envs[name], st.paths, report=st.say) for name in st.states}
    st.addon_dirs = {
        j.id: [envs.ensure_addon(st.catalog.addons[a], st.states[j.env.name], st.paths, report=st.say)
               for a in j.model.addons]
        for j in st.plan.todo
    }  # fmt: skip
    provenance = env_provenance(st)
    st.manifest["attempts"][-1]["envs"] = provenance
    # The run's envs: the latest attempt's provenance per env (every attempt keeps its own).
    st.manifest["envs"] = {**st.manifest.get("envs", {}), **provenance}
    st.run.write_manifest(st.manifest)

