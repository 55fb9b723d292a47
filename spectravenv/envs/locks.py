"""Lock files: compile them with uv, read and validate them, hash them."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spectravenv import procs
from spectravenv.catalog.entries import Env
from spectravenv.envs.pythons import BaseInterpreter, find_python
from spectravenv.envs.uv import uv_cmd, uv_env
from spectravenv.errors import SpectravenvError
from spectravenv.paths import PACKAGE_DIR, Paths

# "name==version \" followed by "--hash=sha256:..." continuation lines, as uv and pip-tools write.
_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:(?P<h>[0-9a-f]{64})\b")


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    hashes: tuple[str, ...]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_command(
    env: Env, output: Path, python: Path | None = None, constraints: Path | None = None
) -> list[str]:
    """The exact `uv pip compile` call for an env: fixed Python, platform and resolution date.

    Paths are given relative to the lock's folder (where it runs), so the `# via -r x.in`
    comments, and with them the lock's bytes and hash, do not depend on the checkout's location.
    """
    if env.source is None:
        raise SpectravenvError(
            f"env {env.name!r} has no 'source' (.in file) to compile a lock from"
        )
    here = env.lock.parent

    def rel(p: Path) -> str:
        return os.path.relpath(p, here)

    cmd = uv_cmd(
        "pip", "compile", rel(env.source),
        "--generate-hashes",
        "--python-version", env.python,
        "--python-platform", env.platform,
        "--custom-compile-command", f"spectravenv lock {env.name}",
        "--output-file", rel(output),
    )  # fmt: skip
    if python is not None:  # builds sdists for metadata with the env's own Python version
        cmd += ["--python", str(python)]
    if env.exclude_newer:
        cmd += ["--exclude-newer", env.exclude_newer]
    if env.overrides is not None:
        cmd += ["--override", rel(env.overrides)]
    if constraints is not None:  # a base_python env: the base's packages, as they are
        cmd += ["--constraint", rel(constraints)]
    return cmd


def base_constraints_file(env: Env) -> Path:
    return env.lock.with_name(f"{env.lock.name.removesuffix('.lock')}.base.txt")


def write_base_constraints(env: Env) -> Path:
    """`<env>.base.txt` next to the lock: every package of the env's base_python as
    `name==version`, so the lock resolves with what the base has fixed (spectravenv never
    shadows a base package). Written from the base where it exists here, and kept, so a lock can
    also be made on a machine with an index but without the base: copy the file there."""
    from spectravenv.envs.pythons import inspect_base

    path = base_constraints_file(env)
    if not os.access(env.base_python, os.X_OK):
        if path.is_file():
            return path
        raise SpectravenvError(
            f"env {env.name!r}: base_python {env.base_python} is not on this machine, and there "
            f"is no {path.name} listing its packages; run `spectravenv lock {env.name}` where the "
            f"base exists (it writes {path.name} first, even without an index) and copy that file here"
        )
    from packaging.version import InvalidVersion, Version

    base = inspect_base(env.base_python, env.name)
    lines = [
        f"# The packages of base_python {env.base_python} (Python {base.python}), written by",
        f"# `spectravenv lock {env.name}`: {env.lock.name} is resolved with these fixed.",
    ]
    for name, (version, _) in sorted(base.packages.items()):
        try:
            public = Version(version).public  # a local build (2.1.2+cu121) is not on an index
        except InvalidVersion:
            continue
        lines.append(f"{name}=={public}")
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text() != text:
        from svrunner.files import write_atomic

        write_atomic(path, text)
    return path


def as_requirements(packages: list[LockedPackage]) -> str:
    """Hash-pinned requirements for some of a lock's packages (what a base lacks)."""
    lines = []
    for p in packages:
        lines += [f"{p.name}=={p.version} \\", *(f"    --hash=sha256:{h} \\" for h in p.hashes[:-1]),
                  f"    --hash=sha256:{p.hashes[-1]}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def check_writable(env: Env) -> None:
    """A lock inside the installed spectravenv package is not ours to rewrite: every later
    `sync` would silently build something else than the package shipped."""
    installed = PACKAGE_DIR / "_shipped"
    if installed.is_dir() and env.lock.resolve().is_relative_to(installed.resolve()):
        raise SpectravenvError(
            f"env {env.name!r} is defined by the installed spectravenv package; its lock "
            f"{env.lock} is not rewritten. Re-lock in a source checkout installed with "
            "`pip install -e .`, or define your own env in a spectravenv.toml (its lock is "
            "written next to that file)"
        )


def compile_lock(env: Env, paths: Paths, *, upgrade: bool = False) -> Path:
    """(Re)write `env.lock` from `env.source`; atomically, so a failed compile keeps the old lock.

    The lock is written where the catalog entry that defines the env put it: the checkout's
    locks/ for a shipped env (editable install), the folder of the user's spectravenv.toml
    for a user's env.
    """
    check_writable(env)
    for need in (env.source, env.overrides):
        if need is not None and not need.is_file():
            raise SpectravenvError(f"env {env.name!r}: {need} does not exist")
    tmp = env.lock.with_name(env.lock.name + ".new")
    if env.lock.exists() and not upgrade:
        # Start from the current pins so an unchanged .in gives an unchanged lock.
        tmp.write_bytes(env.lock.read_bytes())
    constraints = write_base_constraints(env) if env.base_python is not None else None
    if env.base_python is not None and os.access(env.base_python, os.X_OK):
        python = env.base_python  # builds sdists for metadata on the very interpreter
    else:
        python = find_python(env.python, paths)
    cmd = compile_command(env, tmp, python, constraints)
    cmd += ["--upgrade"] if upgrade else []
    proc = procs.run(cmd, env=uv_env(paths), cwd=env.lock.parent)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SpectravenvError(f"could not lock env {env.name!r}: {uv_error_line(proc.stderr)}")
    read(tmp, env.name)  # refuse to install a lock we could not read back
    tmp.replace(env.lock)
    return env.lock


def uv_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith(("error:", "×")):
            rest = " ".join(lines[i : i + 3])
            return rest.removeprefix("error:").strip()[:400]
    return (lines[-1] if lines else "uv gave no message")[:400]


def read(path: Path, env_name: str) -> list[LockedPackage]:
    """Parse a hash-locked requirements file; anything unpinned or unhashed is refused."""
    redo = f"re-create it with `spectravenv lock {env_name}`"
    packages = []
    for lineno, name, version, hashes in _requirements(
        _logical_lines(_lock_text(path, env_name)), path, redo
    ):
        if not hashes:
            raise SpectravenvError(
                f"{path}:{lineno}: {name}=={version} has no --hash; the lock is garbled, {redo}"
            )
        packages.append(LockedPackage(normalize(name), version, tuple(hashes)))
    if not packages:
        raise SpectravenvError(f"lock file {path} for env {env_name!r} pins no package; {redo}")
    return packages


def _lock_text(path: Path, env_name: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise SpectravenvError(
            f"lock file {path} for env {env_name!r} is missing; create it with "
            f"`spectravenv lock {env_name}`"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpectravenvError(f"cannot read lock file {path}: {e}") from None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per requirement: comments dropped, backslash continuations joined."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not buf:
            start = lineno
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append((start, buf.strip()))
        buf = ""
    return logical


def _requirements(
    logical: list[tuple[int, str]], path: Path, redo: str
) -> Iterator[tuple[int, str, str, list[str]]]:
    """(line number, name, version, hashes) per pinned requirement; a `--hash` line belongs to
    the requirement above it, other pip options are skipped."""
    current: tuple[int, str, str, list[str]] | None = None
    for lineno, line in logical:
        if line.startswith("--hash"):
            if current is not None:
                current[3].extend(_HASH.findall(line))
            continue
        if line.startswith("-"):
            continue  # pip options such as --index-url
        m = _REQ.match(line)
        if not m:
            raise SpectravenvError(
                f"{path}:{lineno}: {line[:60]!r} is not a pinned requirement (name==version); "
                f"the lock is garbled, {redo}"
            )
        if current is not None:
            yield current
        current = (lineno, m["name"], m["version"], _HASH.findall(line))
    if current is not None:
        yield current


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned(packages: list[LockedPackage], name: str) -> str | None:
    want = normalize(name)
    return next((p.version for p in packages if p.name == want), None)


# ---- base_python envs ---------------------------------------------------------------------------


def same_version(have: str, pinned: str) -> bool:
    """`have` satisfies `==pinned` as pip reads it: a local label (2.1.2+cu121) is ignored when
    the pin has none."""
    from packaging.specifiers import InvalidSpecifier, Specifier

    try:
        return Specifier(f"=={pinned}").contains(have, prereleases=True)
    except InvalidSpecifier:
        return have == pinned


def split_for_base(
    env: Env, packages: list[LockedPackage], base: BaseInterpreter
) -> tuple[list[LockedPackage], list[LockedPackage]]:
    """(what the base already has at the locked version, what the env must install).

    A base package is never shadowed: one the base has at another version than the lock pins is
    refused (its other packages were built against it), torch and transformers first, because a
    base whose torch or transformers differs cannot serve the env's models."""
    if base.python.rsplit(".", 1)[0] != env.python and base.python != env.python:
        raise SpectravenvError(
            f"env {env.name!r}: base_python {env.base_python} is Python {base.python}, but the "
            f"env is Python {env.python} (its lock is resolved for it); point base_python at a "
            f'Python {env.python}, or set python = "{base.python.rsplit(".", 1)[0]}" and re-lock'
        )
    tf = base.version_of("transformers")
    if tf is not None and not same_version(tf, env.transformers):
        raise SpectravenvError(
            f"env {env.name!r} cannot run on base_python {env.base_python}: the base has "
            f"transformers {tf}, but the env declares transformers {env.transformers}, which its "
            f"models need; use a base with transformers {env.transformers} (or none: the lock's "
            "is then installed), or an env that declares the base's"
        )
    satisfied, extras, conflicts = [], [], []
    for p in packages:
        have = base.version_of(p.name)
        if have is None:
            extras.append(p)
        elif same_version(have, p.version):
            satisfied.append(p)
        else:
            conflicts.append((p, have))
    if conflicts:
        conflicts.sort(key=lambda c: (c[0].name not in ("torch", "transformers"), c[0].name))
        p, have = conflicts[0]
        others = [c[0].name for c in conflicts[1:]]
        more = (
            f" (and {len(others)} more: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"
            if others
            else ""
        )
        head = (
            f"env {env.name!r} cannot run on base_python {env.base_python}: the base has "
            f"{p.name} {have}, but {env.lock.name} pins {p.name}=={p.version}{more}"
        )
        raise SpectravenvError(
            f"{head}; spectravenv never shadows a base package: re-lock against this base with "
            f"`spectravenv lock {env.name}` (it resolves with the base's packages fixed), or use "
            "a base that matches the lock"
        )
    return satisfied, extras
