"""Wheelhouses: the exact files of env locks in one folder, so nodes without a package index can
build envs (`spectravenv wheelhouse export DIR`, then `sync --wheelhouse DIR` or
SPECTRAVENV_WHEELHOUSE=DIR).

A wheelhouse holds:

    manifest.json             every file: sha256, size, package, version, where it came from;
                              which env needs which files; add-ons exported or not, and why
    wheels/                   for each locked package the one wheel pip picks for the env's Python
                              and platform, and wheels built here from sdist-only packages
    sdists/                   the sdists those wheels were built from (the files the lock pins)
    requirements/<env>.txt    derived from the env's lock: each package pinned to the sha256 of its
                              one file in wheels/ (a built wheel's own sha256 instead of its sdist's)
    addons/<name>-<h>.tar.gz  git-only add-ons, packed from their installed copy

The files come from `pip download --no-deps --require-hashes` against the lock, for the env's
Python and platform (`--python-version`, `--platform`): pip reads the index, picks the best file
whose sha256 the lock pins (a wheel for the target, else the sdist), checks that hash, continues a
dropped download, and reuses what its download folder already holds after checking it again.
The index is uv's when one is set (UV_DEFAULT_INDEX or UV_INDEX_URL, plus UV_INDEX and
UV_EXTRA_INDEX_URL), handed to pip in its environment (never on a command line a log keeps);
else pip's own (PIP_INDEX_URL, pip.conf, else PyPI). Credentials are pip's business too: in the
index URL, ~/.netrc or keyring, sent per host (requests, under pip, drops them on a redirect to
another host). sdist-only packages are built into wheels here with `uv build` and the env's
Python, so nodes need no compiler. uv's cache holds unpacked wheels, not the files themselves,
so it cannot be exported.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svrunner.files import sha256_file, write_atomic
from svrunner.locking import FileLock, LockBusy

from spectravenv import procs
from spectravenv.catalog.entries import Addon, Catalog, Env
from spectravenv.envs import locks, marker
from spectravenv.envs.locks import LockedPackage, normalize
from spectravenv.envs.uv import uv_cmd, uv_env
from spectravenv.errors import SpectravenvError
from spectravenv.fetch.http import public_url
from spectravenv.paths import Paths

MANIFEST = "manifest.json"
SCHEMA = 1
ENV_VAR = "SPECTRAVENV_WHEELHOUSE"
STAGING = ".download"  # pip's download folder inside the wheelhouse, gone after an export
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")

Reporter = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---- the index, through pip --------------------------------------------------------------------


def pip_index_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """pip's index settings for the indexes uv would resolve against, where uv's are set:
    UV_DEFAULT_INDEX or UV_INDEX_URL as the index, UV_INDEX and UV_EXTRA_INDEX_URL as extra ones.
    Empty when none is set: pip then reads its own settings."""
    env = os.environ if environ is None else environ
    extra = (env.get("UV_INDEX") or "").split() + (env.get("UV_EXTRA_INDEX_URL") or "").split()
    # UV_INDEX entries may be named: "name=https://...".
    extra = [u.split("=", 1)[1] if "=" in u.split("://")[0] else u for u in extra]
    out = {}
    if env.get("UV_DEFAULT_INDEX") or env.get("UV_INDEX_URL"):
        out["PIP_INDEX_URL"] = env.get("UV_DEFAULT_INDEX") or env["UV_INDEX_URL"]
    if extra:
        out["PIP_EXTRA_INDEX_URL"] = " ".join(extra)
    return out


def _indexes_said(settings: dict[str, str]) -> str:
    urls = " ".join(settings.values()).split()
    return ", ".join(public_url(u) for u in urls) if urls else "pip's configured index"


def _pip_download_cmd(env: Env, requirements: Path, dest: Path) -> list[str]:
    """`pip download` of hash-pinned requirements, no dependencies, for env's target."""
    platforms = [a for tag in _platform_tags(env.platform) for a in ("--platform", tag)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--no-input",
            "--disable-pip-version-check", "--progress-bar", "off", "--resume-retries", "5",
            # The wheelhouse is the copy that is kept: pip's HTTP cache would hold GBs twice.
            "--no-cache-dir",
            "--python-version", env.python, "--implementation", "cp",
            "--abi", _version(env.python)[1], *platforms,
            "--dest", str(dest), "--requirement", str(requirements)]  # fmt: skip


def _pip_error_line(output: str) -> str:
    """pip's error in one line: its ERROR line, and the package line under a hash mismatch."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("ERROR:"):
            what = ln.removeprefix("ERROR:").strip()
            if "DO NOT MATCH THE HASHES" in what and i + 1 < len(lines):
                what = f"a file does not match the lock's sha256: {lines[i + 1].rstrip(':')}"
            return what[:400]
    return (lines[-1] if lines else "pip gave no message")[:400]


def _pip_download(env: Env, packages: list[LockedPackage], dest: Path, paths: Paths,
                  workers: int) -> None:  # fmt: skip
    """Download env's packages into dest with pip, several pip processes at once (pip fetches
    one file at a time), each given an equal share of the packages."""
    if not packages:
        return
    settings = pip_index_environ()
    shares = [packages[i::workers] for i in range(workers) if packages[i::workers]]
    with tempfile.TemporaryDirectory(prefix="spectravenv-pip-") as tmp:
        cmds = []
        for i, share in enumerate(shares):
            req = Path(tmp) / f"{env.name}-{i}.txt"
            req.write_text(locks.as_requirements(share))
            cmds.append(_pip_download_cmd(env, req, dest))
        with ThreadPoolExecutor(len(cmds)) as pool:
            done = list(pool.map(lambda c: procs.run(c, env={**os.environ, **settings}), cmds))
    for cmd, proc in zip(cmds, done, strict=True):
        if proc.returncode != 0:
            log = procs.keep_log(paths.logs, f"pip-download-{env.name}", cmd, proc)
            raise SpectravenvError(
                f"pip could not download the files of env {env.name!r}: "
                f"{_pip_error_line(proc.stderr or proc.stdout)} (full output: {log}); `wheelhouse "
                f"export` needs the package index ({_indexes_said(settings)}): run it where pip "
                "reaches it (UV_DEFAULT_INDEX or PIP_INDEX_URL for a mirror)"
            )


# ---- the target's wheel tags ------------------------------------------------------------


def _platform_tags(platform: str) -> list[str]:
    """Platform tags a target accepts, best first: `x86_64-manylinux_2_28` takes manylinux_2_28
    down to manylinux1, then plain linux (wheels built here, from sdists)."""
    arch, _, rest = platform.partition("-")
    if platform == "linux":
        arch, rest = "x86_64", "manylinux_2_17"
    aliases = {"manylinux2014": "manylinux_2_17", "unknown-linux-gnu": "manylinux_2_17"}
    rest = aliases.get(rest, rest)
    if not rest.startswith("manylinux_2_") or not rest[12:].isdigit():
        raise SpectravenvError(
            f"wheelhouse: platform {platform!r} is not supported; wheelhouses are made for Linux "
            "glibc targets such as x86_64-manylinux_2_28 (the env's `platform`)"
        )
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(int(rest[12:]), 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy and (minor == 17 or arch in ("x86_64", "i686")):
            tags.append(f"{legacy[minor]}_{arch}")
    return [*tags, f"linux_{arch}"]


def _version(python: str) -> tuple[tuple[int, int], str]:
    """(3, 10) and "cp310" for "3.10"."""
    try:
        major, minor = (int(x) for x in python.split(".")[:2])
    except ValueError:
        raise SpectravenvError(f"wheelhouse: python {python!r} is not a version like 3.10") from None
    return (major, minor), f"cp{major}{minor}"


def target_tags(python: str, platform: str) -> dict[Any, int]:
    """Wheel tags a CPython of `python` ("3.10") on `platform` installs, with their priority
    (0 best), ordered as installers order them."""
    from packaging import tags

    version, cp = _version(python)
    plats = _platform_tags(platform)
    ordered = [
        *tags.cpython_tags(version, abis=[cp], platforms=plats),
        *tags.compatible_tags(version, cp, plats),
    ]
    return {t: i for i, t in enumerate(dict.fromkeys(ordered))}


def wheel_rank(filename: str, priority: dict[Any, int]) -> int | None:
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        _, _, _, wheel_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    ranks = [priority[t] for t in wheel_tags if t in priority]
    return min(ranks) if ranks else None


def _present(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


# ---- the manifest ------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        if not folder.is_dir():
            raise SpectravenvError(
                f"wheelhouse {folder} does not exist; make one with `spectravenv wheelhouse export "
                f"{folder} ENV...` on a machine that reaches the package index"
            ) from None
        raise SpectravenvError(
            f"{folder} is not a spectravenv wheelhouse (no {MANIFEST}); make one with "
            f"`spectravenv wheelhouse export {folder} ENV...`"
        ) from None
    except (OSError, ValueError) as e:
        raise SpectravenvError(
            f"cannot read {path}: {e}; re-run `spectravenv wheelhouse export`"
        ) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SpectravenvError(
            f"{path} is not a wheelhouse manifest this spectravenv reads (schema {SCHEMA})"
        )
    return data


def _new_manifest() -> dict[str, Any]:
    return {"schema": SCHEMA, "files": {}, "envs": {}, "addons": {}}


# ---- export ------------------------------------------------------------------------------------


@dataclass
class _Need:
    """One file of the wheelhouse and the locked package it serves, for the envs that need it."""

    rel: str  # wheels/x.whl or sdists/x.tar.gz
    sha256: str
    kind: str  # wheel | sdist
    pkg: LockedPackage
    envs: list[Env] = field(default_factory=list)


@dataclass
class EnvExport:
    name: str
    packages: int
    files: int
    built: list[str]
    left_to_base: list[str]
    requirements: str
    base_note: str = ""


@dataclass
class ExportSummary:
    folder: Path
    envs: list[EnvExport]
    downloaded_files: int
    downloaded_bytes: int
    already_there: int
    addons_exported: list[str]
    addons_missing: list[tuple[str, str]]  # (add-on, why and how)
    total_bytes: int
    seconds: float


def export(
    catalog: Catalog,
    paths: Paths,
    folder: Path,
    env_names: Iterable[str] = (),
    report: Reporter = _quiet,
    *,
    workers: int = 4,
) -> ExportSummary:
    """Put every file the named envs (all when none) need into `folder`; what is there already
    with the right sha256 is kept, so an interrupted export continues where it stopped."""
    started = time.monotonic()
    chosen = [catalog.env(n) for n in env_names] or list(catalog.envs.values())
    folder = folder.absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpectravenvError(f"cannot create wheelhouse {folder}: {e.strerror}") from None
    lock = FileLock(folder / ".export.lock", f"exporting a wheelhouse to {folder}")
    try:
        lock.acquire(timeout=0)
    except LockBusy as e:
        raise SpectravenvError(f"{e}; wait for that export to finish") from None
    try:
        return _export(catalog, paths, folder, chosen, report, workers, started)
    finally:
        lock.release()


def _wanted(env: Env, report: Reporter) -> tuple[list[LockedPackage], list[str], str]:
    """The lock's packages this env needs from a wheelhouse: all of them, or, for a base_python
    env whose base is on this machine, only what the base lacks."""
    packages = locks.read(env.lock, env.name)
    if env.base_python is None:
        return packages, [], ""
    if not os.access(env.base_python, os.X_OK):
        note = (f"base_python {env.base_python} is not on this machine: the whole lock is exported "
                "(the base may provide some of it already)")  # fmt: skip
        report(f"{env.name}: {note}")
        return packages, [], note
    from spectravenv.envs.pythons import inspect_base

    base = inspect_base(env.base_python, env.name)
    satisfied, extras = locks.split_for_base(env, packages, base)
    return extras, [p.name for p in satisfied], f"only what base_python {env.base_python} lacks"


def _dist_of(filename: str) -> tuple[str, str, str] | None:
    """(normalized name, canonical version, "wheel" | "sdist") that a file name says."""
    from packaging.utils import InvalidWheelFilename, canonicalize_version, parse_wheel_filename

    if filename.endswith(".whl"):
        try:
            name, version, _, _ = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return None
        return normalize(name), canonicalize_version(version), "wheel"
    suffix = next((s for s in _SDIST_SUFFIXES if filename.endswith(s)), None)
    if suffix is None:
        return None
    name, _, version = filename[: -len(suffix)].rpartition("-")
    return normalize(name), canonicalize_version(version), "sdist"


def _stage(folder: Path, manifest: dict[str, Any]) -> Path:
    """pip's download folder: what the wheelhouse got from the index before, as hard links (pip
    takes a file there after checking its sha256 again, and downloads only what is missing), and
    whatever an interrupted export left in it."""
    staging = folder / STAGING
    staging.mkdir(exist_ok=True)
    for rel, f in manifest["files"].items():
        src, dest = folder / rel, staging / Path(rel).name
        if f.get("origin") == "index" and src.is_file() and not dest.exists():
            _link(src, dest)
    return staging


def _link(src: Path, dest: Path) -> None:
    """dest becomes src's bytes: a hard link (no copy of GBs), a copy across file systems."""
    dest.parent.mkdir(exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.new")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


@dataclass
class _Digests:
    """sha256 of files, each hashed once per export (by inode: the staged hard link and the
    wheelhouse file are one file)."""

    known: dict[tuple[int, int, int, int], str] = field(default_factory=dict)

    def of(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self.known:
            self.known[key] = sha256_file(path)
        return self.known[key]

    def present(self, path: Path, sha256: str) -> bool:
        return path.is_file() and self.of(path) == sha256


def _current(env: Env, left_to_base: list[str], manifest: dict[str, Any], folder: Path,
             digests: _Digests) -> bool:  # fmt: skip
    """Does the wheelhouse hold this env's files already, exported from this very lock for the
    same target (and the same packages left to a base), each with its sha256? Then pip need not
    ask the index again."""
    entry = manifest["envs"].get(env.name) or {}
    same = (entry.get("lock_sha256"), entry.get("python"), entry.get("platform"),
            entry.get("left_to_base") or []) == (locks.digest(env.lock), env.python, env.platform,
                                                 left_to_base)  # fmt: skip
    files = manifest["files"]
    return same and all(rel in files and digests.present(folder / rel, files[rel]["sha256"])
                        for rel in entry.get("files", []))  # fmt: skip


def _picked(pkg: LockedPackage, staged: dict[tuple[str, str], list[Path]],
            priority: dict[Any, int], digests: _Digests) -> tuple[Path, str, str]:  # fmt: skip
    """The file pip took for pkg: of the staged files of its version, the best wheel for the
    target, else its sdist (pip's own order), whose sha256 the lock pins (pip checked it; a file
    of another build of that version may lie beside it). (path, sha256, kind)"""
    from packaging.utils import canonicalize_version

    files = staged.get((normalize(pkg.name), canonicalize_version(pkg.version)), [])
    wheels = sorted((r, p.name, p) for p in files if p.name.endswith(".whl")
                    for r in [wheel_rank(p.name, priority)] if r is not None)  # fmt: skip
    sdists = sorted(p for p in files if not p.name.endswith(".whl"))
    for path, kind in [*((p, "wheel") for _, _, p in wheels), *((p, "sdist") for p in sdists)]:
        sha = digests.of(path)
        if sha in pkg.hashes:
            return path, sha, kind
    raise SpectravenvError(
        f"{pkg.name}=={pkg.version}: pip left no file with a sha256 the lock pins; run the export "
        "again"
    )


def _export(catalog, paths, folder, chosen, report, workers, started) -> ExportSummary:
    manifest = _old_manifest(folder)
    per_env = {env.name: _wanted(env, report) for env in chosen}
    staging = _stage(folder, manifest)
    before = {p.name for p in staging.iterdir()}
    digests = _Digests()
    for env in chosen:
        packages, left, _ = per_env[env.name]
        if _current(env, left, manifest, folder, digests):
            report(f"{env.name}: every file is here, with the sha256 its lock pins")
            continue
        report(f"{env.name}: downloading the files of {len(packages)} packages for Python "
               f"{env.python} on {env.platform} with pip (from {_indexes_said(pip_index_environ())}) ...")  # fmt: skip
        _pip_download(env, packages, staging, paths, workers)
    needs, by_env = _needs(chosen, per_env, staging, digests)
    new = [n for n in needs.values() if Path(n.rel).name not in before]  # downloaded just now
    for n in needs.values():
        _link(staging / Path(n.rel).name, folder / n.rel)
        manifest["files"][n.rel] = {"sha256": n.sha256, "size": (folder / n.rel).stat().st_size,
                                    "package": n.pkg.name, "version": n.pkg.version, "origin": "index"}  # fmt: skip
    shutil.rmtree(staging)

    # sdist-only packages: a wheel built here with the env's Python, so nodes need no compiler.
    built_for: dict[tuple[str, str], str] = {}  # (sdist rel, env name) -> wheel rel
    for n in (n for n in needs.values() if n.kind == "sdist"):
        for env in n.envs:
            built_for[(n.rel, env.name)] = _built_wheel(n, env, folder, manifest, paths, report)
    results = [_record_env(env, per_env[env.name], by_env.get(env.name, []), built_for, folder,
                           manifest) for env in chosen]  # fmt: skip
    exported, missing = _export_addons(chosen, catalog, folder, manifest, paths, report)
    _write_manifest(folder, manifest)
    size = sum(f["size"] for f in manifest["files"].values())
    return ExportSummary(folder, results, len(new), sum(manifest["files"][n.rel]["size"] for n in new),
                         len(needs) - len(new), exported, missing, size, time.monotonic() - started)  # fmt: skip


def _old_manifest(folder: Path) -> dict[str, Any]:
    with contextlib.suppress(SpectravenvError):
        return read_manifest(folder)
    return _new_manifest()


def _needs(chosen: list[Env], per_env: dict[str, tuple[list[LockedPackage], list[str], str]],
           staging: Path, digests: _Digests) -> tuple[dict[str, _Need], dict[str, list[_Need]]]:  # fmt: skip
    """The file pip took for each package of each env: by wheelhouse path, and by env."""
    staged: dict[tuple[str, str], list[Path]] = {}
    for p in staging.iterdir():
        dist = _dist_of(p.name)
        if dist is not None:
            staged.setdefault(dist[:2], []).append(p)
    needs: dict[str, _Need] = {}
    by_env: dict[str, list[_Need]] = {}
    for env in chosen:
        priority = target_tags(env.python, env.platform)
        for pkg in per_env[env.name][0]:
            path, sha, kind = _picked(pkg, staged, priority, digests)
            rel = f"{'wheels' if kind == 'wheel' else 'sdists'}/{path.name}"
            need = needs.setdefault(rel, _Need(rel, sha, kind, pkg))
            need.envs.append(env)
            by_env.setdefault(env.name, []).append(need)
    return needs, by_env


def _record_env(env: Env, wanted: tuple[list[LockedPackage], list[str], str], entries: list[_Need],
                built_for: dict[tuple[str, str], str], folder: Path,
                manifest: dict[str, Any]) -> EnvExport:  # fmt: skip
    """requirements/<env>.txt and the env's entry in the manifest."""
    extras, left, note = wanted
    text, files, built = _requirements(env, entries, built_for, left, manifest)
    rel = f"requirements/{env.name}.txt"
    write_atomic(folder / rel, text)
    manifest["envs"][env.name] = {
        "lock": env.lock.name,
        "lock_sha256": locks.digest(env.lock),
        "python": env.python,
        "platform": env.platform,
        "requirements": rel,
        "files": sorted(files),
        "base_python": str(env.base_python) if env.base_python else None,
        "left_to_base": left,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return EnvExport(env.name, len(extras), len(files), built, left, rel, note)


def _export_addons(chosen: list[Env], catalog: Catalog, folder: Path, manifest: dict[str, Any],
                   paths: Paths, report: Reporter) -> tuple[list[str], list[tuple[str, str]]]:  # fmt: skip
    exported, missing = [], []
    for env in chosen:
        for addon in sorted(
            (a for a in catalog.addons.values() if a.env == env.name), key=lambda a: a.name
        ):
            why = _export_addon(addon, folder, manifest, paths, report)
            (missing.append((addon.name, why)) if why else exported.append(addon.name))
    return exported, missing


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    needed: dict[str, set[str]] = {}
    for name, e in manifest["envs"].items():
        for rel in e["files"]:
            needed.setdefault(rel, set()).add(name)
    for a in manifest["addons"].values():
        if a.get("file"):
            needed.setdefault(a["file"], set()).add(a["env"])
    for rel, f in manifest["files"].items():
        f["needed_by"] = sorted(needed.get(rel, ()))
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _builder(python: Path) -> str:
    proc = procs.run([python, "-c", "import platform, sys; print(platform.python_implementation(), "
                      "platform.python_version(), sys.platform, platform.machine(), *platform.libc_ver())"])  # fmt: skip
    return " ".join(proc.stdout.split())


def _built_wheel(need: _Need, env: Env, folder: Path, manifest: dict[str, Any], paths: Paths,
                 report: Reporter) -> str:  # fmt: skip
    """The wheel built from an sdist for env's Python: reused if built before (recorded, and
    present with its recorded sha256), else built now with `uv build --wheel`."""
    for rel, f in manifest["files"].items():
        if (f.get("origin") == "built" and f.get("built_from_sha256") == need.sha256
                and f.get("python") == env.python and _present(folder / rel, f["sha256"])):  # fmt: skip
            return rel
    from spectravenv.envs.pythons import find_python

    python = (
        env.base_python
        if env.base_python and os.access(env.base_python, os.X_OK)
        else find_python(env.python, paths)
    )
    report(
        f"building a wheel of {need.pkg.name}=={need.pkg.version} from its sdist with {python} ..."
    )
    out = folder / f".build-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = uv_cmd("build", "--wheel", "--python", python, "--out-dir", out, folder / need.rel)
    proc = procs.run(cmd, env=uv_env(paths), timeout=3600)
    try:
        wheels = sorted(out.glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            log = procs.keep_log(paths.logs, f"build-{need.pkg.name}", cmd, proc)
            raise SpectravenvError(
                f"building a wheel of {need.pkg.name} from {need.rel} failed: "
                f"{locks.uv_error_line(proc.stderr)} (full output: {log})"
            )
        wheel = wheels[0]
        if wheel_rank(wheel.name, target_tags(env.python, env.platform)) is None:
            raise SpectravenvError(
                f"the wheel built from {need.rel} is {wheel.name}, which env {env.name!r} "
                f"({env.platform}) cannot install; export on a machine of the nodes' kind"
            )
        rel = f"wheels/{wheel.name}"
        os.replace(wheel, folder / rel)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    manifest["files"][rel] = {
        "sha256": sha256_file(folder / rel),
        "size": (folder / rel).stat().st_size,
        "package": need.pkg.name,
        "version": need.pkg.version,
        "origin": "built",
        "built_from": need.rel,
        "built_from_sha256": need.sha256,
        "python": env.python,
        "built_with": _builder(python),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return rel


def _requirements(env: Env, entries: list[_Need], built_for: dict[tuple[str, str], str],
                  left: list[str], manifest: dict[str, Any]) -> tuple[str, list[str], list[str]]:  # fmt: skip
    """requirements/<env>.txt: the lock, each package pinned to its one file in the wheelhouse."""
    lines = [
        f"# Derived by `spectravenv wheelhouse export` from {env.lock.name} "
        f"(sha256 {locks.digest(env.lock)}) for Python {env.python} on {env.platform}.",
        "# Each package is pinned to the sha256 of its one file in wheels/; a package the lock pins",
        "# only as an sdist is pinned to the wheel built from that sdist (manifest.json names both).",
        "# spectravenv builds from this file with: uv pip sync --no-index --find-links wheels",
        "# --require-hashes (after checking every file's sha256 itself).",
    ]
    if left:
        lines.append(f"# Left out, provided by base_python {env.base_python}: {', '.join(left)}")
    files, built = [], []
    for n in entries:
        if n.kind == "sdist":
            rel = built_for[(n.rel, env.name)]
            sha = manifest["files"][rel]["sha256"]
            files += [rel, n.rel]
            built.append(n.pkg.name)
            lines += [f"{n.pkg.name}=={n.pkg.version} \\", f"    --hash=sha256:{sha}",
                      f"    # {rel}: built by spectravenv from {n.rel} (sha256:{n.sha256}, pinned by {env.lock.name})"]  # fmt: skip
        else:
            files.append(n.rel)
            lines += [
                f"{n.pkg.name}=={n.pkg.version} \\",
                f"    --hash=sha256:{n.sha256}",
                f"    # {n.rel}",
            ]
    return "\n".join(lines) + "\n", files, built


# ---- add-ons -----------------------------------------------------------------------------------


def _addon_rel(addon: Addon) -> str:
    return f"addons/{addon.name}-{hashlib.sha256(addon.source.encode()).hexdigest()[:12]}.tar.gz"


def installed_addon(addon: Addon, paths: Paths) -> Path | None:
    """The add-on's installed copy in SPECTRAVENV_HOME (`spectravenv sync` made it where GitHub
    was reachable), if one of this very source exists."""
    for p in sorted(paths.addons.glob(f"{addon.name}-*")) if paths.addons.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            if (marker.read(p) or {}).get("source") == addon.source:
                return p
    return None


def _pack(src: Path) -> bytes:
    """A tar.gz of a folder whose bytes depend only on its files (sorted, no owners or times),
    so exporting the same add-on twice gives the same sha256."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if rel.name == marker.MARKER or "__pycache__" in rel.parts:
                continue
            info = tar.gettarinfo(str(p), arcname=str(rel))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with p.open("rb") as f:
                    tar.addfile(info, f)
            elif info.isdir():
                tar.addfile(info)
    return buf.getvalue()


def _export_addon(addon: Addon, folder: Path, manifest: dict[str, Any], paths: Paths,
                  report: Reporter) -> str:  # fmt: skip
    """Pack the add-on into the wheelhouse; '' when done, else why not and how to do it."""
    rel = _addon_rel(addon)
    src = installed_addon(addon, paths)
    if src is None:
        why = (
            f"it is not installed in {paths.addons}, and its source is git ({addon.source}); on a "
            f"machine that reaches it run `spectravenv sync {addon.env}` (installs it into "
            f"SPECTRAVENV_HOME) and then `spectravenv wheelhouse export DIR {addon.env}` there, "
            "with the same SPECTRAVENV_HOME"
        )
        old = manifest["addons"].get(addon.name, {})
        if (
            old.get("source") == addon.source
            and old.get("file")
            and _present(folder / old["file"], old["sha256"])
        ):
            return ""  # exported earlier, from a home that had it
        manifest["addons"][addon.name] = {
            "env": addon.env,
            "source": addon.source,
            "file": None,
            "missing": why,
        }
        return why
    data = _pack(src)
    sha = hashlib.sha256(data).hexdigest()
    if not _present(folder / rel, sha):
        write_atomic(folder / rel, data)
    report(f"add-on {addon.name}: {rel} (from {src})")
    manifest["files"][rel] = {"sha256": sha, "size": len(data), "package": addon.name, "version": addon.source,
                              "origin": "addon", "packed_from": str(src)}  # fmt: skip
    manifest["addons"][addon.name] = {
        "env": addon.env,
        "source": addon.source,
        "file": rel,
        "sha256": sha,
    }
    return ""


def addon_archive(folder: Path, addon: Addon) -> Path:
    """The verified archive of an add-on in a wheelhouse, or a one-line error saying why not."""
    manifest = read_manifest(folder)
    entry = manifest["addons"].get(addon.name)
    if not entry or entry.get("source") != addon.source or not entry.get("file"):
        why = (
            (entry or {}).get("missing") if entry and entry.get("source") == addon.source else None
        )
        raise SpectravenvError(
            f"add-on {addon.name} is not in wheelhouse {folder}"
            + (f" (the export said: {why})" if why else "")
            + f"; export it where its source is reachable: `spectravenv sync {addon.env}` then "
            f"`spectravenv wheelhouse export {folder} {addon.env}`"
        )
    path = folder / entry["file"]
    _check_file(folder, entry["file"], entry["sha256"], f"add-on {addon.name}")
    return path


def unpack_addon(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar.getmembers():
            if (
                not (m.isfile() or m.isdir())
                or m.name.startswith(("/", ".."))
                or ".." in Path(m.name).parts
            ):
                raise SpectravenvError(
                    f"{archive} holds {m.name!r}, which is not a plain file inside it; re-export it"
                )
        # Members were checked above; the "data" filter (where this Python has it) checks again.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Pythons before the filter existed
            tar.extractall(dest)


# ---- building from a wheelhouse ----------------------------------------------------------------


def _check_file(folder: Path, rel: str, sha256: str, what: str) -> None:
    path = folder / rel
    if not path.is_file():
        raise SpectravenvError(
            f"wheelhouse {folder} lacks {rel}, which {what} needs; nothing was built. Re-run "
            f"`spectravenv wheelhouse export {folder} ...` where the index is reachable (it "
            "fetches only what is missing) and copy the folder again"
        )
    got = sha256_file(path)
    if got != sha256:
        raise SpectravenvError(
            f"{path} has sha256 {got}, not the {sha256} {what} pins: the file is damaged or was "
            f"tampered with; nothing was built. Delete it and re-run `spectravenv wheelhouse "
            "export` (it fetches only what is missing)"
        )


def requirements_for(folder: Path, env: Env, needed: list[LockedPackage]) -> str:
    """The requirements text uv installs `needed` (packages of env's lock) from, after checking
    that the wheelhouse was made for this very lock and that every file it names is there with
    the sha256 its lock (or, for a wheel built from an sdist, the manifest) gives."""
    manifest = read_manifest(folder)
    entry = manifest["envs"].get(env.name)
    if entry is None:
        has = ", ".join(sorted(manifest["envs"])) or "none"
        raise SpectravenvError(
            f"wheelhouse {folder} holds no files for env {env.name!r} (it has: {has}); run "
            f"`spectravenv wheelhouse export {folder} {env.name}` where the index is reachable"
        )
    if entry["lock_sha256"] != locks.digest(env.lock):
        raise SpectravenvError(
            f"wheelhouse {folder} was exported for another {env.lock.name} (sha256 "
            f"{entry['lock_sha256'][:12]}, this one is {locks.digest(env.lock)[:12]}); re-run "
            f"`spectravenv wheelhouse export {folder} {env.name}` with this spectravenv"
        )
    req_path = folder / entry["requirements"]
    derived = {p.name: p for p in locks.read(req_path, env.name)}
    by_sha = {f["sha256"]: (rel, f) for rel, f in manifest["files"].items()}
    lines = []
    for pkg in needed:
        got = derived.get(pkg.name)
        if got is None or got.version != pkg.version or len(got.hashes) != 1:
            left = pkg.name in entry.get("left_to_base", [])
            raise SpectravenvError(
                f"wheelhouse {folder} has no file of {pkg.name}=={pkg.version} for env "
                f"{env.name!r}"
                + (
                    " (the export left it to the base interpreter, which lacks it here)"
                    if left
                    else ""
                )
                + f"; re-run `spectravenv wheelhouse export {folder} {env.name}`"
            )
        sha = got.hashes[0]
        rel, f = by_sha.get(sha, (None, None))
        trusted = sha in pkg.hashes or (
            f is not None
            and f.get("origin") == "built"
            and f.get("built_from_sha256") in pkg.hashes
        )
        if rel is None or not trusted:
            raise SpectravenvError(
                f"{req_path} pins {pkg.name} to sha256 {sha[:16]}..., which neither "
                f"{env.lock.name} nor a wheel built from its sdist has: the wheelhouse was "
                "tampered with; nothing was built. Re-export it"
            )
        _check_file(folder, rel, sha, f"{pkg.name}=={pkg.version} of env {env.name!r}")
        lines += [f"{pkg.name}=={pkg.version} \\", f"    --hash=sha256:{sha}"]
    return "\n".join(lines) + "\n"
