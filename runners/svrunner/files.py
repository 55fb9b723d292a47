"""The one atomic-write helper (host and runner), its JSON form, and file hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    Readers see the old file or the new one, never half of either; a crash leaves at worst a
    hidden `.tmp-*` file behind, never a truncated target.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; run folders and data are shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], data: object) -> None:
    """`data` as indented JSON with sorted keys (stable bytes for the same data), atomically."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict | None:
    """A JSON object from a file; None when it is missing, unreadable or not an object (a file
    another process is about to write counts as not there yet)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
