"""What both launchers share: the job file, the runner command line and the child environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from svrunner import fingerprint, lmudata, redact, units

from spectravenv.catalog.entries import Env, Model
from spectravenv.paths import RUNNERS_DIR, Paths
from spectravenv.plan import backends
from spectravenv.plan.gpus import GPU
from spectravenv.plan.jobs import Job
from spectravenv.plan.judges import Judge
from spectravenv.run.rundir import RunDir
from spectravenv.secrets import Secrets

RUNNER = RUNNERS_DIR / "vlmeval_runner.py"
JOB_SCHEMA = 3  # svrunner.main.JOB_SCHEMA

# Variables that would make VLMEvalKit think it is one rank of a torchrun job, or point it at
# another checkout, unless we set them on purpose.
_STRIP = {
    "RANK", "WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RUN_ID", "MMEVAL_ROOT", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
}  # fmt: skip


def model_spec(model: Model) -> dict[str, Any]:
    """The model as the runner builds it; a served model also names its backend and the engine's
    version, so both are part of the pair's fingerprint (a wrapper's answers are never reused
    for a served model's, nor one engine's for another's). The default `hf` adds nothing: the
    fingerprints of runs made before backends existed still hold."""
    spec = {"name": model.name, "vlmeval_name": model.vlmeval_name, "class": model.cls,
            "builtin": model.builtin, "kwargs": model.kwargs}  # fmt: skip
    if model.backend != "hf":
        spec.update(backend=model.backend, engine=backends.engine_version())
    return spec


def static_fingerprint(model: Model, env: Env, env_key: str, settings: dict[str, Any],
                       secrets: Secrets) -> dict[str, Any]:  # fmt: skip
    """The parts of a pair's fingerprint known before the runner starts (see svrunner.fingerprint);
    the judge is a part of its own, per benchmark (host_fingerprint, svrunner.judging)."""
    return {
        "settings": {k: settings[k] for k in ("limit", "seed")},
        "env": {"name": env.name, "key": env_key},
        "model": redact.seal(model_spec(model), secrets.values),
    }


def host_fingerprint(model: Model, env: Env, bench: str, env_key: str, settings: dict[str, Any],
                     secrets: Secrets, paths: Paths, judge: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """Everything the dispatcher can know of a pair's fingerprint, to decide whether a finished
    pair is still valid: the static parts, the judge, the checkpoint and the dataset file as they
    are now."""
    tsv = paths.data_root / f"{bench}.tsv"
    checkpoint = model.kwargs.get("model_path") or model.checkpoint
    return {
        **static_fingerprint(model, env, env_key, settings, secrets),
        "judge": judge,
        "checkpoint": fingerprint.checkpoint_identity(checkpoint, str(paths.hf_home)),
        "dataset": fingerprint.dataset_sha256(str(tsv), lmudata.sha256_cache(str(paths.data_root)))
        if tsv.exists() else None,
    }  # fmt: skip


def job_spec(job: Job, run: RunDir, paths: Paths, *, env_key: str, settings: dict[str, Any],
             secrets: Secrets, nproc: int, judges: dict[str, Judge], worker: str | None = None,
             limit: int | None = None, engine_python: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """A worker's job file. Secret values are sealed into references: the file never holds one.
    Each benchmark names its judge (svrunner.judging) and where its TSV comes from (url, md5:
    the runner hands them to VLMEvalKit, which downloads and checks the file itself).

    Benchmarks come longest unit first, so every worker takes the big units before the small
    ones and the run does not end waiting for one long unit started last."""
    from spectravenv.plan.jobs import samples_for

    worker = worker or f"{job.id}.w1"
    order = sorted(job.benchmarks, key=lambda b: -samples_for(b, limit) / job.shards.get(b.name, 1))
    return {
        "schema": JOB_SCHEMA,
        "job_id": worker,
        "model": redact.seal(model_spec(job.model), secrets.values),
        "benchmarks": [
            {"name": b.name, "builtin": b.builtin, "tsv": str(b.tsv) if b.tsv else None,
             "shards": job.shards.get(b.name, 1), "url": b.url, "md5": b.md5,
             "judge": redact.seal(judges[b.name].spec(), secrets.values)}
            for b in order
        ],
        "work_dir": str(run.path),
        "units_dir": units.folder(str(run.internal)),
        "limit": settings["limit"],
        "seed": settings["seed"],
        "nproc": nproc,
        "events": str(run.events_file(worker)),
        "data_root": str(paths.data_root),
        "assets_dir": str(paths.assets),
        "fingerprint": static_fingerprint(job.model, job.env, env_key, settings, secrets),
        # A served model's engine: the engine env's Python runs vLLM's server (svrunner.served).
        "engine": {"python": str(engine_python)} if engine_python is not None else None,
    }


def runner_command(python: Path, job_file: Path) -> list[str]:
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
        # Whole GPUs by nvidia-smi's index (PCI order, hence CUDA_DEVICE_ORDER), because
        # VLMEvalKit parses the variable as integers; MIG devices by UUID, the only name CUDA
        # has for them (plan/gpus.py says more).
        env["CUDA_VISIBLE_DEVICES"] = ",".join(g.cuda_id for g in gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if addon_dirs:
        env["PYTHONPATH"] = os.pathsep.join(str(d) for d in addon_dirs)
    if threads and "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(secrets.values)
    # Names only: the runner masks these variables' values in everything it writes.
    env[redact.SECRET_NAMES_VAR] = ",".join(secrets.names)
    return env
