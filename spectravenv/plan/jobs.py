"""What to run: the models x benchmarks matrix as jobs (one per model) of work units.

A job holds all of one model's work in this run; its benchmarks are split into units (shards of
their rows), sized from the cost model so that no unit is long against the expected makespan and
none so short that bookkeeping dominates. Workers (one process each, the model loaded once) take
units until none are left; the dispatcher starts them where GPUs are free (schedule.py). Everything
that can be checked before a GPU is touched or an env is built is checked here, so a bad matrix
fails in a second, not an hour in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from packaging.version import Version

from spectravenv.catalog.entries import Benchmark, Catalog, Env, Model
from spectravenv.envs import locks
from spectravenv.errors import SpectravenvError
from spectravenv.plan.gpus import GPU

MIN_UNIT_SECONDS = 20.0  # below this a unit's bookkeeping (claim, events, slicing) starts to count
MAX_UNIT_SECONDS = 1800.0  # a killed worker loses at most one unit's unsaved samples
UNITS_PER_GPU = 20  # units of about 1/20 of a GPU's share: the last one finishing adds <= 5%


@dataclass
class Job:
    """All the work of one model in this run."""

    id: str
    model: Model
    env: Env
    benchmarks: list[Benchmark]
    done: list[str] = field(default_factory=list)  # benchmarks already finished in this run
    gpus_needed: int = 1  # per worker; 0: runs on the CPU
    est_seconds: float = 0.0  # one load + all of its inference on one worker
    why: str = ""  # how the GPU count was chosen, for --dry-run
    blocked: str = ""  # why it cannot run on this pool (only with strict=False)
    work_seconds: float = 0.0  # inference alone, model load excluded
    shards: dict[str, int] = field(default_factory=dict)  # benchmark -> its number of units

    @property
    def per_gpu_gb(self) -> float:
        return self.model.gpu_memory_gb / max(self.gpus_needed, 1)

    @property
    def units(self) -> int:
        return sum(self.shards.get(b.name, 1) for b in self.benchmarks)

    def unit_seconds(self, limit: int | None) -> list[float]:
        """The estimated duration of each of its infer units."""
        out = []
        for b in self.benchmarks:
            n, rows = self.shards.get(b.name, 1), samples_for(b, limit)
            out += [math.ceil((rows - k) / n) * self.model.seconds_per_sample for k in range(n)]
        return out


@dataclass
class Plan:
    jobs: list[Job]
    gpus: list[GPU]
    limit: int | None
    dropped: set[tuple[str, str]] = field(default_factory=set)  # --skip-unsupported pairs

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if j.benchmarks]


def samples_for(bench: Benchmark, limit: int | None) -> int:
    return min(bench.samples, limit) if limit else bench.samples


def vlmeval_version(env: Env) -> str | None:
    return locks.pinned(locks.read(env.lock, env.name), "ms-vlmeval")


def unsupported(
    catalog: Catalog, models: list[str], benchmarks: list[str], *, skip: bool = False
) -> set[tuple[str, str]]:
    """Pairs that cannot run: the benchmark is one the runner cannot run yet (video other than
    VideoMME with frames, multi-turn), or the model's env does not have it (its VLMEvalKit lacks
    the name, or the decoder it reads videos with). An error that says why in one line, or with `skip` the set of pairs to leave
    out."""
    versions: dict[str, str | None] = {}
    out: set[tuple[str, str]] = set()
    for m in models:
        env = catalog.envs[catalog.models[m].env]
        if env.name not in versions:
            versions[env.name] = vlmeval_version(env)
        for b in benchmarks:
            why = why_not(catalog.benchmarks[b], env, versions[env.name])
            if not why:
                continue
            if skip:
                out.add((m, b))
                continue
            raise SpectravenvError(f"{b} cannot run for {m} (env {env.name}): {why}; drop {b}, "
                                   "or pass --skip-unsupported to leave out the pairs that cannot run")  # fmt: skip
    return out


def why_not(bench: Benchmark, env: Env, vlmeval: str | None) -> str:
    """Why `bench` cannot run in `env` (whose lock pins ms-vlmeval `vlmeval`); '' when it can."""
    since = bench.since_vlmeval
    if since and vlmeval and Version(vlmeval) < Version(since):
        return (f"it needs VLMEvalKit >= {since}, but the env is locked to ms-vlmeval {vlmeval} (the newest "
                f"release that imports under transformers {env.transformers})")  # fmt: skip
    return bench.unavailable(env.name)


def gpus_word(n: int) -> str:
    return f"{n} GPU" + ("" if n == 1 else "s")


def gpu_need(model: Model, pool: list[GPU]) -> tuple[int, str]:
    """How many GPUs one replica of `model` needs on this pool, and why; 0 means CPU.

    Several GPUs for one replica only when the model's wrapper can spread over them
    (`multi_gpu`: it loads with device_map="auto"); a wrapper that loads onto one device needs
    one GPU with all of its memory free, however many GPUs the machine has.
    """
    if not pool:
        if model.cpu:
            return 0, "no GPU visible; this model runs on the CPU"
        raise SpectravenvError(
            f"{model.name} needs a GPU with >= {model.gpu_memory_gb:g} GB free"
            + (f" ({gpus_word(model.gpus)})" if model.gpus > 1 else "")
            + "; no GPU is visible here (nvidia-smi found none, or CUDA_VISIBLE_DEVICES hides "
            "them). Run on a GPU node"
        )
    frees = sorted((g.free_gb for g in pool), reverse=True)
    most = len(pool) if model.multi_gpu else 1
    for k in range(max(model.gpus, 1), most + 1):
        per_gpu = model.gpu_memory_gb / k
        if frees[k - 1] >= per_gpu:
            if k == 1:
                return 1, f"fits on one GPU ({model.gpu_memory_gb:g} GB)"
            return k, (f'{model.gpu_memory_gb:g} GB split over {k} GPUs in one process '
                       f'(device_map="auto"), {per_gpu:.0f} GB each')  # fmt: skip
    best = frees[0]
    where = "over at least " + gpus_word(model.gpus) if model.gpus > 1 else "on one GPU"
    split = (" (its VLMEvalKit wrapper loads onto one GPU: it cannot be split over several)"
             if not model.multi_gpu and len(pool) > 1 else "")  # fmt: skip
    raise SpectravenvError(
        f"{model.name} needs {model.gpu_memory_gb:g} GB of GPU memory {where}{split}; the "
        f"{len(pool)} usable GPU(s) here have at most {best:.0f} GB free each. Free GPUs, pick "
        "others with --gpus, or use a node with more memory"
    )


def build(
    catalog: Catalog,
    models: list[str],
    benchmarks: list[str],
    pool: list[GPU],
    *,
    limit: int | None,
    done: set[tuple[str, str]] | None = None,
    strict: bool = True,
    skip_unsupported: bool = False,
    units_per_gpu: int = UNITS_PER_GPU,
) -> Plan:
    """Jobs for the matrix. `strict=False` (for --dry-run) notes a model that cannot run on this
    pool in its job instead of raising, so the plan can still be shown."""
    done = done or set()
    dropped = unsupported(catalog, models, benchmarks, skip=skip_unsupported)
    jobs = []
    for name in models:
        model = catalog.models[name]
        todo = [catalog.benchmarks[b] for b in benchmarks if (name, b) not in done and (name, b) not in dropped]
        finished = [b for b in benchmarks if (name, b) in done]
        try:
            if model.blocked:
                # Refused here, before any env is built: never a crash an hour into a job.
                raise SpectravenvError(f"{name} cannot run from the shipped envs: {model.blocked}")
            need, why = gpu_need(model, pool)
        except SpectravenvError as e:
            if strict:
                raise
            need, why, blocked = max(model.gpus, 1), "cannot run here (below)", str(e)
        else:
            blocked = ""
        work = sum(samples_for(b, limit) for b in todo) * model.seconds_per_sample
        jobs.append(Job(id=name, model=model, env=catalog.envs[model.env], benchmarks=todo, done=finished,
                        gpus_needed=need, est_seconds=(model.load_seconds + work) if todo else 0.0,
                        work_seconds=work, why=why, blocked=blocked))  # fmt: skip
    size_units(jobs, pool, limit, units_per_gpu)
    # Longest first, so the big model does not start last and run alone.
    jobs.sort(key=lambda j: -j.est_seconds)
    return Plan(jobs, pool, limit, dropped)


def size_units(jobs: list[Job], pool: list[GPU], limit: int | None, units_per_gpu: int = UNITS_PER_GPU) -> None:
    """Split each benchmark into units of about total work / (GPUs x units_per_gpu) seconds,
    within [MIN_UNIT_SECONDS, MAX_UNIT_SECONDS]. API models keep one unit per benchmark (their
    wrappers keep a per-benchmark file of answers; one worker's threads already run in parallel)."""
    gpus = max(len(pool), 1)
    total = sum(j.work_seconds * max(j.gpus_needed, 1) for j in jobs)
    target = min(MAX_UNIT_SECONDS, max(MIN_UNIT_SECONDS, total / (gpus * units_per_gpu)))
    for j in jobs:
        for b in j.benchmarks:
            rows = samples_for(b, limit)
            if j.model.kind == "api":
                j.shards[b.name] = 1
            else:
                j.shards[b.name] = max(1, min(rows, math.ceil(rows * j.model.seconds_per_sample / target)))
