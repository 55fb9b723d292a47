"""`--retries`: one policy for both launchers.

A model may fail `retries` times in one attempt: a worker that could not load it, died without
a word, or was stopped by the dispatcher counts once, and so does opening its failed pairs again
(a unit's generate raised inside a worker). After a CUDA out-of-memory, a retry happens only if
the launcher can give the model's workers more GPUs (`on_oom`: run/launch.py
more_gpus_after_oom). When none is left, the model's pairs that are not done are given up
(work.give_up): marked on disk, so no later retry of this attempt opens them again, and a new
attempt (`eval --resume`) does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from spectravenv.plan.jobs import Job
from spectravenv.run import work
from spectravenv.run.rundir import RunDir


@dataclass
class RetryPolicy:
    run: RunDir
    retries: int
    say: Callable[[str], None]  # a line on the run's console
    on_oom: Callable[[Job], bool] | None = None  # more GPUs for the job's workers? (False: no)
    failures: dict[str, int] = field(default_factory=dict)  # job id -> failures so far

    def used(self, job: Job) -> int:
        return self.failures.get(job.id, 0)

    def worker_failed(self, job: Job, error: str, oom: bool = False) -> bool:
        """A worker of `job` failed (`error`): True if the model may try again, else its open
        pairs are given up."""
        n = self.failures[job.id] = self.used(job) + 1
        if n <= self.retries and not (oom and not (self.on_oom and self.on_oom(job))):
            self.say(f"retry   {job.model.name} ({n}/{self.retries})")
            self.run.log_summary(f"job {job.id} retry {n}/{self.retries}")
            return True
        gave = work.give_up(self.run, job, error)
        if gave:
            self.run.log_summary(f"job {job.id} gave up on {', '.join(gave)}: {error}")
        return False

    def reopen_failed_pairs(self, jobs: Iterable[Job], busy: set[str], limit: int | None) -> None:
        """Pairs that failed inside a worker, of models with no worker running (`busy`: job ids)
        and nothing else left: open again while the model has retries left."""
        for job in jobs:
            if job.id in busy or self.used(job) >= self.retries:
                continue
            lf = work.left(self.run, job, limit)
            if not (lf.failed and lf.finished):
                continue
            self.failures[job.id] = n = self.used(job) + 1
            again = work.reopen(self.run, job)
            self.say(f"retry   {job.model.name} ({n}/{self.retries}): {', '.join(again)}")
            self.run.log_summary(f"job {job.id} retry {n}/{self.retries}: {', '.join(again)}")
