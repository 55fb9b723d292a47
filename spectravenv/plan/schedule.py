"""Which workers start now, on which GPUs: the dispatcher's one decision, kept pure so the local
launcher, the Slurm launcher and the scheduling benchmark (a simulated clock) run the same logic.

Work flows to idle GPUs during the run: whenever GPUs are free, a new worker starts for the model
with the most open work per worker, if that work pays for loading the model again (or nobody
runs that model yet). A worker takes its model's units until none are left and then ends, which
frees its GPUs for the next decision.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from spectravenv.plan.gpus import GPU
from spectravenv.plan.jobs import Job, Plan

PAYS_OFF = 2.0  # another worker only when each would get at least this many loads' worth of work


@dataclass
class Open:
    """A model's work that no worker has taken yet, and how many workers run it."""

    job: Job
    seconds: float  # estimated seconds of its open units (on one worker)
    units: int
    workers: int = 0


def fits(job: Job, free: list[GPU], readings: dict[str, GPU]) -> list[GPU] | None:
    """GPUs for one worker of `job` among those not handed out, each with enough free memory now."""
    ok = [g for g in free if readings.get(g.uuid, g).free_gb >= job.per_gpu_gb]
    # Best fit: the smallest GPUs that hold it, so the big ones stay free for the models only
    # they can hold (a 40 GB and an 80 GB GPU in one pool are both used for what fits on them).
    ok.sort(key=lambda g: (readings.get(g.uuid, g).free_gb, g.order))
    return ok[: job.gpus_needed] if len(ok) >= job.gpus_needed else None


def choose_starts(work: list[Open], free: list[GPU], readings: dict[str, GPU],
                  cpu_free: int) -> list[tuple[Job, list[GPU]]]:  # fmt: skip
    """Workers to start now: repeatedly the model with the most open work per worker that fits
    the free GPUs, while another worker of it pays off. A model that must wait for GPUs does not
    block smaller ones (backfilling)."""
    free = list(free)
    work = [Open(o.job, o.seconds, o.units, o.workers) for o in work if o.units > 0]
    starts: list[tuple[Job, list[GPU]]] = []
    while True:
        best, got = None, None
        for o in sorted(work, key=lambda o: -o.seconds / (o.workers + 1)):
            if o.workers >= o.units:
                continue  # one worker per open unit at most
            if o.workers and o.seconds / (o.workers + 1) < PAYS_OFF * o.job.model.load_seconds:
                continue
            if o.job.gpus_needed == 0:
                if cpu_free > 0:
                    best, got = o, []
                    break
                continue
            placed = fits(o.job, free, readings)
            if placed is not None:
                best, got = o, placed
                break
        if best is None:
            return starts
        if got:
            free = [g for g in free if g not in got]
        else:
            cpu_free -= 1
        best.workers += 1
        starts.append((best.job, got))


# ---- the simulated clock (expected makespan, and the scheduling benchmark) ----------------------


@dataclass
class Simulation:
    makespan: float
    busy_gpu_seconds: float  # GPU-seconds spent loading or inferring
    loads: int  # workers started (each loads its model once)
    workers: list[tuple[str, float, float, int]] = field(default_factory=list)  # model, start, end, gpus


def simulate(plan: Plan, true_seconds: Callable[[Job, float], float] | None = None) -> Simulation:
    """Run the dispatcher's policy on a simulated clock. Decisions use the plan's estimates;
    `true_seconds(job, estimate)` gives what a unit really takes (for a +-30% error study)."""
    real = true_seconds or (lambda job, est: est)
    gpus = list(plan.gpus)
    cpu_slots = 2
    queues = {j.id: sorted(j.unit_seconds(plan.limit), reverse=True) for j in plan.todo}
    jobs = {j.id: j for j in plan.todo}
    workers = {j.id: 0 for j in plan.todo}
    free = list(gpus)
    cpu_free = cpu_slots
    clock, busy, loads = 0.0, 0.0, 0
    heap: list[tuple[float, int, str, tuple[GPU, ...], float]] = []  # (time, seq, model, gpus, started)
    history: list[tuple[str, float, float, int]] = []
    seq = 0

    def start(now: float) -> None:
        nonlocal seq, loads, cpu_free, free
        work = [Open(jobs[m], sum(q), len(q), workers[m]) for m, q in queues.items() if q]
        for job, got in choose_starts(work, free, {}, cpu_free):
            if got:
                free = [g for g in free if g not in got]
            else:
                cpu_free -= 1
            workers[job.id] += 1
            loads += 1
            seq += 1
            heapq.heappush(heap, (now + job.model.load_seconds, seq, job.id, tuple(got), now))

    start(0.0)
    while heap:
        clock, _, model, got, began = heapq.heappop(heap)
        job, queue = jobs[model], queues[model]
        if queue:  # the worker takes its model's next unit (the longest open one)
            est = queue.pop(0)
            seq += 1
            heapq.heappush(heap, (clock + real(job, est), seq, model, got, began))
            continue
        # Nothing left of its model: the worker ends, its GPUs go back.
        workers[model] -= 1
        span = clock - began
        busy += span * len(got)
        history.append((model, began, clock, len(got)))
        if got:
            free = sorted([*free, *got], key=lambda g: g.order)
        else:
            cpu_free += 1
        start(clock)
    return Simulation(clock, busy, loads, history)


def lower_bound(plan: Plan, true_seconds: Callable[[Job, float], float] | None = None) -> float:
    """No schedule can beat max(all work / GPUs + one load, the longest unit with its load),
    where the work that needs t GB per GPU counts only the GPUs with t free (so a GPU taken by
    someone else's job serves nothing, and 80 GB-only models share only the 80 GB GPUs).
    `true_seconds` as in simulate: the bound of what really happened."""
    todo = plan.todo
    if not todo:
        return 0.0
    real = true_seconds or (lambda job, est: est)

    def need(j: Job) -> float:
        return j.per_gpu_gb if j.gpus_needed else 0.0

    units = {j.id: [real(j, u) for u in j.unit_seconds(plan.limit)] for j in todo}
    work = {j.id: sum(units[j.id]) * max(j.gpus_needed, 1) for j in todo}
    spread = 0.0
    for t in sorted({need(j) for j in todo}):
        heavy = sum(work[j.id] for j in todo if need(j) >= t)
        gpus = sum(g.free_gb >= t for g in plan.gpus) if t > 0 else max(len(plan.gpus), 1)
        spread = max(spread, heavy / max(gpus, 1))
    one_load = min(j.model.load_seconds for j in todo)
    longest = max(max(units[j.id], default=0.0) + j.model.load_seconds for j in todo)
    return max(spread + one_load, longest)
