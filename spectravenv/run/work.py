"""The run's work as the launchers see it: open units per model, read from the units on disk.

Both launchers ask this module what is left (so a Slurm run and a local run decide alike), and
use it to give up on a model's remaining pairs or to open them again for a retry. A pair given up
carries the marker `given_up` (svrunner.units.mark_given_up): the retries of this attempt leave
it alone, a new attempt (`eval --resume`) opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svrunner import units

from spectravenv.plan.jobs import Job, samples_for
from spectravenv.plan.schedule import Open
from spectravenv.run.rundir import RunDir


def units_dir(run: RunDir) -> str:
    return units.folder(str(run.internal))


@dataclass
class Left:
    """What is left of one job: open infer units (seconds), evaluations waiting, failures."""

    job: Job
    open_units: int
    open_seconds: float
    evals: int
    claimed: int
    failed: list[str]  # benchmarks whose pair failed in a worker (a retry may open them again)
    given_up: list[str] = field(default_factory=list)  # benchmarks the dispatcher gave up

    @property
    def finished(self) -> bool:
        """Nothing more can happen for this job without a new worker or a retry."""
        return self.open_units == 0 and self.evals == 0 and self.claimed == 0


def forget(run: RunDir, model: str, benchmark: str) -> None:
    """A pair starts over: its units (of every division), claims and markers go."""
    units.forget_pair(units_dir(run), model, benchmark)


def keep_divisions(run: RunDir, jobs: list[Job]) -> None:
    """On resume, a pair keeps the division its done units belong to (the cost model may since
    suggest another): a unit done is never inferred again."""
    folder = units_dir(run)
    for job in jobs:
        for b in job.benchmarks:
            have = {n: k for n, k in units.divisions(folder, job.model.name, b.name).items() if k}
            if have:
                job.shards[b.name] = max(have, key=lambda n: (have[n], n))


def left(run: RunDir, job: Job, limit: int | None) -> Left:
    folder = units_dir(run)
    open_units = evals = claimed = 0
    open_seconds = 0.0
    failed, given_up = [], []
    for b in job.benchmarks:
        n = job.shards.get(b.name, 1)
        st = units.state(folder, job.model.name, b.name, n)
        if st.failed:
            (given_up if st.failed.get("given_up") else failed).append(b.name)
            continue
        if st.evaluated:
            continue
        open_units += st.open_units
        claimed += st.claimed + int(st.eval_claimed)
        evals += int(st.needs_eval)
        open_seconds += st.open_units * (samples_for(b, limit) / n) * job.model.seconds_per_sample
    return Left(job, open_units, open_seconds, evals, claimed, failed, given_up)


def open_work(run: RunDir, jobs: list[Job], limit: int | None, workers: dict[str, int]) -> list[Open]:
    """For the scheduler: per model its open work and its live workers. A pair waiting for its
    evaluation counts as one short unit, so a model whose last worker died still gets one."""
    out = []
    for job in jobs:
        lf = left(run, job, limit)
        n = lf.open_units + (lf.evals if workers.get(job.id, 0) == 0 else 0)
        out.append(Open(job, lf.open_seconds + lf.evals, n, workers.get(job.id, 0)))
    return out


def give_up(run: RunDir, job: Job, error: str) -> list[str]:
    """Mark every pair of the job that is not done as given up: no worker starts on it, and no
    retry of this attempt opens it again."""
    folder = units_dir(run)
    gave = []
    for b in job.benchmarks:
        n = job.shards.get(b.name, 1)
        st = units.state(folder, job.model.name, b.name, n)
        if not st.evaluated and not (st.failed or {}).get("given_up"):
            units.mark_given_up(folder, job.model.name, b.name, n, error)
            gave.append(b.name)
    return gave


def reopen(run: RunDir, job: Job, *, given_up: bool = False) -> list[str]:
    """A retry: the job's failed pairs are open again (their done units stay). Pairs given up
    stay closed unless `given_up` (a new attempt gives every failed pair another chance)."""
    folder = units_dir(run)
    again = []
    for b in job.benchmarks:
        n = job.shards.get(b.name, 1)
        failed = units.pair_failed(folder, job.model.name, b.name, n)
        if failed and (given_up or not failed.get("given_up")):
            units.reset_failed(folder, job.model.name, b.name, n)
            again.append(b.name)
    return again
