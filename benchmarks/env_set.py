#!/usr/bin/env python3
"""Benchmark (not a test): the whole set of shipped envs, on disk and in time.

spectravenv's claim is that one env per transformers release costs little more than the torch
builds they share: uv hardlinks every file to one cache, and bytecode is kept once in a shared
store (runners/pyc_store.py). This script measures, in one run on one machine:

disk (a fresh SPECTRAVENV_HOME whose uv cache starts empty):
  - each env alone (`du -s`), and the sum of those: what separate installs would cost;
  - all envs together (`du -sc`: a file hardlinked among them counts once), with and without the
    uv cache and the bytecode store;
  - the distinct torch builds: one env per torch build, together. The goal is all envs together
    within 1.2x of that.
time:
  - cold: `spectravenv sync` of every env with an empty uv cache (network speed is part of it);
  - warm: every env again into a second fresh home that shares the warm uv cache;
  - no-op: `spectravenv sync` of the ready set (median of 3);
  - runner start-up per env: process start to model built, for the built-in demo model run in
    each env (one sample of DemoMCQ), from the runner's own events.

    python benchmarks/env_set.py [--scratch DIR] [--keep] [ENV ...]

It needs the network and about 40 GB free; progress goes to stderr, markdown tables to stdout.
Compare ratios, not seconds, across machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from env_build import (
    GIB,
    BenchError,
    du,
    du_alone,
    env_folder,
    output,
    run,
    say,
    spectravenv_cmd,
    spectravenv_env,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spectravenv.catalog import entries as catalog  # noqa: E402
from spectravenv.catalog import loader  # noqa: E402
from spectravenv.envs import locks as lockfiles  # noqa: E402
from spectravenv.paths import Paths  # noqa: E402


def torch_of(env: catalog.Env) -> str:
    return lockfiles.pinned(lockfiles.read(env.lock, env.name), "torch") or "?"


def demo_catalog(names: list[str]) -> str:
    """A spectravenv.toml that runs the built-in demo model in each env."""
    return "".join(
        f'[models.demo-in-{n}]\nenv = "{n}"\nbuiltin = "demo-tiny-llava"\ncpu = true\ngpu_memory_gb = 1\n\n'
        for n in names
    )


def startups(scratch: Path, env: dict[str, str], names: list[str], log: Path) -> dict[str, dict[str, float]]:
    work = scratch / "startup"
    work.mkdir()
    (work / "spectravenv.toml").write_text(demo_catalog(names))
    out = {}
    for n in names:
        say(f"runner start-up in {n} ...")
        run([*spectravenv_cmd(), "eval", f"demo-in-{n}", "DemoMCQ", "--limit", "1", "--run-name", n], env, log, work)
        evs = [json.loads(line) for line in (work / "outputs" / n / ".spectravenv" / "events" / f"demo-in-{n}.jsonl").read_text().splitlines()]
        started = next(e for e in evs if e["event"] == "job_started")
        loaded = next(e for e in evs if e["event"] == "model_loaded")
        out[n] = {
            "interpreter + torch": started.get("startup_seconds") or 0.0,
            "import vlmeval": loaded.get("import_seconds", 0.0),
            "model built": loaded.get("build_seconds", 0.0),
        }
        out[n]["total"] = sum(out[n].values())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scratch", type=Path, default=Path.home())
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("envs", nargs="*")
    args = ap.parse_args()
    cat = loader.load(Paths.from_env())
    names = args.envs or list(cat.envs)
    scratch = Path(tempfile.mkdtemp(prefix="spectravenv-envset-", dir=args.scratch))
    log = scratch / "bench.log"
    try:
        config = scratch / "empty-config"
        config.mkdir()
        home1, home2 = scratch / "home-1", scratch / "home-2"
        cache = home1 / "uv-cache"
        env1, env2 = spectravenv_env(home1, cache, config), spectravenv_env(home2, cache, config)

        say(f"cold: every env ({len(names)}) with an empty uv cache ...")
        cold = {n: run([*spectravenv_cmd(), "sync", n, "--no-addons"], env1, log, scratch) for n in names}
        say(f"  {sum(cold.values()):.0f} s\nwarm: every env into a second home ...")
        warm = {n: run([*spectravenv_cmd(), "sync", n, "--no-addons"], env2, log, scratch) for n in names}
        say(f"  {sum(warm.values()):.0f} s\nno-op sync of the set x3 ...")
        noop = statistics.median(run([*spectravenv_cmd(), "sync", *names, "--no-addons"], env1, log, scratch)
                                 for _ in range(3))  # fmt: skip

        folders = {n: env_folder(home1, n) for n in names}
        torches: dict[str, list[str]] = {}
        for n in names:
            torches.setdefault(torch_of(cat.envs[n]), []).append(n)
        per_build = [envs[0] for envs in torches.values()]
        store = home1 / "pyc-store"
        alone = {n: du(f) for n, f in folders.items()}
        together = du(*folders.values())
        builds = du(*(folders[n] for n in per_build))
        with_cache = du(*folders.values(), cache, store)
        starts = startups(scratch, env1, names, log)

        g = lambda b: f"{b / GIB:.2f}"  # noqa: E731
        print(f"### The machine\n\n| | |\n|---|---|\n| date | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |")
        print(f"| nproc / CPU | {output(['nproc'])} / {platform.processor() or platform.machine()} |")
        print(f"| uv | {output([sys.executable, '-c', 'from spectravenv.uvtool import uv_bin; print(uv_bin())'])} |")
        print(f"| envs | {len(names)}: {', '.join(names)} |")
        print(f"| torch builds | {', '.join(f'{t} ({len(e)} envs)' for t, e in torches.items())} |\n")
        print("### Disk (GiB)\n\n| what | GiB | ratio to the torch builds |\n|---|---|---|")
        rows = [
            ("sum of each env alone (`du -s` each)", du_alone(*folders.values())),
            ("all envs together (`du -sc`, hardlinks once)", together),
            ("all envs + uv cache + bytecode store", with_cache),
            (f"the distinct torch builds: one env each ({', '.join(per_build)})", builds),
        ]
        for what, b in rows:
            print(f"| {what} | {g(b)} | {b / builds:.2f}x |")
        print("\n| env | torch | alone GiB | cold s | warm s | start-up s (interpreter+torch / import vlmeval / model built) |")
        print("|---|---|---|---|---|---|")
        for n in names:
            s = starts[n]
            print(f"| {n} | {torch_of(cat.envs[n])} | {g(alone[n])} | {cold[n]:.0f} | {warm[n]:.0f} | "
                  f"{s['total']:.1f} ({s['interpreter + torch']:.1f} / {s['import vlmeval']:.1f} / {s['model built']:.1f}) |")  # fmt: skip
        print(f"| **all** | | | **{sum(cold.values()):.0f}** | **{sum(warm.values()):.0f}** | |")
        print(f"\nNo-op `spectravenv sync` of all {len(names)} envs: {noop:.2f} s (median of 3).")
    except BenchError as e:
        say(f"benchmark failed: {e}")
        return 1
    finally:
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
