"""Work units on disk: which shard of which (model, benchmark) is claimed, done or failed.

A pair's rows (after --limit) are split into `n` shards, row i going to shard i % n; each shard is
a unit a worker claims, infers and marks done, and when all are done one worker claims the pair's
evaluation. Workers on one machine or on many Slurm nodes share one run folder, so a claim is a
lock file made with O_EXCL (svrunner.locking: atomic on local disks and on NFS/Lustre alike):
no two workers ever run one unit. A claim whose holder died on this host is taken over at once;
one held on another host is released by the dispatcher when Slurm says that worker's job ended.

    <run>/.spectravenv/units/<model>/<benchmark>/n<N>/<k>.claim   held while a worker infers it
                                                      <k>.done    its predictions are saved
                                                      eval.claim / eval.done
                                                      failed      the pair failed: stop
Host and runner both read this layout through this module.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from .files import write_atomic
from .locking import FileLock, LockBusy, holder_alive, read_holder


@dataclass(frozen=True)
class Unit:
    model: str
    benchmark: str
    shards: int
    index: int | None  # None: the pair's evaluation

    @property
    def name(self) -> str:
        return "eval" if self.index is None else str(self.index)


def pair_dir(units_dir: str, model: str, benchmark: str, shards: int) -> str:
    return os.path.join(units_dir, model, benchmark, f"n{shards}")


def _path(units_dir: str, unit: Unit, suffix: str) -> str:
    return os.path.join(pair_dir(units_dir, unit.model, unit.benchmark, unit.shards), f"{unit.name}.{suffix}")


def is_done(units_dir: str, unit: Unit) -> bool:
    return os.path.exists(_path(units_dir, unit, "done"))


def pair_failed(units_dir: str, model: str, benchmark: str, shards: int) -> dict[str, Any] | None:
    try:
        with open(os.path.join(pair_dir(units_dir, model, benchmark, shards), "failed")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def claim(units_dir: str, unit: Unit, worker: str) -> FileLock | None:
    """Take the unit for this worker, or None if it is done, failed or held by a live worker."""
    if is_done(units_dir, unit) or pair_failed(units_dir, unit.model, unit.benchmark, unit.shards):
        return None
    lock = FileLock(_path(units_dir, unit, "claim"), f"worker {worker}: {unit.model} x {unit.benchmark} unit {unit.name}")
    try:
        lock.acquire(0)  # a dead holder of this host is recovered inside
    except LockBusy:
        return None
    if is_done(units_dir, unit):  # finished between our check and the claim
        lock.release()
        return None
    return lock


def mark_done(units_dir: str, unit: Unit, info: dict[str, Any], lock: FileLock) -> None:
    write_atomic(_path(units_dir, unit, "done"), json.dumps({**info, "time": time.time()}) + "\n")
    lock.release()


def mark_failed(units_dir: str, unit: Unit, error: str, lock: FileLock | None) -> None:
    folder = pair_dir(units_dir, unit.model, unit.benchmark, unit.shards)
    write_atomic(os.path.join(folder, "failed"), json.dumps({"unit": unit.name, "error": error, "time": time.time()}) + "\n")
    if lock is not None:
        lock.release()


def infer_units(model: str, benchmark: str, shards: int) -> list[Unit]:
    return [Unit(model, benchmark, shards, k) for k in range(shards)]


@dataclass(frozen=True)
class PairState:
    """A pair's units as they are on disk now."""

    model: str
    benchmark: str
    shards: int
    done: int  # infer units done
    claimed: int  # infer units held by a live (or unknown) worker
    evaluated: bool
    eval_claimed: bool
    failed: dict[str, Any] | None

    @property
    def open_units(self) -> int:
        """Infer units nobody works on yet."""
        return 0 if self.failed else self.shards - self.done - self.claimed

    @property
    def needs_eval(self) -> bool:
        return not self.failed and self.done == self.shards and not self.evaluated and not self.eval_claimed


def _held(path: str) -> bool:
    holder = read_holder(path)
    if holder is None:
        return os.path.exists(path)
    return holder_alive(holder) is not False


def state(units_dir: str, model: str, benchmark: str, shards: int) -> PairState:
    folder = pair_dir(units_dir, model, benchmark, shards)
    try:
        names = set(os.listdir(folder))
    except FileNotFoundError:
        names = set()
    done = sum(f"{k}.done" in names for k in range(shards))
    claimed = sum(f"{k}.claim" in names and f"{k}.done" not in names and _held(os.path.join(folder, f"{k}.claim"))
                  for k in range(shards))  # fmt: skip
    return PairState(model, benchmark, shards, done, claimed, "eval.done" in names,
                     "eval.claim" in names and _held(os.path.join(folder, "eval.claim")),
                     pair_failed(units_dir, model, benchmark, shards))  # fmt: skip


def divisions(units_dir: str, model: str, benchmark: str) -> dict[int, int]:
    """The divisions of a pair already on disk: number of shards -> units done in it."""
    folder = os.path.join(units_dir, model, benchmark)
    out = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return out
    for name in names:
        if name.startswith("n") and name[1:].isdigit():
            n = int(name[1:])
            out[n] = sum(f.endswith(".done") and f != "eval.done" for f in os.listdir(os.path.join(folder, name)))
    return out


def release_claims_of(units_dir: str, owner: str) -> list[str]:
    """Remove the claims a worker held (its Slurm job ended): their units are open again."""
    freed = []
    for root, _dirs, files in os.walk(units_dir):
        for name in files:
            if not name.endswith(".claim"):
                continue
            path = os.path.join(root, name)
            holder = read_holder(path) or {}
            if str(holder.get("what", "")).startswith(f"worker {owner}:"):
                done = path[: -len(".claim")] + ".done"
                if not os.path.exists(done):
                    os.unlink(path)
                    freed.append(path)
    return freed


def forget_pair(units_dir: str, model: str, benchmark: str) -> None:
    """Every division of a pair, with its done markers, claims and prepared.json: the pair is
    inferred and evaluated afresh (the host calls this, holding the run lock, when the pair's
    fingerprint changed)."""
    shutil.rmtree(os.path.join(units_dir, model, benchmark), ignore_errors=True)


def reset_failed(units_dir: str, model: str, benchmark: str, shards: int) -> None:
    """A retry: the pair's failed marker goes, its done units stay."""
    try:
        os.unlink(os.path.join(pair_dir(units_dir, model, benchmark, shards), "failed"))
    except FileNotFoundError:
        pass
