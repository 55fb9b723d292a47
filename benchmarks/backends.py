#!/usr/bin/env python3
"""Benchmark (not a test): samples per second of `--backend hf` vs `--backend vllm` on the same
model, benchmarks and machine, in one run, with the agreement of their answers.

    python benchmarks/backends.py [--scratch DIR] [--model demo-tiny-llava] [BENCHMARK ...]

Both backends run through `spectravenv eval` as a user runs them (SPECTRAVENV_HOME as set: its
envs are used, or built on demand), each into its own run folder. From the runners' own events:
- load: process start to model ready (hf: the wrapper built; vllm: the server started and healthy);
- inference: the units' seconds and samples (`unit_done`), hence samples/s;
- agreement: rows whose prediction is the same text under both backends.
Markdown goes to stdout, progress to stderr. Compare ratios, not seconds, across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import openpyxl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from env_build import BenchError, run, say

BACKENDS = ("hf", "vllm")


def spectravenv_cmd() -> list[str]:
    """The `spectravenv` script of this Python's environment (the CLI package has no __main__)."""
    exe = Path(sys.executable).with_name("spectravenv")
    return [str(exe)] if exe.exists() else ["spectravenv"]


def events(run_dir: Path, model: str) -> list[dict]:
    files = sorted((run_dir / ".spectravenv" / "events").glob(f"{model}.w*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def predictions(run_dir: Path, model: str, bench: str) -> dict[str, str]:
    rows = list(
        openpyxl.load_workbook(run_dir / model / bench / f"{model}_{bench}.xlsx").active.values
    )
    i, p = rows[0].index("index"), rows[0].index("prediction")
    return {str(r[i]): str(r[p]) for r in rows[1:]}


def measure(run_dir: Path, model: str, wall: float) -> dict[str, float | str]:
    evs = events(run_dir, model)
    loaded = [e for e in evs if e["event"] == "model_loaded"][-1]
    units = [e for e in evs if e["event"] == "unit_done"]
    seconds, samples = (
        sum(float(e["seconds"]) for e in units),
        sum(int(e["samples"]) for e in units),
    )
    return {"load": float(loaded["seconds"]), "infer": seconds, "samples": samples,
            "rate": samples / seconds if seconds else 0.0, "wall": wall,
            "engine": (loaded.get("generation") or {}).get("engine") or "transformers"}  # fmt: skip


def one_backend(work: Path, model: str, benches: list[str], backend: str) -> dict[str, float | str]:
    say(f"{backend}: spectravenv eval {model} {' '.join(benches)} --backend {backend}")
    log = work / f"{backend}.log"
    cmd = [*spectravenv_cmd(), "eval", model, *benches, "--backend", backend, "--run-name", backend]
    wall = run(cmd, dict(os.environ), log, work)
    return measure(work / "outputs" / backend, model, wall)


def agreement(work: Path, model: str, benches: list[str]) -> tuple[int, int]:
    same = total = 0
    for bench in benches:
        a, b = (predictions(work / "outputs" / k, model, bench) for k in BACKENDS)
        total += len(a)
        same += sum(a[k] == b.get(k) for k in a)
    return same, total


def table(results: dict[str, dict], same: int, total: int) -> str:
    lines = ["| backend | engine | load (s) | inference (s) | samples | samples/s | command wall (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {r['engine']} | {r['load']:.1f} | {r['infer']:.1f} | {r['samples']} | "
                     f"{r['rate']:.1f} | {r['wall']:.0f} |")  # fmt: skip
    speed = (
        results["vllm"]["rate"] / results["hf"]["rate"] if results["hf"]["rate"] else float("nan")
    )
    lines += ["", f"vllm / hf samples/s: {speed:.2f}x; same answers: {same} of {total} rows "
              f"({100 * same / total:.1f}%)"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmarks", nargs="*", default=["DemoMCQ", "DemoShapes"])
    ap.add_argument("--model", default="demo-tiny-llava")
    ap.add_argument("--scratch", type=Path, help="work folder (default: a new temporary one)")
    args = ap.parse_args()
    work = args.scratch or Path(tempfile.mkdtemp(prefix="sv-backends-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        results = {b: one_backend(work, args.model, args.benchmarks, b) for b in BACKENDS}
    except BenchError as exc:
        sys.exit(f"benchmark failed: {exc}")
    same, total = agreement(work, args.model, args.benchmarks)
    print(f"{args.model} on {', '.join(args.benchmarks)}; {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{started}; runs in {work}\n")  # fmt: skip
    print(table(results, same, total))


if __name__ == "__main__":
    main()
