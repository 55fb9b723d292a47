"""A worker inside the env: the model built once, then work units of it until none is left.

A unit is one shard of a (model, benchmark)'s rows (svrunner.units). For a pair it touches first,
a worker places built-in or user data, builds the dataset, applies the stratified limit and, under
the pair's lock, checks the pair's fingerprint and gathers reusable predictions (once per pair).
An infer unit runs VLMEvalKit's `infer_data` on its rows into its own file. When every shard of a
pair is done, one worker claims the pair's evaluation: the shards' predictions are merged by
VLMEvalKit's own `infer_data_job` (it finds every row answered, so the prediction file is exactly
what one process would write), then `dataset.evaluate` runs once with run.py's judge kwargs.
VLMEvalKit swallows errors and exits 0; this runner turns every failure into an event. Workers
share nothing but files: no collective can leave one waiting for another. In the phases that emit
no progress (preparing a dataset, merging, evaluating) a heartbeat thread says the worker lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import demo, fingerprint, judging, lmudata, predictions, served, sources, units
from .errors import failure_info
from .files import sha256_file, write_atomic
from .heartbeat import Heartbeat
from .kit import (
    SCORE_EXT,
    SCORE_STEM,
    Kit,
    circular_eval_guard,
    log,
    no_eval,
    snapshot,
)
from .locking import FileLock, describe, read_holder
from .protocol import EventLog, jsonable, relative
from .sampling import choose_subset

DATA_LOCK_TIMEOUT = 3600.0  # downloading one official TSV can take a while
PAIR_LOCK_TIMEOUT = 600.0  # another worker prepares the same pair: gathering predictions is quick


class GenerateMonitor:
    """Wraps `model.generate` of the instance: counts calls (progress) and contains errors.

    `infer_data` calls `model.generate(message=..., dataset=...)` once per sample (API models go
    through `infer_data_api`, which calls the same bound attribute from threads). After the first
    exception every further call returns VLMEvalKit's FAIL marker at once, so all ranks leave
    `infer_data_job` through its normal barriers, the predictions made so far are saved, and the
    failed rows are retried next run.
    """

    def __init__(self, model: Any, events: EventLog, benchmark: str, done: int, total: int,
                 fail_msg: str, shard: list[int] | None) -> None:  # fmt: skip
        self.model, self.events, self.benchmark = model, events, benchmark
        self.done, self.total, self.shard = done, total, shard
        self.fail_text = f"{fail_msg} [spectravenv: generate raised, benchmark aborted]"
        self.failure: dict[str, Any] | None = None
        self.lock = threading.Lock()
        self.last_emit = 0.0
        self.had_attr = "generate" in vars(model)
        self.orig = model.generate
        model.generate = self

    def __call__(self, message: Any = None, dataset: str | None = None, **kw: Any) -> Any:
        if self.failure is not None:
            return self.fail_text
        try:
            out = self.orig(message=message, dataset=dataset, **kw)
        except Exception as exc:
            with self.lock:
                if self.failure is None:
                    self.failure = failure_info(exc)
            del exc
            torch = __import__("sys").modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
            return self.fail_text
        with self.lock:
            self.done += 1
            now = time.time()
            if self.done >= self.total or now - self.last_emit >= 1.0:
                self.last_emit = now
                shard = {"shard": self.shard} if self.shard else {}
                self.events.emit("progress", benchmark=self.benchmark, done=self.done,
                                 total=self.total, **shard)  # fmt: skip
        return out

    def uninstall(self) -> None:
        if self.had_attr:
            self.model.generate = self.orig
        else:
            del self.model.generate


class Pair:
    """What a worker holds for one (model, benchmark): the dataset, its rows, the file names."""

    def __init__(self, bench: dict[str, Any], dataset: Any, pair_dir: str, pred_file: str, rows: list[Any],
                 fingerprint_parts: dict[str, Any]) -> None:  # fmt: skip
        self.bench, self.dataset, self.pair_dir, self.pred_file = bench, dataset, pair_dir, pred_file
        self.rows, self.fingerprint = rows, fingerprint_parts
        self.name: str = bench["name"]
        self.shards: int = int(bench.get("shards", 1))
        self.full_data = dataset.data  # the rows after the limit; units take slices of it
        self.digest = fingerprint.digest(fingerprint_parts)
        # A video dataset runs through VLMEvalKit's video path, which files its _PREV.pkl under
        # the class's dataset name (`Video-MME`), not the config name the pair has
        # (`Video-MME_8frame`), and its rank file under the prediction file's stem.
        self.video = getattr(dataset, "MODALITY", "IMAGE") == "VIDEO"
        self.kit_name: str = str(getattr(dataset, "dataset_name", self.name))

    def unit_rows(self, index: int) -> list[Any]:
        """Row i goes to unit i % shards."""
        return [x for i, x in enumerate(self.rows) if i % self.shards == index]

    def units_of(self, rows: list[Any]) -> list[int]:
        """The units that hold these rows."""
        position = {str(x): i for i, x in enumerate(self.rows)}
        return sorted({position[str(r)] % self.shards for r in rows})


class Worker:
    def __init__(self, job: dict[str, Any], events: EventLog, heartbeat_seconds: float) -> None:
        self.job, self.events = job, events
        self.model_name: str = job["model"]["name"]
        self.work_dir: str = job["work_dir"]
        self.units_dir: str = job["units_dir"]
        self.worker_id: str = job["job_id"]
        self.kit: Kit | None = None
        self.model: Any = None
        self.checkpoint: str | None = None  # the loaded checkpoint's identity (fingerprint)
        self.server: Any = None  # a served model's engine server (svrunner.serve), stopped by main.run
        self.pairs: dict[str, Pair] = {}
        self.failed: set[str] = set()  # benchmarks this worker saw fail
        self.redone: set[str] = set()  # pairs whose lost rows this worker sent back to inference
        self.heartbeat = Heartbeat(lambda phase, detail, **counts: self.emit("alive", phase=phase, detail=detail,
                                                                              **counts),
                                   heartbeat_seconds)  # fmt: skip

    def emit(self, event: str, at: float | None = None, **fields: Any) -> float:
        return self.events.emit(event, at=at, **fields)

    def rel(self, path: str) -> str:
        return relative(path, self.work_dir)

    def fail(self, bench: str, stage: str, failure: dict[str, Any], unit: units.Unit | None = None,
             lock: Any = None) -> bool:  # fmt: skip
        log(f"{bench}: {stage} failed: {failure.get('error')}")
        self.emit("benchmark_failed", benchmark=bench, stage=stage, **failure)
        self.failed.add(bench)
        if unit is not None:
            units.mark_failed(self.units_dir, unit, failure.get("error", ""), lock)
        return False

    @contextlib.contextmanager
    def holding(self, lock: FileLock, timeout: float) -> Iterator[None]:
        """Hold `lock`; while waiting for it the heartbeat says whom the worker waits for."""
        if not lock.try_acquire():
            waiting = f"{lock.what}: held by {describe(read_holder(lock.path))}"
            log(f"waiting for {waiting}")
            with self.heartbeat.phase("lock", waiting):
                lock.acquire(timeout)
        try:
            yield
        finally:
            lock.release()

    # -- the data a pair needs --
    def place_data(self, bench: dict[str, Any]) -> dict[str, Any]:
        """Put built-in / user TSVs at LMUData/<name>.tsv; returns extra event fields."""
        name, data_root = bench["name"], self.job["data_root"]
        if not (bench.get("builtin") or bench.get("tsv")):
            return {}
        # An official name would go through its own class: md5 check and re-download over our
        # file. Refuse rather than lose the user's data.
        if self.kit.is_official(name):
            raise ValueError(f"{name!r} is an official VLMEvalKit dataset name; choose another "
                             "name for a built-in or user TSV")  # fmt: skip
        if bench.get("builtin"):
            demo.ensure_builtin_dataset(bench["builtin"], data_root, name)
            return {}
        dst = self._link_user_tsv(name, os.path.abspath(bench["tsv"]))
        return self._refresh_images(name, dst)

    def _link_user_tsv(self, name: str, src: str) -> str:
        if not os.path.isfile(src):
            raise FileNotFoundError(f"user TSV {src} does not exist")
        dst = os.path.join(self.job["data_root"], f"{name}.tsv")
        if os.path.islink(dst) and not os.path.exists(dst):
            os.unlink(dst)  # dangling link (the user moved their file): re-link below
        if os.path.lexists(dst):
            same = os.path.exists(dst) and (os.path.samefile(dst, src) or sha256_file(dst) == sha256_file(src))
            if not same:
                raise FileExistsError(f"{dst} exists and is not {src}; remove it or rename the benchmark")
        else:
            tmp = os.path.join(self.job["data_root"], f".tmp-{os.getpid()}-{name}.tsv")
            os.symlink(src, tmp)
            os.replace(tmp, dst)
        return dst

    def _refresh_images(self, name: str, tsv: str) -> dict[str, Any]:
        """VLMEvalKit caches decoded images in LMUData/images/<name>/ and never checks them
        against the TSV: if the user's file changed since they were decoded, drop that cache."""
        data_root = self.job["data_root"]
        digest = self.dataset_digest(tsv)
        stamp = lmudata.images_stamp(data_root, name)
        old = open(stamp).read().strip() if os.path.exists(stamp) else None
        if old == digest:
            return {}
        img_dir = os.path.join(data_root, "images", name)
        changed = old is not None and os.path.isdir(img_dir)
        if changed:
            shutil.rmtree(img_dir, ignore_errors=True)
        write_atomic(stamp, f"{digest}\n")
        return {"tsv_changed": True} if changed else {}

    def dataset_digest(self, path: str) -> str | None:
        return fingerprint.dataset_sha256(path, lmudata.sha256_cache(self.job["data_root"]))

    def build_dataset(self, name: str) -> Any:
        ds = self.kit.build_dataset(name)
        if ds is None:
            raise RuntimeError(f"build_dataset({name!r}) returned None: not a VLMEvalKit dataset and no "
                               f"usable {name}.tsv in LMUData ({self.job['data_root']})")  # fmt: skip
        if getattr(ds, "TYPE", None) == "MT":
            raise NotImplementedError(f"{name}: multi-turn datasets are not supported by the runner yet")
        if getattr(ds, "MODALITY", "IMAGE") == "VIDEO" and getattr(ds, "pack", False):
            # VLMEvalKit's infer_data asserts it too: packed videos are for API models only
            raise NotImplementedError(f"{name}: packed video datasets (several questions per video "
                                      "in one prompt) are not supported by the runner")  # fmt: skip
        return ds

    def fingerprint_parts(self, dataset: Any, name: str) -> dict[str, Any]:
        # data_file: where a video dataset's TSV is (its snapshot folder, not LMUData)
        path = (getattr(dataset, "data_path", None) or getattr(dataset, "data_file", None)
                or os.path.join(self.job["data_root"], f"{name}.tsv"))  # fmt: skip
        return {**self.job.get("fingerprint", {}), "checkpoint": self.checkpoint,
                "dataset": self.dataset_digest(path), **judging.fingerprint_part(self.job, name)}  # fmt: skip

    # -- evaluation --
    def evaluate(self, dataset: Any, pair_dir: str, dname: str, pred_file: str,
                 expected: list[Any]) -> dict[str, Any]:  # fmt: skip
        df = self.kit.load(pred_file)
        have = {str(x) for x in df["index"]}
        missing = [x for x in expected if str(x) not in have]
        if missing:
            raise RuntimeError(f"prediction file lacks {len(missing)} of {len(expected)} rows "
                               f"(first: {missing[:5]})")  # fmt: skip
        result: dict[str, Any] = {
            "samples": len(df),
            "failed_predictions": int(sum(self.kit.is_failed(v) for v in df["prediction"])),
        }
        if no_eval(dname):
            return {**result, "score_files": [], "eval_files": [],
                    "eval_skipped": "no public answers: inference only (as run.py does)"}  # fmt: skip
        # Evaluators cache intermediate results (MCQ: _<judge>_result.pkl; Y/N: _auxmatch.xlsx)
        # valid only for the predictions they came from; the fingerprint check moved every file
        # of another fingerprint aside, and a changed prediction file is new, so clear them when
        # the predictions differ from what was last evaluated.
        self._drop_stale_eval_files(pair_dir, dname, pred_file, df)
        return {**result, **self._run_evaluate(dataset, pair_dir, dname, pred_file)}

    def _run_evaluate(self, dataset: Any, pair_dir: str, dname: str, pred_file: str) -> dict[str, Any]:
        before = snapshot(pair_dir)
        t0 = time.time()
        spec = judging.spec_of(self.job, dname)
        try:
            with circular_eval_guard(dname):
                ret, judged = judging.evaluate(dataset, pred_file, spec, int(self.job["nproc"]), log)
        except NotImplementedError as exc:
            raise NotImplementedError(
                f"{type(dataset).__name__}.evaluate() is not implemented in this VLMEvalKit "
                f"{str(exc) or ''}(no scorer for this dataset type); predictions are kept in "
                f"{self.rel(pred_file)}"
            ) from exc
        after = snapshot(pair_dir)
        changed = sorted(p for p, m in after.items() if before.get(p) != m and p != pred_file
                         and not os.path.basename(p).startswith("."))  # fmt: skip
        scores = self._score_files(dname, changed)
        if not scores:
            raise RuntimeError(f"evaluate() wrote no score file (changed files: "
                               f"{[os.path.basename(p) for p in changed]}, returned {type(ret).__name__})")  # fmt: skip
        metrics = jsonable(ret)
        if len(json.dumps(metrics)) > 20000:
            metrics = None  # keep events small; the score files hold everything
        return {**judged, "score_files": [self.rel(p) for p in scores], "eval_files": [self.rel(p) for p in changed],
                "metrics": metrics, "eval_seconds": round(time.time() - t0, 3)}  # fmt: skip

    def _score_files(self, dname: str, changed: list[str]) -> list[str]:
        base = f"{self.model_name}_{dname}"
        scores = []
        for p in changed:
            stem, ext = os.path.splitext(os.path.basename(p))
            if ext in SCORE_EXT and stem.startswith(base) and SCORE_STEM.search(stem[len(base):]):
                scores.append(p)
        return scores

    def _drop_stale_eval_files(self, pair_dir: str, dname: str, pred_file: str, df: Any) -> None:
        pairs = sorted((str(i), str(p)) for i, p in zip(df["index"], df["prediction"]))
        judge = judging.spec_of(self.job, dname).get("identity")
        digest = hashlib.sha256(json.dumps([judge, pairs]).encode()).hexdigest()
        stamp = os.path.join(pair_dir, ".spectravenv_eval.json")
        old = None
        if os.path.exists(stamp):
            with open(stamp) as fh:
                old = json.load(fh).get("predictions")
        if old == digest:
            return  # judge calls cost money: keep their caches while nothing changed
        prefix = f"{self.model_name}_{dname}_"
        keep = {f"{prefix}PREV.pkl", f"{prefix}checkpoint.pkl"}
        for f in sorted(os.listdir(pair_dir)):
            p = os.path.join(pair_dir, f)
            if f.startswith(prefix) and f not in keep and os.path.isfile(p) and p != pred_file:
                os.remove(p)
        write_atomic(stamp, json.dumps({"predictions": digest, "judge": judge}) + "\n")

    def _reseed(self) -> None:
        """Same RNG state at the start of every benchmark, whatever ran before it."""
        seed = int(self.job["seed"])
        random.seed(seed)
        try:
            import numpy as np

            np.random.seed(seed % (2**32))
        except Exception:
            pass
        import torch

        torch.manual_seed(seed)

    # -- a pair, once per worker --
    def pair(self, bench: dict[str, Any]) -> Pair:
        name = bench["name"]
        if name not in self.pairs:
            with self.heartbeat.phase("dataset", name):
                self.pairs[name] = self._prepare(bench)
        return self.pairs[name]

    def _prepare(self, bench: dict[str, Any]) -> Pair:
        name = bench["name"]
        pair_dir = os.path.join(self.work_dir, self.model_name, name)
        os.makedirs(pair_dir, exist_ok=True)
        log(f"--- {name} ---")
        # VLMEvalKit downloads official TSVs straight to LMUData/<name>.tsv (not atomic): one job
        # prepares a dataset at a time, on every node that shares LMUData.
        lock = FileLock(lmudata.dataset_lock(self.job["data_root"], name), f"preparing dataset {name}")
        with self.holding(lock, DATA_LOCK_TIMEOUT):
            extra = self.place_data(bench)
            sources.apply(self.kit.dataset_classes, bench)  # the job's url/md5 for an official name
            dataset = self.build_dataset(name)
        info = {**self._apply_limit(dataset), **extra}
        parts = self.fingerprint_parts(dataset, name)
        pred_file = self.kit.pred_path(pair_dir, self.model_name, name)
        p = Pair(bench, dataset, pair_dir, pred_file, list(dataset.data["index"]), parts)
        self._gather(p, info)
        return p

    def _apply_limit(self, dataset: Any) -> dict[str, Any]:
        data = dataset.data
        info: dict[str, Any] = {"rows_full": len(data)}
        if not self.job.get("limit"):
            return info
        rows, sub = choose_subset(
            list(data["index"]),
            list(data["category"]) if "category" in data.columns else None,
            int(self.job["limit"]), int(self.job["seed"]),
            list(data["g_index"]) if "g_index" in data.columns else None,
        )  # fmt: skip
        keep = {str(x) for x in rows}
        dataset.data = data[[str(x) in keep for x in data["index"]]].copy()
        return {**info, "indices": rows, "subset": sub}

    def _gather(self, p: Pair, info: dict[str, Any]) -> None:
        """The first worker to reach the pair under this fingerprint checks it and gathers what
        earlier attempts predicted; the others find it prepared."""
        where = (self.units_dir, self.model_name, p.name, p.shards)
        guard = FileLock(units.preparing_lock(*where), f"worker {self.worker_id}: preparing {self.model_name} x {p.name}")
        with self.holding(guard, PAIR_LOCK_TIMEOUT):
            if (units.prepared(*where) or {}).get("digest") == p.digest:
                return
            changed, moved = predictions.check_fingerprint(p.pair_dir, judging.inference_parts(p.fingerprint))
            if changed:
                self.emit("pair_reset", benchmark=p.name, changed=changed, moved_to=self.rel(moved) if moved else None)
                log(f"{p.name}: {', '.join(changed)} changed since the last attempt: starting afresh"
                    + (f" (earlier files kept in {self.rel(moved)})" if moved else ""))  # fmt: skip
            union = predictions.reusable(self.kit, p.pair_dir, self.model_name, p.name)
            index_of = {str(x): x for x in p.rows}
            predictions.seed_prev(self.kit, p.pair_dir, self.model_name, p.name, union, index_of)
            reused = sum(1 for k in index_of if k in union)
            # From here on only units done under this digest count as done (svrunner.units).
            units.record_prepared(*where, p.digest, {"rows": len(p.rows), "reused": reused})
            self.emit("benchmark_started", benchmark=p.name, total=len(p.rows), reused=reused, shards=p.shards,
                      dataset_class=type(p.dataset).__name__, dataset_type=getattr(p.dataset, "TYPE", None),
                      prediction_file=self.rel(p.pred_file), fingerprint=p.fingerprint,
                      prompt_source=served.prompt_source(self.model, p.name), **info)  # fmt: skip
            log(f"{p.name}: {len(p.rows)} samples in {p.shards} unit(s), {reused} reused")

    # -- one infer unit --
    def infer_unit(self, bench: dict[str, Any], unit: units.Unit, lock: Any) -> bool:
        t0 = time.time()
        try:
            p = self.pair(bench)
        except Exception as exc:
            return self.fail(bench["name"], "dataset", failure_info(exc), unit, lock)
        kit, name = self.kit, p.name
        mine = p.unit_rows(unit.index)
        out_file = predictions.unit_file(p.pair_dir, p.shards, unit.index)
        predictions.drop_failed(kit, p.pair_dir, out_file)
        predictions.repair_prev(kit, p.pair_dir, self.model_name, name, p.rows)
        done_before = len(predictions.known(kit, p.pair_dir, self.model_name, name, out_file) & {str(x) for x in mine})
        self.emit("unit_started", benchmark=name, unit=unit.index, of=p.shards, rows=len(mine), reused=done_before)
        failure = self._infer(p, unit, mine, out_file, done_before)
        if failure is None:
            failed = predictions.failed_rows(kit, out_file, mine)
            where = f" of unit {unit.index + 1}/{p.shards}" if p.shards > 1 else ""
            if failed:  # an answer that is VLMEvalKit's failure message is no answer
                failure = {"error": predictions.failure_message(kit, len(failed), len(mine), where),
                           "traceback": "", "oom": False}  # fmt: skip
        if failure is not None:
            return self.fail(name, "infer", failure, unit, lock)
        units.mark_done(self.units_dir, unit, p.digest, {"worker": self.worker_id, "rows": len(mine)}, lock)
        self.emit("unit_done", benchmark=name, unit=unit.index, of=p.shards, samples=len(mine) - done_before,
                  seconds=round(time.time() - t0, 3))  # fmt: skip
        return True

    def _infer(self, p: Pair, unit: units.Unit, mine: list[Any], out_file: str,
               done_before: int) -> dict[str, Any] | None:  # fmt: skip
        """VLMEvalKit's infer_data on the unit's rows; the failure, or None."""
        p.dataset.data = p.full_data[p.full_data["index"].isin(mine)]
        self._reseed()
        monitor = GenerateMonitor(self.model, self.events, p.name, done=done_before, total=len(mine),
                                  fail_msg=self.kit.fail_msg, shard=[unit.index, p.shards] if p.shards > 1 else None)  # fmt: skip
        infer = self.kit.infer_data_video if p.video else self.kit.infer_data
        try:
            self._mirror_prev(p)
            infer(model=self.model, model_name=self.model_name, work_dir=p.pair_dir, dataset=p.dataset,
                  out_file=out_file, api_nproc=int(self.job["nproc"]))  # fmt: skip
        except Exception as exc:
            return failure_info(exc)
        finally:
            monitor.uninstall()
            p.dataset.data = p.full_data
        return monitor.failure

    def _mirror_prev(self, p: Pair) -> None:
        """The pair's seeded _PREV.pkl under the name VLMEvalKit's video path reads it by."""
        if p.kit_name == p.name:
            return
        src = os.path.join(p.pair_dir, f"{self.model_name}_{p.name}_PREV.pkl")
        dst = os.path.join(p.pair_dir, f"{self.model_name}_{p.kit_name}_PREV.pkl")
        if os.path.exists(src):
            with open(src, "rb") as fh:
                write_atomic(dst, fh.read())
        elif os.path.exists(dst):
            os.remove(dst)

    # -- the pair's evaluation, once all its shards are in --
    def evaluate_pair(self, bench: dict[str, Any], unit: units.Unit, lock: Any) -> bool:
        t0 = time.time()
        try:
            p = self.pair(bench)
        except Exception as exc:
            return self.fail(bench["name"], "dataset", failure_info(exc), unit, lock)
        if units.state(self.units_dir, self.model_name, p.name, p.shards).done < p.shards:
            # Preparing the pair found its fingerprint changed: its units are open again.
            lock.release()
            return True
        try:
            with self.heartbeat.phase("merge", p.name):
                ready = self._merge(p, unit, lock)
        except Exception as exc:
            return self.fail(p.name, "infer", failure_info(exc), unit, lock)
        if ready is not True:
            return ready is None  # None: rows went back to inference; False: the pair failed
        try:
            with self.heartbeat.phase("evaluate", p.name):
                result = self.evaluate(p.dataset, p.pair_dir, p.name, p.pred_file, p.rows)
        except Exception as exc:
            return self.fail(p.name, "eval", failure_info(exc), unit, lock)
        units.mark_done(self.units_dir, unit, p.digest, {"worker": self.worker_id}, lock)
        self.emit("benchmark_done", benchmark=p.name, prediction_file=self.rel(p.pred_file),
                  fingerprint=judging.as_judged(p.fingerprint, result), seconds=round(time.time() - t0, 3), shards=p.shards, **result)  # fmt: skip
        log(f"{p.name}: done, scores {result.get('score_files')}")
        return True

    def _merge(self, p: Pair, unit: units.Unit, lock: Any) -> bool | None:
        """The units' predictions into VLMEvalKit's prediction file. True when it is written;
        None when rows were lost (a torn file) and their units go back to inference; False when
        the pair failed."""
        kit = self.kit
        rank_file = f"01_{os.path.splitext(os.path.basename(p.pred_file))[0]}.pkl" if p.video else None
        merged = predictions.merge_units(kit, p.pair_dir, self.model_name, p.name, p.shards, p.rows, rank_file)
        if merged.failed:
            self._reopen(p, merged.failed)  # so that a retry asks them again
            error = predictions.failure_message(kit, len(merged.failed), merged.rows)
            return self.fail(p.name, "infer", {"error": error, "traceback": "", "oom": False}, unit, lock)
        if merged.missing:
            if p.name in self.redone:
                raise RuntimeError(f"{len(merged.missing)} of {merged.rows} rows have no prediction after all "
                                   f"units (first: {merged.missing[:5]})")  # fmt: skip
            self.redone.add(p.name)
            again = self._reopen(p, merged.missing)
            log(f"{p.name}: {len(merged.missing)} rows have no saved prediction (a file lost or torn): "
                f"unit(s) {', '.join(str(k + 1) for k in again)} of {p.shards} are inferred again")  # fmt: skip
            lock.release()
            return None
        # A prediction file torn by a kill mid-write would fail infer_data_job's load every time.
        predictions.load_or_set_aside(kit, p.pair_dir, p.pred_file)
        # VLMEvalKit writes the prediction file itself: every row answered, nothing inferred.
        args = dict(model=self.model, work_dir=p.pair_dir, model_name=self.model_name, dataset=p.dataset,
                    verbose=False, api_nproc=int(self.job["nproc"]))  # fmt: skip
        if p.video:
            self._mirror_prev(p)
            kit.infer_data_job_video(**args, result_file=p.pred_file)
        else:
            kit.infer_data_job(**{k: v for k, v in args.items() if k in kit.infer_params})
        predictions.update_archive(kit, p.pair_dir, p.pred_file)
        log(f"{p.name}: {merged.rows} predictions merged from {p.shards} unit(s)")
        return True

    def _reopen(self, p: Pair, rows: list[Any]) -> list[int]:
        again = p.units_of(rows)
        for k in again:
            units.reopen(self.units_dir, units.Unit(self.model_name, p.name, p.shards, k))
        return again

    # -- the loop --
    def next_work(self) -> tuple[dict[str, Any], units.Unit, Any] | None:
        """The next unit of this worker's model that nobody has: infer units first, in the job's
        order, then evaluations whose shards are all in."""
        for bench in self.job["benchmarks"]:
            if bench["name"] in self.failed:
                continue
            for unit in units.infer_units(self.model_name, bench["name"], int(bench.get("shards", 1))):
                lock = units.claim(self.units_dir, unit, self.worker_id)
                if lock is not None:
                    return bench, unit, lock
        for bench in self.job["benchmarks"]:
            shards = int(bench.get("shards", 1))
            st = units.state(self.units_dir, self.model_name, bench["name"], shards)
            if st.needs_eval and bench["name"] not in self.failed:
                unit = units.Unit(self.model_name, bench["name"], shards, None)
                lock = units.claim(self.units_dir, unit, self.worker_id)
                if lock is not None:
                    return bench, unit, lock
        return None

    def work(self) -> list[str]:
        """Take units until none is left; returns the benchmarks that failed here."""
        while (got := self.next_work()) is not None:
            bench, unit, lock = got
            try:
                if unit.index is None:
                    self.evaluate_pair(bench, unit, lock)
                else:
                    self.infer_unit(bench, unit, lock)
            except Exception as exc:  # a bug of ours: the unit fails, the worker goes on
                self.fail(bench["name"], "runner", failure_info(exc), unit, lock)
            finally:
                lock.release()  # a no-op once marked; on SIGTERM or Ctrl-C the claim goes here
        return sorted(self.failed)
