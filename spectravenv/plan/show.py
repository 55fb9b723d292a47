"""The plan as `eval --dry-run` shows it: per model its env, GPUs, units and estimate, the
first workers the dispatcher would start, and the expected makespan against its lower bound."""

from __future__ import annotations

from spectravenv.console import duration, plural, table
from spectravenv.plan.gpus import memory_notes
from spectravenv.plan.jobs import Plan, gpus_word
from spectravenv.plan.schedule import Open, choose_starts, lower_bound, simulate


def _names(names: list[str]) -> str:
    if not names:
        return "-"
    return ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} +{len(names) - 2} more"


def _matrix_text(plan: Plan) -> str:
    benches = {b.name for j in plan.jobs for b in j.benchmarks} | {b for j in plan.jobs for b in j.done}
    benches |= {b for _, b in plan.dropped}
    planned = sum(len(j.benchmarks) for j in plan.jobs)
    done = sum(len(j.done) for j in plan.jobs)
    text = (f"{plural(len(benches), 'benchmark')} x {plural(len(plan.jobs), 'model')} = "
            f"{plural(len(benches) * len(plan.jobs), 'pair')}: {planned} to run")  # fmt: skip
    return text + (f", {done} already done" if done else "") + (f", {len(plan.dropped)} left out" if plan.dropped else "")


def format_plan(plan: Plan, ready_envs: dict[str, str], max_gpus: int | None = None) -> str:
    """The plan; with `max_gpus` (--max-gpus) the workers and the makespan of that many GPUs."""
    rows = []
    for job in plan.jobs:
        where = "CPU" if job.gpus_needed == 0 else gpus_word(job.gpus_needed)
        rows.append((
            job.model.name, job.env.name, ready_envs.get(job.env.name, "?"), where,
            _names([b.name for b in job.benchmarks]), job.units if job.benchmarks else "-",
            _names(job.done), duration(job.est_seconds) if job.benchmarks else "-", job.why,
        ))  # fmt: skip
    blocked = [j for j in plan.jobs if j.blocked]
    kinds = {(g.name, round(g.free_gb), round(g.total_gb)) for g in plan.gpus}
    if len(kinds) == 1 and len(plan.gpus) > 1:
        name, free, total = kinds.pop()
        pool = f"{len(plan.gpus)} x {name} ({free}/{total} GB free each)"
    else:
        pool = (", ".join(f"{g.label}: {g.name} ({g.free_gb:.0f}{'' if g.free_known else '?'}/{g.total_gb:.0f} GB free)" for g in plan.gpus)
                or "none (CPU only)")  # fmt: skip
    runnable = [j for j in plan.todo if not j.blocked]
    usable = plan.gpus[:max_gpus] if max_gpus else plan.gpus
    first = choose_starts([Open(j, j.work_seconds, j.units) for j in runnable], list(usable), {}, 2)
    workers = ", ".join(f"{j.model.name} on {'CPU' if not g else 'GPU ' + ','.join(x.label for x in g)}"
                        for j, g in first)  # fmt: skip
    lines = [
        table(("model", "env", "env state", "per worker", "to run", "units", "already done", "est.", "why"), rows),
        "",
        f"GPUs: {pool}",
        f"pairs: {_matrix_text(plan)}",
        f"units: {sum(j.units for j in plan.todo)} (shards of the benchmarks' rows, taken by workers that "
        "load their model once; idle GPUs take over the open units of the model with the most left)",
        f"first workers: {workers or '-'}"
        + (f" (--max-gpus {max_gpus}: at most {max_gpus} GPUs at once)" if max_gpus and max_gpus < len(plan.gpus) else ""),
        *(f"note: {n}" for n in memory_notes(plan.gpus)),
        *(f"engine env {name}: {state} (served models: --backend vllm)" for name, state in sorted(ready_envs.items())
          if name not in {j.env.name for j in plan.jobs}),
    ]
    if runnable:
        sim = Plan(runnable, usable, plan.limit)
        span, bound = simulate(sim).makespan, lower_bound(sim)
        lines.append(f"expected makespan {duration(span)} (lower bound {duration(bound)}: "
                     f"{span / bound if bound else 1:.2f}x)"
                     + (f"; --limit {plan.limit} samples per benchmark" if plan.limit else ""))  # fmt: skip
    if plan.dropped:
        lines.append(f"left out, the benchmark cannot run in the model's env (--skip-unsupported): "
                     f"{len(plan.dropped)} pairs: " + _names([f"{m} x {b}" for m, b in sorted(plan.dropped)]))  # fmt: skip
    if blocked:
        lines += [f"cannot run: {j.blocked}" for j in blocked]
    return "\n".join(lines)
