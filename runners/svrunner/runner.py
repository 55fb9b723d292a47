"""One job inside the env: the model built once, then each benchmark through VLMEvalKit.

Per benchmark: place built-in or user data, build the dataset, check the pair's fingerprint, apply
the stratified limit, collect reusable predictions, run `infer_data_job`, then (rank 0)
`dataset.evaluate` with run.py's judge kwargs, and report the score files it wrote. VLMEvalKit
swallows errors and exits 0; this runner turns every failure into an event.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from . import fingerprint, predictions
from .dist import Dist, first_failure, run_everywhere
from .errors import failure_info
from .files import sha256_file
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


class Runner:
    def __init__(self, job: dict[str, Any], dist: Dist, events: EventLog) -> None:
        self.job, self.dist, self.events = job, dist, events
        self.model_name: str = job["model"]["name"]
        self.work_dir: str = job["work_dir"]
        self.kit: Kit | None = None
        self.model: Any = None
        self.checkpoint: str | None = None  # the loaded checkpoint's identity (fingerprint)

    def emit0(self, event: str, at: float | None = None, **fields: Any) -> float:
        """Job-level events come from rank 0 only (progress excepted)."""
        stamp = time.time() if at is None else at
        if self.dist.rank == 0:
            self.events.emit(event, at=stamp, **fields)
        return stamp

    def rel(self, path: str) -> str:
        return relative(path, self.work_dir)

    def fail(self, bench: str, stage: str, failure: dict[str, Any]) -> bool:
        log(f"{bench}: {stage} failed: {failure.get('error')}")
        self.emit0("benchmark_failed", benchmark=bench, stage=stage, **failure)
        return False

    # -- data (rank 0) --
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

    # -- evaluation (rank 0) --
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

    # -- one benchmark --
    def run_benchmark(self, bench: dict[str, Any]) -> bool:
        job, dist, kit = self.job, self.dist, self.kit
        name = bench["name"]
        t0 = time.time()
        pair_dir = os.path.join(self.work_dir, self.model_name, name)
        log(f"--- {name} ---")

        # dataset: rank 0 first (downloads, TSV placement), then the others (as run.py does)
        def prepare() -> tuple[Any, dict[str, Any]]:
            os.makedirs(pair_dir, exist_ok=True)
            # VLMEvalKit downloads official TSVs straight to LMUData/<name>.tsv (not atomic):
            # one job prepares a dataset at a time, on every node that shares LMUData.
            lock = FileLock(os.path.join(job["data_root"], ".spectravenv", "locks", f"{name}.lock"),
                            f"preparing dataset {name}")  # fmt: skip
            with lock.hold(DATA_LOCK_TIMEOUT, on_wait=lambda h: log(f"waiting for {lock.busy_message(h)}")):
                extra = self.place_data(bench)
                ds = self.build_dataset(name)
            changed, moved = predictions.check_fingerprint(pair_dir, self.fingerprint_parts(ds, name))
            if changed:
                self.emit0("pair_reset", benchmark=name, changed=changed,
                           moved_to=self.rel(moved) if moved else None)  # fmt: skip
                log(f"{name}: {', '.join(changed)} changed since the last attempt: starting afresh"
                    + (f" (earlier files kept in {self.rel(moved)})" if moved else ""))
            return ds, extra

        res, failure = run_everywhere(dist, prepare, only_rank0=True)
        if failure:
            return self.fail(name, "dataset", failure)
        dataset, extra = res if dist.rank == 0 else (None, {})
        if dist.world > 1:  # a collective: every rank takes part, rank 0 has its dataset
            built = dataset
            dataset, failure = run_everywhere(dist, lambda: built if dist.rank == 0 else self.build_dataset(name))
            if failure:
                return self.fail(name, "dataset", failure)

        # limit, then what earlier attempts already predicted
        def select() -> dict[str, Any]:
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
            info["index_of"] = {str(x): x for x in dataset.data["index"]}
            if dist.rank == 0:
                union = predictions.reusable(kit, pair_dir, self.model_name, name)
                predictions.seed_rank_pickles(pair_dir, name, union, info["index_of"], dist.world)
            return info

        info, failure = run_everywhere(dist, select)
        if failure:
            return self.fail(name, "dataset", failure)
        index_of = info.pop("index_of")
        data_index = [str(x) for x in dataset.data["index"]]
        pred_file = kit.pred_path(pair_dir, self.model_name, name)

        # what is left, globally and for this rank's strided shard (every rank reads the
        # archive rank 0 just wrote: a shared filesystem under torchrun)
        shard = data_index[dist.rank :: dist.world]
        known = predictions.archived_keys(pair_dir)
        reused_shard = sum(1 for k in shard if k in known)
        totals = dist.gather((len(shard), reused_shard))
        reused = sum(r for _, r in totals)
        fp = self.fingerprint_parts(dataset, name) if dist.rank == 0 else {}
        self.emit0("benchmark_started", benchmark=name, total=len(data_index), reused=reused,
                   dataset_class=type(dataset).__name__, dataset_type=getattr(dataset, "TYPE", None),
                   prediction_file=self.rel(pred_file), fingerprint=fp, **info, **extra)  # fmt: skip
        log(f"{name}: {len(data_index)} samples, {reused} reused")

        self._reseed()
        monitor = GenerateMonitor(self.model, self.events, name, done=reused_shard, total=len(shard),
                                  fail_msg=kit.fail_msg,
                                  shard=[dist.rank, dist.world] if dist.world > 1 else None)  # fmt: skip

        def infer() -> None:
            kwargs = dict(model=self.model, work_dir=pair_dir, model_name=self.model_name,
                          dataset=dataset, verbose=False, api_nproc=int(job["nproc"]))  # fmt: skip
            kit.infer_data_job(**{k: v for k, v in kwargs.items() if k in kit.infer_params})

        try:
            _, failure = run_everywhere(dist, infer)
        finally:
            monitor.uninstall()
        failure = failure or first_failure(dist.gather(monitor.failure))
        if dist.rank == 0 and os.path.exists(pred_file):
            try:
                predictions.update_archive(kit, pair_dir, pred_file)
            except Exception as exc:
                log(f"could not update the prediction archive: {exc}")
        if failure:
            if dist.rank == 0 and os.path.exists(pred_file):
                # infer_data_job wrote the file with FAIL rows; its good rows are in the archive.
                # Move it aside so that "prediction file exists" keeps meaning "complete".
                stem, ext = os.path.splitext(pred_file)
                os.replace(pred_file, f"{stem}_INCOMPLETE{ext}")
                failure = dict(failure, incomplete_prediction_file=self.rel(f"{stem}_INCOMPLETE{ext}"))
            return self.fail(name, "infer", failure)

        result, failure = run_everywhere(
            dist, lambda: self.evaluate(dataset, pair_dir, name, pred_file, list(index_of.values())),
            only_rank0=True,
        )  # fmt: skip
        if failure:
            return self.fail(name, "eval", failure)
        self.emit0("benchmark_done", benchmark=name, prediction_file=self.rel(pred_file),
                   fingerprint=fp, seconds=round(time.time() - t0, 3), **(result or {}))  # fmt: skip
        log(f"{name}: done, scores {(result or {}).get('score_files')}")
        return True

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
