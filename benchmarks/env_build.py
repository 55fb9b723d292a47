#!/usr/bin/env python3
"""Benchmark (not a test): how long spectravenv takes to build its envs and what they cost on
disk, against the plain way of installing the same lock files, measured in one run on one machine.

spectravenv's claims are that uv plus a shared, hardlinked cache makes a second env (or the same
env in a second home) cheap in time and disk, and that `sync` on a ready env costs nearly nothing.
This script measures exactly those, each number next to a baseline measured in the same run:

spectravenv (a fresh SPECTRAVENV_HOME, its uv cache empty and inside that home):
  1. cold build of tf437            `spectravenv sync tf437 --no-addons`, empty uv cache
  2. second env from the warm cache `spectravenv sync tf433 --no-addons` (shares torch with tf437)
  3. tf437 again in a second fresh home that uses the same warm uv cache (a new user on a machine
     with a warm cache, or a changed lock)
  4. no-op `spectravenv sync tf437 --no-addons` on the ready env (median of 5)

the baseline, step by step (`python3.10 -m venv DIR && DIR/bin/pip install --require-hashes
--no-deps -r LOCK`, a pip cache of its own, pip config files and find-links switched off):
  1. tf437 with an empty pip cache
  2. tf433 from the warm pip cache
  3. tf437 again from the warm pip cache
  4. the same pip install again on the ready tf437 env (median of 5)

pip's HTTP cache only keeps what the server allows to be cached. Behind a mirror or proxy that
strips Cache-Control, pip's cache stays empty and its "warm" builds download everything again.
The script notices (a warm step that still printed "Downloading"), keeps those numbers as extra
rows, and measures steps 2 and 3 again with a stand-in for a warm cache: the same files fetched
once by `pip download` (not timed), installed with `--no-index --find-links`. That stand-in is a
little kinder to pip than a real warm cache (no index requests at all).

pip writes bytecode while it installs, and spectravenv runs compileall after `uv pip sync`, so both
envs end up compiled. spectravenv's times also include what it does beyond installing (finding
Python, the import check of transformers and vlmeval, the marker, the rename), because that is
what a user waits for; a breakdown of its warm build shows where that time goes.

Disk is measured with `du`: each env alone (`du -s`), the sum of those, and the envs together
(`du -sc`, where a file hardlinked into several envs or the cache counts once), with and without
the package cache.

Network speed is part of every cold number, and the page cache is left warm between steps (the
script never drops caches), so run it on an otherwise idle machine and compare ratios, not
seconds, across machines.

    python benchmarks/env_build.py [--scratch DIR] [--keep] [--skip-pip] [--python PYTHON3.10]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "locks"
PROBE = REPO / "runners" / "env_probe.py"
FIRST, SECOND = "tf437", "tf433"  # the second env shares torch (and most wheels) with the first
VERIFY = ("transformers", "vlmeval")  # what spectravenv imports to check a new env (the default)
NOOP_REPEATS = 5
GIB = 1024**3
PYENV_PYTHON = Path("/root/.pyenv/versions/3.10.13/bin/python")

# Variables that must not leak into the tools from the caller: they could point pip or uv at
# local wheel folders or other indexes, switch bytecode off, or redirect an install.
DROPPED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONHOME", "CONDA_PREFIX")
# Of the PIP_* and UV_* variables only these survive: how to reach the network, nothing about
# where packages come from.
PIP_KEPT = ("PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_DEFAULT_TIMEOUT")
UV_KEPT = ("UV_NATIVE_TLS", "UV_HTTP_TIMEOUT")


class BenchError(Exception):
    """A step failed; the message says which and shows the end of its output."""


@dataclass
class Row:
    step: str
    spectravenv: float | None = None
    pip: float | None = None


@dataclass
class Results:
    times: list[Row]
    disk: list[Row]
    extra_times: list[Row] = field(default_factory=list)  # pip with a cache that did not work
    anatomy: list[tuple[str, float]] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- running things ----------------------------------------------------------------------------


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], env: dict[str, str], log: Path, cwd: Path) -> float:
    """Run `cmd`, appending its output to `log`; return its wall time in seconds."""
    argv = [str(c) for c in cmd]
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.run(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BenchError(f"`{' '.join(argv)}` failed with exit {proc.returncode}:\n{tail}")
    return elapsed


def output(cmd: Sequence[str | Path], env: dict[str, str] | None = None) -> str:
    """The stdout of a quick command that must succeed."""
    argv = [str(c) for c in cmd]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def median_of(repeats: int, once: Callable[[], float]) -> tuple[float, float, float]:
    """Median, min and max wall time of `repeats` calls."""
    runs = [once() for _ in range(repeats)]
    return statistics.median(runs), min(runs), max(runs)


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in DROPPED
        and not (k.startswith("PIP_") and k not in PIP_KEPT)
        and not (k.startswith("UV_") and k not in UV_KEPT)
    }


def spectravenv_env(home: Path, uv_cache: Path, config: Path) -> dict[str, str]:
    """spectravenv with a home of its own, an explicit uv cache, no uv or spectravenv config."""
    env = clean_env()
    env.update(
        SPECTRAVENV_HOME=str(home),
        UV_CACHE_DIR=str(uv_cache),
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_CONFIG="1",
        XDG_CONFIG_HOME=str(config),  # no user-level spectravenv.toml can swap a lock
    )
    return env


def pip_env(pip_cache: Path) -> dict[str, str]:
    """pip with a cache of its own and no config files (so no find-links or extra indexes)."""
    env = clean_env()
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_CACHE_DIR=str(pip_cache),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    return env


def spectravenv_cmd() -> list[str]:
    return [sys.executable, "-m", "spectravenv.cli"]


def uv_exe() -> str:
    """The uv binary spectravenv itself calls."""
    return output([sys.executable, "-c", "from spectravenv.uvtool import uv_bin; print(uv_bin())"])


# ---- disk --------------------------------------------------------------------------------------


def du(*folders: Path) -> int:
    """Bytes `du` reports for the folders together: a file hardlinked among them counts once."""
    last = output(["du", "-s", "-c", "-B1", *folders]).splitlines()[-1]
    return int(last.split()[0])


def du_alone(*folders: Path) -> int:
    """The sum of `du -s` of each folder on its own: every hardlinked file counts in full."""
    return sum(du(f) for f in folders)


DISK_STEPS = [
    f"{FIRST} env, `du -s` alone",
    f"{SECOND} env, `du -s` alone",
    "sum of the two, each alone",
    "the two together (`du -sc`, hardlinks once)",
    "package cache alone",
    "the two together + cache",
    f"three envs ({FIRST} twice, {SECOND}) together + cache",
]


def disk_numbers(first: Path, second: Path, third: Path, caches: Sequence[Path]) -> list[int]:
    """One tool's column of the disk table, in the order of DISK_STEPS."""
    return [
        du(first),
        du(second),
        du_alone(first, second),
        du(first, second),
        du(*caches),
        du(first, second, *caches),
        du(first, second, third, *caches),
    ]


# ---- spectravenv -------------------------------------------------------------------------------


def env_folder(home: Path, name: str) -> Path:
    found = [p for p in (home / "envs").glob(f"{name}-*") if p.is_dir()]
    if len(found) != 1:
        raise BenchError(f"expected one {name} env in {home / 'envs'}, found {found}")
    return found[0]


def bench_spectravenv(scratch: Path, python: Path, res: Results) -> None:
    home1, home2 = scratch / "sv-home-1", scratch / "sv-home-2"
    uv_cache = home1 / "uv-cache"
    config = scratch / "empty-config"
    config.mkdir()
    log = scratch / "logs" / "spectravenv.log"
    env1 = spectravenv_env(home1, uv_cache, config)
    env2 = spectravenv_env(home2, uv_cache, config)

    def sync(env: dict[str, str], name: str) -> float:
        return run([*spectravenv_cmd(), "sync", name, "--no-addons"], env, log, scratch)

    say(f"spectravenv: cold build of {FIRST} (empty uv cache) ...")
    cold = sync(env1, FIRST)
    say(f"  {cold:.1f} s\nspectravenv: {SECOND} from the warm cache ...")
    second = sync(env1, SECOND)
    say(f"  {second:.1f} s\nspectravenv: {FIRST} in a second home, same warm cache ...")
    rebuild = sync(env2, FIRST)
    say(f"  {rebuild:.1f} s\nspectravenv: no-op sync x{NOOP_REPEATS} ...")
    noop, lo, hi = median_of(NOOP_REPEATS, lambda: sync(env1, FIRST))
    say(f"  median {noop:.2f} s (min {lo:.2f}, max {hi:.2f})")
    res.notes.append(f"spectravenv no-op sync: min {lo:.2f} s, max {hi:.2f} s of {NOOP_REPEATS}")

    for row, t in zip(res.times, (cold, second, rebuild, noop), strict=True):
        row.spectravenv = t
    first_env, second_env = env_folder(home1, FIRST), env_folder(home1, SECOND)
    numbers = disk_numbers(first_env, second_env, env_folder(home2, FIRST), [uv_cache])
    for row, b in zip(res.disk, numbers, strict=True):
        row.spectravenv = b
    bench_anatomy(scratch, python, env1, rebuild, res)


def bench_anatomy(
    scratch: Path, python: Path, env: dict[str, str], total: float, res: Results
) -> None:
    """Where a warm spectravenv build spends its time: its steps, run one by one by hand."""
    venv = scratch / "anatomy-venv"
    log = scratch / "logs" / "anatomy.log"
    uv = uv_exe()
    uv_env = dict(env, UV_LINK_MODE="hardlink")
    lock = LOCKS / f"{FIRST}.lock"
    say(f"breakdown of a warm {FIRST} build ...")
    made = run([uv, "venv", "--relocatable", "--python", python, venv], uv_env, log, scratch)
    synced = run(
        [uv, "pip", "sync", "--python", venv / "bin" / "python", "--require-hashes", lock],
        uv_env,
        log,
        scratch,
    )
    site = next((venv / "lib").glob("python*/site-packages"))
    compiled = run(
        [venv / "bin" / "python", "-m", "compileall", "-q", "-q", "-j", "0", site],
        env,
        log,
        scratch,
    )
    probed = run([venv / "bin" / "python", PROBE, *VERIFY], env, log, scratch)
    shutil.rmtree(venv)
    steps = [
        ("`uv venv` + `uv pip sync` from the warm cache", made + synced),
        ("`python -m compileall -j 0` of site-packages", compiled),
        (f"import check ({', '.join(VERIFY)})", probed),
    ]
    # Measured on their own, once, after step 3: compare magnitudes, not the last second.
    total_steps = ("sum of the three", sum(t for _, t in steps))
    res.anatomy = [*steps, total_steps, ("spectravenv step 3 (the whole build), from above", total)]


# ---- pip ---------------------------------------------------------------------------------------


def check_pip_config(python: Path, env: dict[str, str], res: Results) -> None:
    """Refuse to run if pip would still see a find-links folder or another index."""
    listed = output([python, "-m", "pip", "config", "list"], env)
    say(f"pip config list:\n{listed or '(empty)'}")
    words = ("find-links", "find_links", "index-url", "index_url", "no-index")
    bad = [w for w in words if w in listed]
    if bad:
        raise BenchError(f"pip config still sets {bad}; the baseline must use PyPI like uv does")
    shown = listed.replace("\n", "; ") or "empty"
    res.notes.append(f"`pip config list` for the baseline: {shown}")


class Pip:
    """Builds baseline envs: `python -m venv` then `pip install --require-hashes --no-deps`."""

    def __init__(self, scratch: Path, python: Path) -> None:
        self.scratch, self.python = scratch, python
        self.cache = scratch / "pip-cache"
        self.cache.mkdir()
        self.wheelhouse = scratch / "pip-wheelhouse"
        self.env = pip_env(self.cache)

    def log(self, step: str) -> Path:
        return self.scratch / "logs" / f"pip-{step}.log"

    def build(self, dest: Path, name: str, step: str, *extra: str) -> float:
        made = run([self.python, "-m", "venv", dest], self.env, self.log(step), self.scratch)
        return made + self.install(dest, name, step, *extra)

    def install(self, dest: Path, name: str, step: str, *extra: str) -> float:
        lock = LOCKS / f"{name}.lock"
        cmd = [dest / "bin" / "pip", "install", "--require-hashes", "--no-deps", *extra, "-r", lock]
        return run(cmd, self.env, self.log(step), self.scratch)

    def downloads(self, step: str) -> int:
        """How many files pip downloaded (rather than took from its cache) in a step."""
        text = self.log(step).read_text(errors="replace")
        return sum(1 for line in text.splitlines() if line.strip().startswith("Downloading "))

    def fill_wheelhouse(self) -> None:
        """The stand-in for a warm cache: every file of both locks, fetched once, not timed."""
        for name in (FIRST, SECOND):
            lock = LOCKS / f"{name}.lock"
            cmd = [self.python, "-m", "pip", "download", "--require-hashes", "--no-deps"]
            run(
                [*cmd, "-d", self.wheelhouse, "-r", lock],
                self.env,
                self.log("wheelhouse"),
                self.scratch,
            )

    def build_offline(self, dest: Path, name: str, step: str) -> float:
        shutil.rmtree(dest)
        return self.build(dest, name, step, "--no-index", "--find-links", str(self.wheelhouse))


def bench_pip(scratch: Path, python: Path, res: Results) -> None:
    pip = Pip(scratch, python)
    check_pip_config(python, pip.env, res)
    first, again = scratch / "pip-tf437", scratch / "pip-tf437-again"
    second = scratch / "pip-tf433"

    say(f"pip: cold build of {FIRST} (empty pip cache) ...")
    cold = pip.build(first, FIRST, "1-cold")
    res.facts.append(("pip (in the venvs)", output([first / "bin" / "pip", "--version"], pip.env)))
    say(f"  {cold:.1f} s\npip: {FIRST} again from the warm pip cache ...")
    rebuild = pip.build(again, FIRST, "3-again")
    say(f"  {rebuild:.1f} s\npip: {SECOND} from the warm pip cache ...")
    second_t = pip.build(second, SECOND, "2-second")
    say(f"  {second_t:.1f} s\npip: no-op install x{NOOP_REPEATS} ...")
    noop, lo, hi = median_of(NOOP_REPEATS, lambda: pip.install(first, FIRST, "4-noop"))
    say(f"  median {noop:.2f} s (min {lo:.2f}, max {hi:.2f})")
    res.notes.append(f"pip no-op install: min {lo:.2f} s, max {hi:.2f} s of {NOOP_REPEATS}")

    caches = [pip.cache]
    fetched = pip.downloads("3-again") + pip.downloads("2-second")
    if fetched:
        say(
            f"pip's cache served nothing: its warm steps downloaded {fetched} files again. "
            "Measuring steps 2 and 3 again from a wheelhouse (a stand-in for a warm cache) ..."
        )
        sv_second, sv_again = res.times[1].spectravenv, res.times[2].spectravenv
        res.extra_times = [
            Row(f"2b. {SECOND}, pip's own cache (it kept nothing: all downloaded again)",
                sv_second, second_t),
            Row(f"3b. {FIRST} again, pip's own cache (it kept nothing: all downloaded again)",
                sv_again, rebuild),
        ]  # fmt: skip
        pip.fill_wheelhouse()
        second_t = pip.build_offline(second, SECOND, "2-wheelhouse")
        say(f"  {SECOND}: {second_t:.1f} s")
        rebuild = pip.build_offline(again, FIRST, "3-wheelhouse")
        say(f"  {FIRST} again: {rebuild:.1f} s")
        for row in res.times[1:3]:
            row.step += " ¹"
        res.notes.append(
            f"¹ pip's HTTP cache stayed empty on this machine (the package mirror sends no "
            f"Cache-Control headers), so its warm steps downloaded {fetched} files again (rows "
            "2b, 3b). The pip numbers in rows 2 and 3 are a stand-in for a working warm cache: the "
            "same files, fetched beforehand by `pip download` (not timed), installed with "
            "`--no-index --find-links`. The pip cache row of the disk table is that wheelhouse."
        )
        caches.append(pip.wheelhouse)
    for row, t in zip(res.times, (cold, second_t, rebuild, noop), strict=True):
        row.pip = t
    for row, b in zip(res.disk, disk_numbers(first, second, again, caches), strict=True):
        row.pip = b


# ---- reporting ---------------------------------------------------------------------------------


def first_line(path: Path, prefix: str) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(prefix)), None)


def machine_facts(scratch: Path, python: Path) -> list[tuple[str, str]]:
    mem = first_line(Path("/proc/meminfo"), "MemTotal")
    mem_gib = f"{int(mem.split()[0]) / 1024**2:.0f} GiB" if mem else "?"
    fs_type, avail = output(["df", "--output=fstype,avail", "-h", scratch]).splitlines()[-1].split()
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("nproc", output(["nproc"])),
        ("CPU", first_line(Path("/proc/cpuinfo"), "model name") or platform.processor() or "?"),
        ("memory", mem_gib),
        ("kernel", platform.release()),
        ("scratch filesystem", f"{fs_type}, {avail} free at the start"),
        ("uv (spectravenv's)", output([uv_exe(), "--version"])),
        ("spectravenv", output([*spectravenv_cmd(), "--version"])),
        ("Python of the envs", f"{output([python, '--version'])} ({python})"),
    ]


def seconds(x: float | None) -> str:
    return "—" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def gib(x: float | None) -> str:
    return "—" if x is None else f"{x / GIB:.2f}"


def ratio(pip: float | None, sv: float | None) -> str:
    return "—" if pip is None or not sv else f"{pip / sv:.2f}×"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(res: Results) -> str:
    facts = table(("machine", ""), res.facts)
    times = table(
        ("step", "spectravenv s", "pip s", "ratio (pip/spectravenv)"),
        [(r.step, seconds(r.spectravenv), seconds(r.pip), ratio(r.pip, r.spectravenv))
         for r in [*res.times, *res.extra_times]],
    )  # fmt: skip
    disk = table(
        ("disk", "spectravenv GiB", "pip GiB", "ratio (pip/spectravenv)"),
        [(r.step, gib(r.spectravenv), gib(r.pip), ratio(r.pip, r.spectravenv)) for r in res.disk],
    )
    anatomy = table(
        (f"a warm spectravenv build of {FIRST}, step by step", "s"),
        [(what, seconds(t)) for what, t in res.anatomy],
    )
    notes = "\n".join(f"- {n}" for n in res.notes)
    return f"{facts}\n\n{times}\n\n{disk}\n\n{anatomy}\n\n{notes}\n"


# ---- main --------------------------------------------------------------------------------------


def default_python() -> Path:
    if PYENV_PYTHON.exists():
        return PYENV_PYTHON
    found = shutil.which("python3.10")
    return Path(found) if found else PYENV_PYTHON


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--scratch",
        type=Path,
        default=Path.home(),
        help="where to work: a fresh folder is made inside it and removed at the end (default: "
        "$HOME, so envs and caches sit on the filesystem a user's would)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch folder afterwards")
    p.add_argument("--skip-pip", action="store_true", help="measure spectravenv only (quick)")
    p.add_argument(
        "--python",
        type=Path,
        default=default_python(),
        help="Python 3.10 for the pip baseline and the breakdown (default: %(default)s)",
    )
    return p.parse_args(argv)


def new_results() -> Results:
    return Results(
        times=[
            Row(f"1. cold build of {FIRST} (empty cache)"),
            Row(f"2. {SECOND} from the warm cache"),
            Row(f"3. {FIRST} again: new env, warm cache"),
            Row(f"4. no-op on the ready {FIRST} (median of {NOOP_REPEATS})"),
        ],
        disk=[Row(s) for s in DISK_STEPS],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="spectravenv-bench-", dir=args.scratch)).resolve()
    (scratch / "logs").mkdir()
    say(f"scratch: {scratch}")
    res = new_results()
    try:
        res.facts = machine_facts(scratch, args.python)
        bench_spectravenv(scratch, args.python, res)
        if not args.skip_pip:
            bench_pip(scratch, args.python, res)
    except BenchError as e:
        say(f"env_build: error: {e}")
        return 1
    finally:
        if args.keep:
            say(f"kept {scratch}")
        else:
            say(f"removing {scratch} ...")
            shutil.rmtree(scratch, ignore_errors=True)
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
