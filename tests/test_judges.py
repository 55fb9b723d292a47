"""Judges and keys at plan time: which judge scores each benchmark, what it needs, and the one-line
refusals (an API model without its key, a judge without its key) before anything is built.

The runner's side (what really judged, against a loopback judge) is tests/test_judged_scoring.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from spectravenv.catalog.entries import Benchmark, Model
from spectravenv.errors import SpectravenvError
from spectravenv.plan import credentials, judges
from spectravenv.plan.credentials import Lookup
from spectravenv.secrets import Secrets

from .conftest import REPO
from .test_envs import one_line_error

KEY = "sk-judge-TESTkQ7vX2mZ9pW4rT8nBjH3"


def lookup(tmp_path: Path, env_file: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> Lookup:
    path = tmp_path / ".env"
    if env_file is not None:
        path.write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
    return Lookup(Secrets(dict(env_file or {}), path if env_file is not None else None), environ or {}, path)


MCQ = Benchmark("SomeMCQ", kind="MCQ", judge="gpt-4o-mini", judge_need="optional")
MATH = Benchmark("MathVista_MINI", kind="VQA", judge="gpt-4o-mini", judge_need="required")
OCR = Benchmark("OCRBench", kind="OCR", judge=None, judge_need="none")


# ---- keys of VLMEvalKit's clients ----------------------------------------------------------------


def test_openai_key_variable_follows_the_model_version_as_gpt_py_does():
    assert credentials.openai_key_var("gpt-4o-mini-2024-07-18") == "OPENAI_API_KEY"
    assert credentials.openai_key_var("gpt4") == "OPENAI_API_KEY"
    assert credentials.openai_key_var("step-1v-32k") == "STEPAI_API_KEY"
    assert credentials.openai_key_var("gemini-3.1-pro-preview-thinking") == "GOOGLE_API_KEY"
    assert credentials.openai_key_var("gemini-2.5-pro") == "OPENAI_API_KEY"  # not a preview
    assert credentials.openai_key_var("gpt-4o", use_azure=True) == "AZURE_OPENAI_API_KEY"


def test_an_openai_client_models_name_gives_the_key_its_version_would():
    """The catalog does not carry an API model's version; its VLMEvalKit name picks the same key
    variable for every OpenAI-protocol model of the registry."""
    with (REPO / "data" / "registry" / "vlmeval_models.tsv").open() as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["class"] in credentials.OPENAI_CLIENTS]
    assert len(rows) > 40
    for r in rows:
        assert credentials.openai_key_var(r["name"]) == credentials.openai_key_var(r["model_path"]), r["name"]


def test_what_api_models_need():
    gpt = Model("GPT4o", "api", kind="api", vlmeval_class="GPT4V", vlmeval_name="GPT4o",
                env_vars=("OPENAI_API_BASE", "OPENAI_API_KEY", "YI_API_KEY"))  # fmt: skip
    claude = Model("Claude3V_Opus", "api", kind="api", vlmeval_class="Claude3V",
                   env_vars=("ALLES", "ANTHROPIC_API_KEY", "ANTHROPIC_BACKEND"))  # fmt: skip
    served = Model("lmdeploy_x", "api", kind="api", vlmeval_class="LMDeployAPI",
                   env_vars=("LMDEPLOY_API_BASE", "LMDEPLOY_API_KEY"))  # fmt: skip
    assert credentials.model_needs(gpt) == ("OPENAI_API_KEY",)
    assert credentials.model_needs(claude) == ("ALLES", "ANTHROPIC_API_KEY")
    assert credentials.model_needs(served) == ("LMDEPLOY_API_BASE",)
    assert credentials.model_needs(Model("local", "tf437")) == ()
    keyed = Model("mine", "api", kind="api", vlmeval_class="GPT4V", kwargs={"key": "x"})
    assert credentials.model_needs(keyed) == ()


def test_a_model_without_its_key_is_refused_naming_the_variable_and_the_file(tmp_path):
    gpt = Model("GPT4o", "api", kind="api", vlmeval_class="GPT4V", vlmeval_name="GPT4o")
    with pytest.raises(SpectravenvError) as e:
        credentials.check_models([gpt], lookup(tmp_path))
    msg = str(e.value)
    assert "GPT4o needs OPENAI_API_KEY" in msg and str(tmp_path / ".env") in msg and "does not exist" in msg
    assert credentials.check_models([gpt], lookup(tmp_path, {"OPENAI_API_KEY": KEY})) == {"OPENAI_API_KEY"}
    # From the environment it counts too, and is then masked like a .env value.
    found = lookup(tmp_path, environ={"OPENAI_API_KEY": KEY})
    used = credentials.check_models([gpt], found)
    assert found.with_environment(used).values == {"OPENAI_API_KEY": KEY}


# ---- the judge of each benchmark -----------------------------------------------------------------


def test_a_benchmark_scored_without_a_judge_gets_none_whatever_judge_is_asked(tmp_path):
    j, problem = judges.choose(OCR, judges.Options("gpt-4o-mini"), lookup(tmp_path))
    assert problem is None and not j.used and j.identity() is None and j.spec()["model"] == "exact_matching"


def test_the_default_judge_where_its_key_is_there(tmp_path):
    j, problem = judges.choose(MCQ, judges.Options(), lookup(tmp_path, {"OPENAI_API_KEY": KEY}))
    assert problem is None
    assert j.identity() == {"model": "gpt-4o-mini", "version": "gpt-4o-mini-2024-07-18",
                            "endpoint": "api.openai.com", "retry": 6, "timeout": 600}  # fmt: skip
    assert KEY not in str(j.spec()) + str(j.record())


def test_without_its_key_an_optional_judge_becomes_exact_matching_and_says_so(tmp_path):
    j, problem = judges.choose(MCQ, judges.Options(), lookup(tmp_path))
    assert problem is None and j.is_exact and j.identity() == {"model": "exact_matching"}
    line = judges.announce({"SomeMCQ": j})
    assert line is not None and "SomeMCQ: exact matching: its default judge gpt-4o-mini needs OPENAI_API_KEY" in line


def test_without_its_key_a_required_judge_is_refused(tmp_path):
    _, problem = judges.choose(MATH, judges.Options(), lookup(tmp_path))
    assert problem is not None
    assert "MathVista_MINI is judged by gpt-4o-mini, which needs OPENAI_API_KEY" in problem
    assert str(tmp_path / ".env") in problem and "--judge-base-url" in problem


def test_an_asked_for_judge_without_its_key_is_refused_never_replaced(tmp_path):
    """Issue 17, fault 7: --judge gpt4 without a key used to become exact matching silently."""
    _, problem = judges.choose(MCQ, judges.Options("gpt4"), lookup(tmp_path))
    assert problem is not None and "judged by gpt4, which needs OPENAI_API_KEY" in problem


def test_exact_matching_is_refused_where_a_judge_is_required(tmp_path):
    _, problem = judges.choose(MATH, judges.Options("exact_matching"), lookup(tmp_path))
    assert problem is not None and "cannot be scored by exact matching" in problem


def test_an_endpoint_of_ones_own_needs_no_key_and_is_recorded_by_host(tmp_path):
    found = lookup(tmp_path)
    opts = judges.options(None, "http://judge.lab:8000/v1/", found)
    j, problem = judges.choose(MATH, opts, found)
    assert problem is None and j.api_base == "http://judge.lab:8000/v1/chat/completions"
    assert j.identity()["endpoint"] == "judge.lab:8000"
    # The same from the .env file.
    found = lookup(tmp_path, {judges.BASE_URL_VAR: "http://judge.lab:8000/v1"})
    assert judges.choose(MATH, judges.options(None, None, found), found)[0].endpoint == "judge.lab:8000"
    with pytest.raises(SpectravenvError, match="not an http"):
        judges.options(None, "judge.lab:8000", found)


def test_what_vlmevalkit_maps_each_judge_to(tmp_path):
    found = lookup(tmp_path, {"SiliconFlow_API_KEY": KEY, "LOCAL_LLM": "my-org/judge-7b"})
    qwen = judges.build("qwen-72b", judges.Options(), found, "")
    assert (qwen.client, qwen.key_var, qwen.endpoint) == ("SiliconFlowAPI", "SiliconFlow_API_KEY", "api.siliconflow.cn")
    # LOCAL_LLM replaces the version VLMEvalKit asks for, and the job sets it as the spec says.
    assert qwen.version == "my-org/judge-7b" and qwen.spec()["local_llm"] == "my-org/judge-7b"
    anything = judges.build("my-served-judge", judges.Options(), lookup(tmp_path), "")
    assert anything.client == "OpenAIWrapper" and anything.key_var == "OPENAI_API_KEY"


def test_a_resumed_run_keeps_its_judge_even_when_the_key_is_gone(tmp_path):
    j, problem = judges.choose(MCQ, judges.Options(), lookup(tmp_path), kept="gpt-4o-mini")
    assert j.name == "gpt-4o-mini" and problem is not None


# ---- the command line: refused before anything is built ------------------------------------------


MATHVISTA = """
[benchmarks.MathVista_MINI]
category = "Math"
kind = "VQA"
metric = "Overall accuracy"
headline = "Overall/acc"
judge = "gpt-4o-mini"
judge_need = "required"
"""


def nothing_built(ws) -> bool:
    return not (ws.home / "envs").exists() and not (ws.cwd / "outputs").exists()


def test_an_api_model_without_its_key_is_refused_at_plan_time(ws):
    """Issue 17, fault 6: `eval GPT4o DemoMCQ --limit 4` with no .env built the api env and
    reported 0.00 as done."""
    line = one_line_error(ws.run("eval", "GPT4o", "DemoMCQ", "--limit", "4"))
    assert "GPT4o needs OPENAI_API_KEY: not set in the .env file" in line and str(ws.cwd / ".env") in line
    assert nothing_built(ws)


def test_an_asked_for_judge_without_its_key_is_refused_at_plan_time(ws):
    """Issue 17, fault 7: `eval demo-tiny-llava DemoMCQ --judge gpt4` ran, and exact matching
    scored it while files and report said gpt4."""
    line = one_line_error(ws.run("eval", "demo-tiny-llava", "DemoMCQ", "--judge", "gpt4"))
    assert "DemoMCQ is judged by gpt4, which needs OPENAI_API_KEY" in line
    assert nothing_built(ws)


def test_a_required_judge_without_its_key_is_refused_at_plan_time(ws):
    (ws.cwd / "spectravenv.toml").write_text((ws.cwd / "spectravenv.toml").read_text() + MATHVISTA)
    proc = ws.run("eval", "demo-tiny-llava", "MathVista_MINI", "--judge", "gpt-4o-mini")
    line = one_line_error(proc)
    assert "MathVista_MINI is judged by gpt-4o-mini, which needs OPENAI_API_KEY" in line
    assert nothing_built(ws)
    # With an endpoint of one's own, the plan goes through (shown by --dry-run).
    proc = ws.run("eval", "demo-tiny-llava", "MathVista_MINI", "--judge-base-url", "http://127.0.0.1:9/v1",
                  "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MathVista_MINI: gpt-4o-mini at 127.0.0.1:9" in proc.stderr
    assert "would be refused" not in proc.stdout


def test_a_dry_run_shows_the_plan_and_says_why_the_run_would_be_refused(ws):
    (ws.cwd / "spectravenv.toml").write_text((ws.cwd / "spectravenv.toml").read_text() + MATHVISTA)
    proc = ws.run("eval", "demo-tiny-llava", "GPT4o", "MathVista_MINI", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "demo-tiny-llava" in proc.stdout and "GPT4o" in proc.stdout  # the plan itself
    refusals = [ln for ln in proc.stdout.splitlines() if ln.startswith("this run would be refused: ")]
    assert any("GPT4o needs OPENAI_API_KEY" in ln for ln in refusals), proc.stdout
    assert any("MathVista_MINI is judged by gpt-4o-mini" in ln for ln in refusals), proc.stdout
    assert nothing_built(ws)


def test_a_pair_finished_when_the_judge_was_run_wide_is_still_done_under_the_same_judge():
    """Runs made before the judge was a fingerprint part of its own (it sat in `settings`) keep
    their finished pairs: the same judge is no change, another judge changes the judge alone (so
    only the evaluation is redone, never the inference)."""
    from svrunner import fingerprint

    old = {"settings": {"limit": 8, "seed": 0, "judge": "exact_matching"}, "env": {"name": "tf437", "key": "k"}}
    now = {"settings": {"limit": 8, "seed": 0}, "env": {"name": "tf437", "key": "k"}}
    assert fingerprint.changes(old, {**now, "judge": {"model": "exact_matching"}}) == []
    assert fingerprint.changes(old, {**now, "judge": None}) == []  # a benchmark scored without a judge
    other = {"model": "gpt-4o-mini", "version": "gpt-4o-mini-2024-07-18"}
    assert fingerprint.changes(old, {**now, "judge": other}) == ["judge (model, version)"]
