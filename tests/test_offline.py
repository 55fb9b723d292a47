"""`spectravenv eval --offline` (and HF_HUB_OFFLINE=1): the plan-time check that every TSV and
checkpoint is on disk, run with no network at all (`unshare -n`: only a downed loopback) where
this machine allows it, and the hub's offline switches in the jobs' environment."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from spectravenv.catalog import loader
from spectravenv.fetch import offline
from spectravenv.paths import Paths
from spectravenv.run import evaluate as evaluation
from spectravenv.run import jobfile as jobfiles
from spectravenv.run import launch, prepare, state

from .conftest import Workspace, spectravenv_exe
from .hubstub import HubStub
from .test_envs import one_line_error
from .test_prefetch import bench_entry, config, model_entry, tsv_bytes, weights
from .test_prefetch import pws as pws  # the fixtures, shared with test_prefetch
from .test_prefetch import shared_home as shared_home

TSV = tsv_bytes(50)
MD5 = hashlib.md5(TSV).hexdigest()
# A URL nothing answers: an offline run must never try it.
DEAD_URL = "http://127.0.0.1:9/TinyBench.tsv"


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


NO_NET = ["unshare", "-n"] if _can_unshare() else []  # root can; elsewhere the check runs as is


def run_cut_off(
    ws: Workspace, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a network namespace of its own: no interface but a downed loopback."""
    return subprocess.run([*NO_NET, *spectravenv_exe(), *args], cwd=ws.cwd, env=ws.env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def offline_ws(pws: Workspace) -> Workspace:
    config(
        pws, model_entry("tinyhub", "stub-org/tiny-vlm") + bench_entry("TinyBench", DEAD_URL, MD5)
    )
    return pws


def test_missing_data_and_weights_stop_an_offline_run_before_anything_starts(offline_ws, tmp_path):
    ws = offline_ws
    ws.home = tmp_path / "fresh-home"  # no env built yet: the check must not build one
    ws.env["SPECTRAVENV_HOME"] = str(ws.home)
    for how in (["--offline"], ["--offline", "--launcher", "slurm"]):
        msg = one_line_error(run_cut_off(ws, "eval", "tinyhub", "TinyBench", *how))
        assert "offline: 2 things the run needs are not on disk, nothing was started" in msg
        assert "TSV of TinyBench" in msg and "checkpoint of tinyhub (stub-org/tiny-vlm@main" in msg
        assert msg.endswith(
            "fetch them on a node with internet access: spectravenv prefetch TinyBench tinyhub"
        )
    # HF_HUB_OFFLINE=1 in the environment turns the check on by itself.
    ws.env["HF_HUB_OFFLINE"] = "1"
    assert "nothing was started" in one_line_error(run_cut_off(ws, "eval", "tinyhub", "TinyBench"))
    assert not (ws.home / "envs").exists() and not (ws.cwd / "outputs").exists()

    # One thing there (a TSV of the right md5), one not: only the other is named.
    Path(ws.env["LMUData"]).mkdir(parents=True)
    (Path(ws.env["LMUData"]) / "TinyBench.tsv").write_bytes(TSV)
    msg = one_line_error(run_cut_off(ws, "eval", "tinyhub", "TinyBench"))
    assert "offline: 1 thing the run needs is not on disk" in msg and "TSV of" not in msg
    assert msg.endswith("spectravenv prefetch tinyhub")
    # A wrong md5 is missing too: VLMEvalKit would throw the file away and try to download it.
    (Path(ws.env["LMUData"]) / "TinyBench.tsv").write_bytes(TSV + b"changed\n")
    msg = one_line_error(run_cut_off(ws, "eval", "tinyhub", "TinyBench"))
    assert f"is not VLMEvalKit's {MD5}" in msg and msg.endswith(
        "spectravenv prefetch TinyBench tinyhub"
    )


def test_built_in_data_and_models_need_nothing(offline_ws):
    proc = run_cut_off(
        offline_ws, "eval", "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--offline", "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr
    assert "data and weights: nothing to fetch (built-in or API only)" in proc.stdout
    assert (
        "offline: the jobs run with HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1"
        in proc.stdout
    )


def test_an_offline_refusal_loses_nothing_of_a_run_being_continued(offline_ws):
    ws = offline_ws
    # A real run folder: the job fails in its env (`tiny` holds no VLMEvalKit), its files stay.
    first = ws.run("eval", "tinyhub", "TinyBench", "--run-name", "r", timeout=900)
    assert first.returncode == 1, first.stderr
    run = ws.cwd / "outputs" / "r"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert run / "run.json" in before
    msg = one_line_error(
        run_cut_off(ws, "eval", "tinyhub", "TinyBench", "--run-name", "r", "--offline")
    )
    assert "nothing was started" in msg
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_prefetched_data_and_weights_pass_the_check_with_no_network(offline_ws):
    ws = offline_ws
    with HubStub() as hub:
        repo = hub.add_repo(
            "stub-org/tiny-vlm", {"config.json": b"{}", "model.safetensors": weights(3)[: 2 << 20]}
        )
        url = hub.add_file("TinyBench.tsv", TSV)
        config(ws, model_entry("tinyhub", "stub-org/tiny-vlm") + bench_entry("TinyBench", url, MD5))
        ws.env["HF_ENDPOINT"] = hub.url
        # --prefetch fetches first (the dry run itself never downloads: it says what it would do).
        dry = ws.run("eval", "tinyhub", "TinyBench", "--prefetch", "--dry-run", check=True)
        assert dry.stdout.count("MISSING") == 2 and not hub.requests
        ws.run("prefetch", "tinyhub", "TinyBench", check=True, timeout=600)
    dry = run_cut_off(ws, "eval", "tinyhub", "TinyBench", "--offline", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "MISSING" not in dry.stdout and dry.stdout.count("present") == 2
    assert f"complete (2 files, {(2 << 20) / 1024 / 1024:.1f} MB)" in dry.stdout
    # The real thing gets past the check and runs its job (which fails in `tiny`, an env without
    # VLMEvalKit): the refusal is gone, the job was started.
    proc = run_cut_off(
        ws, "eval", "tinyhub", "TinyBench", "--offline", "--run-name", "off", timeout=900
    )
    assert "offline:" not in proc.stderr and proc.returncode == 1, proc.stderr
    assert (ws.cwd / "outputs" / "off" / "logs" / "tinyhub.log").exists()
    # A file gone from the cache afterwards is caught again.
    snapshot = (
        Path(ws.env["HF_HOME"]) / "hub" / "models--stub-org--tiny-vlm" / "snapshots" / repo.sha
    )
    (snapshot / "model.safetensors").unlink()
    msg = one_line_error(run_cut_off(ws, "eval", "tinyhub", "TinyBench", "--offline"))
    assert "model.safetensors is missing from snapshot" in msg


def test_offline_jobs_get_the_hub_offline_switches(offline_ws, monkeypatch):
    """The steps of `eval` up to the check, in process, then the jobs' environment as both
    launchers make it."""
    paths = Paths.from_env(offline_ws.env, cwd=offline_ws.cwd)
    cat = loader.load(paths)
    steps = evaluation.STEPS[: evaluation.STEPS.index(prepare.check_offline) + 1]

    def job_env(offline_flag: bool) -> dict[str, str]:
        req = state.EvalRequest(
            names=["demo-tiny-llava", "DemoMCQ"], dry_run=True, offline=offline_flag
        )
        st = state.Eval(req, paths, cat, io.StringIO(), io.StringIO())
        for step in steps:
            step(st)
        return jobfiles.child_env(launch.job_environ(st), paths, st.secrets, [], [])

    for var in offline.JOB_ENV:
        monkeypatch.delenv(var, raising=False)
    assert not any(var in job_env(False) for var in offline.JOB_ENV)
    assert all(job_env(True)[var] == "1" for var in offline.JOB_ENV)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert all(job_env(False)[var] == "1" for var in offline.JOB_ENV)
