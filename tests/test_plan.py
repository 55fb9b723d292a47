"""The planner: GPU needs, longest-first order, what is already done, early clear errors."""

from __future__ import annotations

import pytest

from spectravenv import gpus, plan
from spectravenv.catalog import Benchmark, Model
from spectravenv.errors import SpectravenvError

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
    with pytest.raises(SpectravenvError, match="its VLMEvalKit wrapper loads onto one GPU: it cannot be split"):
        plan.gpu_need(model("llava_v1.5_13b", mem=45), pool(4, [40960] * 4))
    assert plan.gpu_need(model("llava_v1.5_13b", mem=45), pool(4, [40960, 40960, 50000, 40960]))[0] == 1


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


def test_expected_makespan_packs_longest_first():
    jobs = [
        plan.Job(id=str(i), model=model(str(i)), env=None, benchmarks=[object()], est_seconds=s)
        for i, s in enumerate([100, 60, 50, 40])
    ]
    p = plan.Plan(jobs, pool(2), None)
    # LPT on two GPUs: 100 | 60, then 50 joins the 60 (110), then 40 joins the 100 (140).
    assert p.expected_makespan() == 140


def test_idle_gpus_become_data_parallel_replicas_of_the_longest_jobs():
    def job(name, work):
        m = model(name)
        return plan.Job(id=name, model=m, env=None, benchmarks=[Benchmark(name="B", samples=1000)],
                        est_seconds=m.load_seconds + work, work_seconds=work)  # fmt: skip

    jobs = [job("long", 1000.0), job("short", 100.0)]
    plan.spread(jobs, pool(5), None)
    by = {j.id: j for j in jobs}
    assert (by["long"].replicas, by["short"].replicas) == (4, 1)  # 1000/4 still > 100
    assert by["long"].gpus_needed == 4 and "data-parallel: 4 replicas" in by["long"].why
    assert by["long"].per_gpu_gb == by["long"].model.gpu_memory_gb  # each replica needs it all
    # No spare GPU: nothing is split.
    jobs = [job("a", 10.0), job("b", 10.0)]
    plan.spread(jobs, pool(2), None)
    assert [j.replicas for j in jobs] == [1, 1]


def test_replicas_never_outnumber_the_samples_a_limit_leaves():
    jobs = [plan.Job(id="m", model=model("m"), env=None, benchmarks=[Benchmark(name="B", samples=1000)],
                     est_seconds=1000.0, work_seconds=1000.0)]  # fmt: skip
    plan.spread(jobs, pool(8), 2)
    assert jobs[0].replicas == 2  # --limit 2: two samples, so two replicas at most
