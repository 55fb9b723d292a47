"""What makes an earlier prediction reusable for a (model, benchmark): its fingerprint.

A pair's fingerprint joins the run's settings (limit, seed), the env (its key hashes the
lock, Python and recipe), the model (source and kwargs as the job file has them: secrets sealed;
a served model's backend and engine version, spectravenv/run/jobfile.py model_spec),
the checkpoint's identity, the dataset file's sha256 and the pair's judge (name, version,
endpoint host and settings; None where the benchmark's scoring calls no judge). A new judge
re-scores the same predictions: the runner keeps them (svrunner.judging), only the evaluation
is done again. The runner reuses saved predictions
only under an equal fingerprint, and the dispatcher counts a finished pair as done only while
its recorded fingerprint still matches. A part that cannot be known (a hub checkpoint not yet
downloaded) is None and is not compared.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

PARTS = ("settings", "env", "model", "checkpoint", "dataset", "judge")


def digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def upgraded(parts: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint recorded before the judge was a part of its own (the run-wide --judge was in
    `settings`), in today's shape, so a finished pair is not redone for the move alone."""
    settings = parts.get("settings")
    if not isinstance(settings, dict) or "judge" not in settings:
        return parts
    judge = settings["judge"]
    rest = {k: v for k, v in settings.items() if k != "judge"}
    return {**parts, "settings": rest, "judge": parts.get("judge") or ({"model": judge} if judge else None)}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The parts that differ; unknown (None) parts on either side are not counted."""
    old, new = upgraded(old), upgraded(new)
    out = []
    for part in PARTS:
        a, b = old.get(part), new.get(part)
        if a is None or b is None or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out.append(f"{part} ({', '.join(keys)})")
        else:
            out.append(part)
    return out


def _dir_identity(path: str) -> str:
    """A folder checkpoint: names, sizes and mtimes of its files (weights are too big to hash)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = os.path.join(root, name)
            st = os.stat(p)
            h.update(f"{os.path.relpath(p, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "dir:" + h.hexdigest()[:16]


def checkpoint_identity(model_path: str | None, hf_home: str | None) -> str | None:
    """A local folder's file listing, or a hub id's cached revision; None when not knowable."""
    if not model_path:
        return None
    local = os.path.expanduser(model_path)
    if os.path.isdir(local):
        return _dir_identity(local)
    if os.path.isfile(local):
        st = os.stat(local)
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    if model_path.count("/") == 1 and hf_home:
        ref = os.path.join(hf_home, "hub", "models--" + model_path.replace("/", "--"), "refs", "main")
        try:
            with open(ref) as fh:
                return f"hub:{model_path}@{fh.read().strip()}"
        except OSError:
            return None  # not downloaded yet: the runner records it after loading
    return None


def dataset_sha256(path: str, cache_dir: str) -> str | None:
    """sha256 of a dataset file, cached by (size, mtime): big TSVs are hashed once, not per run."""
    from .files import sha256_file, write_atomic

    try:
        st = os.stat(path)
    except OSError:
        return None
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = os.path.join(cache_dir, os.path.basename(path) + ".sha256.json")
    try:
        with open(cache) as fh:
            known = json.load(fh)
        if {k: known.get(k) for k in stamp} == stamp:
            return known["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    value = sha256_file(path)
    try:
        write_atomic(cache, json.dumps({**stamp, "sha256": value}) + "\n")
    except OSError:
        pass  # a read-only LMUData: hash again next time
    return value
