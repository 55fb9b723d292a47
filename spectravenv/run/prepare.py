"""The run folder and the plan: one dispatcher per run, what is done already (fingerprints), what
must be on disk for an offline run, and what `--dry-run` shows."""

from __future__ import annotations

import os

from svrunner import fingerprint
from svrunner.locking import LockBusy

from spectravenv.envs import venv as envs
from spectravenv.errors import SpectravenvError
from spectravenv.plan import backends, credentials, show, stats
from spectravenv.plan import jobs as plan
from spectravenv.run import events, rundir
from spectravenv.run import jobfile as jobfiles
from spectravenv.run.finish import finish
from spectravenv.run.launch import limits
from spectravenv.run.request import lookup
from spectravenv.run.state import Eval


def lock_run(st: Eval) -> None:
    """One dispatcher per run: a second `eval` of a run is refused while the first works on it,
    and so is a resume while Slurm jobs of the run are still queued or running."""
    if st.req.dry_run or st.run is None:
        return
    st.lock = st.run.lock()
    try:
        st.lock.acquire(0, advice="wait for it to finish (`spectravenv status` shows where it stands)")
    except LockBusy as e:
        st.lock = None
        raise SpectravenvError(f"another spectravenv is working on this run: {e}") from None
    st.existing = st.run.manifest()  # as it is now that no one else changes it
    if st.existing and st.existing.get("slurm_jobs"):
        from spectravenv.run import slurm

        live = slurm.live_jobs(list(st.existing["slurm_jobs"].values()))
        if live:
            ids = " ".join(sorted(live))
            raise SpectravenvError(
                f"{st.run.path} still has Slurm jobs queued or running ({ids}); wait for them "
                f"(`spectravenv status {st.run.path}`) or cancel them (`scancel {ids}`), then resume"
            )


def create_run(st: Eval) -> None:
    """A new run's folder, made only now that the request is known to be good: atomically
    (mkdir fails if it exists, so two evals started in the same second get two folders)."""
    if st.run is not None:
        return
    st.run, st.created = rundir.create(st.req.output_dir, st.req.run_name)
    lock_run(st)
    if not st.created:  # another eval made a run of this name a moment ago: plan against it
        make_plan(st)


def make_plan(st: Eval) -> None:
    done = done_pairs(st) if st.existing is not None and st.run is not None else set()
    # Measured speeds on this GPU type (from earlier runs) replace the catalog's guesses.
    measured = stats.apply(st.catalog, stats.load(st.paths), st.pool[0].name if st.pool else None)
    st.plan = plan.build(measured, st.models, st.benchmarks, st.pool, limit=st.settings["limit"],
                         done=done, strict=not st.req.dry_run, skip_unsupported=st.req.skip_unsupported)  # fmt: skip
    if st.run is not None:
        from spectravenv.run import work

        if not st.req.dry_run:
            # Its units are done under the old fingerprint: forget them, so workers infer it
            # again (the runner then moves the pair's old files to .superseded/).
            for model, bench in st.stale:
                work.forget(st.run, model, bench)
        work.keep_divisions(st.run, st.plan.jobs)
    st.states = {j.env.name: envs.status(j.env, st.paths) for j in st.plan.jobs}
    # A served model's engine env is built on demand like the model's own (plan/backends.py).
    engine = backends.engine_env([j.model for j in st.plan.jobs])
    if engine is not None:
        st.states[engine] = envs.status(st.catalog.envs[engine], st.paths)


def done_pairs(st: Eval) -> set[tuple[str, str]]:
    """Pairs finished in this run whose score files are there and whose fingerprint still holds
    (same settings, env, model, checkpoint and data); the others run again, and we say why."""
    done = set()
    st.stale = []
    keys: dict[str, str] = {}
    for (model, bench), o in events.outcomes(st.run).items():
        if o.status != "done" or not all(st.run.resolve(f).exists() for f in o.score_files):
            continue
        m = st.catalog.models.get(model)
        if m is None or bench not in st.benchmarks or model not in st.models:
            continue
        env = st.catalog.envs[m.env]
        if env.name not in keys:
            keys[env.name] = envs.env_key(env)
        now = jobfiles.host_fingerprint(m, env, bench, keys[env.name], st.settings, st.secrets, st.paths,
                                        st.judges[bench].identity())  # fmt: skip
        changed = fingerprint.changes(o.fingerprint or {}, now) if o.fingerprint else ["unknown"]
        if changed:
            st.say(f"{model} x {bench} runs again: {', '.join(changed)} changed since it was evaluated")
            st.stale.append((model, bench))
            continue
        done.add((model, bench))
    return done


def check_keys(st: Eval) -> None:
    """What the pairs that will run need from the environment, before anything is built: an API
    model's key (or endpoint), a judge's key. One line naming the variable and the .env file it
    was looked for in; a key found only in our environment is masked like the .env ones."""
    found = lookup(st)
    models = list({j.model.name: j.model for j in st.plan.todo}.values())
    try:
        used = credentials.check_models(models, found)
    except SpectravenvError as e:
        used = _refuse(st, str(e), credentials.used_by(models))
    for bench in dict.fromkeys(b.name for j in st.plan.todo for b in j.benchmarks):
        if bench in st.judge_problems:
            _refuse(st, st.judge_problems[bench], set())
        used.update(v for v in (st.judges[bench].key_var,) if v)
    st.secrets = found.with_environment(used)


def _refuse(st: Eval, why: str, used: set[str]) -> set[str]:
    """A run that cannot work is refused; a dry run shows its plan and says why it would be."""
    if not st.req.dry_run:
        raise SpectravenvError(why)
    st.refusals.append(why)
    return used


def check_offline(st: Eval) -> None:
    """The TSVs and checkpoints the plan's jobs need: fetched first with --prefetch; in an
    offline run all of them must be on disk, or nothing starts (offline.py). After the plan
    (only what will run is needed), before any folder is made or env built."""
    from spectravenv.fetch import offline, prefetch

    st.offline = offline.enabled(st.req.offline, os.environ)
    models = list({j.model.name: j.model for j in st.plan.todo}.values())
    benchmarks = list({b.name: b for j in st.plan.todo for b in j.benchmarks}.values())
    if st.req.prefetch and not st.req.dry_run:
        prefetch.fetch(st.catalog, models, benchmarks, st.paths, st.secrets, st.err)
    st.needs = prefetch.needs(models, benchmarks, st.paths)
    if st.offline and not st.req.dry_run:
        offline.check(st.needs, st.secrets)


def dry_run(st: Eval) -> int | None:
    if not st.req.dry_run:
        return None
    p = st.plan
    if st.run is not None:
        st.out.write(f"run folder: {st.run.path} (would continue it)\n")
    else:
        where = st.req.output_dir / (st.req.run_name or "<timestamp>")
        st.out.write(f"run folder: would write {where.absolute()}\n")
    st.out.write(show.format_plan(p, {n: s.state for n, s in st.states.items()}, st.req.max_gpus) + "\n")
    st.out.write(limits(st).describe(p.todo) + "\n")
    from spectravenv.fetch import offline, prefetch

    st.out.write("\n" + st.secrets.redact(prefetch.describe(st.needs, st.paths)) + "\n")
    if st.offline:
        missing = sum(not n.present for n in st.needs)
        st.out.write(f"offline: the jobs run with {', '.join(f'{k}=1' for k in sorted(offline.JOB_ENV))}"
                     + (f"; this run would be refused: {missing} missing\n" if missing else "\n"))  # fmt: skip
    elif st.req.prefetch:
        st.out.write("--prefetch: a run without --dry-run fetches what is missing first\n")
    for why in st.refusals:
        st.out.write(f"this run would be refused: {why}\n")
    if st.on_slurm:
        from spectravenv.run import slurm

        run = st.run or rundir.RunDir((st.req.output_dir / (st.req.run_name or "RUN")).absolute())
        for j in p.todo:
            worker = f"{j.id}.w1"
            st.out.write(f"\n# sbatch script of a worker of {j.model.name}\n")
            st.out.write(slurm.script(j, run, st.states[j.env.name].python, run.job_file(worker), st.req.slurm, [],
                                      worker))
    return 0


def nothing_to_do(st: Eval) -> int | None:
    if st.plan.todo:
        return None
    n = len(st.models) * len(st.benchmarks)
    st.say(f"all {n} pair{'s' if n != 1 else ''} of {st.run.path} are already done")
    st.manifest = dict(st.existing or {})
    return finish(st, interrupted=False)

