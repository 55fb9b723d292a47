"""How close spectravenv's schedule comes to the best possible one: a simulated clock.

Drives the real planner (`plan.build`, which orders jobs longest first and gives idle GPUs to
data-parallel replicas) and the real start decision of the local launcher
(`schedule.choose_starts`) on the seed workload: the 7 seed models x their benchmarks (the
catalog's sample counts; the tf433 models lack the two Korean sets their VLMEvalKit does not
know), with the catalog's load times (60-120 s) and seconds per sample (0.4-0.8 s). Nothing
sleeps and no GPU is used. A job's true duration is its estimate times a deterministic +-15%
error, so the planner does not see the future exactly.

For each case it prints the makespan, the lower bound max(total work / GPUs, longest job) with
one model load per model, their ratio, GPU utilisation, and the old system's strategy (one GPU,
sequential, the model re-loaded for every pair).

    python benchmarks/schedule.py            # the simulated cases
    python benchmarks/schedule.py --real     # plus real processes: the demo on 3 fake GPUs

The real variant runs `spectravenv eval` with three demo-model variants on two benchmarks, a
canned `nvidia-smi` that reports three GPUs (the machine has none), and checks from the runners'
own events that the three processes overlapped in time and that each saw its own
CUDA_VISIBLE_DEVICES. It needs the tf437 env (built on first use).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spectravenv import catalog as catalog_mod
from spectravenv import plan
from spectravenv.console import duration
from spectravenv.gpus import GPU
from spectravenv.paths import Paths
from spectravenv.schedule import choose_starts

SEED_MODELS = ["qwen_chat", "mPLUG-Owl2", "monkey-chat", "XComposer", "XComposer2",
               "llava_v1.5_7b", "llava_v1.5_13b"]  # fmt: skip
ACTIVE = [
    "MMBench_DEV_EN",
    "TextVQA_VAL",
    "GQA_TestDev_Balanced",
    "MMMU_DEV_VAL",
    "DocVQA_VAL",
    "ChartQA_TEST",
    "InfoVQA_VAL",
    "OCRBench",
    "AI2D_TEST",
    "ScienceQA_VAL",
    "POPE",
    "HallusionBench",
    "MMStar",
    "RealWorldQA",
    "VisOnlyQA-VLMEvalKit",
    "VizWiz",
    "SEEDBench_IMG",
    "BLINK",
    "MMBench_DEV_KO",
    "SEEDBench_IMG_KO",
]


def gpus(n: int, busy: int = 0) -> list[GPU]:
    return [
        GPU(i, f"GPU-{i:04d}", "H100 80GB", 81920, 10240 if i < busy else 81920) for i in range(n)
    ]


def noise(job_id: str) -> float:
    """A fixed +-15% error per job, the same in every run."""
    h = int(hashlib.sha256(job_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0.85 + 0.30 * h


def build_plan(cat: catalog_mod.Catalog, pool: list[GPU]) -> plan.Plan:
    return plan.build(cat, SEED_MODELS, ACTIVE, pool, limit=None, skip_unsupported=True)


def simulate(p: plan.Plan) -> tuple[float, float]:
    """Event-driven run of the plan; returns (makespan, busy GPU-seconds)."""
    now, busy = 0.0, 0.0
    pending, free = list(p.todo), list(p.gpus)
    running: list[tuple[float, plan.Job, list[GPU]]] = []
    while pending or running:
        for job, got in choose_starts(pending, free, {}, cpu_free=0):
            pending.remove(job)
            free = [g for g in free if g not in got]
            took = (job.model.load_seconds + job.work_seconds / job.replicas) * noise(job.id)
            running.append((now + took, job, got))
            busy += took * len(got)
        if not running:
            raise SystemExit(f"deadlock: {[j.id for j in pending]} cannot start")
        running.sort(key=lambda r: r[0])
        now, _, got = running.pop(0)
        free += got
    return now, busy


def bounds(p: plan.Plan) -> tuple[float, float, float]:
    """(lower bound, total work, old system's sequential time with a reload per pair)."""
    work = [(j.model.load_seconds + j.work_seconds) * noise(j.id) * max(j.gpus_needed // j.replicas, 1)
            for j in p.todo]  # fmt: skip
    longest = max((j.model.load_seconds + j.work_seconds) * noise(j.id) for j in p.todo)
    old = sum(
        (j.model.load_seconds + b.samples * j.model.seconds_per_sample) * noise(j.id)
        for j in p.todo for b in j.benchmarks
    )  # fmt: skip
    return max(sum(work) / len(p.gpus), longest), sum(work), old


def main() -> None:
    cat = catalog_mod.load(Paths.from_env({"HOME": "/nonexistent"}, cwd=Path("/nonexistent")))
    two_gpu = dataclasses.replace(cat.models["llava_v1.5_13b"], gpu_memory_gb=120.0, gpus=2)
    cases = [(f"{n} x 80 GB", cat, gpus(n)) for n in (1, 2, 4, 8)]
    cases.append(("8 x 80 GB, 13B needs 2 GPUs",
                  dataclasses.replace(cat, models={**cat.models, "llava_v1.5_13b": two_gpu}), gpus(8)))  # fmt: skip
    cases.append(("8 x 80 GB, one GPU busy", cat, gpus(8, busy=1)))
    print("| case | makespan | lower bound | ratio | total work / GPUs | ratio to it | GPU utilisation "
          "| old system | speed-up |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, c, pool in cases:
        p = build_plan(c, pool)
        makespan, busy = simulate(p)
        lower, total, old = bounds(p)
        usable = sum(g.free_gb >= 20 for g in pool)
        print(f"| {name} | {duration(makespan)} | {duration(lower)} | {makespan / lower:.3f} | "
              f"{duration(total / usable)} | {makespan / (total / usable):.3f} | "
              f"{100 * busy / (len(pool) * makespan):.0f}% | {duration(old)} | {old / makespan:.1f}x |")  # fmt: skip


REAL_MODELS = "".join(
    f'[models.demo-{i}]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
    "kwargs = { sleep = 0.3 }\n\n"
    for i in range(3)
)


def real() -> None:
    import json
    import os
    import subprocess
    import tempfile
    import time

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "spectravenv.toml").write_text(REAL_MODELS)
        rows = "".join(
            f"{i}, GPU-{i:08x}-0000-0000-0000-{i:012x}, fake 80 GB, 81920, 81920, 0\n"
            for i in range(3)
        )
        (work / "gpus.csv").write_text(rows)
        env = dict(os.environ, FAKE_SMI_GPUS=str(work / "gpus.csv"), HF_HUB_OFFLINE="1",
                   PATH=f"{root / 'tests' / 'fakes'}:{os.environ['PATH']}")  # fmt: skip
        exe = Path(sys.executable).with_name("spectravenv")
        t0 = time.monotonic()
        subprocess.run([str(exe), "eval", "demo-0", "demo-1", "demo-2", "DemoMCQ", "DemoShapes",
                        "--limit", "8", "--run-name", "real"], cwd=work, env=env, check=True)  # fmt: skip
        wall = time.monotonic() - t0
        spans, cvd = {}, {}
        for i in range(3):
            lines = (work / "outputs/real/.spectravenv/events" / f"demo-{i}.jsonl").read_text()
            evs = [json.loads(x) for x in lines.splitlines() if x.strip()]
            start = next(e for e in evs if e["event"] == "job_started")
            end = next(e for e in evs if e["event"] == "job_done")
            spans[i], cvd[i] = (start["time"], end["time"]), start["cuda_visible_devices"]
        overlap = min(e for _, e in spans.values()) - max(s for s, _ in spans.values())
        busy = sum(e - s for s, e in spans.values())
        print("\n| real processes | value |\n|---|---|")
        print("| jobs | 3 (demo-0..2 x DemoMCQ, DemoShapes, --limit 8) |")
        print(f"| CUDA_VISIBLE_DEVICES seen | {', '.join(cvd[i] for i in range(3))} |")
        print(f"| all three running at once | {overlap:.1f} s |")
        print(f"| sum of job times / wall time of the run | {busy / wall:.2f} |")
        if sorted(cvd.values()) != ["0", "1", "2"] or overlap <= 0:
            raise SystemExit("FAILED: the jobs did not run concurrently on their own GPUs")


if __name__ == "__main__":
    main()
    if "--real" in sys.argv:
        real()
