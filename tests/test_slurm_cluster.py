"""Against a real single-node Slurm cluster with 4 fake GPUs (start one with
`eval "$(bash .ci/slurm-up.sh)"`, stop it with `bash .ci/slurm-down.sh`).

Skipped, with the reason, when there is no reachable cluster; with CI=true they fail instead, so
CI can never skip them silently. Every Slurm client call has a timeout: the clients hang for
seconds when slurmctld is down."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import unavailable

pytestmark = pytest.mark.slurm

CLIENT_TIMEOUT = 15  # seconds for any one Slurm client command
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


# --- helpers (to move into the package with the Slurm launcher) ------------------------------


def slurm_env(**extra: str) -> dict[str, str]:
    """The caller's environment without job-context variables that would steer sbatch/squeue."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SBATCH_", "SQUEUE_", "SLURM_")) or k == "SLURM_CONF"
    }
    env.update(extra)
    return env


def slurm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        env=env or slurm_env(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def submit(*args: str, env: dict[str, str] | None = None, jobs: list[str] | None = None) -> str:
    """sbatch ARGS; returns the job id (and records it in `jobs` for cleanup)."""
    proc = slurm("sbatch", "--parsable", *args, env=env)
    assert proc.returncode == 0, f"sbatch {args} failed ({proc.returncode}): {proc.stderr.strip()}"
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), f"unexpected sbatch output: {proc.stdout!r}"
    if jobs is not None:
        jobs.append(job_id)
    return job_id


def show_job(job_id: str) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict (JobState, Reason, ExitCode, ...)."""
    proc = slurm("scontrol", "show", "job", "-o", job_id)
    assert proc.returncode == 0, f"scontrol show job {job_id}: {proc.stderr.strip()}"
    # key=value pairs separated by spaces; values may hold '=' (TRES=cpu=1,mem=...)
    pairs = re.split(r" (?=[A-Za-z][\w:/]*=)", proc.stdout.strip())
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def queue_state(job_id: str) -> str:
    """The job's state while squeue lists it (PENDING, RUNNING, ...); '' once it has left."""
    proc = slurm("squeue", "-h", "-j", job_id, "-o", "%T")
    assert proc.returncode == 0, f"squeue -j {job_id}: {proc.stderr.strip()}"
    return proc.stdout.strip()


@dataclass(frozen=True)
class JobEnd:
    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    reason: str  # None, NonZeroExitCode, TimeLimit, JobLaunchFailure, ...
    exit_code: str  # "status:signal", e.g. "0:0", "3:0", "0:15"
    info: dict[str, str] = field(repr=False)


def wait_for_job(job_id: str, timeout: float = 60, poll: float = 0.1) -> JobEnd:
    """Poll until the job has left the queue and scontrol reports a final state."""
    deadline = time.monotonic() + timeout
    while True:
        if not queue_state(job_id):
            info = show_job(job_id)
            state = info.get("JobState", "")
            if state and state not in ACTIVE:
                return JobEnd(state, info.get("Reason", ""), info.get("ExitCode", ""), info)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished after {timeout}s: {show_job(job_id)}")
        time.sleep(poll)


def wait_until_running(job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (state := queue_state(job_id)) != "RUNNING":
        assert state in ACTIVE, f"job {job_id} left the queue before running: {show_job(job_id)}"
        assert time.monotonic() < deadline, f"job {job_id} not running after {timeout}s: {state}"
        time.sleep(0.1)


# --- cluster availability -------------------------------------------------------------------


def cluster_problem() -> str | None:
    """Why the Slurm cluster cannot be used, or None when it can."""
    if not shutil.which("sbatch"):
        return "sbatch is not on PATH"
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        return 'SLURM_CONF is not set (start a cluster: eval "$(bash .ci/slurm-up.sh)")'
    if not Path(conf).is_file():
        return f"SLURM_CONF={conf} does not exist"
    try:
        proc = slurm("sinfo", "-h", "-o", "%t %G")
    except subprocess.TimeoutExpired:
        return f"sinfo timed out after {CLIENT_TIMEOUT}s: slurmctld not reachable"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    nodes = proc.stdout.split("\n")
    if not any(n.split()[:1] in (["idle"], ["mix"], ["alloc"]) and "gpu:4" in n for n in nodes):
        return f"no up node with gpu:4 (sinfo: {proc.stdout.strip()!r})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    problem = cluster_problem()
    if problem:
        unavailable(f"no Slurm cluster: {problem}")


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    """Job ids submitted by a test; whatever is still queued at the end is cancelled."""
    ids: list[str] = []
    yield ids
    if ids:
        slurm("scancel", *ids)


# --- tests ----------------------------------------------------------------------------------


def test_four_gpu_jobs_get_distinct_devices(tmp_path: Path, jobs: list[str]):
    # each job holds its GPU for 2 s, so all four run at once and must not share a device
    ids = [
        submit(
            "--gres=gpu:1",
            f"--output={tmp_path}/out_%j",
            "--wrap",
            'echo "${CUDA_VISIBLE_DEVICES-unset}"; sleep 2',
            jobs=jobs,
        )
        for _ in range(4)
    ]
    ends = {i: wait_for_job(i) for i in ids}
    assert {e.state for e in ends.values()} == {"COMPLETED"}, ends
    seen = {i: (tmp_path / f"out_{i}").read_text().strip() for i in ids}
    assert sorted(seen.values()) == ["0", "1", "2", "3"], seen


def test_more_gpus_than_the_node_has_is_rejected_at_submission(jobs: list[str]):
    proc = slurm("sbatch", "--parsable", "--gres=gpu:5", "--wrap", "true")
    if proc.returncode == 0:
        jobs.append(proc.stdout.strip())
    assert proc.returncode != 0, f"accepted as job {proc.stdout.strip()}"
    assert not proc.stdout.strip()
    assert "Requested node configuration is not available" in proc.stderr, proc.stderr


def test_job_without_gpu_request_sees_no_cuda_devices(tmp_path: Path, jobs: list[str]):
    # the submitter's own CUDA_VISIBLE_DEVICES travels with the job (--export=ALL); Slurm must
    # clear it for a job that asked for no GPU
    job = submit(
        f"--output={tmp_path}/out",
        "--wrap",
        'echo "${CUDA_VISIBLE_DEVICES-unset}"',
        env=slurm_env(CUDA_VISIBLE_DEVICES="7"),
        jobs=jobs,
    )
    end = wait_for_job(job)
    assert (end.state, end.exit_code) == ("COMPLETED", "0:0"), end
    assert (tmp_path / "out").read_text().strip() == "unset"


def test_cancelled_running_job_is_reported_cancelled(tmp_path: Path, jobs: list[str]):
    job = submit(f"--output={tmp_path}/out", "--wrap", "sleep 60", jobs=jobs)
    wait_until_running(job)
    proc = slurm("scancel", job)
    assert proc.returncode == 0, proc.stderr
    start = time.monotonic()
    end = wait_for_job(job, timeout=30)
    assert end.state == "CANCELLED", end
    assert time.monotonic() - start < 20
