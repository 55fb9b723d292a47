"""A worker inside the env: the model built once, then work units of it until none is left.

A unit is one shard of a (model, benchmark)'s rows (svrunner.units). For a pair it touches first,
a worker places built-in or user data, builds the dataset, applies the stratified limit and, under
the pair's lock, checks the pair's fingerprint and gathers reusable predictions (once per pair).
An infer unit runs VLMEvalKit's `infer_data` on its rows into its own file. When every shard of a
pair is done, one worker claims the pair's evaluation: the shards' predictions are merged by
VLMEvalKit's own `infer_data_job` (it finds every row answered, so the prediction file is exactly
what one process would write), then `dataset.evaluate` runs once with run.py's judge kwargs.
VLMEvalKit swallows errors and exits 0; this runner turns every failure into an event. Workers
share nothing but files: no collective can leave one waiting for another.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

from . import fingerprint, predictions, units
from .errors import failure_info
from .files import sha256_file, write_atomic
from .kit import (
    JUDGE_DEFAULTS,
    SCORE_EXT,
    SCORE_STEM,
    Kit,
    circular_eval_guard,
    log,
    no_eval,
    snapshot,
)
from .locking import FileLock
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


class Worker:
    def __init__(self, job: dict[str, Any], events: EventLog) -> None:
        self.job, self.events = job, events
        self.model_name: str = job["model"]["name"]
        self.work_dir: str = job["work_dir"]
        self.units_dir: str = job["units_dir"]
        self.worker_id: str = job["job_id"]
        self.kit: Kit | None = None
        self.model: Any = None
        self.checkpoint: str | None = None  # the loaded checkpoint's identity (fingerprint)
        self.pairs: dict[str, Pair] = {}
        self.failed: set[str] = set()  # benchmarks this worker saw fail

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

    def place_data(self, bench: dict[str, Any]) -> dict[str, Any]:
        """Put built-in / user TSVs at LMUData/<name>.tsv; returns extra event fields."""
        name, data_root = bench["name"], self.job["data_root"]
        extra: dict[str, Any] = {}
        if not (bench.get("builtin") or bench.get("tsv")):
            return extra
        # An official name would go through its own class: md5 check and re-download over our
        # file. Refuse rather than lose the user's data.
        if self.kit.is_official(name):
            raise ValueError(f"{name!r} is an official VLMEvalKit dataset name; choose another "
                             "name for a built-in or user TSV")  # fmt: skip
        if bench.get("builtin"):
            from . import demo

            demo.ensure_builtin_dataset(bench["builtin"], data_root, name)
            return extra
        src = os.path.abspath(bench["tsv"])
        if not os.path.isfile(src):
            raise FileNotFoundError(f"user TSV {src} does not exist")
        dst = os.path.join(data_root, f"{name}.tsv")
        if os.path.islink(dst) and not os.path.exists(dst):
            os.unlink(dst)  # dangling link (the user moved their file): re-link below
        if os.path.lexists(dst):
            same = os.path.exists(dst) and (os.path.samefile(dst, src) or sha256_file(dst) == sha256_file(src))
            if not same:
                raise FileExistsError(f"{dst} exists and is not {src}; remove it or rename the benchmark")
        else:
            tmp = os.path.join(data_root, f".tmp-{os.getpid()}-{name}.tsv")
            os.symlink(src, tmp)
            os.replace(tmp, dst)
        # VLMEvalKit caches decoded images in LMUData/images/<name>/ and never checks them against
        # the TSV: if the user's file changed since they were decoded, drop that cache.
        digest = self.dataset_digest(dst)
        stamp = os.path.join(data_root, ".spectravenv", "images-of", name)
        old = open(stamp).read().strip() if os.path.exists(stamp) else None
        if old != digest:
            img_dir = os.path.join(data_root, "images", name)
            if old is not None and os.path.isdir(img_dir):
                import shutil

                shutil.rmtree(img_dir, ignore_errors=True)
                extra["tsv_changed"] = True
            from .files import write_atomic

            write_atomic(stamp, digest + "\n")
        return extra
    def dataset_digest(self, path: str) -> str | None:
        cache = os.path.join(self.job["data_root"], ".spectravenv", "sha256")
        return fingerprint.dataset_sha256(path, cache)
    def build_dataset(self, name: str) -> Any:
        ds = self.kit.build_dataset(name)
        if ds is None:
            raise RuntimeError(f"build_dataset({name!r}) returned None: not a VLMEvalKit dataset and no "
                               f"usable {name}.tsv in LMUData ({self.job['data_root']})")  # fmt: skip
        if getattr(ds, "MODALITY", "IMAGE") == "VIDEO" or getattr(ds, "TYPE", None) == "MT":
            raise NotImplementedError(f"{name}: video and multi-turn datasets are not supported by "
                                      "the runner yet")  # fmt: skip
        return ds
    def fingerprint_parts(self, dataset: Any, name: str) -> dict[str, Any]:
        path = getattr(dataset, "data_path", None) or os.path.join(self.job["data_root"], f"{name}.tsv")
        return {**self.job.get("fingerprint", {}), "checkpoint": self.checkpoint,
                "dataset": self.dataset_digest(path)}  # fmt: skip
    def evaluate(self, dataset: Any, pair_dir: str, dname: str, pred_file: str,
                 expected: list[Any]) -> dict[str, Any]:  # fmt: skip
        kit = self.kit
        df = kit.load(pred_file)
        have = {str(x) for x in df["index"]}
        missing = [x for x in expected if str(x) not in have]
        if missing:
            raise RuntimeError(f"prediction file lacks {len(missing)} of {len(expected)} rows "
                               f"(first: {missing[:5]})")  # fmt: skip
        result: dict[str, Any] = {
            "samples": len(df),
            "failed_predictions": int(sum(kit.is_failed(v) for v in df["prediction"])),
        }
        if no_eval(dname):
            return {**result, "score_files": [], "eval_files": [],
                    "eval_skipped": "no public answers: inference only (as run.py does)"}  # fmt: skip
        # Evaluators cache intermediate results (MCQ: _<judge>_result.pkl; Y/N: _auxmatch.xlsx)
        # valid only for the predictions they came from; the fingerprint check moved every file
        # of another fingerprint aside, and a changed prediction file is new, so clear them when
        # the predictions differ from what was last evaluated.
        self._drop_stale_eval_files(pair_dir, dname, pred_file, df)
        before = snapshot(pair_dir)
        t0 = time.time()
        judge_kwargs = {**JUDGE_DEFAULTS, "model": self.job["judge"], "nproc": int(self.job["nproc"])}
        try:
            with circular_eval_guard(dname):
                ret = dataset.evaluate(pred_file, **judge_kwargs)
        except NotImplementedError as exc:
            raise NotImplementedError(
                f"{type(dataset).__name__}.evaluate() is not implemented in this VLMEvalKit "
                f"{str(exc) or ''}(no scorer for this dataset type); predictions are kept in "
                f"{self.rel(pred_file)}"
            ) from exc
        after = snapshot(pair_dir)
        changed = sorted(p for p, m in after.items() if before.get(p) != m and p != pred_file
                         and not os.path.basename(p).startswith("."))  # fmt: skip
        base = f"{self.model_name}_{dname}"
        scores = []
        for p in changed:
            stem, ext = os.path.splitext(os.path.basename(p))
            if ext in SCORE_EXT and stem.startswith(base) and SCORE_STEM.search(stem[len(base):]):
                scores.append(p)
        if not scores:
            raise RuntimeError(f"evaluate() wrote no score file (changed files: "
                               f"{[os.path.basename(p) for p in changed]}, returned {type(ret).__name__})")  # fmt: skip
        import json

        metrics = jsonable(ret)
        if len(json.dumps(metrics)) > 20000:
            metrics = None  # keep events small; the score files hold everything
        return {**result, "score_files": [self.rel(p) for p in scores],
                "eval_files": [self.rel(p) for p in changed], "metrics": metrics,
                "eval_seconds": round(time.time() - t0, 3)}  # fmt: skip
    def _drop_stale_eval_files(self, pair_dir: str, dname: str, pred_file: str, df: Any) -> None:
        import hashlib
        import json

        pairs = sorted((str(i), str(p)) for i, p in zip(df["index"], df["prediction"]))
        digest = hashlib.sha256(json.dumps([self.job["judge"], pairs]).encode()).hexdigest()
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
        from .files import write_atomic

        write_atomic(stamp, json.dumps({"predictions": digest, "judge": self.job["judge"]}) + "\n")
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
        if name in self.pairs:
            return self.pairs[name]
        job = self.job
        pair_dir = os.path.join(self.work_dir, self.model_name, name)
        os.makedirs(pair_dir, exist_ok=True)
        log(f"--- {name} ---")
        # VLMEvalKit downloads official TSVs straight to LMUData/<name>.tsv (not atomic): one job
        # prepares a dataset at a time, on every node that shares LMUData.
        lock = FileLock(os.path.join(job["data_root"], ".spectravenv", "locks", f"{name}.lock"),
                        f"preparing dataset {name}")  # fmt: skip
        with lock.hold(DATA_LOCK_TIMEOUT, on_wait=lambda h: log(f"waiting for {lock.busy_message(h)}")):
            extra = self.place_data(bench)
            dataset = self.build_dataset(name)
        data = dataset.data
        info: dict[str, Any] = {"rows_full": len(data)}
        if job.get("limit"):
            rows, sub = choose_subset(
                list(data["index"]),
                list(data["category"]) if "category" in data.columns else None,
                int(job["limit"]), int(job["seed"]),
                list(data["g_index"]) if "g_index" in data.columns else None,
            )  # fmt: skip
            keep = {str(x) for x in rows}
            dataset.data = data[[str(x) in keep for x in data["index"]]].copy()
            info.update(indices=rows, subset=sub)
        parts = self.fingerprint_parts(dataset, name)
        pred_file = self.kit.pred_path(pair_dir, self.model_name, name)
        p = Pair(bench, dataset, pair_dir, pred_file, list(dataset.data["index"]), parts)
        # The first worker to reach the pair checks its fingerprint and gathers what earlier
        # attempts predicted; the others find it prepared.
        shards = int(bench.get("shards", 1))
        prep = os.path.join(units.pair_dir(self.units_dir, self.model_name, name, shards), "prepared.json")
        guard = FileLock(prep + ".lock", f"worker {self.worker_id}: preparing {self.model_name} x {name}")
        with guard.hold(PAIR_LOCK_TIMEOUT):
            digest = fingerprint.digest(parts)
            prepared = None
            if os.path.exists(prep):
                with open(prep) as fh:
                    prepared = json.load(fh)
            if prepared is None or prepared.get("digest") != digest:
                changed, moved = predictions.check_fingerprint(pair_dir, parts)
                if changed:
                    self.emit("pair_reset", benchmark=name, changed=changed, moved_to=self.rel(moved) if moved else None)
                    log(f"{name}: {', '.join(changed)} changed since the last attempt: starting afresh"
                        + (f" (earlier files kept in {self.rel(moved)})" if moved else ""))
                union = predictions.reusable(self.kit, pair_dir, self.model_name, name)
                index_of = {str(x): x for x in p.rows}
                predictions.seed_prev(self.kit, pair_dir, self.model_name, name, union, index_of)
                reused = sum(1 for k in index_of if k in union)
                write_atomic(prep, json.dumps({"digest": digest, "rows": len(p.rows), "reused": reused}) + "\n")
                self.emit("benchmark_started", benchmark=name, total=len(p.rows), reused=reused, shards=shards,
                          dataset_class=type(dataset).__name__, dataset_type=getattr(dataset, "TYPE", None),
                          prediction_file=self.rel(pred_file), fingerprint=parts, **info, **extra)  # fmt: skip
                log(f"{name}: {len(p.rows)} samples in {shards} unit(s), {reused} reused")
        self.pairs[name] = p
        return p

    # -- one infer unit --
    def infer_unit(self, bench: dict[str, Any], unit: units.Unit, lock: Any) -> bool:
        t0 = time.time()
        try:
            p = self.pair(bench)
        except Exception as exc:
            return self.fail(bench["name"], "dataset", failure_info(exc), unit, lock)
        kit, name = self.kit, p.name
        mine = [x for i, x in enumerate(p.rows) if i % p.shards == unit.index]
        out_file = predictions.unit_file(p.pair_dir, p.shards, unit.index)
        predictions.drop_failed(kit, out_file)
        done_before = len(predictions.known(kit, p.pair_dir, self.model_name, name, out_file) & {str(x) for x in mine})
        self.emit("unit_started", benchmark=name, unit=unit.index, of=p.shards, rows=len(mine), reused=done_before)
        p.dataset.data = p.full_data[p.full_data["index"].isin(mine)]
        self._reseed()
        monitor = GenerateMonitor(self.model, self.events, name, done=done_before, total=len(mine),
                                  fail_msg=kit.fail_msg, shard=[unit.index, p.shards] if p.shards > 1 else None)  # fmt: skip
        try:
            kit.infer_data(model=self.model, model_name=self.model_name, work_dir=p.pair_dir, dataset=p.dataset,
                           out_file=out_file, api_nproc=int(self.job["nproc"]))  # fmt: skip
        except Exception as exc:
            return self.fail(name, "infer", failure_info(exc), unit, lock)
        finally:
            monitor.uninstall()
            p.dataset.data = p.full_data
        if monitor.failure is not None:
            return self.fail(name, "infer", monitor.failure, unit, lock)
        seconds = round(time.time() - t0, 3)
        units.mark_done(self.units_dir, unit, {"worker": self.worker_id, "rows": len(mine)}, lock)
        self.emit("unit_done", benchmark=name, unit=unit.index, of=p.shards, samples=len(mine) - done_before,
                  seconds=seconds)  # fmt: skip
        return True

    # -- the pair's evaluation, once all its shards are in --
    def evaluate_pair(self, bench: dict[str, Any], unit: units.Unit, lock: Any) -> bool:
        t0 = time.time()
        try:
            p = self.pair(bench)
            kit = self.kit
            merged = predictions.merge_units(kit, p.pair_dir, self.model_name, p.name, p.shards, p.rows)
            # VLMEvalKit writes the prediction file itself: every row answered, nothing inferred.
            kit.infer_data_job(**{k: v for k, v in dict(model=self.model, work_dir=p.pair_dir, model_name=self.model_name,
                                                         dataset=p.dataset, verbose=False,
                                                         api_nproc=int(self.job["nproc"])).items()
                                  if k in kit.infer_params})  # fmt: skip
            predictions.update_archive(kit, p.pair_dir, p.pred_file)
            log(f"{p.name}: {merged} predictions merged from {p.shards} unit(s)")
        except Exception as exc:
            return self.fail(bench["name"], "infer", failure_info(exc), unit, lock)
        try:
            result = self.evaluate(p.dataset, p.pair_dir, p.name, p.pred_file, p.rows)
        except Exception as exc:
            return self.fail(p.name, "eval", failure_info(exc), unit, lock)
        units.mark_done(self.units_dir, unit, {"worker": self.worker_id}, lock)
        self.emit("benchmark_done", benchmark=p.name, prediction_file=self.rel(p.pred_file), fingerprint=p.fingerprint,
                  seconds=round(time.time() - t0, 3), shards=p.shards, **result)  # fmt: skip
        log(f"{p.name}: done, scores {result.get('score_files')}")
        return True

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
            if st.needs_eval:
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
                    shards = int(bench.get("shards", 1))
                    if units.state(self.units_dir, self.model_name, bench["name"], shards).needs_eval:
                        continue  # next_work offers the evaluation now that the last shard is in
            except Exception as exc:  # a bug of ours: the unit fails, the worker goes on
                self.fail(bench["name"], "runner", failure_info(exc), unit, lock)
        return sorted(self.failed)
