"""Benchmark data and model weights on disk before a run: what a run needs, whether it is there,
and `spectravenv prefetch`, which downloads what is not (on a node with internet access, for
compute nodes without it).

- A benchmark's TSV goes to `$LMUData/<name>.tsv`, from the URL VLMEvalKit itself would use and
  checked against its md5 (generated into the catalog from VLMEvalKit's DATASET_URL/DATASET_MD5,
  or a user's `url`/`md5`). VLMEvalKit uses a file only when its md5 matches and otherwise
  downloads it again, so a file with another md5 counts as missing. The download (`fetch/http.py`,
  the one HTTP door) continues a partial file with an HTTP Range request (after an interruption,
  or within the call when the connection drops); the target is replaced only once the md5
  matches. HF_TOKEN is sent to the hub's hosts only, never along a redirect to another host.
- A model's checkpoint goes to the shared hub cache (`$HF_HOME/hub`), downloaded by
  `runners/prefetch_runner.py` inside the model's env with the env's own huggingface_hub (see
  there why). The hub cache alone cannot say whether a snapshot is complete (a model loaded
  online once leaves a snapshot of the files it happened to read), so prefetch writes a manifest
  per repo and revision, `$HF_HOME/spectravenv/checkpoints/`: the commit and every file of it with
  its size and blob id, each file verified by hash when it was downloaded. A checkpoint is
  present when its manifest exists, the cache's ref still names that commit, and every file is in
  the snapshot with its size; repos its config names (a LLaVA vision tower) are checked as well.
- Built-in models and datasets (the demo) are made locally, API models load no weights: they
  need nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from svrunner import lmudata
from svrunner.files import write_atomic
from svrunner.locking import FileLock, LockBusy
from svrunner.protocol import PREFETCH_KINDS, EventReader

from spectravenv import procs
from spectravenv.catalog.entries import Benchmark, Catalog, Model
from spectravenv.console import plural
from spectravenv.console import size as fmt_size
from spectravenv.errors import SpectravenvError
from spectravenv.fetch import http
from spectravenv.paths import RUNNERS_DIR, Paths
from spectravenv.secrets import Secrets

RUNNER = RUNNERS_DIR / "prefetch_runner.py"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
DATA_LOCK_TIMEOUT = 3600.0  # the lock a job preparing the same dataset holds (svrunner.runner)
SMALL = 1 << 20  # files below this get no progress lines of their own
# Variables that would stop the download runner from reaching the hub, or make it give up
# resuming (hf_transfer restarts a file from zero).
_CHILD_STRIP = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER",
                "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}  # fmt: skip
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


# ---- what a run needs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """One thing a run needs on disk: a benchmark's TSV or a model's checkpoint."""

    owner: str  # the model or benchmark that needs it: what `spectravenv prefetch` is given
    kind: str  # "TSV" | "checkpoint"
    target: str  # the file, or repo@revision
    present: bool
    detail: str
    fetchable: bool = True  # prefetch can get it; else the user must provide it


def checkpoint_of(model: Model) -> str | None:
    """The weights a model loads (a hub id or a local path); None when it loads none."""
    if model.builtin or model.kind == "api":
        return None
    return model.kwargs.get("model_path") or model.checkpoint


def is_hub_id(checkpoint: str) -> bool:
    """`org/name` that is not a local folder (transformers prefers an existing folder too)."""
    return bool(HUB_ID.match(checkpoint)) and not Path(checkpoint).expanduser().exists()


def hub_cache(paths: Paths, environ: Mapping[str, str]) -> Path:
    """Where huggingface_hub keeps repos, as the jobs' huggingface_hub will see it."""
    explicit = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(explicit).expanduser() if explicit else paths.hf_home / "hub"


def repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def manifest_path(paths: Paths, repo: str, revision: str) -> Path:
    return (
        paths.hf_home
        / "spectravenv"
        / "checkpoints"
        / f"{repo_folder(repo)}@{quote(revision, safe='')}.json"
    )


def tsv_path(paths: Paths, bench: Benchmark) -> Path:
    return paths.data_root / f"{bench.name}.tsv"


def md5_of(path: Path, cache_dir: Path) -> str:
    """md5 of a file, cached by (size, mtime): official TSVs are big, and a run checks them all."""
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = cache_dir / f"{path.name}.md5.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(cache.read_text())
        if {k: known.get(k) for k in stamp} == stamp:
            return known["md5"]
    h = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    with contextlib.suppress(OSError):  # a read-only LMUData: hash again next time
        write_atomic(cache_dir / cache.name, json.dumps({**stamp, "md5": h.hexdigest()}) + "\n")
    return h.hexdigest()


def _md5_cache(paths: Paths) -> Path:
    return Path(lmudata.md5_cache(str(paths.data_root)))


def tsv_need(bench: Benchmark, paths: Paths) -> Need | None:
    if bench.builtin:
        return None  # generated locally by the runner
    if bench.tsv is not None:
        ok = bench.tsv.is_file()
        return Need(
            bench.name,
            "TSV",
            str(bench.tsv),
            ok,
            "your file" if ok else "your file does not exist",
            False,
        )
    target = tsv_path(paths, bench)
    if not bench.url:
        ok = target.is_file()
        return Need(bench.name, "TSV", str(target), ok,
                    "present (no md5 known to check it)" if ok else
                    "absent, and no download URL is known: put the file there, or give the benchmark "
                    "`url` and `md5` in spectravenv.toml", False)  # fmt: skip
    if not target.is_file():
        return Need(bench.name, "TSV", str(target), False, f"absent (from {bench.url})")
    if bench.md5 is None:
        return Need(
            bench.name, "TSV", str(target), True, "present (VLMEvalKit knows no md5 for it)"
        )
    got = md5_of(target, _md5_cache(paths))
    if got != bench.md5:
        return Need(bench.name, "TSV", str(target), False,
                    f"md5 {got} is not VLMEvalKit's {bench.md5} (it would download the file again)")  # fmt: skip
    return Need(bench.name, "TSV", str(target), True, "md5 ok")


def read_manifest(paths: Paths, repo: str, revision: str) -> dict[str, Any] | None:
    try:
        data = json.loads(manifest_path(paths, repo, revision).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("commit") else None


def checkpoint_problem(repo: str, revision: str, paths: Paths, environ: Mapping[str, str],
                       seen: set[str] | None = None) -> str | None:  # fmt: skip
    """Why the cache does not hold the whole snapshot of repo@revision; None when it does."""
    seen = set() if seen is None else seen
    seen.add(repo)
    cache = hub_cache(paths, environ)
    folder = cache / repo_folder(repo)
    man = read_manifest(paths, repo, revision)
    if man is None:
        if (folder / "snapshots").is_dir():
            return (f"in {cache}, but never verified complete by `spectravenv prefetch` (a partial "
                    "download looks the same)")  # fmt: skip
        return f"not in {cache}"
    commit = man["commit"]
    if revision != commit:
        try:
            ref = (folder / "refs" / revision).read_text().strip()
        except OSError:
            return f"the cache has no refs/{revision} (it was verified as commit {commit[:12]})"
        if ref != commit:
            return f"the cache's refs/{revision} is now {ref[:12]}, not the verified {commit[:12]}"
    snapshot = folder / "snapshots" / commit
    for f in man.get("files", []):
        try:
            size = (snapshot / f["name"]).stat().st_size
        except OSError:
            return f"{f['name']} is missing from snapshot {commit[:12]}"
        if f.get("size") is not None and size != f["size"]:
            return f"{f['name']} has {size} bytes, not {f['size']}"
    for dep in man.get("requires", []):
        if dep not in seen:
            why = checkpoint_problem(dep, "main", paths, environ, seen)
            if why:
                return (
                    f"it loads {dep}, which is {why}"
                    if why.startswith("not in")
                    else f"its {dep}: {why}"
                )
    return None


def checkpoint_need(model: Model, paths: Paths, environ: Mapping[str, str]) -> Need | None:
    ckpt = checkpoint_of(model)
    if not ckpt:
        return None
    if not is_hub_id(ckpt):
        local = Path(ckpt).expanduser()
        ok = local.exists()
        detail = (
            "a local checkpoint" if ok else "not a hub id (org/name), and no such file or folder"
        )
        return Need(model.name, "checkpoint", ckpt, ok, detail, False)
    revision = "main"
    why = checkpoint_problem(ckpt, revision, paths, environ)
    if why is None:
        man = read_manifest(paths, ckpt, revision) or {}
        total = sum(f.get("size") or 0 for f in man.get("files", []))
        detail = f"complete ({plural(len(man.get('files', [])), 'file')}, {fmt_size(total)})"
        return Need(model.name, "checkpoint", f"{ckpt}@{revision}", True, detail)
    return Need(model.name, "checkpoint", f"{ckpt}@{revision}", False, why)


def needs(models: list[Model], benchmarks: list[Benchmark], paths: Paths,
          environ: Mapping[str, str] | None = None) -> list[Need]:  # fmt: skip
    environ = os.environ if environ is None else environ
    out = [n for b in benchmarks if (n := tsv_need(b, paths))]
    out += [n for m in models if (n := checkpoint_need(m, paths, environ))]
    return out


def fetch_command(missing: list[Need]) -> str | None:
    names = list(dict.fromkeys(n.owner for n in missing if n.fetchable))
    return f"spectravenv prefetch {' '.join(names)}" if names else None


def describe(items: list[Need], paths: Paths) -> str:
    """What a run needs on disk and whether it is there (for --dry-run)."""
    if not items:
        return "data and weights: nothing to fetch (built-in or API only)"
    from spectravenv.console import table

    rows = [
        ("present" if n.present else "MISSING", n.kind, n.owner, n.target, n.detail) for n in items
    ]
    lines = [f"data and weights (LMUData={paths.data_root}, HF_HOME={paths.hf_home}):",
             table(("state", "what", "for", "where", "detail"), rows)]  # fmt: skip
    missing = [n for n in items if not n.present]
    cmd = fetch_command(missing)
    if cmd:
        lines.append(f"fetch what is missing on a node with internet access: {cmd}")
    return "\n".join(lines)


# ---- progress --------------------------------------------------------------------------------


class Progress:
    """One bar per file: redrawn in place on a terminal, plain lines (every 10%) elsewhere; a
    small file (under 1 MB) only says when it is done."""

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.label, self.total, self.done = "", None, 0
        self._last_draw, self._last_step = 0.0, -1

    def start(self, label: str, total: int | None, done: int = 0) -> None:
        self.label, self.total, self.done = label, total, done
        self._last_draw, self._last_step = 0.0, -1
        self.update(done, force=True)

    def _text(self) -> str:
        if not self.total:
            return f"{self.label}: {fmt_size(self.done)}"
        pct = min(100, int(self.done * 100 / self.total))
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        return f"{self.label} [{bar}] {pct:3d}% {fmt_size(self.done)} of {fmt_size(self.total)}"

    def update(self, done: int, force: bool = False) -> None:
        self.done = done
        if self.tty:
            now = time.monotonic()
            if force or now - self._last_draw > 0.2:
                self._last_draw = now
                self.stream.write("\r" + self._text() + "\033[K")
                self.stream.flush()
            return
        if self.total and self.total < SMALL:
            return
        step = int(done * 10 / self.total) if self.total else done // (256 << 20)
        if step != self._last_step:
            self._last_step = step
            self.stream.write(self._text() + "\n")
            self.stream.flush()

    def finish(self, note: str) -> None:
        if self.tty:
            self.stream.write("\r" + f"{self.label}: {note}" + "\033[K\n")
        else:
            self.stream.write(f"{self.label}: {note}\n")
        self.stream.flush()


# ---- downloading TSVs ------------------------------------------------------------------------


def _hub_hosts(environ: Mapping[str, str]) -> set[str]:
    hosts = {"huggingface.co"}
    if environ.get("HF_ENDPOINT"):
        hosts.add(urlsplit(environ["HF_ENDPOINT"]).netloc)
    return hosts


def candidate_urls(url: str, environ: Mapping[str, str]) -> list[str]:
    """The URL, as VLMEvalKit tries it: a huggingface.co file also from hf-mirror.com; with
    HF_ENDPOINT set (a mirror the site runs), from there first."""
    parts = urlsplit(url)
    if parts.netloc != "huggingface.co":
        return [url]
    out = []
    if environ.get("HF_ENDPOINT"):
        ep = environ["HF_ENDPOINT"].rstrip("/")
        out.append(ep + url[len(f"{parts.scheme}://{parts.netloc}") :])
    return [*out, url, url.replace("://huggingface.co", "://hf-mirror.com", 1)]


def fetch_tsv(bench: Benchmark, paths: Paths, secrets: Secrets, err: TextIO,
              environ: Mapping[str, str]) -> str:  # fmt: skip
    """Download a benchmark's TSV into $LMUData; returns what happened (one line)."""
    need = tsv_need(bench, paths)
    if need is None or need.present:
        return f"{bench.name}: TSV {need.detail if need else 'built in'}"
    if not need.fetchable:
        raise SpectravenvError(f"{bench.name}: {need.target}: {need.detail}")
    target = tsv_path(paths, bench)
    lock = FileLock(lmudata.dataset_lock(str(paths.data_root), bench.name), f"preparing dataset {bench.name}")
    try:
        lock.acquire(
            DATA_LOCK_TIMEOUT, on_wait=lambda h: err.write(f"waiting for {lock.busy_message(h)}\n")
        )
    except LockBusy as e:
        raise SpectravenvError(str(e)) from None
    try:
        again = tsv_need(bench, paths)  # someone else may have fetched it while we waited
        if again is not None and again.present:
            return f"{bench.name}: TSV {again.detail}"
        part = Path(lmudata.download_part(str(paths.data_root), bench.name))
        part.parent.mkdir(parents=True, exist_ok=True)
        progress = Progress(err)
        token = next((secrets.values.get(v) or environ.get(v) for v in TOKEN_VARS
                      if secrets.values.get(v) or environ.get(v)), None)  # fmt: skip
        # The token goes to the hub (or the site's mirror of it) only: never to another host,
        # nor along a redirect (http.fetch sends it to these hosts alone).
        auth = {host: f"Bearer {token}" for host in _hub_hosts(environ)} if token else {}
        try:
            http.fetch(candidate_urls(bench.url, environ), part, progress, f"{bench.name}.tsv", auth)
        except http.DownloadFailed as e:
            kept = part.stat().st_size if part.exists() else 0
            hint = (
                f"; the {fmt_size(kept)} downloaded so far is kept: the same command continues it"
                if kept
                else ""
            )
            raise SpectravenvError(f"{bench.name}: cannot download its TSV ({e}){hint}") from None
        got = hashlib.md5()
        with part.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                got.update(chunk)
        if bench.md5 and got.hexdigest() != bench.md5:
            http.forget(part)
            raise SpectravenvError(
                f"{bench.name}: the file from {bench.url} has md5 {got.hexdigest()}, not the {bench.md5} "
                f"VLMEvalKit expects; it was deleted, {target} is left as it was (the server may hold "
                "another version: check the benchmark's url and md5)"
            )
        size = part.stat().st_size
        os.replace(part, target)
        http.forget(part)  # the record of the part, now that it is the target
        if bench.md5:
            md5_of(target, _md5_cache(paths))  # cache it: the plan-time check reads it
        progress.finish(f"done, {fmt_size(size)}" + (", md5 ok" if bench.md5 else ""))
        return f"{bench.name}: TSV downloaded to {target}"
    finally:
        lock.release()


# ---- downloading checkpoints -----------------------------------------------------------------


def _redactor(secrets: Secrets, environ: Mapping[str, str]) -> Secrets:
    """Secrets to mask in everything shown or kept: .env's and a token from the environment."""
    extra = {v: environ[v] for v in TOKEN_VARS if environ.get(v)}
    return Secrets({**extra, **secrets.values}, secrets.source)


def runner_env(paths: Paths, secrets: Secrets, environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k not in _CHILD_STRIP}
    env.update(HF_HOME=str(paths.hf_home), HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")  # fmt: skip
    # The hub token only: the download needs no other secret from .env.
    for var in TOKEN_VARS:
        if secrets.values.get(var):
            env[var] = secrets.values[var]
    return env


def _hub_error(kind: str, repo: str, message: str, has_token: bool, env_file: str) -> str:
    page = f"https://huggingface.co/{repo}"
    if kind == "gated":
        if has_token:
            return (f"{repo} is gated and the HF_TOKEN given has no access to it: accept its conditions "
                    f"on {page} with that account, then run again")  # fmt: skip
        return (f"{repo} is gated: accept its conditions on {page} and put HF_TOKEN=hf_... in "
                f"{env_file} (a token of that account), then run again")  # fmt: skip
    if kind == "not_found":
        hint = (
            "or HF_TOKEN has no access to it"
            if has_token
            else f"or private/gated: put HF_TOKEN=hf_... in {env_file}"
        )
        return f"{repo} was not found on the hub ({hint}): {message}"
    if kind == "revision":
        return f"{repo}: no such revision on the hub: {message}"
    if kind == "network":
        return (f"{repo}: cannot reach the hub ({message}); what is downloaded is kept: the same "
                "command continues it")  # fmt: skip
    return f"{repo}: {message}"


@dataclass
class _Follow:
    """What the download runner has reported so far (its events), drawn as it comes."""

    repo: str
    err: TextIO
    progress: Progress
    info: dict[str, Any] | None = None  # the repo event: commit and files
    result: dict[str, Any] | None = None  # repo_done
    failure: dict[str, Any] | None = None  # repo_failed
    current: str | None = None  # the file being downloaded

    def take(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "repo":
            self.info = ev
            total = sum(f.get("size") or 0 for f in ev["files"])
            self.err.write(f"{self.repo}: commit {ev['commit'][:12]}, "
                           f"{plural(len(ev['files']), 'file')}, {fmt_size(total)}\n")  # fmt: skip
        elif kind == "file" and not ev.get("cached"):
            self.current = ev["name"]
            self.progress.start(f"  {ev['name']}", ev.get("size"))
        elif kind == "file_progress" and ev.get("name") == self.current:
            self.progress.update(int(ev["bytes"]))
        elif kind == "file_done" and ev.get("name") == self.current:
            self.progress.done = ev.get("size") or self.progress.done
            self.progress.finish(f"done, {fmt_size(ev.get('size') or 0)}, hash ok")
            self.current = None
        elif kind == "repo_done":
            self.result = ev
        elif kind == "repo_failed":
            self.failure = ev


def _download_runner(repo: str, python: Path, paths: Paths, secrets: Secrets, err: TextIO,
                     environ: Mapping[str, str], verified: dict[str, Any]) -> _Follow:  # fmt: skip
    """Run runners/prefetch_runner.py in the env for repo@main and follow its events to the end.
    Its output goes to a log, masked; the log is deleted when it succeeds."""
    with tempfile.TemporaryDirectory(prefix="spectravenv-prefetch-") as tmp:
        events, job = Path(tmp) / "events.jsonl", Path(tmp) / "job.json"
        job.write_text(json.dumps({"repo": repo, "revision": "main", "events": str(events),
                                   "verified": verified}))  # fmt: skip
        log = paths.logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-prefetch-{repo_folder(repo)}.log"
        proc, pump = procs.spawn([python, RUNNER, job], log=log, env=runner_env(paths, secrets, environ),
                                 masker=_redactor(secrets, environ).redactor.stream())  # fmt: skip
        follow = _Follow(repo, err, Progress(err))
        reader = EventReader(str(events), kinds=PREFETCH_KINDS)
        try:
            while True:
                alive = proc.poll() is None
                for ev in reader.read():
                    follow.take(ev)
                if not alive:
                    break
                time.sleep(0.2)
        except BaseException:
            procs.stop_trees([proc], grace=4.0)
            raise
        finally:
            pump.join(timeout=10)
    if follow.current is not None:
        follow.progress.finish("stopped")
    if follow.result is None:
        masked = _redactor(secrets, environ)
        kind = (follow.failure or {}).get("kind", "failed")
        message = masked.redact((follow.failure or {}).get("message")
                                or f"the download runner exited with {proc.returncode}")  # fmt: skip
        token = any(masked.values.get(v) for v in TOKEN_VARS)
        env_file = str(secrets.source or ".env")
        raise SpectravenvError(_hub_error(kind, repo, message, token, env_file) + f" (log: {log})")
    with contextlib.suppress(OSError):
        log.unlink()
    return follow


def fetch_checkpoint(repo: str, python: Path, paths: Paths, secrets: Secrets, err: TextIO,
                     environ: Mapping[str, str], seen: set[str] | None = None) -> str:  # fmt: skip
    """Download repo@main into the hub cache with the env's huggingface_hub, verify it, and
    record the manifest; returns what happened (one line)."""
    seen = set() if seen is None else seen
    seen.add(repo)
    revision = "main"
    old = read_manifest(paths, repo, revision) or {}
    if checkpoint_problem(repo, revision, paths, environ) is None:
        return f"{repo}: complete ({plural(len(old.get('files', [])), 'file')}), nothing to fetch"
    verified = {f["name"]: f.get("blob") for f in old.get("files", [])}
    follow = _download_runner(repo, python, paths, secrets, err, environ, verified)
    result, info = follow.result or {}, follow.info or {}
    requires = list(result.get("requires", []))
    manifest = {
        "repo": repo,
        "revision": revision,
        "commit": result["commit"],
        "files": [
            {"name": f["name"], "size": f.get("size"), "blob": f.get("blob")} for f in info["files"]
        ],
        "requires": requires,
        "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for dep in requires:
        if dep not in seen:
            err.write(f"{repo} loads {dep} too (its config.json names it): fetching it\n")
            err.write(fetch_checkpoint(dep, python, paths, secrets, err, environ, seen) + "\n")
    write_atomic(manifest_path(paths, repo, revision), json.dumps(manifest, indent=1) + "\n")
    return f"{repo}: complete ({plural(len(manifest['files']), 'file')}, commit {result['commit'][:12]})"


# ---- prefetch ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed ssh session) stop a prefetch like Ctrl-C: the download runner
    is stopped with it, and what is downloaded so far stays for the next attempt."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def fetch(catalog: Catalog, models: list[Model], benchmarks: list[Benchmark], paths: Paths,
          secrets: Secrets, err: TextIO, environ: Mapping[str, str] | None = None) -> list[str]:  # fmt: skip
    """Fetch every TSV and checkpoint these need that is not complete already. A failure does
    not stop the others; at the end one error (one line) says what failed and why."""
    from spectravenv.envs import venv as envs

    environ = os.environ if environ is None else environ
    masked = _redactor(secrets, environ)
    done: list[str] = []
    failed: list[str] = []  # messages, each naming what failed

    def attempt(fn: Any) -> None:
        try:
            done.append(fn())
            err.write(masked.redact(done[-1]) + "\n")
        except SpectravenvError as e:
            failed.append(masked.redact(str(e)))
        err.flush()

    with _stop_on_signals():
        paths.data_root.mkdir(parents=True, exist_ok=True)
        for b in benchmarks:
            attempt(lambda b=b: fetch_tsv(b, paths, secrets, err, environ))
        repos: dict[str, Model] = {}
        for m in models:
            need = checkpoint_need(m, paths, environ)
            if need is None:
                err.write(
                    f"{m.name}: {'an API model' if m.kind == 'api' else 'built in'}, no weights to fetch\n"
                )
            elif need.present:
                err.write(masked.redact(f"{m.name}: {need.target} {need.detail}") + "\n")
            elif not need.fetchable:
                failed.append(masked.redact(f"{m.name}: {need.target}: {need.detail}"))
            else:
                repos.setdefault(checkpoint_of(m), m)
        for repo, m in repos.items():

            def one(repo: str = repo, m: Model = m) -> str:
                # The model's own env: the cache is then written by the huggingface_hub its
                # job reads it with (building the env now costs nothing later: the job needs it).
                state = envs.ensure(
                    catalog.envs[m.env], paths, report=lambda s: err.write(s + "\n")
                )
                return fetch_checkpoint(repo, state.python, paths, secrets, err, environ)

            attempt(one)
    if len(failed) == 1:
        raise SpectravenvError(failed[0])
    if failed:
        raise SpectravenvError(
            f"prefetch: {len(failed)} of {len(failed) + len(done)} failed: {' | '.join(failed)}"
        )
    return done
