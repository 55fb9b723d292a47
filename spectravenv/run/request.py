"""The request, checked before anything is made: names, options, the run to continue, its
settings, the secrets and the GPU pool."""

from __future__ import annotations

import os
from pathlib import Path

from spectravenv import secrets as secrets_mod
from spectravenv.catalog.entries import Catalog
from spectravenv.errors import SpectravenvError
from spectravenv.plan import backends, gpus, judges
from spectravenv.plan.credentials import Lookup
from spectravenv.run import rundir
from spectravenv.run.state import Eval


def check_request(st: Eval) -> None:
    req = st.req
    if req.limit is not None and req.limit <= 0:
        raise SpectravenvError(f"--limit must be a positive number of samples, not {req.limit}")
    if req.assume_gpus and not (req.dry_run or st.on_slurm):
        raise SpectravenvError("--assume-gpus plans for a machine that is not here: use it with --dry-run")
    if req.run_name is not None and ("/" in req.run_name or req.run_name in ("", ".", "..")):
        raise SpectravenvError(f"--run-name {req.run_name!r} must be a plain folder name")


def choose_run(st: Eval) -> None:
    """The run to continue (--resume, or an existing --run-name); a new one is made later."""
    req = st.req
    if req.output_dir.exists() and not req.output_dir.is_dir():
        raise SpectravenvError(f"--output-dir {req.output_dir} is a file; give a folder (default ./outputs)")
    if req.resume is not None:
        path = Path(req.resume) if req.resume else rundir.latest_run(req.output_dir)
        if not rundir.is_run(path):
            raise SpectravenvError(f"{path} is not a spectravenv run (no run.json); nothing to resume")
        st.run = rundir.RunDir(path.absolute())
    elif req.run_name:
        candidate = rundir.RunDir((req.output_dir / req.run_name).absolute())
        if rundir.is_run(candidate.path):
            st.run = candidate  # the same name again: continue that run
        elif candidate.path.exists() and any(candidate.path.iterdir()):
            raise SpectravenvError(f"{candidate.path} exists and is not a spectravenv run; choose another --run-name")
    if st.run is not None:
        st.existing = st.run.manifest()


def classify_names(cat: Catalog, names: list[str], models: list[str], data: list[str]) -> tuple[list[str], list[str]]:
    """Free names, -m/--model and -d/--data as (models, benchmarks): `eval` and `prefetch` alike."""
    found_models, found_benchmarks = cat.classify(names)
    found_models += [cat.model(m).name for m in models]
    found_benchmarks += [n for b in data for n in cat.benchmark_names(b)]  # a suite: its benchmarks
    return found_models, found_benchmarks


def matrix(st: Eval) -> None:
    cat, req = st.catalog, st.req
    models, benchmarks = classify_names(cat, req.names, req.models, req.data)
    if st.existing is not None and not models and not benchmarks:
        models, benchmarks = list(st.existing["models"]), list(st.existing["benchmarks"])
        for name in models:
            cat.model(name)  # a model the run had, gone from the catalog: one clear error
        for name in benchmarks:
            cat.benchmark(name)
    if not models or not benchmarks:
        missing = "model" if not models else "benchmark"
        raise SpectravenvError(f"no {missing} given; name at least one model and one benchmark, e.g. "
                               "`spectravenv eval demo-tiny-llava DemoMCQ`")  # fmt: skip
    st.models, st.benchmarks = list(dict.fromkeys(models)), list(dict.fromkeys(benchmarks))
    for note in backends.apply(cat, st.models, req.backend, st.paths):
        st.say(note)


def settle(st: Eval) -> None:
    """Limit, judge options and seed of this run; a continued run keeps the ones it was made
    with (judge None: each benchmark's own judge, see plan/judges.py)."""
    req, old = st.req, st.existing
    given = {"limit": req.limit, "judge": req.judge, "judge_base_url": req.judge_base_url, "seed": req.seed}
    if old is None:
        st.settings = {**given, "seed": req.seed or 0}
        return
    st.settings = {k: old.get(k) for k in given}
    for key, value in given.items():
        if value is not None and value != st.settings[key]:
            was = st.settings[key] if st.settings[key] is not None else "its default"
            raise SpectravenvError(
                f"{st.run.path} was made with --{key.replace('_', '-')} {was}, not {value}; scores of "
                f"different settings never mix: start a new run (another --run-name)"
            )


def read_secrets(st: Eval) -> None:
    st.secrets = secrets_mod.load(st.req.env_file, required=st.req.env_file_given)
    for warning in st.secrets.warnings():
        st.say(f"spectravenv: warning: {warning}")


def lookup(st: Eval) -> Lookup:
    """Where the jobs' variables come from: the .env file, then our environment."""
    return Lookup(st.secrets, os.environ, st.req.env_file)


def choose_judges(st: Eval) -> None:
    """Each benchmark's judge (plan/judges.py), said in one line; a continued run keeps the
    judges it chose. Whether each can work is checked for the pairs that will run (check_keys)."""
    found = lookup(st)
    opts = judges.options(st.settings["judge"], st.settings["judge_base_url"], found)
    kept = {b: r.get("model") for b, r in ((st.existing or {}).get("judges") or {}).items()}
    for name in st.benchmarks:
        bench = st.catalog.benchmark(name)
        st.judges[name], problem = judges.choose(bench, opts, found, kept.get(name))
        if problem:
            st.judge_problems[name] = problem
    line = judges.announce(st.judges)
    if line:
        st.say(line)
    st.settings["judges"] = {**((st.existing or {}).get("judges") or {}),
                             **{b: j.record() for b, j in st.judges.items()}}  # fmt: skip


def gpu_pool(st: Eval) -> None:
    req = st.req
    if st.on_slurm:
        # The compute nodes' GPUs are not visible from here: plan on a description of them
        # (--assume-gpus, default a node of 8 x 80 GB) to size each job's request.
        st.inventory = gpus.assumed(req.assume_gpus or "8x80")
    else:
        st.inventory = gpus.assumed(req.assume_gpus) if req.assume_gpus else gpus.query()
    st.pool = gpus.visible(st.inventory, {} if (req.assume_gpus or st.on_slurm) else None)
    if req.gpus:
        st.pool = gpus.select(st.pool, req.gpus)

