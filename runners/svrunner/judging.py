"""A pair's evaluation with the judge its job file names, watched, so that what really scored the
pair is known (runs inside the env; stdlib only at import).

The job file gives each benchmark a judge spec (spectravenv/plan/judges.py): VLMEvalKit's judge
name, run.py's settings (retry, timeout), the endpoint (`api_base`) and `LOCAL_LLM` where the
user chose them, and the identity that goes into the pair's fingerprint. `dataset.evaluate`
gets exactly run.py's judge keyword arguments; nothing of VLMEvalKit is changed on disk.

While it runs, VLMEvalKit's `build_judge` is wrapped in memory (every module that imported it),
and so are the `working`, `generate` and `generate_inner` of each judge it builds, whatever the
dataset class. That shows what VLMEvalKit does not say:
- a judge that is "not working": most evaluators then fall back to exact matching with a
  warning in the log (image_mcq, image_yorn, image_shortqa, chartbench, flames, ...). The pair
  is evaluated again with `exact_matching`, so its files carry the name of what really scored
  it, and its record (and fingerprint) says `exact_matching` instead of the judge, and why;
- judge calls that failed after all their retries: VLMEvalKit counts those rows as wrong (or
  gives up, where an evaluator asserts a working judge). The pair fails with the judge's own
  error, and what that evaluation wrote is removed, so a retry asks the judge again instead of
  reading its failures back from VLMEvalKit's caches.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from . import redact

EXACT = "exact_matching"
LOCAL_LLM = "LOCAL_LLM"
RUN_PY = {"verbose": False, "retry": 6, "timeout": 600}  # run.py's flags' defaults


class JudgeFailed(RuntimeError):
    """The judge did not answer (after VLMEvalKit's retries): the pair has no trustworthy score."""


def spec_of(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The judge spec of a benchmark of the job (secrets in it resolved from the environment)."""
    bench = next((b for b in job["benchmarks"] if b["name"] == name), {})
    spec = bench.get("judge") or {"model": job.get("judge") or EXACT}
    return redact.unseal(spec, os.environ)


def fingerprint_part(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The pair's judge part of its fingerprint, as the dispatcher computed it."""
    return {"judge": spec_of(job, name).get("identity")}


def inference_parts(parts: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint parts saved predictions depend on: all but the judge (a new judge
    re-scores the same predictions, it does not make them)."""
    return {k: v for k, v in parts.items() if k != "judge"}


def as_judged(parts: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The pair's fingerprint with the judge that really scored it (taken out of the result)."""
    if "judge_identity" not in result:
        return parts
    return {**parts, "judge": result.pop("judge_identity")}


def judge_kwargs(spec: dict[str, Any], nproc: int) -> dict[str, Any]:
    """What run.py passes to `dataset.evaluate` for this judge."""
    kwargs: dict[str, Any] = {**RUN_PY, "model": spec["model"], "nproc": nproc}
    for key in ("retry", "timeout", "api_base"):
        if spec.get(key) is not None:
            kwargs[key] = spec[key]
    return kwargs


def _error_text(ret_code: Any, log: Any) -> str:
    body = getattr(log, "text", log)
    text = " ".join(str(body).split())[:300] if body not in (None, "") else ""
    code = f"HTTP {ret_code}" if isinstance(ret_code, int) and ret_code >= 100 else f"return code {ret_code}"
    return f"{code}: {text}" if text else code


class Watch:
    """What the judges VLMEvalKit builds during one evaluation do (thread-safe: evaluators call
    a judge from a thread pool)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.built: list[str] = []  # "OpenAIWrapper gpt-4o-mini-2024-07-18 at host"
        self.build_error: str | None = None
        self.not_working: str | None = None  # why working() said no
        self.calls = 0
        self.failed = 0
        self.last_error: str | None = None
        self.in_working = threading.local()
        self.restore: list[tuple[Any, str, Any]] = []
        self.before: dict[str, int] = {}  # the pair folder's files before the evaluation

    # -- the wrappers --
    def wrap_build(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def build_judge(**kwargs: Any) -> Any:
            try:
                judge = orig(**kwargs)
            except Exception as exc:
                with self.lock:
                    self.build_error = f"{type(exc).__name__}: {exc}"
                raise
            self.watch_judge(judge)
            return judge

        build_judge._spectravenv_watch = True  # type: ignore[attr-defined]
        return build_judge

    def watch_judge(self, judge: Any) -> None:
        version = getattr(judge, "model", None) or getattr(judge, "model_path", None)
        where = getattr(judge, "api_base", None)
        with self.lock:
            self.built.append(f"{type(judge).__name__} {version}" + (f" at {_host(where)}" if where else ""))
        for attr, make in (("working", self._working), ("generate", self._generate),
                           ("generate_inner", self._generate_inner)):  # fmt: skip
            orig = getattr(judge, attr, None)
            if callable(orig):
                setattr(judge, attr, make(orig, judge))

    def _working(self, orig: Callable[..., Any], judge: Any) -> Callable[..., Any]:
        def working(*args: Any, **kwargs: Any) -> Any:
            self.in_working.on = True
            try:
                ok = orig(*args, **kwargs)
            finally:
                self.in_working.on = False
            if not ok:
                with self.lock:
                    self.not_working = self.last_error or "it gave no answer to a test prompt"
            return ok

        return working

    def _generate(self, orig: Callable[..., Any], judge: Any) -> Callable[..., Any]:
        fail = str(getattr(judge, "fail_msg", "Failed to obtain answer via API."))

        def generate(*args: Any, **kwargs: Any) -> Any:
            out = orig(*args, **kwargs)
            if not getattr(self.in_working, "on", False):
                answer = out.get("prediction") if isinstance(out, dict) else out
                with self.lock:
                    self.calls += 1
                    self.failed += isinstance(answer, str) and fail.strip() in answer
            return out

        return generate

    def _generate_inner(self, orig: Callable[..., Any], judge: Any) -> Callable[..., Any]:
        def generate_inner(*args: Any, **kwargs: Any) -> Any:
            try:
                out = orig(*args, **kwargs)
            except Exception as exc:
                with self.lock:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            if isinstance(out, tuple) and len(out) == 3 and out[0] != 0:
                with self.lock:
                    self.last_error = _error_text(out[0], out[2])
            return out

        return generate_inner

    # -- installed while one evaluation runs --
    def __enter__(self) -> Watch:
        import vlmeval.dataset.utils.judge_util as judge_util

        orig = judge_util.build_judge
        wrapped = self.wrap_build(orig)
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("vlmeval") and getattr(mod, "build_judge", None) is orig:
                self.restore.append((mod, "build_judge", orig))
                mod.build_judge = wrapped
        return self

    def __exit__(self, *exc: Any) -> None:
        for mod, attr, orig in self.restore:
            setattr(mod, attr, orig)
        self.restore.clear()

    # -- what it saw --
    def failure(self, name: str) -> str | None:
        if self.failed:
            return (f"judge {name} failed {self.failed} of {self.calls} calls after VLMEvalKit's retries: "
                    f"{self.last_error or 'no answer'}")  # fmt: skip
        return None

    def fallback(self, name: str) -> str | None:
        """Why VLMEvalKit went on without the judge it was given, or None."""
        if self.not_working and name == EXACT:
            # An evaluator that always asks a judge, given none: the catalog's judge_need is wrong.
            return (f"this benchmark's scoring asks a judge even when given exact_matching ({self.not_working}); "
                    "give --judge NAME")  # fmt: skip
        if self.not_working:
            return f"judge {name} not working: {self.not_working}"
        if self.build_error:
            return f"judge {name} could not be built: {self.build_error}"
        return None


def _host(url: Any) -> str:
    parts = urlsplit(str(url))
    return parts.netloc.rsplit("@", 1)[-1] or str(url)


def _written(folder: str, before: dict[str, int], keep: str) -> list[str]:
    out = []
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if name.startswith(".") or p == keep or not os.path.isfile(p):
            continue
        if before.get(p) != os.stat(p).st_mtime_ns:
            out.append(p)
    return out


def _files(folder: str) -> dict[str, int]:
    return {os.path.join(folder, f): os.stat(os.path.join(folder, f)).st_mtime_ns
            for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))}  # fmt: skip


class local_llm:
    """LOCAL_LLM as the spec says, during the evaluation only (build_judge reads it)."""

    def __init__(self, value: str | None) -> None:
        self.value, self.old = value, os.environ.get(LOCAL_LLM)

    def __enter__(self) -> None:
        if self.value:
            os.environ[LOCAL_LLM] = self.value
        else:
            os.environ.pop(LOCAL_LLM, None)

    def __exit__(self, *exc: Any) -> None:
        if self.old is None:
            os.environ.pop(LOCAL_LLM, None)
        else:
            os.environ[LOCAL_LLM] = self.old


def _once(dataset: Any, pred_file: str, kwargs: dict[str, Any], spec: dict[str, Any]) -> tuple[Any, Watch]:
    watch = Watch()
    folder = os.path.dirname(pred_file)
    before = watch.before = _files(folder)
    try:
        with watch, local_llm(spec.get("local_llm")):
            ret = dataset.evaluate(pred_file, **dict(kwargs))
    except Exception as exc:
        problem = watch.failure(spec["model"]) or watch.fallback(spec["model"])
        if problem:
            _remove(_written(folder, before, pred_file))
            raise JudgeFailed(f"{problem} ({type(exc).__name__}: {exc})") from exc
        raise
    problem = watch.failure(spec["model"])
    if problem:
        _remove(_written(folder, before, pred_file))
        raise JudgeFailed(problem + "; the scores would count those rows as wrong")
    return ret, watch


def _remove(paths: list[str]) -> None:
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass


def evaluate(dataset: Any, pred_file: str, spec: dict[str, Any], nproc: int, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """`dataset.evaluate` with the spec's judge; returns what it returned and the pair's judge
    record: `judged_by`, the calls made, a note where VLMEvalKit fell back, and the identity for
    the fingerprint (the judge that really scored the pair)."""
    name = spec["model"]
    ret, watch = _once(dataset, pred_file, judge_kwargs(spec, nproc), spec)
    record: dict[str, Any] = {"judge": name, "judged_by": name, "judge_calls": watch.calls}
    if watch.built:
        record["judge_client"] = watch.built[0]
    why = watch.fallback(name) if name != EXACT else None
    if why is None:
        return ret, {**record, "judge_identity": spec.get("identity")}
    # VLMEvalKit scored without the judge. Do it again as exact matching, so that the files
    # carry the name of what scored the pair, and say so everywhere.
    log(f"{dataset.dataset_name}: {why}; VLMEvalKit fell back to exact matching: evaluating again as "
        "exact_matching so that files and records name what really scored it")  # fmt: skip
    _remove(_written(os.path.dirname(pred_file), watch.before, pred_file))
    ret, _ = _once(dataset, pred_file, judge_kwargs({"model": EXACT}, nproc), {"model": EXACT})
    note = f"judged by exact matching: {why}"
    identity = {"model": EXACT, "instead_of": name, "reason": why}
    return ret, {**record, "judged_by": EXACT, "judge_note": note, "judge_identity": identity}
