"""`spectravenv selftest [ENV]...`: does every env, every family's wrapper and every GPU work here?

For each env and each model family it serves, a tiny randomly initialised checkpoint of the
family's real Hugging Face classes is made inside the env (runners/svrunner/tiny/, cached by
recipe under $SPECTRAVENV_HOME/assets/tiny, never in the user's HF cache), loaded through the
family's own VLMEvalKit wrapper by `model_path`, and asked a few DemoMCQ questions: on the GPU
when one is visible, else on the CPU. Nothing is downloaded. Families that cannot be tested
offline (modelling code that lives only on the Hub, code from a source checkout) are listed as
such, never counted as passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from svrunner.tiny import Recipe, recipes

from spectravenv.catalog.entries import Catalog, Model
from spectravenv.envs import venv as envs
from spectravenv.errors import SpectravenvError
from spectravenv.paths import RUNNERS_DIR, Paths

RUNNER = RUNNERS_DIR / "selftest_runner.py"
ENV_TIMEOUT = 1800.0


@dataclass
class Result:
    env: str
    family: str
    model: str
    status: str  # ok | failed | not testable
    seconds: float | None = None
    detail: str = ""
    recipe: str = ""
    vlmeval_class: str = ""
    device: str = ""


def _served(catalog: Catalog, env: str) -> dict[str, list[Model]]:
    out: dict[str, list[Model]] = {}
    for m in catalog.select_models(env=env, runnable=True):
        if m.vlmeval_name and m.kind in ("local", "api"):
            out.setdefault(m.family, []).append(m)
    return out


def plan(catalog: Catalog, env: str, only: set[str] | None = None) -> tuple[list[tuple[Recipe, Model]], list[Result]]:
    """The recipes to run in `env` (each with the registry model it stands in for) and the rows
    for the families that have none."""
    served = _served(catalog, env)
    todo: list[tuple[Recipe, Model]] = []
    covered: set[str] = set()
    for r in recipes():
        if only and r.family not in only and r.name not in only:
            continue
        # The recipe's own order: its first name is the smallest model it stands in for.
        by_name = {m.name: m for m in served.get(r.family, [])}
        model = next((by_name[n] for n in r.models if n in by_name), None)
        if model is not None:
            todo.append((r, model))
            covered.add(r.family)
    rows = []
    for family, models in sorted(served.items()):
        if family in covered or (only and family not in only):
            continue
        rows.append(Result(env, family, models[0].name, "not testable",
                           detail="no tiny-checkpoint recipe: " + untestable_reason(models[0]),
                           vlmeval_class=models[0].vlmeval_class))  # fmt: skip
    return todo, rows


def untestable_reason(model: Model) -> str:
    if model.kind == "api":
        return ("an API service: its requests need the provider (only wrappers with a local "
                "stand-in server are tested)")  # fmt: skip
    if model.needs and any("add-on" in n for n in model.needs):
        return "its code comes from an add-on (a git checkout)"
    return ("its modelling code is not in transformers (remote code on the Hub) or nobody has "
            "written one yet")  # fmt: skip


def run_env(catalog: Catalog, paths: Paths, env: str, only: set[str] | None,
            report: Callable[[str], None]) -> list[Result]:  # fmt: skip
    todo, rows = plan(catalog, env, only)
    if not todo:
        return rows
    state = envs.ensure(catalog.env(env), paths, report=report)
    with tempfile.TemporaryDirectory(prefix="spectravenv-selftest-") as scratch:
        spec = {
            "recipes": [{"name": r.name, "model": m.name, "kwargs": m.kwargs} for r, m in todo],
            "assets_dir": str(paths.assets),
            "data_root": str(Path(scratch) / "LMUData"),
            "rows": 2,
        }
        spec_file = Path(scratch) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        child = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        # Never the user's weights cache, never the network: everything is made here.
        child.update(HF_HOME=str(Path(scratch) / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                     LITELLM_LOCAL_MODEL_COST_MAP="True", TOKENIZERS_PARALLELISM="false")  # fmt: skip
        report(f"selftest {env}: {', '.join(r.name for r, _ in todo)} ...")
        t0 = time.monotonic()
        try:
            proc = subprocess.run([str(state.python), str(RUNNER), str(spec_file)], env=child, capture_output=True,
                                  text=True, timeout=ENV_TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired:
            return rows + [Result(env, r.family, m.name, "failed", detail=f"timed out after {ENV_TIMEOUT:g} s",
                                  recipe=r.name) for r, m in todo]  # fmt: skip
        got = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                got[item["recipe"]] = item
        for r, m in todo:
            item = got.get(r.name)
            if item is None:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
                rows.append(Result(env, r.family, m.name, "failed", detail=f"the env's selftest stopped: {tail}",
                                   recipe=r.name, vlmeval_class=m.vlmeval_class))  # fmt: skip
                continue
            detail = item.get("error", "") if item["status"] != "ok" else "; ".join(
                x for x in (f"answered {item.get('answers')}", item.get("attention", "")) if x)
            rows.append(Result(env, r.family, m.name, item["status"], item.get("seconds"), detail, r.name,
                               m.vlmeval_class, item.get("device", "")))  # fmt: skip
        report(f"selftest {env}: done in {time.monotonic() - t0:.0f} s")
    return rows


def run(catalog: Catalog, paths: Paths, env_names: list[str], only: set[str] | None,
        report: Callable[[str], None]) -> list[Result]:  # fmt: skip
    for name in env_names:
        catalog.env(name)  # unknown names fail before anything runs
    known = {r.family for r in recipes()} | {r.name for r in recipes()} | {m.family for m in catalog.models.values()}
    for name in only or ():
        if name not in known:
            from spectravenv.errors import did_you_mean

            raise SpectravenvError(f"--family {name!r} is no family or recipe{did_you_mean(name, known)}")
    out: list[Result] = []
    for name in env_names or catalog.model_envs():
        out += run_env(catalog, paths, name, only, report)
    return out


def as_json(results: list[Result]) -> str:
    return json.dumps({"results": [asdict(r) for r in results]}, indent=1, sort_keys=True) + "\n"


def table(results: list[Result]) -> str:
    from spectravenv.console import duration
    from spectravenv.console import table as render

    rows = [(r.env, r.family, r.model, r.status, duration(r.seconds) if r.seconds is not None else "-",
             r.detail[:90]) for r in results]  # fmt: skip
    ok = sum(r.status == "ok" for r in results)
    failed = sum(r.status == "failed" for r in results)
    families = len({r.family for r in results if r.status == "ok"})
    envs_ok = len({r.env for r in results if r.status == "ok"})
    return (render(("env", "family", "stands in for", "status", "time", "detail"), rows)
            + f"\n\n{ok} ok ({families} families in {envs_ok} envs), {failed} failed, "
            f"{sum(r.status == 'not testable' for r in results)} not testable offline")  # fmt: skip


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == "failed" for r in results) else 0
