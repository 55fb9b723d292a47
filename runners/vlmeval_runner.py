#!/usr/bin/env python
"""spectravenv's VLMEvalKit runner: runs INSIDE one per-transformers-version environment.

    <env>/bin/python runners/vlmeval_runner.py JOB_JSON
    <env>/bin/torchrun --nproc-per-node=K runners/vlmeval_runner.py JOB_JSON   (data parallel)

It drives VLMEvalKit (PyPI ``ms-vlmeval``, import name ``vlmeval``; 0.0.18 and 0.0.20 are
known to work) through its Python functions instead of ``run.py``: the model is built once,
then for every benchmark: build the dataset, apply the stratified limit, run
``vlmeval.inference.infer_data_job`` (which resumes from partial predictions), run
``dataset.evaluate(prediction_file, model=<judge>, nproc=<n>)`` and collect the score files.

VLMEvalKit swallows errors and exits 0; this runner does not.  Every failure becomes an event
and the exit code says what happened:
    0  every benchmark done      1  some benchmark failed      2  job-level failure
Events are JSON lines appended to ``job["events"]``; each line is written with a single
``os.write`` on an O_APPEND descriptor, then fsync'ed, so a crash can at worst leave a last
line without its newline, which readers must ignore.

Events (every object also has "event", "time", "job_id", "rank"):
    job_started        pid, python, versions{torch,transformers,vlmeval,python}, world_size,
                       cuda_visible_devices, cuda_available, cuda_runtime, gpu_names
    model_loaded       seconds (import + build), import_seconds, build_seconds, model_class
    benchmark_started  benchmark, total, reused, rows_full, dataset_class, dataset_type,
                       prediction_file, [indices, subset] when a limit is set
    progress           benchmark, done, total [, shard=[rank, world] under torchrun]
    benchmark_done     benchmark, prediction_file, score_files, eval_files, samples, seconds,
                       metrics (evaluate()'s return value), failed_predictions [, eval_skipped]
    benchmark_failed   benchmark, stage (dataset|infer|eval|runner), error, traceback, oom
    job_failed         stage (job|setup|import|model), error, traceback, oom   -> exit 2
    job_done           ok, failed, seconds

Self-contained on purpose: only the standard library, the env's packages and the sibling
file ``spectravenv_builtins.py`` (this script's folder is sys.path[0]).  It imports nothing
from spectravenv.

Data parallel (torchrun): VLMEvalKit shards by stride (rank r infers rows r, r+K, r+2K, ... of
``dataset.data``), each rank writes ``{work_dir}/{rank}{world}_{dataset}.pkl``, rank 0 merges
them into the prediction file and deletes them.  Only rank 0 evaluates and writes job-level
events; every rank writes ``progress`` for its own shard.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import inspect
import json
import math
import os
import pickle
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from spectravenv_builtins import sha256_file  # stdlib-only sibling; shared helper

RUNNER_SCHEMA = 1
# The marker VLMEvalKit uses for failed answers (vlmeval.inference.FAIL_MSG, same in 0.0.18
# and 0.0.20); predictions containing it are retried on the next run, by VLMEvalKit and here.
DEFAULT_FAIL_MSG = "Failed to obtain answer via API."
CIRCULAR_OFFSET = 1_000_000
# Datasets without public answers: run.py does inference only (it "skips" evaluation).
NO_EVAL_EXACT = {
    "MMMU_TEST",
    "DocVQA_TEST",
    "InfoVQA_TEST",
    "Q-Bench1_TEST",
    "A-Bench_TEST",
    "AesBench_TEST",
    "MMBench_TEST_CN",
    "MMBench_TEST_EN",
    "MMBench",
    "MMBench_CN",
    "MMBench_TEST_CN_V11",
    "MMBench_TEST_EN_V11",
    "MMBench_V11",
    "MMBench_CN_V11",
}
NO_EVAL_SUBSTR = ("MMT-Bench_ALL", "MLLMGuard_DS")
# Stems (file name without extension, after "{model}_{dataset}") of files holding scores.
SCORE_STEM = re.compile(
    r"_(acc|acc_all|score|scores|rating|final_rating|metrics|detailed_metrics)$"
)
SCORE_EXT = (".csv", ".json", ".xlsx", ".tsv")


def log(msg: str) -> None:
    """Human-readable progress on stderr (the dispatcher keeps it as the job log)."""
    sys.stderr.write(f"[spectravenv-runner r{os.environ.get('RANK', '0')}] {msg}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------------------
# JSON helpers
# ----------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Plain JSON (no NaN/Infinity, no numpy/pandas objects)."""
    try:
        import numpy as np
    except Exception:  # pragma: no cover - numpy is always there in these envs
        np = None
    try:
        import pandas as pd
    except Exception:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if pd is not None and isinstance(obj, pd.Series):
        return jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# ----------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------


class EventLog:
    """Append-only JSON-lines event file shared by all ranks of a job."""

    def __init__(self, path: str, job_id: str, rank: int) -> None:
        self.path, self.job_id, self.rank = path, job_id, rank
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A previous process killed mid-write may have left a line without '\n': start on a
        # fresh line so our first event is not glued to that fragment.
        self._need_newline = False
        try:
            size = os.path.getsize(path)
            if size:
                with open(path, "rb") as fh:
                    fh.seek(size - 1)
                    self._need_newline = fh.read(1) != b"\n"
        except OSError:
            pass

    def emit(self, event: str, **fields: Any) -> None:
        obj = {"event": event, "time": time.time(), "job_id": self.job_id, "rank": self.rank}
        obj.update(fields)
        line = json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False) + "\n"
        if self._need_newline:
            line = "\n" + line
            self._need_newline = False
        os.write(self.fd, line.encode("utf-8"))  # one write: O_APPEND keeps lines whole
        os.fsync(self.fd)


def failure_info(exc: BaseException) -> dict[str, Any]:
    """One-line error, tail of the traceback and whether it was a CUDA out-of-memory."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    oom = False
    try:
        import torch

        oom = isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ()))
    except Exception:
        pass
    oom = oom or ("CUDA out of memory" in str(exc)) or ("CUBLAS_STATUS_ALLOC_FAILED" in str(exc))
    return {"error": error[:300], "traceback": tb[-4000:], "oom": bool(oom)}


# ----------------------------------------------------------------------------------------
# Job file
# ----------------------------------------------------------------------------------------


def load_job(path: str) -> dict[str, Any]:
    with open(path) as fh:
        job = json.load(fh)
    if job.get("schema") != RUNNER_SCHEMA:
        raise ValueError(f"job schema {job.get('schema')!r} is not {RUNNER_SCHEMA}")
    for key in ("job_id", "model", "benchmarks", "work_dir", "events", "data_root", "assets_dir"):
        if key not in job:
            raise ValueError(f"job file lacks {key!r}")
    model = job["model"]
    sources = [k for k in ("vlmeval_name", "class", "builtin") if model.get(k)]
    if len(sources) != 1 or not model.get("name"):
        raise ValueError("model needs a name and exactly one of vlmeval_name / class / builtin")
    limit = job.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be null or an int > 0, not {limit!r}")
    names = [b.get("name") for b in job["benchmarks"]]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"benchmark names must be present and unique: {names}")
    job.setdefault("seed", 0)
    job.setdefault("judge", "exact_matching")
    job.setdefault("nproc", 4)
    return job


# ----------------------------------------------------------------------------------------
# Distributed setup (mirrors vlmeval/run.py)
# ----------------------------------------------------------------------------------------


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

    Must run before torch is imported.  With K local ranks and N GPUs each rank gets N // K
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
    mine = gpus[per * local_rank : per * (local_rank + 1)]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)


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
        timeout = datetime.timedelta(seconds=int(os.environ.get("DIST_TIMEOUT", 4 * 3600)))
        dist.init_process_group(backend=backend, timeout=timeout)
        self.active = True

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            # Without this barrier a rank that reaches destroy_process_group() after rank 0
            # has exited hangs there forever (seen with gloo under torchrun, torch 2.1.2).
            dist.barrier()
            dist.destroy_process_group()
            self.active = False


def first_failure(failures: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    for rank, f in enumerate(failures):
        if f:
            f = dict(f)
            f.setdefault("failed_rank", rank)
            return f
    return None


def run_everywhere(
    dist: Dist, fn: Callable[[], Any], only_rank0: bool = False
) -> tuple[Any, dict[str, Any] | None]:
    """Run ``fn`` (on rank 0 only if asked), then agree on failure across ranks.

    Every rank reaches the gather even when ``fn`` raised, so one failing rank cannot leave
    the others waiting in a barrier.
    """
    result, fail = None, None
    if not only_rank0 or dist.rank == 0:
        try:
            result = fn()
        except Exception as exc:
            fail = failure_info(exc)
    return result, first_failure(dist.gather(fail))


# ----------------------------------------------------------------------------------------
# Limit: the same stratified, content-keyed subset for every model
# ----------------------------------------------------------------------------------------


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder proportional allocation of ``n`` over categories.

    At least one per category while ``n`` allows (then the rest proportional to what is left;
    with fewer samples than categories, one each for the largest), exact rational arithmetic
    so that every platform computes the same counts.
    """
    from fractions import Fraction

    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    cats = sorted(sizes)
    if n < len(cats):
        # fewer samples than categories: one each for the n largest (ties by name)
        pick = sorted(cats, key=lambda c: (-sizes[c], c))[:n]
        return {c: int(c in pick) for c in cats}
    base = {c: 1 for c in cats}
    cap = {c: sizes[c] - 1 for c in cats}
    rest = n - len(cats)
    cap_total = sum(cap.values())
    if rest == 0 or cap_total == 0:
        return base
    quota = {c: Fraction(rest * cap[c], cap_total) for c in cats}
    alloc = {c: int(quota[c]) for c in cats}
    left = rest - sum(alloc.values())
    order = sorted(cats, key=lambda c: (-(quota[c] - alloc[c]), -cap[c], c))
    for c in order[:left]:
        alloc[c] += 1
    return {c: base[c] + alloc[c] for c in cats}


def choose_subset(data: Any, n: int, seed: int) -> tuple[list[Any], dict[str, Any]]:
    """Pick ``n`` questions spread over ``category``; returns (row indices, info).

    Ordering key is sha256(f"{seed}:{group}") so the choice depends only on the dataset
    content and the seed.  Circular datasets (MMBench style: row index i >= 1e6 is a shuffled
    variant of question i % 1e6, or an explicit ``g_index`` column) are chosen by whole groups;
    ``n`` then counts questions, and all their variants are inferred.
    """
    indices = list(data["index"])
    is_int = all(isinstance(x, int) or type(x).__name__.startswith("int") for x in indices)
    circular = False
    if "g_index" in data.columns:
        groups = [str(g) for g in data["g_index"]]
        circular = True
    elif is_int and any(int(x) >= CIRCULAR_OFFSET for x in indices):
        groups = [str(int(x) % CIRCULAR_OFFSET) for x in indices]
        circular = True
    else:
        groups = [str(x) for x in indices]
    cats = [str(c) for c in data["category"]] if "category" in data.columns else [""] * len(indices)

    group_cat: dict[str, str] = {}
    for idx, g, c in zip(indices, groups, cats):
        if g not in group_cat or str(idx) == g:  # the main row (index == group) decides
            group_cat[g] = c
    by_cat: dict[str, list[str]] = {}
    for g, c in group_cat.items():
        by_cat.setdefault(c, []).append(g)
    alloc = allocate({c: len(v) for c, v in by_cat.items()}, n)

    def key(g: str) -> str:
        return hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()

    chosen = set()
    for c, members in by_cat.items():
        chosen.update(sorted(members, key=key)[: alloc[c]])
    rows = [idx for idx, g in zip(indices, groups) if g in chosen]
    info = {
        "questions_total": len(group_cat),
        "questions_chosen": len(chosen),
        "circular": circular,
        "per_category": {c: alloc[c] for c in sorted(alloc)},
    }
    return rows, info


# ----------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------


def atomic_pickle(obj: Any, path: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # like the files VLMEvalKit writes beside it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class data_lock:
    """Exclusive flock on LMUData/.spectravenv/locks/<name>.lock (released if we die).

    flock is reliable on local disks; on NFS/Lustre it may be a no-op, so a dispatcher that
    shares LMUData between nodes should prepare datasets before starting parallel jobs.
    """

    def __init__(self, data_root: str, name: str) -> None:
        folder = os.path.join(data_root, ".spectravenv", "locks")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{name}.lock")
        self.fd = -1

    def __enter__(self) -> data_lock:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class circular_eval_guard:
    """Serialise VLMEvalKit's circular MCQ evaluation on this host and clean up after it.

    ``mcq_circular_eval`` (MMBench, CCBench, names with "circular"/"mmcr"; 0.0.18 and 0.0.20)
    round-trips its table through ``/tmp/{timestr()}.xlsx``: a name with one-second resolution,
    fixed to /tmp (not $TMPDIR), never deleted.  Two evaluations in the same second would
    overwrite each other's file.  Hold a host-wide lock, leave it only after the clock has
    moved to the next second, and delete the files that appeared meanwhile.
    """

    MARKERS = ("mmbench", "ccbench", "circular", "mmcr")
    TMP_NAME = re.compile(r"^\d{14}\.(xlsx|tsv|json)$")

    def __init__(self, dataset_name: str) -> None:
        self.active = any(m in dataset_name.lower() for m in self.MARKERS)
        self.fd = -1
        self.before: set = set()

    def _tmp_files(self) -> set:
        try:
            return {f for f in os.listdir("/tmp") if self.TMP_NAME.match(f)}
        except OSError:
            return set()

    def __enter__(self) -> circular_eval_guard:
        if self.active:
            import fcntl

            self.fd = os.open(
                "/tmp/.spectravenv-vlmeval-circular-eval.lock", os.O_RDWR | os.O_CREAT, 0o666
            )
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.before = self._tmp_files()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        import fcntl

        try:
            for f in self._tmp_files() - self.before:
                try:
                    os.remove(os.path.join("/tmp", f))
                except OSError:
                    pass
            time.sleep(1.05 - (time.time() % 1.0))  # next holder gets another timestr()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def snapshot(folder: str) -> dict[str, int]:
    out = {}
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            out[p] = os.stat(p).st_mtime_ns
    return out


# ----------------------------------------------------------------------------------------
# The VLMEvalKit side
# ----------------------------------------------------------------------------------------


class Kit:
    """The VLMEvalKit functions the runner uses, with version differences resolved."""

    def __init__(self) -> None:
        import vlmeval  # noqa: F401  (0.0.18 imports everything here, 0.0.20 lazily)
        import vlmeval.inference as inference
        from vlmeval.dataset import DATASET_CLASSES, build_dataset
        from vlmeval.inference import infer_data_job
        from vlmeval.smp import dump, load

        self.build_dataset = build_dataset
        self.infer_data_job = infer_data_job
        self.infer_params = set(inspect.signature(infer_data_job).parameters)
        self.load, self.dump = load, dump
        self.fail_msg = getattr(inference, "FAIL_MSG", DEFAULT_FAIL_MSG)
        self.dataset_classes = DATASET_CLASSES
        try:
            from vlmeval.dataset.video_dataset_config import supported_video_datasets

            self.video_names = set(supported_video_datasets)
        except Exception:
            self.video_names = set()
        try:  # 0.0.20: PRED_FORMAT=xlsx|tsv|json picks the prediction file type
            from vlmeval.smp import get_pred_file_path

            self.pred_path = lambda wd, m, d: get_pred_file_path(wd, m, d, use_env_format=True)
        except ImportError:  # 0.0.18: always xlsx
            self.pred_path = lambda wd, m, d: os.path.join(wd, f"{m}_{d}.xlsx")

        self.patched_decoders = patch_image_decoding()

    def is_official(self, name: str) -> bool:
        if name in self.video_names:
            return True
        return any(name in cls.supported_datasets() for cls in self.dataset_classes)

    def is_failed(self, value: Any) -> bool:
        return self.fail_msg in str(value)


def patch_image_decoding() -> int:
    """Make VLMEvalKit's image cache writes atomic (in memory only; no env file is touched).

    ``dataset.dump_image`` decodes each base64 image to LMUData/images/<dataset>/ with a plain
    ``PIL.Image.save`` and reuses a file if ``read_ok`` can open its header.  Two jobs on the
    same benchmark (two models in parallel) can therefore read a half-written image.  Writing
    to a temporary name with the same suffix (PIL picks the format from it) and renaming
    closes that race.  Returns the number of module attributes replaced.
    """
    import vlmeval.smp.vlm as smp_vlm

    orig = smp_vlm.decode_base64_to_image_file
    if getattr(orig, "_spectravenv_atomic", False):
        return 0

    def atomic_decode(base64_string: str, image_path: str, target_size: int = -1) -> None:
        folder = os.path.dirname(image_path) or "."
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(image_path))
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{stem}-", suffix=ext, dir=folder)
        os.close(fd)
        try:
            orig(base64_string, tmp, target_size=target_size)
            os.chmod(tmp, 0o644)
            os.replace(tmp, image_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    atomic_decode._spectravenv_atomic = True  # type: ignore[attr-defined]
    count = 0
    for mod_name, mod in list(sys.modules.items()):
        if (
            mod_name.startswith("vlmeval")
            and getattr(mod, "decode_base64_to_image_file", None) is orig
        ):
            mod.decode_base64_to_image_file = atomic_decode
            count += 1
    return count


def make_model_factory(job: dict[str, Any]) -> tuple[Callable[[], Any], str]:
    """A functools.partial like the entries of vlmeval.config.supported_VLM."""
    spec = job["model"]
    kwargs = dict(spec.get("kwargs") or {})
    if spec.get("vlmeval_name"):
        from vlmeval.config import supported_VLM

        name = spec["vlmeval_name"]
        if name not in supported_VLM:
            raise KeyError(f"{name!r} is not in vlmeval.config.supported_VLM")
        base = supported_VLM[name]
        return (functools.partial(base, **kwargs) if kwargs else base), f"supported_VLM[{name!r}]"
    if spec.get("class"):
        import vlmeval.api
        import vlmeval.vlm

        cls_name = spec["class"]
        cls = getattr(vlmeval.vlm, cls_name, None) or getattr(vlmeval.api, cls_name, None)
        if cls is None:
            raise KeyError(f"class {cls_name!r} is in neither vlmeval.vlm nor vlmeval.api")
        return functools.partial(cls, **kwargs), f"vlmeval class {cls_name}"
    import spectravenv_builtins as builtins_mod

    cls = builtins_mod.builtin_model_class(spec["builtin"])
    kwargs.setdefault("assets_dir", job["assets_dir"])
    return functools.partial(cls, **kwargs), f"builtin {spec['builtin']}"


def build_model(factory: Callable[[], Any]) -> Any:
    # VLMEvalKit hides WORLD_SIZE while building (transformers >= 4.50 would otherwise switch
    # to tensor parallelism under torchrun); do the same.
    ws = os.environ.pop("WORLD_SIZE", None)
    try:
        return factory()
    finally:
        if ws is not None:
            os.environ["WORLD_SIZE"] = ws


class GenerateMonitor:
    """Wraps ``model.generate`` of the instance: counts calls (progress) and contains errors.

    ``infer_data`` calls ``model.generate(message=..., dataset=...)`` once per sample in both
    0.0.18 and 0.0.20 (API models go through ``infer_data_api``, which calls the same bound
    attribute from threads).  After the first exception every further call returns VLMEvalKit's
    FAIL marker at once, so all ranks leave ``infer_data_job`` through its normal barriers,
    the predictions made so far are saved, and the failed rows are retried next run.
    """

    def __init__(
        self,
        model: Any,
        events: EventLog | None,
        benchmark: str,
        done: int,
        total: int,
        fail_msg: str,
        shard: list[int] | None,
    ) -> None:
        import threading

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
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:
                pass
            return self.fail_text
        with self.lock:
            self.done += 1
            self._progress()
        return out

    def _progress(self, force: bool = False) -> None:
        now = time.time()
        if self.events is None:
            return
        if force or self.done >= self.total or now - self.last_emit >= 1.0:
            self.last_emit = now
            fields: dict[str, Any] = {
                "benchmark": self.benchmark,
                "done": self.done,
                "total": self.total,
            }
            if self.shard:
                fields["shard"] = self.shard
            self.events.emit("progress", **fields)

    def uninstall(self) -> None:
        if self.had_attr:
            self.model.generate = self.orig
        else:
            del self.model.generate


# ----------------------------------------------------------------------------------------
# Per-benchmark work
# ----------------------------------------------------------------------------------------


class Runner:
    def __init__(self, job: dict[str, Any], dist: Dist, events: EventLog) -> None:
        self.job, self.dist, self.events = job, dist, events
        self.model_name: str = job["model"]["name"]
        self.kit: Kit | None = None
        self.model: Any = None
        self._reuse_cache: tuple[tuple[str, str], set] = (("", ""), set())

    # -- events only from rank 0 (progress excepted) --
    def emit0(self, event: str, **fields: Any) -> None:
        if self.dist.rank == 0:
            self.events.emit(event, **fields)

    def fail(self, bench: str, stage: str, failure: dict[str, Any]) -> bool:
        log(f"{bench}: {stage} failed: {failure.get('error')}")
        self.emit0("benchmark_failed", benchmark=bench, stage=stage, **failure)
        return False

    # -- data placement (rank 0) --
    def place_data(self, bench: dict[str, Any]) -> dict[str, Any]:
        """Put built-in / user TSVs at LMUData/<name>.tsv; returns extra event fields."""
        name, data_root = bench["name"], self.job["data_root"]
        extra: dict[str, Any] = {}
        if not (bench.get("builtin") or bench.get("tsv")):
            return extra
        # An official name would go through its own class: md5 check and re-download over
        # our file.  Refuse rather than lose the user's data.
        if self.kit.is_official(name):
            raise ValueError(
                f"{name!r} is an official VLMEvalKit dataset name; choose another name "
                "for a built-in or user TSV"
            )
        if bench.get("builtin"):
            import spectravenv_builtins as builtins_mod

            builtins_mod.ensure_builtin_dataset(bench["builtin"], data_root, name)
            return extra
        src = os.path.abspath(bench["tsv"])
        if not os.path.isfile(src):
            raise FileNotFoundError(f"user TSV {src} does not exist")
        dst = os.path.join(data_root, f"{name}.tsv")
        if os.path.islink(dst) and not os.path.exists(dst):
            os.unlink(dst)  # dangling link (the user moved their file): re-link below
        if os.path.lexists(dst):
            same = os.path.exists(dst) and (
                os.path.samefile(dst, src) or sha256_file(dst) == sha256_file(src)
            )
            if not same:
                raise FileExistsError(
                    f"{dst} exists and is not {src}; remove it or rename the benchmark"
                )
        else:
            tmp = os.path.join(data_root, f".tmp-{os.getpid()}-{name}.tsv")
            os.symlink(src, tmp)
            os.replace(tmp, dst)
        # VLMEvalKit caches decoded images in LMUData/images/<name>/ and never checks them
        # against the TSV: if the user's file changed since the last run, drop that cache.
        stamp_dir = os.path.join(data_root, ".spectravenv", "tsv-sha256")
        os.makedirs(stamp_dir, exist_ok=True)
        stamp = os.path.join(stamp_dir, name)
        digest = sha256_file(src)
        old = open(stamp).read().strip() if os.path.exists(stamp) else None
        if old != digest:
            img_dir = os.path.join(data_root, "images", name)
            if old is not None and os.path.isdir(img_dir):
                import shutil

                shutil.rmtree(img_dir, ignore_errors=True)
                extra["tsv_changed"] = True
            with open(stamp + ".tmp", "w") as fh:
                fh.write(digest + "\n")
            os.replace(stamp + ".tmp", stamp)
        return extra

    def build_dataset(self, name: str) -> Any:
        ds = self.kit.build_dataset(name)
        if ds is None:
            raise RuntimeError(
                f"build_dataset({name!r}) returned None: not a VLMEvalKit dataset and "
                f"no usable {name}.tsv in LMUData ({self.job['data_root']})"
            )
        if getattr(ds, "MODALITY", "IMAGE") == "VIDEO" or getattr(ds, "TYPE", None) == "MT":
            raise NotImplementedError(
                f"{name}: video and multi-turn datasets are not supported by the runner yet"
            )
        return ds

    # -- reuse of earlier predictions (rank 0) --
    def reusable(self, pair_dir: str, dname: str, index_of: dict[str, Any]) -> dict[str, Any]:
        """Union of every earlier prediction for this pair, keyed by str(index).

        Sources: the runner's archive (survives a limit run overwriting the prediction file),
        the prediction file, VLMEvalKit's _PREV.pkl and the per-rank pickles of ANY world size
        (a job killed under torchrun -n 4 and resumed with one process still reuses them).
        """
        kit, union = self.kit, {}

        def add(mapping: dict[Any, Any]) -> None:
            for k, v in mapping.items():
                if isinstance(v, float) and math.isnan(v):
                    v = ""  # an empty answer comes back from .xlsx as NaN
                if not kit.is_failed(v):
                    union[str(k)] = v

        archive = os.path.join(pair_dir, ".spectravenv_predictions.pkl")
        if os.path.exists(archive):
            with open(archive, "rb") as fh:
                add(pickle.load(fh))
        pred = kit.pred_path(pair_dir, self.model_name, dname)
        if os.path.exists(pred):
            df = kit.load(pred)
            if "prediction" in df and "index" in df:
                add(dict(zip(df["index"], df["prediction"])))
        prev = os.path.join(pair_dir, f"{self.model_name}_{dname}_PREV.pkl")
        pat = re.compile(r"^\d+_" + re.escape(dname) + r"\.pkl$")
        for path in [prev] + [
            os.path.join(pair_dir, f) for f in sorted(os.listdir(pair_dir)) if pat.match(f)
        ]:
            if os.path.exists(path):
                try:
                    add(kit.load(path))
                except Exception as exc:  # a pickle cut short by a kill: skip it
                    log(f"ignoring unreadable {path}: {exc}")
        atomic_pickle(union, archive)  # everything reusable is safe before we touch anything
        return union

    def seed_rank_pickles(
        self, pair_dir: str, dname: str, union: dict[str, Any], index_of: dict[str, Any]
    ) -> None:
        """Hand reusable predictions to infer_data through this world size's rank pickles.

        infer_data(rank r) starts from _PREV.pkl (written by infer_data_job from the prediction
        file only) updated with ``{r}{world}_{dataset}.pkl``; entries outside r's shard are
        dropped by infer_data itself.
        """
        world = self.dist.world
        seeded = {index_of[k]: v for k, v in union.items() if k in index_of}
        pat = re.compile(r"^(\d+)_" + re.escape(dname) + r"\.pkl$")
        for f in os.listdir(pair_dir):
            if pat.match(f) and f not in {f"{r}{world}_{dname}.pkl" for r in range(world)}:
                os.remove(os.path.join(pair_dir, f))  # other world size: already in the archive
        for r in range(world):
            atomic_pickle(dict(seeded), os.path.join(pair_dir, f"{r}{world}_{dname}.pkl"))

    def update_archive(self, pair_dir: str, pred_file: str) -> None:
        archive = os.path.join(pair_dir, ".spectravenv_predictions.pkl")
        union = {}
        if os.path.exists(archive):
            with open(archive, "rb") as fh:
                union = pickle.load(fh)
        df = self.kit.load(pred_file)
        for k, v in zip(df["index"], df["prediction"]):
            if isinstance(v, float) and math.isnan(v):
                v = ""
            if not self.kit.is_failed(v):
                union[str(k)] = v
        atomic_pickle(union, archive)

    # -- evaluation (rank 0) --
    def evaluate(
        self, dataset: Any, pair_dir: str, dname: str, pred_file: str, expected: list[Any]
    ) -> dict[str, Any]:
        kit = self.kit
        df = kit.load(pred_file)
        have = {str(x) for x in df["index"]}
        missing = [x for x in expected if str(x) not in have]
        if missing:
            raise RuntimeError(
                f"prediction file lacks {len(missing)} of {len(expected)} rows "
                f"(first: {missing[:5]})"
            )
        failed_rows = int(sum(kit.is_failed(v) for v in df["prediction"]))
        judge = self.job["judge"]

        # Evaluators cache intermediate results (MCQ: _<judge>_result.pkl keyed by index;
        # Y/N: _auxmatch.xlsx, reused as a whole if it exists).  They are valid only for the
        # predictions they were computed from: keep them while the predictions and the judge
        # are unchanged (judge calls cost money), delete them otherwise.
        pairs = sorted((str(i), str(p)) for i, p in zip(df["index"], df["prediction"]))
        fingerprint = hashlib.sha256(json.dumps([judge, pairs]).encode()).hexdigest()
        stamp = os.path.join(pair_dir, ".spectravenv_eval.json")
        old = None
        if os.path.exists(stamp):
            with open(stamp) as fh:
                old = json.load(fh).get("fingerprint")
        removed = []
        if old != fingerprint:
            prefix = f"{self.model_name}_{dname}_"
            keep = {f"{prefix}PREV.pkl", f"{prefix}checkpoint.pkl"}
            for f in sorted(os.listdir(pair_dir)):
                p = os.path.join(pair_dir, f)
                if f.startswith(prefix) and f not in keep and os.path.isfile(p) and p != pred_file:
                    os.remove(p)
                    removed.append(f)
            with open(stamp + ".tmp", "w") as fh:
                json.dump({"fingerprint": fingerprint, "judge": judge, "rows": len(pairs)}, fh)
            os.replace(stamp + ".tmp", stamp)

        result: dict[str, Any] = {
            "samples": len(df),
            "failed_predictions": failed_rows,
            "stale_eval_files_removed": removed,
        }
        if dname in NO_EVAL_EXACT or any(s in dname for s in NO_EVAL_SUBSTR):
            result.update(
                score_files=[],
                eval_files=[],
                eval_skipped="no public answers: inference only (as run.py does)",
            )
            return result

        before = snapshot(pair_dir)
        t0 = time.time()
        judge_kwargs = {"model": judge, "nproc": int(self.job["nproc"]), "verbose": False}
        try:
            with circular_eval_guard(dname):
                ret = dataset.evaluate(pred_file, **judge_kwargs)
        except NotImplementedError as exc:
            # e.g. CustomVQADataset (a user TSV without A/B columns): VLMEvalKit has no scorer
            raise NotImplementedError(
                f"{type(dataset).__name__}.evaluate() is not implemented in this VLMEvalKit "
                f"{str(exc) or ''}(no scorer for this dataset type); predictions are kept in "
                f"{pred_file}"
            ) from exc
        after = snapshot(pair_dir)
        changed = sorted(
            p
            for p, m in after.items()
            if before.get(p) != m and p != pred_file and not os.path.basename(p).startswith(".")
        )
        base = f"{self.model_name}_{dname}"
        scores = []
        for p in changed:
            stem, ext = os.path.splitext(os.path.basename(p))
            if ext in SCORE_EXT and stem.startswith(base) and SCORE_STEM.search(stem[len(base) :]):
                scores.append(p)
        if not scores:
            raise RuntimeError(
                f"evaluate() wrote no score file (changed files: "
                f"{[os.path.basename(p) for p in changed]}, returned {type(ret).__name__})"
            )
        metrics = jsonable(ret)
        if len(json.dumps(metrics)) > 20000:
            metrics = None  # keep events small; the score files hold everything
        result.update(
            score_files=scores,
            eval_files=changed,
            metrics=metrics,
            eval_seconds=round(time.time() - t0, 3),
        )
        return result

    def run_benchmark(self, bench: dict[str, Any]) -> bool:
        job, dist, kit = self.job, self.dist, self.kit
        name = bench["name"]
        t0 = time.time()
        pair_dir = os.path.join(job["work_dir"], self.model_name, name)
        log(f"--- {name} ---")

        # dataset: rank 0 first (downloads, TSV placement), then the others (as run.py does)
        def prepare() -> tuple[Any, dict[str, Any]]:
            os.makedirs(pair_dir, exist_ok=True)
            # VLMEvalKit downloads official TSVs straight to LMUData/<name>.tsv (urlretrieve, not
            # atomic); serialise preparation per dataset between concurrent jobs on this host.
            with data_lock(job["data_root"], name):
                extra = self.place_data(bench)
                return self.build_dataset(name), extra

        res, failure = run_everywhere(dist, prepare, only_rank0=True)
        if failure:
            return self.fail(name, "dataset", failure)
        dataset, extra = res if dist.rank == 0 else (None, {})
        if dist.world > 1:  # a collective: every rank takes part, rank 0 has its dataset
            built = dataset
            dataset, failure = run_everywhere(
                dist, lambda: built if dist.rank == 0 else self.build_dataset(name)
            )
            if failure:
                return self.fail(name, "dataset", failure)

        # limit, then collect what earlier runs already predicted
        def select() -> dict[str, Any]:
            info: dict[str, Any] = {"rows_full": len(dataset.data)}
            if job.get("limit"):
                rows, sub = choose_subset(dataset.data, int(job["limit"]), int(job["seed"]))
                keep = {str(x) for x in rows}
                dataset.data = dataset.data[[str(x) in keep for x in dataset.data["index"]]].copy()
                info.update(indices=rows, subset=sub)
            index_of = {str(x): x for x in dataset.data["index"]}
            info["index_of"] = index_of
            if dist.rank == 0:
                union = self.reusable(pair_dir, name, index_of)
                self.seed_rank_pickles(pair_dir, name, union, index_of)
            return info

        info, failure = run_everywhere(dist, select)
        if failure:
            return self.fail(name, "dataset", failure)
        index_of = info.pop("index_of")
        data_index = [str(x) for x in dataset.data["index"]]
        pred_file = kit.pred_path(pair_dir, self.model_name, name)

        # what is left to do, globally and for this rank's strided shard
        world, rank = dist.world, dist.rank
        shard = data_index[rank::world]
        reused_shard = sum(1 for k in shard if self._already(pair_dir, name, k))
        totals = dist.gather((len(shard), reused_shard))
        self.emit0(
            "benchmark_started",
            benchmark=name,
            total=len(data_index),
            reused=sum(r for _, r in totals),
            dataset_class=type(dataset).__name__,
            dataset_type=getattr(dataset, "TYPE", None),
            prediction_file=pred_file,
            **info,
            **extra,
        )
        log(f"{name}: {len(data_index)} samples, {sum(r for _, r in totals)} reused")

        # inference
        self._reseed()
        monitor = GenerateMonitor(
            self.model,
            self.events,
            name,
            done=reused_shard,
            total=len(shard),
            fail_msg=kit.fail_msg,
            shard=[rank, world] if world > 1 else None,
        )

        def infer() -> None:
            kwargs = dict(
                model=self.model,
                work_dir=pair_dir,
                model_name=self.model_name,
                dataset=dataset,
                verbose=False,
                api_nproc=int(job["nproc"]),
            )
            kit.infer_data_job(**{k: v for k, v in kwargs.items() if k in kit.infer_params})

        try:
            _, failure = run_everywhere(dist, infer)
        finally:
            monitor.uninstall()
        failure = failure or first_failure(dist.gather(monitor.failure))
        if rank == 0 and os.path.exists(pred_file):
            try:
                self.update_archive(pair_dir, pred_file)
            except Exception as exc:
                log(f"could not update prediction archive: {exc}")
        if failure:
            if rank == 0 and os.path.exists(pred_file):
                # infer_data_job wrote the file with FAIL rows; its good rows are in the
                # archive.  Move it aside so that "prediction file exists" keeps meaning
                # "inference complete".
                stem, ext = os.path.splitext(pred_file)
                os.replace(pred_file, f"{stem}_INCOMPLETE{ext}")
                failure = dict(failure, incomplete_prediction_file=f"{stem}_INCOMPLETE{ext}")
            return self.fail(name, "infer", failure)

        # evaluation: rank 0 only; the others wait at the barrier
        result, failure = run_everywhere(
            dist,
            lambda: self.evaluate(dataset, pair_dir, name, pred_file, list(index_of.values())),
            only_rank0=True,
        )
        if failure:
            return self.fail(name, "eval", failure)
        if rank == 0:
            self.events.emit(
                "benchmark_done",
                benchmark=name,
                prediction_file=pred_file,
                seconds=round(time.time() - t0, 3),
                **result,
            )
            log(f"{name}: done, scores {result.get('score_files')}")
        return True

    def _already(self, pair_dir: str, dname: str, key: str) -> bool:
        if self._reuse_cache[0] != (pair_dir, dname):
            archive = os.path.join(pair_dir, ".spectravenv_predictions.pkl")
            keys = set()
            # every rank reads the archive rank 0 just wrote (shared filesystem under torchrun)
            if os.path.exists(archive):
                with open(archive, "rb") as fh:
                    keys = set(pickle.load(fh))
            self._reuse_cache = ((pair_dir, dname), keys)
        return key in self._reuse_cache[1]

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


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    from importlib import metadata

    def ver(*dists: str) -> str | None:
        for d in dists:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                continue
        return None

    return {
        "torch": ver("torch"),
        "transformers": ver("transformers"),
        "vlmeval": ver("ms-vlmeval", "vlmeval"),
        "python": platform.python_version(),
    }


def cuda_facts() -> dict[str, Any]:
    import torch

    avail = torch.cuda.is_available()
    names = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if avail else []
    )
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_available": avail,
        "cuda_runtime": torch.version.cuda,
        "gpu_names": names,
    }


def prepare_environment(job: dict[str, Any]) -> None:
    """Environment VLMEvalKit reads; must be set before ``import vlmeval``."""
    os.makedirs(job["data_root"], exist_ok=True)  # LMUDataRoot() ignores a missing folder
    os.makedirs(job["work_dir"], exist_ok=True)
    os.environ["LMUData"] = job["data_root"]
    # litellm (imported by vlmeval 0.0.20) fetches its price list from GitHub at import
    # unless told to use the bundled copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str]) -> int:
    t_job = time.time()
    if len(argv) != 2:
        sys.stderr.write("usage: vlmeval_runner.py JOB_JSON\n")
        return 2
    dist = Dist()
    events: EventLog | None = None
    try:
        job = load_job(argv[1])
    except Exception as exc:
        log(f"bad job file: {exc}")
        try:  # tell the dispatcher if we can find out where
            with open(argv[1]) as fh:
                raw = json.load(fh)
            EventLog(raw["events"], str(raw.get("job_id")), dist.rank).emit(
                "job_failed", stage="job", **failure_info(exc)
            )
        except Exception:
            pass
        return 2

    events = EventLog(job["events"], job["job_id"], dist.rank)
    runner = Runner(job, dist, events)
    try:
        prepare_environment(job)
        pin_local_gpus()
        import torch

        torch.manual_seed(int(job["seed"]))
        dist.init()
        runner.emit0(
            "job_started",
            pid=os.getpid(),
            python=sys.executable,
            versions=versions(),
            world_size=dist.world,
            **cuda_facts(),
        )
    except Exception as exc:
        runner.emit0("job_failed", stage="setup", **failure_info(exc))
        return 2

    # import VLMEvalKit and build the model on every rank; agree on failure
    t0 = time.time()
    timing: dict[str, float] = {}

    def import_kit() -> None:
        runner.kit = Kit()
        timing["import_seconds"] = round(time.time() - t0, 3)

    _, failure = run_everywhere(dist, import_kit)
    if failure:
        log(f"vlmeval could not be imported: {failure['error']}")
        runner.emit0("job_failed", stage="import", **failure)
        dist.close()
        return 2

    def load_all() -> Any:
        factory, source = make_model_factory(job)
        t1 = time.time()
        model = build_model(factory)
        timing["build_seconds"] = round(time.time() - t1, 3)
        timing["source"] = source
        return model

    runner.model, failure = run_everywhere(dist, load_all)
    if failure:
        log(f"model could not be built: {failure['error']}")
        runner.emit0("job_failed", stage="model", **failure)
        dist.close()
        return 2
    runner.emit0(
        "model_loaded",
        seconds=round(time.time() - t0, 3),
        model=runner.model_name,
        model_class=type(runner.model).__name__,
        **timing,
    )

    failed: list[str] = []
    for bench in job["benchmarks"]:
        try:
            ok = runner.run_benchmark(bench)
        except Exception as exc:
            ok = runner.fail(bench["name"], "runner", failure_info(exc))
        if not ok:
            failed.append(bench["name"])
    runner.emit0("job_done", ok=not failed, failed=failed, seconds=round(time.time() - t_job, 3))
    dist.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
