"""How close spectravenv's schedule comes to the best possible one: a simulated clock.

Drives the real planner (`plan.build`: jobs of work units sized from the cost model) and the
real start decision of both launchers (`schedule.choose_starts`: a worker for the model with the
most open work per worker, while another load pays off) through `schedule.simulate`, on

- the seed workload: the old system's 7 models x its 24 benchmarks (the catalog's sample counts),
  with the old system's declared memory and the catalog's load times and seconds per sample;
- a modern workload: 20 models of 1-78B parameters over the same 24 benchmarks, with the
  catalog's estimates (a load of 10 s + 2.5 s per billion parameters, 0.2 s + 0.03 s per billion
  per sample);

on 1, 2, 4, 8, 16 and 64 GPUs of 80 GB, a mix of 40 and 80 GB GPUs, a model that needs two GPUs,
one GPU busy with someone else's job, and with a +-30% error between estimated and true unit
times (decisions use the estimates; the clock uses the truth). Nothing sleeps and no GPU is used.

For each case: the makespan, the lower bound max(total work / GPUs + one load, the longest unit
with its load), their ratio, GPU utilisation (GPU-seconds busy loading or inferring over GPUs x
makespan), and the speed-up over the old system's strategy (one GPU, sequential, the model
re-loaded for every pair).

    python benchmarks/schedule.py            # the simulated cases (seconds)
    python benchmarks/schedule.py --real     # plus real processes: a benchmark split over three
                                             # demo workers on three fake GPUs

The real variant runs `spectravenv eval` of the demo model on DemoMCQ with three canned GPUs (the
machine has none), checks from the workers' own events that three workers ran at once, each with
its own CUDA_VISIBLE_DEVICES, and that the merged predictions equal a single process's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spectravenv.catalog import entries as catalog_mod
from spectravenv.catalog import loader
from spectravenv.console import duration
from spectravenv.paths import Paths
from spectravenv.plan import jobs as plan
from spectravenv.plan.gpus import GPU
from spectravenv.plan.schedule import lower_bound, simulate

SEED_MODELS = ["qwen_chat", "mPLUG-Owl2", "monkey-chat", "XComposer", "XComposer2", "llava_v1.5_7b", "llava_v1.5_13b"]
SEED_BENCHMARKS = ["MMBench_DEV_EN", "TextVQA_VAL", "GQA_TestDev_Balanced", "MMMU_DEV_VAL", "DocVQA_VAL", "ChartQA_TEST", "InfoVQA_VAL", "OCRBench", "AI2D_TEST", "ScienceQA_VAL", "POPE", "HallusionBench", "MMStar", "RealWorldQA", "VisOnlyQA-VLMEvalKit", "VizWiz", "SEEDBench_IMG", "BLINK", "MMBench_DEV_KO", "SEEDBench_IMG_KO", "MME", "NaturalBenchDataset", "MMStar_KO", "CCOCR_MultiLanOcr_Korean"]
MODERN = [  # (registry name, billions of parameters): a 2025-26 leaderboard's mix
    ("Qwen2.5-VL-3B-Instruct", 3.8), ("Qwen2.5-VL-7B-Instruct", 8.3), ("Qwen2.5-VL-32B-Instruct", 33),
    ("Qwen2.5-VL-72B-Instruct", 73), ("Qwen3-VL-2B-Instruct", 2.1), ("Qwen3-VL-8B-Instruct", 8.8),
    ("Qwen3-VL-32B-Instruct", 33), ("InternVL3-1B", 0.9), ("InternVL3-8B", 8), ("InternVL3-38B", 38),
    ("InternVL3-78B", 78), ("MiniCPM-V-2_6", 8), ("Gemma3-4B", 4.3), ("Gemma3-12B", 12.2), ("Gemma3-27B", 27.4),
    ("SmolVLM2", 2.2), ("Llama-3.2-11B-Vision-Instruct", 10.6), ("Phi-3.5-Vision", 4.2), ("Ovis2-8B", 8.9),
    ("molmo-7B-D-0924", 8),
]  # fmt: skip


def gpus(sizes: list[int], busy: int = 0) -> list[GPU]:
    return [GPU(i, f"GPU-{i:04d}", f"{gb} GB", gb * 1024, 10 * 1024 if i < busy else gb * 1024)
            for i, gb in enumerate(sizes)]  # fmt: skip


def error(model: str, unit_seconds: float) -> float:
    """A fixed +-30% error per (model, unit length): the same in every run."""
    h = int(hashlib.sha256(f"{model}:{unit_seconds:.3f}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0.7 + 0.6 * h


def modern_catalog(cat: catalog_mod.Catalog) -> catalog_mod.Catalog:
    models = dict(cat.models)
    for name, params in MODERN:
        m = models[name]
        mem = float(int(params * 2 * 1.2 + 2 + 0.999))
        models[name] = dataclasses.replace(m, blocked="", gpu_memory_gb=mem, multi_gpu=True,
                                           load_seconds=10 + 2.5 * params, seconds_per_sample=0.2 + 0.03 * params)  # fmt: skip
    return dataclasses.replace(cat, models=models)


def old_system(p: plan.Plan, truth: bool) -> float:
    """One GPU, one process per pair, the model re-loaded every time."""
    total = 0.0
    for j in p.todo:
        for b in j.benchmarks:
            est = plan.samples_for(b, p.limit) * j.model.seconds_per_sample
            total += j.model.load_seconds + (est * error(j.id, est) if truth else est)
    return total


def fitting(cat: catalog_mod.Catalog, models: list[str], pool: list[GPU]) -> list[str]:
    """The models that fit this pool at all (a 78B model needs more than one 80 GB GPU)."""
    out = []
    for m in models:
        try:
            plan.gpu_need(cat.models[m], pool)
        except Exception:
            continue
        out.append(m)
    return out


def case(cat: catalog_mod.Catalog, models: list[str], pool: list[GPU], noisy: bool = False) -> tuple:
    p = plan.build(cat, models, SEED_BENCHMARKS, pool, limit=None, skip_unsupported=True)
    true = (lambda job, est: est * error(job.id, est)) if noisy else None
    sim = simulate(p, true)
    bound = lower_bound(p, true)  # with noise: the bound of what really happened
    util = sim.busy_gpu_seconds / (max(len(pool), 1) * sim.makespan)
    return sim.makespan, bound, util, old_system(p, noisy), sim.loads, sum(j.units for j in p.todo)


def main() -> None:
    cat = loader.load(Paths.from_env({"HOME": "/nonexistent"}, cwd=Path("/nonexistent")))
    modern = modern_catalog(cat)
    modern_names = [n for n, _ in MODERN]
    two_gpu = dataclasses.replace(cat.models["llava_v1.5_13b"], gpu_memory_gb=120.0, gpus=2, multi_gpu=True)
    with_two = dataclasses.replace(cat, models={**cat.models, "llava_v1.5_13b": two_gpu})
    cases = []
    for n in (1, 2, 4, 8, 16, 64):
        cases.append((f"seed, {n} x 80 GB", cat, SEED_MODELS, gpus([80] * n), False))
    cases += [
        ("seed, 4 x 40 + 4 x 80 GB", cat, SEED_MODELS, gpus([40] * 4 + [80] * 4), False),
        ("seed, 8 x 80 GB, 13B needs 2 GPUs", with_two, SEED_MODELS, gpus([80] * 8), False),
        ("seed, 8 x 80 GB, one GPU busy", cat, SEED_MODELS, gpus([80] * 8, busy=1), False),
        ("seed, 8 x 80 GB, +-30% error", cat, SEED_MODELS, gpus([80] * 8), True),
    ]
    for n in (1, 2, 4, 8, 16, 64):
        cases.append((f"modern, {n} x 80 GB", modern, modern_names, gpus([80] * n), False))
    cases += [
        ("modern, 8 x 40 + 8 x 80 GB", modern, modern_names, gpus([40] * 8 + [80] * 8), False),
        ("modern, 16 x 80 GB, one GPU busy", modern, modern_names, gpus([80] * 16, busy=1), False),
        ("modern, 16 x 80 GB, +-30% error", modern, modern_names, gpus([80] * 16), True),
    ]
    print("| case | models | makespan | lower bound | ratio | GPU utilisation | loads | units | old system | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, c, models, pool, noisy in cases:
        fit = fitting(c, models, pool)
        makespan, bound, util, old, loads, n_units = case(c, fit, pool, noisy)
        worst = max(worst, makespan / bound)
        print(f"| {name} | {len(fit)} of {len(models)} | {duration(makespan)} | {duration(bound)} | "
              f"{makespan / bound:.3f} | {100 * util:.0f}% | {loads} | {n_units} | {duration(old)} | "
              f"{old / makespan:.1f}x |")  # fmt: skip
    print(f"\nworst ratio to the lower bound: {worst:.3f} (goal: <= 1.05)")


# The demo, made slow (0.5 s a sample) and declared slower still (30 s a sample, as a real 7B
# model on a long benchmark): dividing its 24 rows over three workers then pays for their loads.
REAL_MODEL = (
    '[models.demo-slow]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
    "seconds_per_sample = 30\nload_seconds = 1\nkwargs = { sleep = 0.5 }\n"
)


def real() -> None:
    import json
    import os
    import subprocess
    import tempfile

    import openpyxl

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "spectravenv.toml").write_text(REAL_MODEL)
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        exe = Path(sys.executable).with_name("spectravenv")
        subprocess.run([str(exe), "eval", "demo-slow", "DemoMCQ", "--run-name", "single"], cwd=work, env=env, check=True)
        rows = "".join(f"{i}, GPU-{i:08x}-0000-0000-0000-{i:012x}, fake 80 GB, 81920, 81920, 0\n" for i in range(3))
        (work / "gpus.csv").write_text(rows)
        env.update(FAKE_SMI_GPUS=str(work / "gpus.csv"), PATH=f"{root / 'tests' / 'fakes'}:{os.environ['PATH']}")
        subprocess.run([str(exe), "eval", "demo-slow", "DemoMCQ", "--run-name", "split"], cwd=work, env=env, check=True)
        spans, cvd = [], []
        for f in sorted((work / "outputs/split/.spectravenv/events").glob("*.jsonl")):
            evs = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            start = next(e for e in evs if e["event"] == "job_started")
            end = next(e for e in evs if e["event"] == "job_done")
            spans.append((start["time"], end["time"]))
            cvd.append(start["cuda_visible_devices"])

        def predictions(run: str) -> list:
            sheet = openpyxl.load_workbook(work / "outputs" / run / "demo-slow/DemoMCQ/demo-slow_DemoMCQ.xlsx").active
            return list(sheet.values)

        overlap = min(e for _, e in spans) - max(s for s, _ in spans)
        print("\n| real processes | value |\n|---|---|")
        print(f"| workers | {len(spans)} (demo-slow x DemoMCQ, all 24 rows) |")
        print(f"| CUDA_VISIBLE_DEVICES seen | {', '.join(cvd)} |")
        print(f"| all workers running at once | {overlap:.1f} s |")
        same = predictions("split") == predictions("single")
        print(f"| merged predictions equal a single process's, cell for cell | {'yes' if same else 'NO'} |")
        if sorted(cvd) != ["0", "1", "2"] or overlap <= 0 or not same:
            raise SystemExit("FAILED: the workers did not share the benchmark as they should")


if __name__ == "__main__":
    main()
    if "--real" in sys.argv:
        real()
