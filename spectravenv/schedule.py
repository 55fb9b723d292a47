"""Which waiting jobs start now, on which GPUs: the dispatcher's one decision, kept pure so the
local launcher and the scheduling benchmark (a simulated clock) run the very same logic."""

from __future__ import annotations

from .gpus import GPU
from .plan import Job


def fits(job: Job, free: list[GPU], readings: dict[str, GPU]) -> list[GPU] | None:
    """GPUs for `job` among those not handed out, each with enough free memory right now."""
    ok = [g for g in free if readings.get(g.uuid, g).free_gb >= job.per_gpu_gb]
    return ok[: job.gpus_needed] if len(ok) >= job.gpus_needed else None


def choose_starts(
    pending: list[Job], free: list[GPU], readings: dict[str, GPU], cpu_free: int
) -> list[tuple[Job, list[GPU]]]:
    """Walk the queue in order (longest first); start every job that fits now.

    A job that must wait for GPUs does not block smaller ones behind it (backfilling); with
    longest-first order the big jobs still start as early as they can.
    """
    free = list(free)
    starts: list[tuple[Job, list[GPU]]] = []
    for job in pending:
        if job.gpus_needed == 0:
            if cpu_free > 0:
                cpu_free -= 1
                starts.append((job, []))
            continue
        got = fits(job, free, readings)
        if got is not None:
            free = [g for g in free if g not in got]
            starts.append((job, got))
    return starts
