"""Work units on disk: which shard of which (model, benchmark) is claimed, done or failed.

A pair's rows (after --limit) are split into `n` shards, row i going to shard i % n; each shard is
a unit a worker claims, infers and marks done, and when all are done one worker claims the pair's
evaluation. Workers on one machine or on many Slurm nodes share one run folder, so a claim is a
lock file (svrunner.locking: atomic on local disks and on NFS/Lustre alike): no two workers ever
run one unit. A claim whose holder died on this host is taken over at once; one held on another
host once its lease runs out (its worker's thread stops renewing it), or when the dispatcher
learns from Slurm that the worker's job ended.

A unit is done only under the fingerprint it was done under: the first worker to prepare a pair
records the pair's fingerprint digest in `prepared.json`, every done marker is named by the digest
it was made under (so a pair's state is one listing and one small read), and a marker of another
digest counts as open. So when a pair's fingerprint changes (a new lock, recipe or checkpoint;
the runner then moves the pair's old predictions to `.superseded/`), its units done before are
inferred again instead of being merged from files that are gone.

    <run>/.spectravenv/units/<model>/<benchmark>/n<N>/prepared.json  the pair's digest, rows, reused
                                                      prepared.json.lock  held while preparing
                                                      <k>.claim   held while a worker infers it
                                                      <k>.done-<digest>  its predictions are saved
                                                      eval.claim / eval.done-<digest>
                                                      failed      the pair failed: stop
                                                                  ("given_up": the dispatcher's)
Host and runner both read this layout through this module.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from .files import read_json, write_atomic, write_json
from .locking import FileLock, LockBusy, ServerClock, lock_alive, read_holder, remove_generation

PREPARED = "prepared.json"


@dataclass(frozen=True)
class Unit:
    model: str
    benchmark: str
    shards: int
    index: int | None  # None: the pair's evaluation

    @property
    def name(self) -> str:
        return "eval" if self.index is None else str(self.index)


def folder(internal: str) -> str:
    """The units folder of a run, given the run's internal folder (`<run>/.spectravenv`)."""
    return os.path.join(internal, "units")


def pair_dir(units_dir: str, model: str, benchmark: str, shards: int) -> str:
    return os.path.join(units_dir, model, benchmark, f"n{shards}")


def _path(units_dir: str, unit: Unit, suffix: str) -> str:
    return os.path.join(pair_dir(units_dir, unit.model, unit.benchmark, unit.shards), f"{unit.name}.{suffix}")


def prepared(units_dir: str, model: str, benchmark: str, shards: int) -> dict[str, Any] | None:
    """What the worker that prepared the pair recorded: its fingerprint digest, rows, reused."""
    return read_json(os.path.join(pair_dir(units_dir, model, benchmark, shards), PREPARED))


def preparing_lock(units_dir: str, model: str, benchmark: str, shards: int) -> str:
    """The lock held by the worker that prepares the pair (checks its fingerprint, gathers
    reusable predictions); the others wait for it and then find the pair prepared."""
    return os.path.join(pair_dir(units_dir, model, benchmark, shards), PREPARED + ".lock")


def record_prepared(units_dir: str, model: str, benchmark: str, shards: int, digest: str,
                    info: dict[str, Any]) -> None:  # fmt: skip
    """The pair is prepared under `digest`: from now on only units done under it count as done."""
    write_json(os.path.join(pair_dir(units_dir, model, benchmark, shards), PREPARED), {**info, "digest": digest})


def _done_name(name: str, digest: str | None) -> str:
    """The done marker of unit `name` under the pair's fingerprint `digest`."""
    return f"{name}.done-{digest}"


def _digest_of(folder: str) -> str | None:
    return (read_json(os.path.join(folder, PREPARED)) or {}).get("digest")


def is_done(units_dir: str, unit: Unit) -> bool:
    folder = pair_dir(units_dir, unit.model, unit.benchmark, unit.shards)
    return os.path.exists(os.path.join(folder, _done_name(unit.name, _digest_of(folder))))


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


def mark_done(units_dir: str, unit: Unit, digest: str, info: dict[str, Any], lock: FileLock) -> None:
    """The unit's predictions are saved, under the pair's fingerprint `digest`."""
    write_atomic(_path(units_dir, unit, f"done-{digest}"), json.dumps({**info, "time": time.time()}) + "\n")
    lock.release()


def reopen(units_dir: str, unit: Unit) -> None:
    """The unit is open again (its predictions were found missing or failed after it was done)."""
    folder = pair_dir(units_dir, unit.model, unit.benchmark, unit.shards)
    try:
        os.unlink(os.path.join(folder, _done_name(unit.name, _digest_of(folder))))
    except FileNotFoundError:
        pass


def mark_failed(units_dir: str, unit: Unit, error: str, lock: FileLock | None) -> None:
    folder = pair_dir(units_dir, unit.model, unit.benchmark, unit.shards)
    write_atomic(os.path.join(folder, "failed"), json.dumps({"unit": unit.name, "error": error, "time": time.time()}) + "\n")
    if lock is not None:
        lock.release()


def mark_given_up(units_dir: str, model: str, benchmark: str, shards: int, error: str) -> None:
    """The dispatcher gives the pair up (its model has no retries left): failed like
    `mark_failed`, for workers, and marked `given_up`, so no retry of this attempt opens it
    again (`reset_failed`, at the start of a new attempt, does)."""
    folder = pair_dir(units_dir, model, benchmark, shards)
    write_atomic(os.path.join(folder, "failed"),
                 json.dumps({"unit": None, "error": error, "time": time.time(), "given_up": True}) + "\n")  # fmt: skip


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


def _held(path: str, clock: ServerClock) -> bool:
    """Held by a live worker, or by one whose liveness cannot be known (never run twice)."""
    if not os.path.exists(path):
        return False
    return lock_alive(path, read_holder(path), clock) is not False


def state(units_dir: str, model: str, benchmark: str, shards: int) -> PairState:
    folder = pair_dir(units_dir, model, benchmark, shards)
    try:
        names = set(os.listdir(folder))
    except FileNotFoundError:
        names = set()
    digest = _digest_of(folder)
    clock = ServerClock(folder)  # one probe for all the claims of another host, if any
    done_k = {k for k in range(shards) if _done_name(str(k), digest) in names}
    claimed = sum(f"{k}.claim" in names and k not in done_k and _held(os.path.join(folder, f"{k}.claim"), clock)
                  for k in range(shards))  # fmt: skip
    evaluated = _done_name("eval", digest) in names
    return PairState(model, benchmark, shards, len(done_k), claimed, evaluated,
                     "eval.claim" in names and _held(os.path.join(folder, "eval.claim"), clock),
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
            division = os.path.join(folder, name)
            done = set(os.listdir(division))
            digest = _digest_of(division)
            out[n] = sum(_done_name(str(k), digest) in done for k in range(n))
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
            mine = str(holder.get("what", "")).startswith(f"worker {owner}:") and holder.get("token")
            if mine and remove_generation(path, str(holder["token"])):
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
