"""Offline runs (`eval --offline`, or HF_HUB_OFFLINE=1 in the environment): for compute nodes
without internet access.

Before any env is built or job started, every TSV and checkpoint the plan's jobs need must be on
disk (prefetch.needs): one error lists what is missing and the one command that fetches it on a
node with internet access. The jobs then run with the hub's offline switches set, so neither
huggingface_hub, transformers nor datasets tries the network (a missing file fails at once
instead of after a connection timeout per file). On Slurm the check runs on the submitting node
against $LMUData and $HF_HOME, the paths the jobs get (`sbatch --export=ALL`), so they must be on
a filesystem the nodes share.
"""

from __future__ import annotations

from collections.abc import Mapping

from spectravenv.errors import SpectravenvError
from spectravenv.fetch.prefetch import Need, fetch_command
from spectravenv.secrets import Secrets

# What the jobs of an offline run get: no library of the hub's tries the network.
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_TRUE = {"1", "on", "yes", "true"}  # what huggingface_hub accepts as set


def enabled(flag: bool, environ: Mapping[str, str]) -> bool:
    """--offline, or the hub's own switch already set in this environment."""
    return flag or (environ.get("HF_HUB_OFFLINE") or "").strip().lower() in _TRUE


def job_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {**environ, **JOB_ENV}


def check(items: list[Need], secrets: Secrets) -> None:
    """Raise, naming everything missing, unless the disk holds all of it."""
    missing = [n for n in items if not n.present]
    if not missing:
        return
    what = "; ".join(f"{n.kind} of {n.owner} ({n.target}: {n.detail})" for n in missing)
    cmd = fetch_command(missing)
    todo = (f"fetch {'it' if len(missing) == 1 else 'them'} on a node with internet access: {cmd}"
            if cmd else "provide these files")  # fmt: skip
    if cmd and any(not n.fetchable for n in missing):
        todo += ", and provide the others"
    n = len(missing)
    # Paths can hold secrets (a token in a model_path): masked like everything shown.
    raise SpectravenvError(secrets.redact(
        f"offline: {n} thing{'s' if n != 1 else ''} the run needs {'are' if n != 1 else 'is'} not on "
        f"disk, nothing was started: {what}; {todo}"
    ))  # fmt: skip
