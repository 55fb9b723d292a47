"""The state `eval`'s steps share: the request as parsed, and what each step found or made."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from svrunner.locking import FileLock

from spectravenv import secrets as secrets_mod
from spectravenv.catalog.entries import Catalog
from spectravenv.envs import venv as envs
from spectravenv.paths import Paths
from spectravenv.plan import gpus
from spectravenv.plan import jobs as plan
from spectravenv.plan.judges import Judge
from spectravenv.run import rundir

INTERRUPTED = 130


@dataclass
class EvalRequest:
    names: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    limit: int | None = None
    gpus: str | None = None
    output_dir: Path = Path("outputs")
    run_name: str | None = None
    judge: str | None = None  # --judge; None: each benchmark's own (plan/judges.py)
    judge_base_url: str | None = None  # --judge-base-url: an OpenAI-compatible endpoint
    env_file: Path = Path(".env")
    env_file_given: bool = False
    dry_run: bool = False
    resume: str | None = None  # None: a new run; "": the latest run in output_dir; else a run dir
    timeout: float | None = None
    retries: int = 0
    skip_unsupported: bool = False
    assume_gpus: str | None = None
    launcher: str = "local"
    max_gpus: int | None = None  # --max-gpus: GPUs the run's workers hold at once at most
    slurm: Any = None  # launch.slurm.SlurmOptions when launcher == "slurm"
    seed: int | None = None
    nproc: int = 4
    offline: bool = False  # --offline (also on when HF_HUB_OFFLINE=1 is set): see offline.py
    prefetch: bool = False  # --prefetch: download the plan's TSVs and checkpoints first
    backend: str | None = None  # --backend hf|vllm; None: each model's own (plan/backends.py)
    argv: list[str] = field(default_factory=list)


@dataclass
class Eval:
    """The state the steps share."""

    req: EvalRequest
    paths: Paths
    catalog: Catalog
    out: TextIO
    err: TextIO
    t0: float = field(default_factory=time.time)
    models: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    run: rundir.RunDir | None = None
    existing: dict[str, Any] | None = None  # the manifest of a run being continued
    created: bool = False  # this command made the run folder
    lock: FileLock | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: secrets_mod.Secrets = field(default_factory=secrets_mod.Secrets)
    inventory: list[gpus.GPU] = field(default_factory=list)
    pool: list[gpus.GPU] = field(default_factory=list)
    plan: plan.Plan | None = None
    states: dict[str, envs.EnvState] = field(default_factory=dict)
    addon_dirs: dict[str, list[Path]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    started_work: bool = False  # a manifest of this attempt is on disk: keep the folder
    offline: bool = False  # the jobs run with the hub's offline switches (check_offline)
    needs: list[Any] = field(default_factory=list)  # prefetch.Need: the plan's data and weights
    stale: list[tuple[str, str]] = field(default_factory=list)  # done pairs whose fingerprint changed
    judges: dict[str, Judge] = field(default_factory=dict)  # benchmark -> its judge (choose_judges)
    judge_problems: dict[str, str] = field(default_factory=dict)  # benchmark -> why its judge cannot work
    refusals: list[str] = field(default_factory=list)  # with --dry-run: why the run itself would be refused

    @property
    def on_slurm(self) -> bool:
        return self.req.launcher == "slurm"

    def say(self, msg: str) -> None:
        self.err.write(msg + "\n")
        self.err.flush()


Step = Callable[[Eval], "int | None"]
