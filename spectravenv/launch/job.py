"""What both launchers share: the job file, the runner command line and the child environment."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..gpus import GPU
from ..paths import RUNNERS_DIR, Paths
from ..plan import Job
from ..rundir import RunDir, write_atomic
from ..secrets import Secrets

RUNNER = RUNNERS_DIR / "vlmeval_runner.py"

# Variables that would make VLMEvalKit think it is one rank of a torchrun job, or point it at
# another checkout, unless we set them on purpose.
_STRIP = {
    "RANK", "WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RUN_ID", "MMEVAL_ROOT", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
}  # fmt: skip


def job_spec(job: Job, run: RunDir, paths: Paths, *, limit: int | None, judge: str,
             seed: int, nproc: int) -> dict[str, Any]:  # fmt: skip
    model = job.model
    return {
        "schema": 1,
        "job_id": job.id,
        "model": {
            "name": model.name,
            "vlmeval_name": model.vlmeval_name,
            "class": model.cls,
            "builtin": model.builtin,
            "kwargs": model.kwargs,
        },
        "benchmarks": [
            {"name": b.name, "builtin": b.builtin, "tsv": str(b.tsv) if b.tsv else None}
            for b in job.benchmarks
        ],
        "work_dir": str(run.path),
        "limit": limit,
        "seed": seed,
        "judge": judge,
        "nproc": nproc,
        "events": str(run.events_file(job.id)),
        "data_root": str(paths.data_root),
        "assets_dir": str(paths.assets),
    }


def write_job(run: RunDir, spec: dict[str, Any]) -> Path:
    path = run.job_file(spec["job_id"])
    write_atomic(path, json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return path


def runner_command(python: Path, job_file: Path, replicas: int = 1) -> list[str]:
    if replicas > 1:
        # Data-parallel replicas: VLMEvalKit shards by RANK/WORLD_SIZE, rank 0 merges.
        # --standalone: a private rendezvous on a free local port, so jobs never collide.
        return [str(python), "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={replicas}", str(RUNNER), str(job_file)]  # fmt: skip
    return [str(python), str(RUNNER), str(job_file)]


def child_env(
    environ: Mapping[str, str],
    paths: Paths,
    secrets: Secrets,
    gpus: list[GPU] | None,
    addon_dirs: list[Path],
    threads: int | None = None,
) -> dict[str, str]:
    """The runner's environment: ours, cleaned, plus GPUs, shared data and caches, and secrets.

    `gpus=None` leaves CUDA_VISIBLE_DEVICES as the launcher found it (inside a Slurm job Slurm
    has set it); `[]` hides every GPU (a CPU job).
    """
    env = {k: v for k, v in environ.items() if k not in _STRIP and not k.startswith("LOCAL_")}
    env.update(
        LMUData=str(paths.data_root),
        HF_HOME=str(paths.hf_home),  # one weights cache for every env
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # litellm (imported by VLMEvalKit) would go online
        PYTHONUNBUFFERED="1",
        PYTHONNOUSERSITE="1",
    )
    if gpus is not None:
        # nvidia-smi's indices in PCI order; VLMEvalKit parses the variable as integers.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g.index) for g in gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if addon_dirs:
        env["PYTHONPATH"] = os.pathsep.join(str(d) for d in addon_dirs)
    if threads and "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(secrets.values)
    # Names only: the runner masks these variables' values in anything it writes.
    env["SPECTRAVENV_SECRET_NAMES"] = ",".join(secrets.names)
    return env
