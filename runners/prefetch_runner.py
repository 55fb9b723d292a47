#!/usr/bin/env python
"""Download one Hugging Face checkpoint into the shared cache, inside an env (stdlib plus the
env's huggingface_hub, 0.36 or 2.x), for `spectravenv prefetch`.

    <env>/bin/python runners/prefetch_runner.py JOB_JSON

JOB_JSON: {"repo": "org/name", "revision": "main", "events": PATH,
           "verified": {"file name": "blob id it was verified as"}}

It runs in the env rather than on the host because every env already carries huggingface_hub:
the host needs no hub client of its own, and the cache is written by the same library generation
that the job's transformers reads it with. The token (HF_TOKEN) comes in the environment only.

Files are fetched one at a time with `hf_hub_download` (which resumes a `.incomplete` blob with
an HTTP Range request, after an interruption or within a call), each one then checked against
the hub's own record: the size, and for a file downloaded or not yet verified, the sha256 of an
LFS file or the git blob id of a regular one. A file that fails the check is deleted.

Events, JSON lines appended to PATH (the host turns them into progress bars and the manifest):
    repo      commit, files: [{name, size, blob, lfs}]
    file      name, size, cached
    progress  name, bytes
    retry     name, message (the connection dropped; continuing where it stopped)
    file_done name, size, blob, how: checked (hashed now) | kept (verified before)
    done      commit, requires (other repos its config names, e.g. a LLaVA vision tower)
    error     kind (gated|not_found|revision|network|corrupt|failed), message
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from typing import Any

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
# config.json keys that name another hub repo the model loads at start-up (LLaVA-style vision
# towers): fetched too, or an offline job would fail on them.
REQUIRES_KEYS = ("mm_vision_tower", "vision_tower")
ATTEMPTS = 4  # per file; each continues where the last one stopped


class Events:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def emit(self, event: str, **fields: object) -> None:
        line = json.dumps({"event": event, "time": time.time(), **fields}) + "\n"
        os.write(self.fd, line.encode())


def watch_parent() -> None:
    """Exit when the dispatcher dies (killed outright): nobody would follow this download."""
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=loop, daemon=True).start()


def git_blob_id(path: str, size: int) -> str:
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def classify(exc: BaseException) -> str:
    try:
        from huggingface_hub import errors
    except ImportError:  # older releases keep them in utils
        from huggingface_hub import utils as errors
    for kind, name in (("gated", "GatedRepoError"), ("revision", "RevisionNotFoundError"),
                       ("not_found", "RepositoryNotFoundError"), ("not_found", "EntryNotFoundError")):  # fmt: skip
        cls = getattr(errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return kind
    text = f"{type(exc).__module__}.{type(exc).__name__}"
    if any(w in text for w in ("Connection", "Timeout", "ProtocolError", "ReadError", "NetworkError",
                               "RemoteProtocol", "ChunkedEncoding", "IncompleteRead")):  # fmt: skip
        return "network"
    if "offline" in str(exc).lower():
        return "network"
    return "failed"


def short(exc: BaseException) -> str:
    """The error's first meaningful line (hub errors carry a long help text after it)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = " ".join(lines[:2]) if lines else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:400]


class Monitor:
    """Reports how far the `.incomplete` blob of the file being downloaded has grown."""

    def __init__(self, events: Events, blobs: str) -> None:
        self.events, self.blobs = events, blobs
        self.current: tuple[str, str] | None = None  # (file name, blob id)
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        last = None
        while not self.stop.wait(0.5):
            cur = self.current
            if cur is None:
                continue
            try:
                n = os.path.getsize(os.path.join(self.blobs, cur[1] + ".incomplete"))
            except OSError:
                continue
            if (cur[0], n) != last:
                last = (cur[0], n)
                self.events.emit("progress", name=cur[0], bytes=n)


def download(hf_hub_download: Any, repo: str, name: str, commit: str, events: Events) -> str:
    """One file, by commit (so every file comes from the one revision `repo` described). A
    dropped connection is tried again: huggingface_hub continues the `.incomplete` blob with a
    Range request (it retries some failures itself, but not a body cut short)."""
    for attempt in range(ATTEMPTS):
        try:
            return hf_hub_download(repo, name, revision=commit)
        except Exception as exc:
            if classify(exc) != "network" or attempt + 1 == ATTEMPTS:
                raise
            events.emit("retry", name=name, message=short(exc))
            time.sleep(min(2**attempt, 8))
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        job = json.load(fh)
    events = Events(job["events"])
    watch_parent()
    repo, revision = job["repo"], job.get("revision") or "main"
    verified = job.get("verified") or {}
    try:
        from huggingface_hub import HfApi, constants, hf_hub_download

        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except Exception as exc:
        events.emit("error", kind=classify(exc), message=short(exc))
        return 3
    commit = info.sha
    files = []
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        size = getattr(lfs, "size", None) if lfs else getattr(s, "size", None)
        blob = getattr(lfs, "sha256", None) if lfs else getattr(s, "blob_id", None)
        files.append({"name": s.rfilename, "size": size, "blob": blob, "lfs": bool(lfs)})
    events.emit("repo", commit=commit, files=files)

    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    monitor = Monitor(events, os.path.join(folder, "blobs"))
    for f in files:
        pointer = os.path.join(folder, "snapshots", commit, f["name"])
        cached = os.path.exists(pointer)
        events.emit("file", name=f["name"], size=f["size"], cached=cached)
        try:
            if not cached:
                monitor.current = (f["name"], f["blob"] or "")
                pointer = download(hf_hub_download, repo, f["name"], commit, events)
            real = os.path.realpath(pointer)
            size = os.path.getsize(real)
        except Exception as exc:
            events.emit("error", kind=classify(exc), message=f"{f['name']}: {short(exc)}")
            return 3
        finally:
            monitor.current = None
        problem = None
        if f["size"] is not None and size != f["size"]:
            problem = f"has {size} bytes, the hub says {f['size']}"
        elif f["blob"] and (not cached or verified.get(f["name"]) != f["blob"]):
            got = sha256(real) if f["lfs"] else git_blob_id(real, size)
            if got != f["blob"]:
                problem = f"hashes to {got}, the hub says {f['blob']}"
        if problem:
            for p in (pointer, real):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            events.emit(
                "error", kind="corrupt", message=f"{f['name']} {problem}; deleted it, run again"
            )
            return 3
        done = "kept" if cached and verified.get(f["name"]) == f["blob"] else "checked"
        events.emit("file_done", name=f["name"], size=size, blob=f["blob"], how=done)
    monitor.stop.set()

    if revision != commit:
        # What hf_hub_download(revision="main") would have recorded: which commit "main" is, so
        # transformers finds this snapshot when it runs offline.
        refs = os.path.join(folder, "refs", revision)
        os.makedirs(os.path.dirname(refs), exist_ok=True)
        tmp = f"{refs}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(commit)
        os.replace(tmp, refs)

    requires = []
    config = os.path.join(folder, "snapshots", commit, "config.json")
    try:
        with open(config) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        cfg = {}
    for key in REQUIRES_KEYS:
        value = cfg.get(key) if isinstance(cfg, dict) else None
        if (
            isinstance(value, str)
            and HUB_ID.match(value)
            and value != repo
            and value not in requires
        ):
            requires.append(value)
    events.emit("done", commit=commit, requires=requires)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
