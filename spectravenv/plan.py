"""What to run: the models x benchmarks matrix turned into jobs, each with its GPU need and cost.

One job per model: the runner loads the model once and runs all of its benchmarks. Everything
that can be checked before a GPU is touched or an env is built is checked here, so a bad matrix
fails in a second, not an hour in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.version import Version

from . import locks
from .catalog import Benchmark, Catalog, Env, Model
from .errors import SpectravenvError
from .gpus import GPU


@dataclass
class Job:
    id: str
    model: Model
    env: Env
    benchmarks: list[Benchmark]
    done: list[str] = field(default_factory=list)  # benchmarks already finished in this run
    gpus_needed: int = 1  # 0: runs on the CPU
    est_seconds: float = 0.0
    why: str = ""  # how the GPU count was chosen, for --dry-run
    blocked: str = ""  # why it cannot run on this pool (only with strict=False)
    replicas: int = 1  # data-parallel copies of the model (torchrun), each on its own GPUs
    work_seconds: float = 0.0  # inference estimate for one replica, model load excluded

    @property
    def per_gpu_gb(self) -> float:
        return self.model.gpu_memory_gb / max(self.gpus_needed // self.replicas, 1)


@dataclass
class Plan:
    jobs: list[Job]
    gpus: list[GPU]
    limit: int | None
    dropped: set[tuple[str, str]] = field(default_factory=set)  # --skip-unsupported pairs

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if j.benchmarks]

    def expected_makespan(self) -> float:
        """Greedy list schedule of the job estimates on the pool (LPT order), in seconds."""
        slots = [0.0] * max(len(self.gpus), 1)
        cpu_end = 0.0
        for job in sorted(self.todo, key=lambda j: -j.est_seconds):
            if job.gpus_needed == 0:
                cpu_end += job.est_seconds
                continue
            slots.sort()
            k = min(job.gpus_needed, len(slots))
            start = slots[k - 1]
            for i in range(k):
                slots[i] = start + job.est_seconds
        return max([*slots, cpu_end])


def samples_for(bench: Benchmark, limit: int | None) -> int:
    return min(bench.samples, limit) if limit else bench.samples


def estimate(model: Model, benches: list[Benchmark], limit: int | None) -> float:
    return (
        model.load_seconds + sum(samples_for(b, limit) for b in benches) * model.seconds_per_sample
    )


def vlmeval_version(env: Env) -> str | None:
    return locks.pinned(locks.read(env.lock, env.name), "ms-vlmeval")


def unsupported(
    catalog: Catalog, models: list[str], benchmarks: list[str], *, skip: bool = False
) -> set[tuple[str, str]]:
    """Pairs whose env's VLMEvalKit release does not know the benchmark: an error, or with
    `skip` the set of pairs to leave out."""
    versions: dict[str, str | None] = {}
    out: set[tuple[str, str]] = set()
    for m in models:
        env = catalog.envs[catalog.models[m].env]
        if env.name not in versions:
            versions[env.name] = vlmeval_version(env)
        have = versions[env.name]
        for b in benchmarks:
            since = catalog.benchmarks[b].since_vlmeval
            if since and have and Version(have) < Version(since):
                if skip:
                    out.add((m, b))
                    continue
                raise SpectravenvError(
                    f"{b} needs VLMEvalKit >= {since}, but {m}'s env {env.name} is locked to "
                    f"ms-vlmeval {have} (the newest release that imports under transformers "
                    f"{env.transformers}); drop {b} for {m}, or pass --skip-unsupported"
                )
    return out


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
    spread_idle: bool = True,
) -> Plan:
    """Jobs for the matrix. `strict=False` (for --dry-run) notes a model that cannot run on this
    pool in its job instead of raising, so the plan can still be shown."""
    done = done or set()
    dropped = unsupported(catalog, models, benchmarks, skip=skip_unsupported)
    jobs = []
    for name in models:
        model = catalog.models[name]
        todo = [
            catalog.benchmarks[b]
            for b in benchmarks
            if (name, b) not in done and (name, b) not in dropped
        ]
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
        jobs.append(
            Job(
                id=name,
                model=model,
                env=catalog.envs[model.env],
                benchmarks=todo,
                done=finished,
                gpus_needed=need,
                est_seconds=estimate(model, todo, limit) if todo else 0.0,
                work_seconds=(estimate(model, todo, limit) - model.load_seconds) if todo else 0.0,
                why=why,
                blocked=blocked,
            )
        )
    if spread_idle:  # on Slurm the pool is a description, not GPUs that would idle
        spread(jobs, pool, limit)
    # Longest first, so the big model does not start last and run alone.
    jobs.sort(key=lambda j: -j.est_seconds)
    return Plan(jobs, pool, limit, dropped)


def spread(jobs: list[Job], pool: list[GPU], limit: int | None, max_replicas: int = 8) -> None:
    """Give GPUs that would otherwise idle to the longest jobs, as data-parallel replicas.

    Only when the pool has more GPUs than all jobs need at once: then no job waits for another,
    and each spare GPU shortens the job that would finish last. Only models that fit on one
    GPU are replicated (a multi-GPU model already spans its GPUs with device_map="auto").
    """
    todo = [j for j in jobs if j.benchmarks and j.gpus_needed > 0]
    if not todo:
        return
    # A GPU someone else fills is no spare: count those that could hold the smallest replica.
    smallest = min(j.per_gpu_gb for j in todo)
    spare = sum(g.free_gb >= smallest for g in pool) - sum(j.gpus_needed for j in todo)
    candidates = [j for j in todo if j.gpus_needed == 1 and not j.blocked and j.work_seconds > 0]
    while spare > 0 and candidates:
        job = max(candidates, key=lambda j: j.est_seconds)
        # Never more replicas than samples to share out (--limit counts).
        samples = max(samples_for(b, limit) for b in job.benchmarks)
        if job.replicas >= min(max_replicas, samples):
            candidates.remove(job)
            continue
        job.replicas += 1
        job.gpus_needed += 1
        job.est_seconds = job.model.load_seconds + job.work_seconds / job.replicas
        job.why = (
            f"data-parallel: {job.replicas} replicas (torchrun), one per GPU, "
            "since GPUs would otherwise idle"
        )
        spare -= 1


def _names(names: list[str]) -> str:
    if not names:
        return "-"
    return ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} +{len(names) - 2} more"


def _matrix_text(plan: Plan) -> str:
    from .console import plural

    benches = {b.name for j in plan.jobs for b in j.benchmarks} | {b for j in plan.jobs for b in j.done}
    benches |= {b for _, b in plan.dropped}
    planned = sum(len(j.benchmarks) for j in plan.jobs)
    done = sum(len(j.done) for j in plan.jobs)
    text = (f"{plural(len(benches), 'benchmark')} x {plural(len(plan.jobs), 'model')} = "
            f"{plural(len(benches) * len(plan.jobs), 'pair')}: {planned} to run")  # fmt: skip
    return text + (f", {done} already done" if done else "") + (f", {len(plan.dropped)} left out" if plan.dropped else "")


def format_plan(plan: Plan, ready_envs: dict[str, str]) -> str:
    from .console import duration, table

    rows = []
    for job in plan.jobs:
        where = "CPU" if job.gpus_needed == 0 else gpus_word(job.gpus_needed)
        rows.append((
            job.model.name, job.env.name, ready_envs.get(job.env.name, "?"), where,
            _names([b.name for b in job.benchmarks]),
            _names(job.done),
            duration(job.est_seconds) if job.benchmarks else "-",
            job.why,
        ))  # fmt: skip
    blocked = [j for j in plan.jobs if j.blocked]
    kinds = {(g.name, round(g.free_gb), round(g.total_gb)) for g in plan.gpus}
    if len(kinds) == 1 and len(plan.gpus) > 1:
        name, free, total = kinds.pop()
        pool = f"{len(plan.gpus)} x {name} ({free}/{total} GB free each)"
    else:
        pool = (
            ", ".join(
                f"{g.index}: {g.name} ({g.free_gb:.0f}/{g.total_gb:.0f} GB free)" for g in plan.gpus
            )
            or "none (CPU only)"
        )
    lines = [
        table(
            ("model", "env", "env state", "runs on", "to run", "already done", "est.", "why"), rows
        ),
        "",
        f"GPUs: {pool}",
        f"pairs: {_matrix_text(plan)}",
        f"jobs: {len(plan.todo)} to run, one process per model (model loaded once); "
        f"expected makespan {duration(plan.expected_makespan())}"
        + (f"; --limit {plan.limit} samples per benchmark" if plan.limit else ""),
    ]
    if plan.dropped:
        lines.append(f"left out, unknown to the env's VLMEvalKit (--skip-unsupported): "
                     f"{len(plan.dropped)} pairs: " + _names([f"{m} x {b}" for m, b in sorted(plan.dropped)]))  # fmt: skip
    if blocked:
        lines += [f"cannot run: {j.blocked}" for j in blocked]
    return "\n".join(lines)
