"""`spectravenv eval`: names -> plan -> envs -> launch -> results -> report, as ordered steps.

Each step works on one `Eval` state and may end the command with an exit code (a dry run,
nothing left to do, --no-wait). Everything that can be wrong with the request is found before
a folder is made, an env built or a process started; a new run's folder is created atomically
only once the request is known to be good, and the run is locked for as long as this dispatcher
works on it.
What finished is never lost, so `--resume` (or the same command again) continues a run.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from typing import TextIO

from spectravenv.catalog.entries import Catalog
from spectravenv.paths import Paths
from spectravenv.run.launch import check_max_gpus, launch_local, launch_slurm, reopen_failed
from spectravenv.run.prepare import (
    check_keys,
    check_offline,
    create_run,
    dry_run,
    lock_run,
    make_plan,
    nothing_to_do,
)
from spectravenv.run.provenance import begin_attempt, build_envs
from spectravenv.run.request import (
    check_request,
    choose_judges,
    choose_run,
    gpu_pool,
    matrix,
    read_secrets,
    settle,
)
from spectravenv.run.state import Eval, EvalRequest, Step

STEPS: tuple[Step, ...] = (
    check_request, choose_run, matrix, settle, read_secrets, gpu_pool, lock_run, choose_judges, make_plan,
    check_max_gpus, check_keys, check_offline, dry_run, create_run, nothing_to_do, begin_attempt, build_envs,
    reopen_failed, launch_local, launch_slurm,
)  # fmt: skip


def evaluate(req: EvalRequest, paths: Paths, catalog: Catalog, out: TextIO, err: TextIO) -> int:
    st = Eval(req, paths, catalog, out, err)
    try:
        for step in STEPS:
            code = step(st)
            if code is not None:
                return code
        return 0  # pragma: no cover - the last step always returns
    except BaseException:
        if st.started_work and st.manifest.get("status") == "running":
            # The request was good but the work broke off (an env build failed, a signal):
            # say so in the manifest; nothing finished is touched.
            st.manifest["status"] = "failed"
            st.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            with contextlib.suppress(OSError):
                st.run.write_manifest(st.manifest)
        raise
    finally:
        if st.lock is not None:
            st.lock.release()
        if st.created and not st.started_work and st.run is not None:
            # Refused before any work: leave no empty run folder behind.
            shutil.rmtree(st.run.path, ignore_errors=True)
