"""The runner's entry point: a worker's job file in, events out, exit code for the dispatcher.

    <env>/bin/python runners/vlmeval_runner.py JOB_JSON

One process, one model (on one GPU, several with device_map="auto", or the CPU), as many units of
it as it can claim. Exit codes: 0 nothing failed here, 1 some benchmark failed, 2 a job-level
failure, 143 stopped by SIGTERM and 130 by SIGINT (after releasing its claims and locks). The
exit code alone is never trusted by the dispatcher: the events say what happened.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

from . import heartbeat, redact, serve, served, shutdown
from .errors import failure_info
from .fingerprint import checkpoint_identity
from .kit import (
    Kit,
    build_model,
    compat_notes,
    cuda_facts,
    log,
    model_factory,
    plain_parse_response,
    sdpa_for_flash_attention,
    seconds_since_process_start,
    versions,
)
from .protocol import SCHEMA, EventLog
from .runner import Worker

JOB_SCHEMA = 3


def load_job(path: str) -> dict[str, Any]:
    with open(path) as fh:
        job = json.load(fh)
    if job.get("schema") != JOB_SCHEMA:
        raise ValueError(f"job schema {job.get('schema')!r} is not {JOB_SCHEMA}")
    for key in ("job_id", "model", "benchmarks", "work_dir", "events", "data_root", "assets_dir", "units_dir"):
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
    # Secrets are referenced, never written, in job files; their values are in our environment.
    job["model"] = redact.unseal(job["model"], os.environ)
    return job


def prepare_environment(job: dict[str, Any]) -> None:
    """Environment VLMEvalKit reads; must be set before `import vlmeval`."""
    os.makedirs(job["data_root"], exist_ok=True)  # LMUDataRoot() ignores a missing folder
    os.makedirs(job["work_dir"], exist_ok=True)
    os.environ["LMUData"] = job["data_root"]
    # litellm (imported by vlmeval) fetches its price list from GitHub at import unless told
    # to use the bundled copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # ms-vlmeval (ModelScope's VLMEvalKit) downloads datasets kept on a hub (Video-MME, MVBench,
    # ...) from ModelScope unless this is 0, and no env installs modelscope: from the Hugging
    # Face hub, as upstream VLMEvalKit does (HF_ENDPOINT and HF_HOME then apply). A user's own
    # setting wins.
    os.environ.setdefault("VLMEVALKIT_USE_MODELSCOPE", "0")


def _report_bad_job(path: str, exc: Exception, rank: int, redactor: redact.Redactor) -> None:
    """Tell the dispatcher, if the job file says where its events go."""
    try:
        with open(path) as fh:
            raw = json.load(fh)
        EventLog(raw["events"], str(raw.get("job_id")), rank, redactor).emit(
            "job_failed", stage="job", **failure_info(exc)
        )
    except Exception:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: vlmeval_runner.py JOB_JSON\n")
        return 2
    shutdown.stop_on_sigterm()
    redactor = redact.from_environment()
    try:
        job = load_job(argv[1])
    except Exception as exc:
        log(f"bad job file: {redactor.text(str(exc))}")
        _report_bad_job(argv[1], exc, 0, redactor)
        return 2
    events = EventLog(job["events"], job["job_id"], 0, redactor)
    worker = Worker(job, events, heartbeat.interval())
    heartbeat.install(worker.heartbeat)  # a wrapper's own long steps (the demo's training) beat too
    try:
        return run(job, worker, redactor)
    except (shutdown.Terminated, KeyboardInterrupt) as exc:
        # Every `finally` on the way here released what it held: claims, locks.
        code = shutdown.EXIT_CODE if isinstance(exc, shutdown.Terminated) else 130
        log(f"{exc or 'interrupted by SIGINT'}: its claims and locks are released")
        sys.stdout.flush()
        sys.stderr.flush()
        # Not sys.exit: threads of an API model's pool would keep the process until their calls end.
        os._exit(code)


def run(job: dict[str, Any], worker: Worker, redactor: redact.Redactor) -> int:
    try:
        return run_job(job, worker, redactor)
    finally:
        if worker.server is not None:
            worker.server.stop()  # a served model's engine never outlives its worker (serve.py)


def run_job(job: dict[str, Any], worker: Worker, redactor: redact.Redactor) -> int:
    try:
        prepare_environment(job)
        import torch

        torch.manual_seed(int(job["seed"]))
        t_job = worker.emit("job_started", pid=os.getpid(), host=socket.gethostname(), python=sys.executable, versions=versions(),
                            world_size=1, schema=SCHEMA, startup_seconds=seconds_since_process_start(),
                            model=worker.model_name, **cuda_facts())  # fmt: skip
    except Exception as exc:
        worker.emit("job_failed", stage="setup", **failure_info(exc))
        return 2
    t0 = time.time()
    try:
        with worker.heartbeat.phase("import", "import vlmeval"):
            worker.kit = Kit()
    except Exception as exc:
        log(f"vlmeval could not be imported: {redactor.text(str(exc))}")
        worker.emit("job_failed", stage="import", **failure_info(exc))
        return 2
    timing: dict[str, Any] = {"import_seconds": round(time.time() - t0, 3)}
    try:
        with worker.heartbeat.phase("model", worker.model_name):
            parsed = load_model(job, worker, timing)
    except Exception as exc:
        log(f"model could not be built: {redactor.text(str(exc))}")
        worker.emit("job_failed", stage="model", **failure_info(exc))
        return 2
    worker.emit("model_loaded", seconds=round(time.time() - t0, 3), model=worker.model_name,
                model_class=type(worker.model).__name__, **timing)  # fmt: skip
    failed = worker.work()
    # The job's one duration: from job_started to job_done, as the report and the summary log
    # compute it from these two events.
    end = time.time()
    # parse_response is only called while answering, so its note comes with the job's end.
    extra = {"compat": compat_notes([], parsed)} if parsed else {}
    worker.emit("job_done", at=end, ok=not failed, failed=failed, seconds=round(end - t_job, 3), **extra)
    return 1 if failed else 0


def load_model(job: dict[str, Any], worker: Worker, timing: dict[str, Any]) -> list[str]:
    """Build the model into the worker; returns the list that records parse_response fixes."""
    if (job["model"].get("backend") or "hf") == "vllm":
        load_served(job, worker, timing)
        return []
    factory, source, kwargs = model_factory(job["model"], job["assets_dir"])
    swapped = sdpa_for_flash_attention()
    parsed = plain_parse_response()
    t1 = time.time()
    worker.model = build_model(factory, worker.model_name)
    timing.update(build_seconds=round(time.time() - t1, 3), source=source)
    if swapped:
        timing["attention"] = compat_notes(swapped, [])
    # The checkpoint it really loaded (after a first download the hub revision is known).
    path = getattr(worker.model, "model_path", None) or kwargs.get("model_path")
    worker.checkpoint = checkpoint_identity(path if isinstance(path, str) else None, os.environ.get("HF_HOME"))
    timing.update(backend="hf", generation=served.generation_facts(worker.model, kwargs))
    return parsed


def load_served(job: dict[str, Any], worker: Worker, timing: dict[str, Any]) -> None:
    """Start the engine server on the checkpoint and make the worker's model its client (see
    svrunner.served): the demo's wrapper is built for its prompts and its checkpoint."""
    spec, t1 = job["model"], time.time()
    kwargs, prompter, demo = dict(spec.get("kwargs") or {}), None, bool(spec.get("builtin"))
    if demo:
        factory, _, kwargs = model_factory(spec, job["assets_dir"])
        prompter = build_model(factory, worker.model_name)  # trains the checkpoint at first use
    checkpoint = getattr(prompter, "model_path", None) or kwargs.get("model_path")
    if not checkpoint:
        raise ValueError(f"{worker.model_name}: a served model needs kwargs.model_path (the checkpoint vLLM loads)")
    engine = served.engine_spec(job, checkpoint, demo)
    worker.server = serve.engine_server(engine, name=worker.model_name)
    worker.server.start()
    tokens, nproc = served.max_new_tokens(prompter, kwargs), int(job["nproc"])
    worker.model = served.client(worker.server, prompter, tokens, engine.max_model_len)
    worker.checkpoint = checkpoint_identity(checkpoint, os.environ.get("HF_HOME"))
    timing.update(build_seconds=round(time.time() - t1, 3), source=f"{checkpoint} served by {spec.get('engine')}",
                  backend="vllm", engine_start_seconds=worker.server.started_seconds,
                  generation={"max_new_tokens": tokens, "temperature": 0, "requests_in_flight": nproc,
                              "engine": spec.get("engine")})  # fmt: skip
