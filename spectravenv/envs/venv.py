"""Where models run: one immutable, hash-keyed virtualenv per catalog env, built with uv.

An env's folder is `<home>/envs/<name>-<key>`, where the key hashes everything that defines it
(lock bytes, Python version, transformers pin, build recipe). A changed lock therefore gives a new
folder; nothing is ever upgraded in place. A build happens in a temporary folder under a file lock,
is verified, gets its marker, and only then is renamed into place: the rename is the commit point,
so a build killed at any moment leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svrunner.locking import FileLock, LockBusy

from spectravenv import procs
from spectravenv.catalog.entries import Addon, Catalog, Env
from spectravenv.console import duration
from spectravenv.envs import locks
from spectravenv.envs import marker as markers
from spectravenv.envs.pythons import BaseInterpreter, find_python, inspect_base
from spectravenv.envs.uv import uv_cmd, uv_env
from spectravenv.errors import SpectravenvError
from spectravenv.paths import RUNNERS_DIR, Paths

RECIPE = 3  # bump when the build steps change, so old envs are rebuilt rather than trusted
GUARD = RUNNERS_DIR / "vlmeval_guard.py"
PYC_STORE = RUNNERS_DIR / "pyc_store.py"
# Files spectravenv adds to every env's site-packages (never a file the lock installed):
# the import guard, the .pth that loads it, and an empty .env where VLMEvalKit looks for one
# (secrets travel in the job's environment; without the file every job log starts with an error).
GUARD_MODULE = "_spectravenv_vlmeval_guard"
ENV_INFO = f"{GUARD_MODULE}.json"  # beside the guard, which reads it (vlmeval_guard.env_info)
# A base_python env's view of its base: the base's site folders, added after the env's own (see
# _base_pth). What uv installed into the env was installed with the base out of sight.
BASE_PTH = "_spectravenv_base.pth"
REQUIREMENTS = ".spectravenv-requirements.txt"  # what the build installed, when not the lock itself

Reporter = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class EnvState:
    env: Env
    key: str
    path: Path
    state: str  # ready | missing | stale | broken
    marker: dict[str, Any] | None
    reason: str = ""
    base: BaseInterpreter | None = None  # what a base_python env's base provides, as it is now

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def added_files(env: Env, base: BaseInterpreter | None = None) -> dict[str, bytes]:
    """What spectravenv writes into the env's site-packages, by file name: part of the env's key."""
    info = {"env": env.name, "transformers": env.transformers, "elsewhere": dict(env.elsewhere)}
    files = {
        f"{GUARD_MODULE}.py": GUARD.read_bytes(),
        f"{GUARD_MODULE}.pth": f"import {GUARD_MODULE}\n".encode(),
        ENV_INFO: (json.dumps(info, sort_keys=True) + "\n").encode(),
        ".env": b"# spectravenv: secrets reach jobs through their environment, never this file\n",
    }
    if base is not None:
        files[BASE_PTH] = _base_pth(base)
    return files


def _base_pth(base: BaseInterpreter) -> bytes:
    """The base's site folders, processed like site-packages (their own .pth files included) and
    after the env's own, so the env sees every base package and uv never saw one. Not
    `--system-site-packages`: for a base that is itself a venv, that would show the packages of
    the interpreter the venv was made from, not the venv's. No bytecode is written from the env,
    so nothing ever lands in the site's installation (the env's own files are compiled at build)."""
    dirs = list(base.site_dirs)
    return (
        "import site, sys; sys.dont_write_bytecode = True; "
        f"list(map(site.addsitedir, {dirs!r}))  # spectravenv: base_python {base.path}\n"
    ).encode()


def base_of(env: Env) -> BaseInterpreter | None:
    """What an env's base_python provides now (one short run of it), or None for a plain env."""
    return inspect_base(env.base_python, env.name) if env.base_python is not None else None


def env_key(env: Env, base: BaseInterpreter | None = None) -> str:
    """Hash of everything that defines an env's contents; for a base_python env that includes
    the base's Python and every package it has (version and RECORD), so a changed base gives a
    new env, never a silently different one."""
    if not env.lock.is_file():
        locks.read(env.lock, env.name)  # raises the one-line "missing lock" error
    if env.base_python is not None and base is None:
        base = base_of(env)
    h = hashlib.sha256()
    h.update(f"recipe={RECIPE}\npython={env.python}\ntransformers={env.transformers}\n".encode())
    h.update(f"verify={','.join(env.verify)}\n".encode())
    if base is not None:
        h.update(f"base_python={env.base_python}\nbase={base.digest()}\n".encode())
    h.update(env.lock.read_bytes())
    for name, data in sorted(added_files(env, base).items()):
        h.update(f"\n{name}\n".encode() + hashlib.sha256(data).hexdigest().encode())
    return h.hexdigest()[:16]


def env_dir(paths: Paths, env: Env, key: str) -> Path:
    return paths.envs / f"{env.name}-{key}"


def status(env: Env, paths: Paths) -> EnvState:
    """Inspect an env without calling uv or starting its Python: cheap enough for every command
    (a base_python env runs its base once, ~0.1 s, to see whether the base changed)."""
    base = base_of(env)
    key = env_key(env, base)
    final = env_dir(paths, env, key)
    if final.is_dir():
        marker = markers.read(final)
        if marker is None or marker.get("key") != key:
            return EnvState(env, key, final, "broken", marker, "marker missing or wrong", base)
        if not (final / "bin" / "python").exists():
            # The interpreter it was made from has gone (a Python upgrade, a removed pyenv).
            return EnvState(
                env, key, final, "broken", marker, "its Python interpreter is gone", base
            )
        return EnvState(env, key, final, "ready", marker, "", base)
    older = [p for p in _env_folders(paths, env.name) if p != final]
    if older:
        newest = max(older, key=lambda p: p.stat().st_mtime)
        why = "built from an older lock" + (" or base" if base is not None else "")
        return EnvState(
            env,
            key,
            final,
            "stale",
            markers.read(newest),
            f"{why}: {newest.name}",
            base,
        )
    return EnvState(env, key, final, "missing", None, "", base)


def _env_folders(paths: Paths, name: str) -> list[Path]:
    if not paths.envs.is_dir():
        return []
    return [p for p in paths.envs.glob(f"{name}-*") if p.is_dir() and len(p.name) == len(name) + 17]


# ---- locking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    """One env as `spectravenv envs` shows it."""

    name: str
    transformers: str
    python: str
    lock: str  # the lock's digest, shortened
    state: str
    disk_bytes: int | None  # None: not on disk
    folder: Path | None
    models: tuple[str, ...]


def overview(catalog: Catalog, paths: Paths) -> list[Overview]:
    """Every env of the catalog: versions, lock, state, disk use and the models it runs."""
    out = []
    for env in catalog.envs.values():
        models = tuple(catalog.models_of_env(env.name))
        try:
            st = status(env, paths)
        except SpectravenvError as e:
            out.append(
                Overview(
                    env.name, env.transformers, env.python, "-", f"broken: {e}", None, None, models
                )
            )
            continue
        folder = st.path if st.path.exists() else None
        state = st.state + (f" ({st.reason})" if st.reason and st.state != "ready" else "")
        out.append(Overview(env.name, env.transformers, (st.marker or {}).get("python", env.python),
                            locks.digest(env.lock)[:12], state,
                            disk_usage([folder]) if folder else None, folder, models))  # fmt: skip
    return out


def lock_timeout() -> float:
    """How long to wait for another process's build (a cold build downloads gigabytes)."""
    try:
        return float(os.environ.get("SPECTRAVENV_LOCK_TIMEOUT", 3600))
    except ValueError:
        raise SpectravenvError("SPECTRAVENV_LOCK_TIMEOUT must be a number of seconds") from None


def build_lock(paths: Paths, name: str, what: str) -> FileLock:
    return FileLock(paths.build_locks / f"{name}.lock", what)


@contextlib.contextmanager
def _holding(lock: FileLock, report: Reporter) -> Iterator[None]:
    def waiting(holder: dict[str, Any] | None) -> None:
        from svrunner.locking import describe

        report(f"waiting for {describe(holder)}, which holds {lock.path} ...")

    try:
        with lock.hold(lock_timeout(), on_wait=waiting):
            yield
    except LockBusy as e:
        raise SpectravenvError(
            f"{e} (gave up after {lock_timeout():g} s; SPECTRAVENV_LOCK_TIMEOUT)"
        ) from None


# ---- building ----------------------------------------------------------------------------------


def _no_space(e: OSError | str) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in str(e)


def _space_error(paths: Paths) -> SpectravenvError:
    return SpectravenvError(
        f"no space left on the device holding {paths.home}; free some (`spectravenv gc`) or point "
        "SPECTRAVENV_HOME at a bigger filesystem"
    )


def _sync_error(env: Env, stderr: str, paths: Paths, log: Path | None = None) -> SpectravenvError:
    if _no_space(stderr):
        return _space_error(paths)
    text = " ".join(stderr.split())
    if "Hash mismatch" in text or "hash mismatch" in text:
        # uv: "Hash mismatch for `six==1.16.0`" (wording has varied; fall back to the line).
        m = re.search(r"[Hh]ash mismatch for `([^`]+)`", text)
        pkg = m.group(1) if m else "a package"
        return SpectravenvError(
            f"env {env.name!r}: the index served {pkg} with a sha256 that is not in "
            f"{env.lock.name}; the lock is wrong or the file was tampered with. Nothing was "
            f"changed; re-lock with `spectravenv lock {env.name}` if the new file is trusted"
        )
    more = f" (full output: {log})" if log else ""
    return SpectravenvError(f"env {env.name!r}: uv failed: {locks.uv_error_line(stderr)}{more}")


VERIFY_SCRIPT = RUNNERS_DIR / "env_probe.py"


def _verify(env: Env, python: Path, paths: Paths, progress: BuildProgress) -> dict[str, Any]:
    cmd = [python, VERIFY_SCRIPT, *env.verify]
    proc = progress.run("checking that it imports", cmd, env=_child_env(), timeout=900)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        log = procs.keep_log(paths.logs, f"verify-{env.name}", cmd, proc)
        raise SpectravenvError(
            f"env {env.name!r} was built but does not work: {last} (full output: {log})"
        )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    got = info["versions"].get("transformers")
    if "transformers" in env.verify and got != env.transformers:
        raise SpectravenvError(
            f"env {env.name!r} has transformers {got}, but the catalog says {env.transformers}; "
            f"fix the catalog or re-lock with `spectravenv lock {env.name}`"
        )
    return info


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # VLMEvalKit imports litellm offline
    return env


PROGRESS_EVERY = 30.0  # seconds between "still building" lines: a log gets one line, not a flood


@dataclass
class BuildProgress:
    """While an env builds (uv for minutes on a cold cache, then bytecode and the check), a
    line every PROGRESS_EVERY seconds that says how far it is: the step, and while uv installs,
    how many of the lock's packages are already in uv's cache (downloaded and unpacked) and in
    the env's site-packages. Counted from the files, so it is true whatever uv prints."""

    env: str
    packages: list[locks.LockedPackage]
    tmp: Path
    cache: Path
    report: Reporter
    started: float = field(default_factory=time.monotonic)
    step: str = "creating the venv"
    last: float = field(default_factory=time.monotonic)

    def run(self, step: str, cmd: list[Any], **kw: Any) -> subprocess.CompletedProcess[str]:
        """procs.run for one step of the build, with its progress lines."""
        self.step = step
        return procs.run(cmd, tick=self.tick, every=min(1.0, PROGRESS_EVERY), **kw)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        what = self.step
        if self.step == "installing":
            wanted = {(p.name, p.version.lower()) for p in self.packages}
            cached = len(wanted & _dist_infos(self.cache.glob("archive-v0/*/*.dist-info")))
            site = self.tmp.glob("lib/python*/site-packages/*.dist-info")
            installed = len(wanted & _dist_infos(site))
            what = f"{cached} of {len(wanted)} packages in uv's cache, {installed} installed"
        self.report(f"still building env {self.env}: {duration(now - self.started)}, {what}")


def _dist_infos(folders: Iterator[Path]) -> set[tuple[str, str]]:
    """(normalized name, version) of each `name-version.dist-info` folder."""
    found = set()
    for folder in folders:
        name, _, version = folder.name.removesuffix(".dist-info").rpartition("-")
        found.add((locks.normalize(name), version.lower()))
    return found


@dataclass
class _Install:
    """What one build installs and from where: the lock, or (base_python) only what the base
    lacks; from the index, or from a wheelhouse whose files are all checked before anything is
    built."""

    packages: list[locks.LockedPackage]  # the whole lock
    needed: list[locks.LockedPackage]  # what uv installs
    satisfied: list[locks.LockedPackage]  # what the base already has
    requirements: str | None  # a requirements file to install instead of the lock itself
    python: Path | str
    uv: dict[str, str]
    offline: list[str]  # uv's arguments for a wheelhouse: no index, its wheels only

    @classmethod
    def of(cls, env: Env, paths: Paths, base: BaseInterpreter | None) -> _Install:
        packages = locks.read(env.lock, env.name)
        satisfied, needed = (
            locks.split_for_base(env, packages, base) if base is not None else ([], packages)
        )
        requirements = locks.as_requirements(needed) if base is not None else None
        uv, offline = uv_env(paths), []
        wheelhouse = paths.wheelhouse
        if wheelhouse is not None:
            from spectravenv.envs import wheelhouse as wh  # lazy: urllib and tarfile cost start-up

            requirements = wh.requirements_for(wheelhouse, env, needed)
            # No index, no interpreter download, no network at all: a missing file is a clear
            # error at once, never a wait for a connection timeout.
            uv.update(UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
            offline = ["--no-index", "--find-links", str(wheelhouse / "wheels")]
        python = (
            base.path
            if base is not None
            else find_python(env.python, paths, offline=wheelhouse is not None)
        )
        return cls(packages, needed, satisfied, requirements, python, uv, offline)

    def announce(self, env: Env, paths: Paths, base: BaseInterpreter | None) -> str:
        where = f", from wheelhouse {paths.wheelhouse}" if paths.wheelhouse is not None else ""
        on_base = (
            f" on base_python {base.path}, which has {len(self.satisfied)} of them"
            if base is not None
            else ""
        )
        return f"building env {env.name} ({len(self.packages)} packages, Python {env.python}{on_base}{where}) ..."


def _build(
    env: Env, key: str, paths: Paths, report: Reporter, base: BaseInterpreter | None = None
) -> None:
    plan = _Install.of(env, paths, base)
    final = env_dir(paths, env, key)
    tmp = paths.envs / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    report(plan.announce(env, paths, base))
    started = time.monotonic()
    progress = BuildProgress(env.name, plan.needed, tmp, paths.uv_cache, report)
    try:
        _install(env, plan, tmp, paths, progress)
        _complete(env, base, tmp, paths, progress)
        info = _verify(env, tmp / "bin" / "python", paths, progress)
        markers.write(tmp, _marker(env, key, plan, info, base, paths, started))
        os.rename(tmp, final)
    except OSError as e:
        if _no_space(e):
            raise _space_error(paths) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(f"env {env.name} ready in {time.monotonic() - started:.0f} s: {final}")


def _install(env: Env, plan: _Install, tmp: Path, paths: Paths, progress: BuildProgress) -> None:
    """The venv, then uv's hash-checked sync of what the plan installs."""
    # --relocatable: scripts find their Python relative to themselves, so the final rename of the
    # folder does not break them.
    proc = progress.run(
        "creating the venv",
        uv_cmd("venv", "--relocatable", "--python", plan.python, tmp),
        env=plan.uv,
    )
    if proc.returncode != 0:
        raise _sync_error(env, proc.stderr, paths)
    if not plan.needed:
        return
    source = env.lock
    if plan.requirements is not None:
        source = tmp / REQUIREMENTS  # kept in the env: what this build installed, and how
        source.write_text(plan.requirements)
    cmd = uv_cmd(
        "pip", "sync", "--python", tmp / "bin" / "python", "--require-hashes", *plan.offline, source
    )
    proc = progress.run("installing", cmd, env=plan.uv)
    if proc.returncode != 0:
        raise _sync_error(env, proc.stderr, paths, procs.keep_log(paths.logs, "uv-sync", cmd, proc))


def _complete(
    env: Env, base: BaseInterpreter | None, tmp: Path, paths: Paths, progress: BuildProgress
) -> None:
    """The env's own files next to what uv installed, and its bytecode."""
    site = next((tmp / "lib").glob("python*/site-packages"))
    # New files only: uv hardlinks the lock's files to its cache, so editing one in place would
    # edit every env that shares it. The base's folders join only now, after uv.
    for name, data in added_files(env, base).items():
        (site / name).write_bytes(data)
    # Bytecode now, so no job pays for compiling `vlmeval` again; shared with every env that has
    # the same source files (runners/pyc_store.py), so a second env costs little.
    cmd = [tmp / "bin" / "python", PYC_STORE, site, paths.pyc_store]
    proc = progress.run("compiling its bytecode", cmd, env=_child_env())
    if proc.returncode != 0:
        log = procs.keep_log(paths.logs, f"bytecode-{env.name}", cmd, proc)
        raise SpectravenvError(
            f"env {env.name!r}: compiling its bytecode failed (full output: {log})"
        )


def _marker(env: Env, key: str, plan: _Install, info: dict[str, Any], base: BaseInterpreter | None,
            paths: Paths, started: float) -> dict[str, Any]:  # fmt: skip
    """What the env's marker records: its key, lock, versions and how it was built."""
    return {
        "env": env.name,
        "key": key,
        "lock": str(env.lock),
        "lock_sha256": locks.digest(env.lock),
        "python": info["python"],
        "versions": info["versions"],
        "cuda_runtime": info.get("cuda_runtime"),  # of the torch build; the driver is per node
        "packages": len(plan.packages),
        "installed": len(plan.needed),
        "base_python": base.record() if base is not None else None,
        "wheelhouse": str(paths.wheelhouse) if paths.wheelhouse is not None else None,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.monotonic() - started, 1),
    }


def _check_home(paths: Paths) -> None:
    try:
        paths.envs.mkdir(parents=True, exist_ok=True)
        probe = paths.envs / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        if _no_space(e):
            raise _space_error(paths) from None
        raise SpectravenvError(
            f"SPECTRAVENV_HOME {paths.home} is not writable ({e.strerror}); set SPECTRAVENV_HOME "
            "to a folder you can write"
        ) from None


def ensure(env: Env, paths: Paths, report: Reporter = _quiet) -> EnvState:
    """Return the env ready to use, building it first if needed. Safe across processes."""
    st = status(env, paths)
    if st.state == "ready":
        return st
    _check_home(paths)
    with _holding(
        build_lock(paths, f"env-{env.name}-{st.key}", f"building env {env.name}"), report
    ):
        st = status(env, paths)  # someone may have finished it while we waited
        if st.state == "ready":
            report(f"env {env.name} is ready (built by another process)")
            return st
        if st.state == "broken":
            report(f"env {env.name} at {st.path} is broken ({st.reason}); rebuilding")
            _remove(st.path)
        # Left-overs of builds of this very key were killed: we hold its lock.
        for leftover in paths.envs.glob(f".tmp-{st.path.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        _build(env, st.key, paths, report, st.base)
    return status(env, paths)


def _remove(path: Path) -> None:
    """Delete a folder so that a crash half-way never leaves something that looks intact."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ---- add-ons (git-only packages) ---------------------------------------------------------------


def addon_dir(addon: Addon, env_state: EnvState, paths: Paths) -> Path:
    h = hashlib.sha256(f"{addon.source}\n{env_state.key}".encode()).hexdigest()[:16]
    return paths.addons / f"{addon.name}-{h}"


def ensure_addon(
    addon: Addon, env_state: EnvState, paths: Paths, report: Reporter = _quiet
) -> Path:
    """Install a commit-pinned git package into its own folder, outside the env (no deps)."""
    final = addon_dir(addon, env_state, paths)
    if markers.exists(final):
        return final
    paths.addons.mkdir(parents=True, exist_ok=True)
    with _holding(
        build_lock(paths, f"addon-{final.name}", f"installing add-on {addon.name}"), report
    ):
        if markers.exists(final):
            return final
        tmp = paths.addons / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if paths.wheelhouse is not None:
            from spectravenv.envs import wheelhouse as wh  # lazy: as in _build

            archive = wh.addon_archive(paths.wheelhouse, addon)  # checked against its sha256
            report(f"installing add-on {addon.name} from {archive} ...")
            try:
                wh.unpack_addon(archive, tmp)
                markers.write(
                    tmp, {"addon": addon.name, "source": addon.source, "from": str(archive)}
                )
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return final
        report(f"installing add-on {addon.name} from {addon.source} ...")
        proc = procs.run(
            uv_cmd("pip", "install", "--python", env_state.python, "--no-deps",
                   "--target", tmp, addon.source),
            env=uv_env(paths),
        )  # fmt: skip
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SpectravenvError(
                f"add-on {addon.name} could not be installed from {addon.source}: "
                f"{locks.uv_error_line(proc.stderr)} (offline? pre-build it on a node with "
                "network access with `spectravenv sync`)"
            )
        markers.write(tmp, {"addon": addon.name, "source": addon.source})
        os.rename(tmp, final)
    return final


# ---- inventory and garbage collection ----------------------------------------------------------


def _files(folders: list[Path]) -> Iterator[tuple[tuple[int, int], os.stat_result, bool]]:
    """Every entry below `folders` as (device and inode, its stat, is it a folder), links not
    followed; unreadable folders are passed over."""
    stack = [f for f in folders if f.exists()]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir:
                    stack.append(Path(entry.path))
                yield (st.st_dev, st.st_ino), st, is_dir


def disk_usage(folders: list[Path], seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes on disk, counting each hardlinked file once (uv links envs to its cache)."""
    seen = set() if seen is None else seen
    total = 0
    for key, st, _ in _files(folders):
        if key not in seen:
            seen.add(key)
            total += st.st_blocks * 512
    return total


def freed_by_removing(folders: list[Path]) -> int:
    """Bytes that removing `folders` gives back: only files with no link outside them (an env's
    files are hardlinks to uv's cache and to other envs, which keep them)."""
    seen: dict[tuple[int, int], list[int]] = {}
    for key, st, is_dir in _files(folders):
        links = seen.setdefault(key, [0, 1 if is_dir else st.st_nlink, st.st_blocks * 512])
        links[0] += 1
    return sum(size for inside, total, size in seen.values() if inside >= total)


def referenced_folders(catalog: Catalog, paths: Paths) -> set[Path]:
    keep = set()
    for env in catalog.envs.values():
        try:
            keep.add(env_dir(paths, env, env_key(env)))
        except (SpectravenvError, OSError):
            if env.base_python is not None:
                # A base that cannot be asked now (an unmounted filesystem) says nothing about
                # which of its envs are current: keep them all.
                keep.update(_env_folders(paths, env.name))
    return keep


def garbage(catalog: Catalog, paths: Paths) -> list[Path]:
    """Env folders no catalog lock references any more, and left-overs of dead builds."""
    if not paths.envs.is_dir():
        return []
    keep = referenced_folders(catalog, paths)
    out = []
    for p in sorted(paths.envs.iterdir()):
        if p.name.startswith((".tmp-", ".trash-")) or (p.is_dir() and p not in keep):
            out.append(p)
    return out


def unused_bytecode(paths: Paths) -> list[Path]:
    """Shared bytecode no env links to any more (its only link is the store's own)."""
    if not paths.pyc_store.is_dir():
        return []
    return [p for p in paths.pyc_store.glob("*/*.pyc") if p.stat().st_nlink == 1]


def collect(catalog: Catalog, paths: Paths, report: Reporter = _quiet) -> list[Path]:
    removed = []
    for p in garbage(catalog, paths):
        lock = None
        if not p.name.startswith(".trash-"):
            # An env folder and the temporary folder of its build share the build's lock, so a
            # build in progress (perhaps from another catalog) is never pulled from under it.
            folder = (
                p.name.removeprefix(".tmp-").rsplit("-", 1)[0]
                if p.name.startswith(".tmp-")
                else p.name
            )
            lock = build_lock(paths, f"env-{folder}", f"removing {p.name}")
            try:
                lock.acquire(timeout=0)
            except LockBusy as e:
                report(f"skipping {p.name}: {e}")
                continue
        try:
            _remove(p) if p.is_dir() else p.unlink()
            removed.append(p)
        finally:
            if lock is not None:
                lock.release()
    # After the envs: their removal is what leaves bytecode unused.
    for p in unused_bytecode(paths):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return removed
