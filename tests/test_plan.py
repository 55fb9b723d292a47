"""The planner: GPU needs, longest-first order, what is already done, early clear errors."""

from __future__ import annotations

import pytest

from spectravenv.catalog.entries import Benchmark, Model
from spectravenv.errors import SpectravenvError
from spectravenv.plan import gpus
from spectravenv.plan import jobs as plan

from .gpu_fixtures import h100s


def model(name="m", mem=24.0, n=1, cpu=False, multi_gpu=False):
    return Model(name=name, env="tf437", gpu_memory_gb=mem, gpus=n, cpu=cpu, multi_gpu=multi_gpu)


def pool(n, free_mb=None):
    return gpus.parse_query(h100s(n, free_mb))


def test_a_model_that_fits_takes_one_gpu():
    assert plan.gpu_need(model(mem=24), pool(8))[0] == 1


def test_a_big_model_spans_several_gpus_in_one_process():
    need, why = plan.gpu_need(model(mem=150, n=2, multi_gpu=True), pool(4))
    assert need == 2 and 'device_map="auto"' in why and "75 GB each" in why
    # 160 GB over two H100s would need 80 GB on each, but only 79 GB are free: three.
    assert plan.gpu_need(model(mem=160, n=2, multi_gpu=True), pool(4))[0] == 3
    # Three 60 GB-free GPUs: 150 GB does not fit on two, so three.
    need, _ = plan.gpu_need(model(mem=150, multi_gpu=True), pool(3, [61440] * 3))
    assert need == 3


def test_a_wrapper_that_loads_onto_one_gpu_is_never_split():
    """LLaVA's VLMEvalKit wrapper loads on the CPU and calls .cuda(): more GPUs cannot help it."""
    with pytest.raises(
        SpectravenvError, match="its VLMEvalKit wrapper loads onto one GPU: it cannot be split"
    ):
        plan.gpu_need(model("llava_v1.5_13b", mem=45), pool(4, [40960] * 4))
    assert (
        plan.gpu_need(model("llava_v1.5_13b", mem=45), pool(4, [40960, 40960, 50000, 40960]))[0]
        == 1
    )


def test_busy_gpus_count_only_their_free_memory():
    with pytest.raises(
        SpectravenvError,
        match=r"needs 45 GB of GPU memory on one GPU; the 1 usable GPU\(s\) here have at most 20 GB free",
    ):
        plan.gpu_need(model("llava_v1.5_13b", mem=45), pool(1, [20480]))


def test_no_gpu_is_a_clear_error_unless_the_model_runs_on_cpu():
    with pytest.raises(SpectravenvError, match="qwen_chat needs a GPU with >= 24 GB free"):
        plan.gpu_need(model("qwen_chat"), [])
    assert plan.gpu_need(model(cpu=True), [])[0] == 0


def bench(name="B", samples=1000):
    return Benchmark(name=name, samples=samples)


def job(name, benches, sps=1.0, mem=24.0, load=60.0, kind="local", n=1, limit=None):
    m = Model(name=name, env="tf437", gpu_memory_gb=mem, gpus=n, seconds_per_sample=sps, load_seconds=load,
              kind=kind, multi_gpu=n > 1)  # fmt: skip
    work = sum(plan.samples_for(b, limit) for b in benches) * sps
    return plan.Job(id=name, model=m, env=None, benchmarks=list(benches), gpus_needed=n,
                    est_seconds=load + work, work_seconds=work)  # fmt: skip


def test_units_are_sized_against_the_whole_matrix_and_cover_every_row():
    jobs = [
        job("long", [bench("A", 4000), bench("B", 1000)]),
        job("short", [bench("A", 4000)], sps=0.1),
    ]
    plan.size_units(jobs, pool(4), None)
    long, short = jobs
    # 5400 s of work on 4 GPUs x 20 units each: ~67 s per unit.
    assert long.shards == {"A": 60, "B": 15} and short.shards == {"A": 6}
    for j in jobs:
        for b in j.benchmarks:
            n = j.shards[b.name]
            # Row i goes to shard i % n: every row in exactly one shard, sizes differ by <= 1.
            sizes = [len(range(k, b.samples, n)) for k in range(n)]
            assert sum(sizes) == b.samples and max(sizes) - min(sizes) <= 1
    assert sum(long.unit_seconds(None)) == long.work_seconds


def test_units_are_never_below_the_minimum_nor_above_the_maximum():
    tiny = [job("m", [bench("A", 100)], sps=0.01)]  # 1 s of work: one unit
    plan.size_units(tiny, pool(8), None)
    assert tiny[0].shards == {"A": 1}
    huge = [job("m", [bench("A", 100_000)], sps=10.0)]  # 1e6 s on one GPU: capped at 30 min a unit
    plan.size_units(huge, pool(1), None)
    assert max(huge[0].unit_seconds(None)) <= plan.MAX_UNIT_SECONDS
    limited = [job("m", [bench("A", 1000)], sps=1000.0, limit=3)]
    plan.size_units(limited, pool(8), 3)  # --limit 3: never more shards than rows
    assert limited[0].shards == {"A": 3}


def test_api_models_keep_one_unit_per_benchmark():
    jobs = [job("gpt", [bench("A", 5000)], kind="api", sps=2.0)]
    plan.size_units(jobs, pool(4), None)
    assert jobs[0].shards == {"A": 1}


def test_a_model_that_fits_nowhere_is_refused_before_anything_starts(tmp_path):
    import dataclasses

    from spectravenv.catalog import loader
    from spectravenv.paths import Paths

    shipped = loader.load(Paths.from_env({"HOME": str(tmp_path)}, cwd=tmp_path))
    cat = dataclasses.replace(
        shipped, models={"big": model("big", mem=100)}, benchmarks={"B": bench()}
    )
    with pytest.raises(SpectravenvError, match="big needs 100 GB of GPU memory on one GPU"):
        plan.build(cat, ["big"], ["B"], pool(2), limit=None)
    dry = plan.build(cat, ["big"], ["B"], pool(2), limit=None, strict=False)
    assert dry.jobs[0].blocked


def test_idle_gpus_start_more_workers_of_the_model_with_most_open_work():
    from spectravenv.plan.schedule import Open, choose_starts

    long, short = job("long", [bench("A", 10_000)]), job("short", [bench("A", 100)])
    starts = choose_starts([Open(long, 10_000, 100), Open(short, 3000, 10)], pool(5), {}, 0)
    got = [j.id for j, _ in starts]
    # Each start goes where the open work per worker is largest: 10000, 5000, 3333, then short's
    # 3000 beats a fourth share of long (2500), which then beats short's second (1500).
    assert got == ["long", "long", "long", "short", "long"]
    assert len({g.uuid for _, gs in starts for g in gs}) == 5  # no GPU given twice
    # Another worker only when its share pays for the load: 100 s of work, 60 s load.
    starts = choose_starts([Open(short, 100, 2, workers=1)], pool(3), {}, 0)
    assert starts == []
    # Never more workers than open units.
    starts = choose_starts([Open(long, 10_000, 2)], pool(5), {}, 0)
    assert len(starts) == 2


def test_a_model_waiting_for_two_gpus_does_not_block_smaller_ones():
    from spectravenv.plan.schedule import Open, choose_starts

    big, small = job("big", [bench("A", 10_000)], n=2, mem=150), job("small", [bench("A", 1000)])
    starts = choose_starts([Open(big, 10_000, 50), Open(small, 1000, 10)], pool(1), {}, 0)
    assert [(j.id, len(g)) for j, g in starts] == [("small", 1)]


def test_the_simulated_run_gives_each_unit_once_and_ends_near_the_bound():
    from spectravenv.plan.schedule import lower_bound, simulate

    jobs = [
        job(f"m{i}", [bench("A", 2000 + 500 * i), bench("B", 800)], sps=0.5 + 0.1 * i)
        for i in range(6)
    ]
    p = plan.Plan(jobs, pool(4), None)
    plan.size_units(jobs, p.gpus, None)
    sim = simulate(p)
    work = sum(sum(j.unit_seconds(None)) for j in jobs)
    loads = sim.loads * 60.0
    # Every GPU-second is a unit's work or a load: nothing run twice, nothing lost.
    assert sim.busy_gpu_seconds == pytest.approx(work + loads)
    assert sim.makespan <= 1.05 * lower_bound(p)
