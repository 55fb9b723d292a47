"""Data-parallel ranks under torchrun: GPU slices, and collectives that cannot leave a rank waiting.

Mirrors vlmeval/run.py: RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE from torchrun, each
local rank on its own slice of the visible GPUs, gloo on the CPU and NCCL on GPUs. Every
collective has a timeout (SPECTRAVENV_DIST_TIMEOUT, default 30 minutes), so a rank that stops
answering ends the job with an error instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from .errors import failure_info


def _gpu_list() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [x for x in visible.split(",") if x.strip() != ""]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20
        )
        return [str(i) for i in range(len([ln for ln in out.stdout.splitlines() if ln.strip()]))]
    except Exception:
        return []


def pin_local_gpus() -> None:
    """Under torchrun, give each local rank its own slice of the visible GPUs (as run.py does).

    Must run before torch is imported. With K local ranks and N GPUs each rank gets N // K
    consecutive GPUs, so a model can still spread over several GPUs with device_map='auto'.
    """
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if local_world <= 1:
        return
    gpus = _gpu_list()
    if not gpus:
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    per = len(gpus) // local_world
    if per < 1:
        raise RuntimeError(f"{local_world} local ranks but only {len(gpus)} GPUs visible")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[per * local_rank : per * (local_rank + 1)])


class Dist:
    """Rank bookkeeping and the few collectives the runner needs (no-ops for one process)."""

    def __init__(self) -> None:
        # Same variables as vlmeval.smp.get_rank_and_world_size()
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.active = False

    def init(self) -> None:
        if self.world <= 1:
            return
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(0)  # after pin_local_gpus device 0 is this rank's GPU
        seconds = int(os.environ.get("SPECTRAVENV_DIST_TIMEOUT", 1800))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=seconds))
        self.active = True

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            # Without this barrier a rank that reaches destroy_process_group() after rank 0
            # has exited hangs there (seen with gloo under torchrun, torch 2.1.2).
            dist.barrier()
            dist.destroy_process_group()
            self.active = False


def first_failure(failures: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    for rank, f in enumerate(failures):
        if f:
            return {**f, "failed_rank": f.get("failed_rank", rank)}
    return None


def run_everywhere(
    dist: Dist, fn: Callable[[], Any], only_rank0: bool = False
) -> tuple[Any, dict[str, Any] | None]:
    """Run `fn` (on rank 0 only if asked), then agree on failure across ranks.

    Every rank reaches the gather even when `fn` raised, so one failing rank cannot leave
    the others waiting in a barrier.
    """
    result, fail = None, None
    if not only_rank0 or dist.rank == 0:
        try:
            result = fn()
        except Exception as exc:
            fail = failure_info(exc)
    return result, first_failure(dist.gather(fail))
