#!/usr/bin/env python
"""Download one Hugging Face checkpoint into the shared cache, inside an env (stdlib, svrunner
beside this file, and the env's huggingface_hub, 0.36 or 2.x), for `spectravenv prefetch`.
No HTTP of its own: every request is huggingface_hub's.

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

Events go to PATH in the events format of svrunner.protocol, its prefetch vocabulary
(PREFETCH_KINDS: repo, file, file_progress, retry, file_done, repo_done, repo_failed; the fields
are listed there), masked of the token; the host reads them with the protocol's reader and
turns them into progress bars and the manifest.
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

from svrunner.files import write_atomic
from svrunner.protocol import PREFETCH_KINDS, EventLog
from svrunner.redact import Redactor

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
# config.json keys that name another hub repo the model loads at start-up (LLaVA-style vision
# towers): fetched too, or an offline job would fail on them.
REQUIRES_KEYS = ("mm_vision_tower", "vision_tower")
ATTEMPTS = 4  # per file; each continues where the last one stopped


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

    def __init__(self, events: EventLog, blobs: str) -> None:
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
                self.events.emit("file_progress", name=cur[0], bytes=n)


def download(hf_hub_download: Any, repo: str, name: str, commit: str, events: EventLog) -> str:
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


def list_files(info: Any) -> list[dict[str, Any]]:
    """The repo's files as the hub records them: size, and the sha256 of an LFS file or the git
    blob id of a regular one."""
    files = []
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        size = getattr(lfs, "size", None) if lfs else getattr(s, "size", None)
        blob = getattr(lfs, "sha256", None) if lfs else getattr(s, "blob_id", None)
        files.append({"name": s.rfilename, "size": size, "blob": blob, "lfs": bool(lfs)})
    return files


def problem_with(f: dict[str, Any], real: str, size: int, hash_it: bool) -> str | None:
    """Why the file on disk is not the hub's; None when it is."""
    if f["size"] is not None and size != f["size"]:
        return f"has {size} bytes, the hub says {f['size']}"
    if f["blob"] and hash_it:
        got = sha256(real) if f["lfs"] else git_blob_id(real, size)
        if got != f["blob"]:
            return f"hashes to {got}, the hub says {f['blob']}"
    return None


def fetch_file(f: dict[str, Any], repo: str, commit: str, folder: str, verified: dict[str, Any],
               monitor: Monitor, events: EventLog) -> bool:  # fmt: skip
    """One file into the snapshot, checked; False (an event said why) when it failed."""
    from huggingface_hub import hf_hub_download

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
        events.emit("repo_failed", kind=classify(exc), message=f"{f['name']}: {short(exc)}")
        return False
    finally:
        monitor.current = None
    kept = cached and verified.get(f["name"]) == f["blob"]  # hashed by an earlier prefetch
    problem = problem_with(f, real, size, hash_it=not kept)
    if problem:
        for p in (pointer, real):
            try:
                os.unlink(p)
            except OSError:
                pass
        events.emit("repo_failed", kind="corrupt", message=f"{f['name']} {problem}; deleted it, run again")
        return False
    events.emit("file_done", name=f["name"], size=size, blob=f["blob"], how="kept" if kept else "checked")
    return True


def required_repos(folder: str, commit: str, repo: str) -> list[str]:
    """Other hub repos the snapshot's config.json names (a LLaVA vision tower)."""
    try:
        with open(os.path.join(folder, "snapshots", commit, "config.json")) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        return []
    values = [cfg.get(key) for key in REQUIRES_KEYS] if isinstance(cfg, dict) else []
    found = [v for v in values if isinstance(v, str) and HUB_ID.match(v) and v != repo]
    return list(dict.fromkeys(found))


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        job = json.load(fh)
    repo, revision = job["repo"], job.get("revision") or "main"
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or ""
    events = EventLog(job["events"], repo, 0, Redactor([token]), kinds=PREFETCH_KINDS)
    watch_parent()
    try:
        from huggingface_hub import HfApi, constants

        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except Exception as exc:
        events.emit("repo_failed", kind=classify(exc), message=short(exc))
        return 3
    commit, files = info.sha, list_files(info)
    events.emit("repo", commit=commit, files=files)

    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    monitor = Monitor(events, os.path.join(folder, "blobs"))
    for f in files:
        if not fetch_file(f, repo, commit, folder, job.get("verified") or {}, monitor, events):
            return 3
    monitor.stop.set()
    if revision != commit:
        # What hf_hub_download(revision="main") would have recorded: which commit "main" is, so
        # transformers finds this snapshot when it runs offline.
        write_atomic(os.path.join(folder, "refs", revision), commit)
    events.emit("repo_done", commit=commit, requires=required_repos(folder, commit, repo))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
