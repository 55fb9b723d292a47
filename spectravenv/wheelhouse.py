"""Wheelhouses: the exact files of env locks in one folder, so nodes without a package index can
build envs (`spectravenv wheelhouse export DIR`, then `sync --wheelhouse DIR` or
SPECTRAVENV_WHEELHOUSE=DIR).

A wheelhouse holds:

    manifest.json             every file: sha256, size, package, version, where it came from;
                              which env needs which files; add-ons exported or not, and why
    wheels/                   for each locked package the one wheel uv would install for the env's
                              Python and platform, and wheels built here from sdist-only packages
    sdists/                   the sdists those wheels were built from (the files the lock pins)
    requirements/<env>.txt    derived from the env's lock: each package pinned to the sha256 of its
                              one file in wheels/ (a built wheel's own sha256 instead of its sdist's)
    addons/<name>-<h>.tar.gz  git-only add-ons, packed from their installed copy

Files come from the index's simple API (PEP 691 JSON, PEP 503 HTML as a fallback), the same API
and index uv resolves against: the lock's hashes pick the exact files, and every byte downloaded
is hashed before it is kept. `pip download` was the alternative; it reads the user's pip
configuration (other indexes, find-links, global constraints) rather than uv's, cannot take an
sdist-only package in the same `--only-binary` pass, and picks files by its own rules. uv's cache
holds unpacked wheels, not the files themselves, so it cannot be exported either.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import html.parser
import io
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svrunner.files import sha256_file, write_atomic
from svrunner.locking import FileLock, LockBusy

from . import locks, procs
from .catalog import Addon, Catalog, Env
from .errors import SpectravenvError
from .locks import LockedPackage, normalize
from .paths import Paths
from .uvtool import uv_cmd, uv_env

MANIFEST = "manifest.json"
SCHEMA = 1
PYPI = "https://pypi.org/simple"
ENV_VAR = "SPECTRAVENV_WHEELHOUSE"
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")

Reporter = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---- the index ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None


def index_urls(environ: dict[str, str] | None = None) -> list[str]:
    """The indexes uv would resolve against: UV_INDEX / UV_EXTRA_INDEX_URL, then the default
    (UV_DEFAULT_INDEX, UV_INDEX_URL, else PyPI). A file is taken from whichever lists its hash."""
    env = os.environ if environ is None else environ
    extra = (env.get("UV_INDEX") or "").split() + (env.get("UV_EXTRA_INDEX_URL") or "").split()
    # UV_INDEX entries may be named: "name=https://...".
    extra = [u.split("=", 1)[1] if "=" in u.split("://")[0] else u for u in extra]
    return [*extra, env.get("UV_DEFAULT_INDEX") or env.get("UV_INDEX_URL") or PYPI]


def public_url(url: str) -> str:
    """A URL without credentials (a private mirror's token never reaches the manifest or a
    message)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts._replace(fragment=""))


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = 60):
    parts = urllib.parse.urlsplit(url)
    req_headers = dict(headers or {})
    if parts.username or parts.password:
        import base64

        user = urllib.parse.unquote(parts.username or "")
        token = base64.b64encode(f"{user}:{urllib.parse.unquote(parts.password or '')}".encode())
        req_headers["Authorization"] = "Basic " + token.decode()
        url = urllib.parse.urlunsplit(
            parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
        )
    req = urllib.request.Request(
        url, headers={"User-Agent": "spectravenv-wheelhouse", **req_headers}
    )
    return urllib.request.urlopen(req, timeout=timeout)


class _Anchors(html.parser.HTMLParser):
    """PEP 503: one <a href="URL#sha256=HEX">filename</a> per file."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = ""

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href:
            self.links.append((self._href, self._text.strip()))
            self._href = None


def project_files(index: str, name: str) -> list[IndexFile]:
    """Every file the index lists for a project; [] when it has none (404)."""
    url = f"{index.rstrip('/')}/{normalize(name)}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    try:
        with _open(url, {"Accept": accept}) as r:
            body, kind, final = r.read(), r.headers.get("Content-Type", ""), r.geturl()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    if "json" in kind:
        data = json.loads(body)
        return [
            IndexFile(
                f["filename"],
                urllib.parse.urljoin(final, f["url"]),
                f.get("hashes", {}).get("sha256"),
            )
            for f in data.get("files", [])
        ]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    out = []
    for href, text in parser.links:
        full = urllib.parse.urljoin(final, href)
        frag = urllib.parse.urlsplit(full).fragment
        sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
        filename = text or urllib.parse.unquote(urllib.parse.urlsplit(full).path.rsplit("/", 1)[-1])
        out.append(IndexFile(filename, full.split("#", 1)[0], sha))
    return out


def _lookup(name: str, indexes: list[str]) -> list[IndexFile]:
    files: list[IndexFile] = []
    errors = []
    for index in indexes:
        for attempt in range(3):
            try:
                files += project_files(index, name)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                if attempt == 2:
                    errors.append(f"{public_url(index)}: {getattr(e, 'reason', e)}")
                time.sleep(1 + attempt)
    if errors and not files:
        raise SpectravenvError(
            f"cannot read {name}'s files from the package index ({errors[0]}); `wheelhouse "
            "export` needs the index (run it where uv can reach it: UV_DEFAULT_INDEX for a mirror)"
        )
    return files


# ---- which file of a locked package ------------------------------------------------------------


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


def target_tags(python: str, platform: str) -> dict[Any, int]:
    """Wheel tags a CPython of `python` ("3.10") on `platform` installs, with their priority
    (0 best), ordered as installers order them."""
    from packaging import tags

    try:
        version = tuple(int(x) for x in python.split(".")[:2])
    except ValueError:
        raise SpectravenvError(
            f"wheelhouse: python {python!r} is not a version like 3.10"
        ) from None
    plats = _platform_tags(platform)
    cp = f"cp{version[0]}{version[1]}"
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


def choose(
    pkg: LockedPackage, files: list[IndexFile], priority: dict[Any, int]
) -> tuple[IndexFile, str]:
    """The file uv would install for `pkg` on the target: the best-ranked compatible wheel the
    lock pins, else its sdist (built into a wheel at export). ("wheel" | "sdist")"""
    pinned = [f for f in files if f.sha256 in pkg.hashes]
    wheels = [(r, f.filename, f) for f in pinned if f.filename.endswith(".whl")
              for r in [wheel_rank(f.filename, priority)] if r is not None]  # fmt: skip
    if wheels:
        return min(wheels)[2], "wheel"
    sdists = sorted(
        (f for f in pinned if f.filename.endswith(_SDIST_SUFFIXES)), key=lambda f: f.filename
    )
    if sdists:
        return sdists[0], "sdist"
    what = (
        "no file with a sha256 the lock pins"
        if not pinned
        else "no wheel for this Python and platform, and no sdist"
    )
    raise SpectravenvError(
        f"{pkg.name}=={pkg.version}: the index lists {what}; re-lock or check the index"
    )


# ---- downloading -------------------------------------------------------------------------------


def _download(url: str, dest: Path, sha256: str) -> int:
    """Fetch url to dest, resuming a partial `.part` file; keep it only if its sha256 is the
    one pinned. Returns the bytes transferred."""
    part = dest.with_name(f".{dest.name}.part")
    last: BaseException | None = None
    for attempt in range(4):
        have = part.stat().st_size if part.exists() else 0
        h = hashlib.sha256()
        if have:
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        got = 0
        try:
            with _open(url, {"Range": f"bytes={have}-"} if have else None, timeout=120) as r:
                if have and r.status != 206:  # the server ignores ranges: start again
                    h, have = hashlib.sha256(), 0
                with part.open("ab" if have else "wb") as out:
                    for chunk in iter(lambda r=r: r.read(1 << 20), b""):
                        out.write(chunk)
                        h.update(chunk)
                        got += len(chunk)
        except urllib.error.HTTPError as e:
            if e.code != 416:  # 416: nothing left to send, the part is whole
                last = e
                time.sleep(1 + attempt)
                continue
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last = e
            time.sleep(1 + attempt)
            continue
        if h.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            if have:  # the part kept from before was bad: once more, from the start
                continue
            raise SpectravenvError(
                f"{dest.name} from {public_url(url)} has sha256 {h.hexdigest()}, not the {sha256} "
                "the lock pins; nothing was kept (a broken mirror, or a tampered file)"
            )
        os.replace(part, dest)
        return got
    raise SpectravenvError(
        f"could not download {dest.name} from {public_url(url)}: {getattr(last, 'reason', last)}"
    )


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
    """One file of the wheelhouse and the locked packages it serves."""

    rel: str  # wheels/x.whl or sdists/x.tar.gz
    file: IndexFile
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
    workers: int = 6,
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
    from . import envs
    from .pythons import inspect_base

    base = inspect_base(env.base_python, env.name)
    satisfied, extras = envs.split_for_base(env, packages, base)
    return extras, [p.name for p in satisfied], f"only what base_python {env.base_python} lacks"


def _export(catalog, paths, folder, chosen, report, workers, started) -> ExportSummary:
    old = None
    with contextlib.suppress(SpectravenvError):
        old = read_manifest(folder)
    manifest = old or _new_manifest()
    indexes = index_urls()

    per_env: dict[str, tuple[list[LockedPackage], list[str], str]] = {}
    for env in chosen:
        per_env[env.name] = _wanted(env, report)

    names = sorted({p.name for pk, _, _ in per_env.values() for p in pk})
    report(f"looking up {len(names)} packages on {', '.join(public_url(i) for i in indexes)} ...")
    with ThreadPoolExecutor(workers) as pool:
        listing = dict(zip(names, pool.map(lambda n: _lookup(n, indexes), names), strict=True))

    needs: dict[str, _Need] = {}
    by_env: dict[str, list[_Need]] = {}
    for env in chosen:
        priority = target_tags(env.python, env.platform)
        for pkg in per_env[env.name][0]:
            f, kind = choose(pkg, listing[pkg.name], priority)
            rel = f"{'wheels' if kind == 'wheel' else 'sdists'}/{f.filename}"
            need = needs.setdefault(rel, _Need(rel, f, kind, pkg))
            need.envs.append(env)
            by_env.setdefault(env.name, []).append(need)

    # Download what is not here yet (or is here with another sha256), several files at once.
    (folder / "wheels").mkdir(exist_ok=True)
    (folder / "sdists").mkdir(exist_ok=True)
    todo = [n for n in needs.values() if not _present(folder / n.rel, n.file.sha256)]
    already = len(needs) - len(todo)
    total = 0
    if todo:
        report(f"downloading {len(todo)} files ({already} already here) ...")
        with ThreadPoolExecutor(min(workers, 4)) as pool:
            for n, got in zip(
                todo,
                pool.map(lambda n: _download(n.file.url, folder / n.rel, n.file.sha256), todo),
                strict=True,
            ):
                total += got
                report(f"  {n.rel} ({got / 1e6:.1f} MB)")
    for n in needs.values():
        manifest["files"][n.rel] = {
            "sha256": n.file.sha256,
            "size": (folder / n.rel).stat().st_size,
            "package": n.pkg.name,
            "version": n.pkg.version,
            "origin": "index",
            "url": public_url(n.file.url),
        }

    # sdist-only packages: a wheel built here with the env's Python, so nodes need no compiler.
    built_for: dict[tuple[str, str], str] = {}  # (sdist rel, env name) -> wheel rel
    for n in needs.values():
        if n.kind != "sdist":
            continue
        for env in n.envs:
            built_for[(n.rel, env.name)] = _built_wheel(n, env, folder, manifest, paths, report)

    results = []
    for env in chosen:
        extras, left, note = per_env[env.name]
        entries = by_env.get(env.name, [])
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
        results.append(EnvExport(env.name, len(extras), len(files), built, left, rel, note))

    exported, missing = [], []
    for env in chosen:
        for addon in sorted(
            (a for a in catalog.addons.values() if a.env == env.name), key=lambda a: a.name
        ):
            why = _export_addon(addon, folder, manifest, paths, report)
            (missing.append((addon.name, why)) if why else exported.append(addon.name))

    _write_manifest(folder, manifest)
    size = sum(f["size"] for f in manifest["files"].values())
    return ExportSummary(folder, results, len(todo), total, already, exported, missing, size,
                         time.monotonic() - started)  # fmt: skip


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
        if (f.get("origin") == "built" and f.get("built_from_sha256") == need.file.sha256
                and f.get("python") == env.python and _present(folder / rel, f["sha256"])):  # fmt: skip
            return rel
    from .pythons import find_python

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
        "built_from_sha256": need.file.sha256,
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
                      f"    # {rel}: built by spectravenv from {n.rel} (sha256:{n.file.sha256}, pinned by {env.lock.name})"]  # fmt: skip
        else:
            files.append(n.rel)
            lines += [
                f"{n.pkg.name}=={n.pkg.version} \\",
                f"    --hash=sha256:{n.file.sha256}",
                f"    # {n.rel}",
            ]
    return "\n".join(lines) + "\n", files, built


# ---- add-ons -----------------------------------------------------------------------------------


def _addon_rel(addon: Addon) -> str:
    return f"addons/{addon.name}-{hashlib.sha256(addon.source.encode()).hexdigest()[:12]}.tar.gz"


def installed_addon(addon: Addon, paths: Paths) -> Path | None:
    """The add-on's installed copy in SPECTRAVENV_HOME (`spectravenv sync` made it where GitHub
    was reachable), if one of this very source exists."""
    from .envs import MARKER

    for p in sorted(paths.addons.glob(f"{addon.name}-*")) if paths.addons.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((p / MARKER).read_text()).get("source") == addon.source:
                return p
    return None


def _pack(src: Path) -> bytes:
    """A tar.gz of a folder whose bytes depend only on its files (sorted, no owners or times),
    so exporting the same add-on twice gives the same sha256."""
    from .envs import MARKER

    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if rel.name == MARKER or "__pycache__" in rel.parts:
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
