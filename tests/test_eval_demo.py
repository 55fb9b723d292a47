"""`spectravenv eval` end to end: the real tf437 env, the real runner subprocess, real VLMEvalKit
dataset handling, inference and evaluation, on the built-in tiny LLaVA (CPU, no download).

Heavy: needs the tf437 env (built once per session by test_real_envs' fixture home).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import openpyxl
import psutil
import pytest
from svrunner.protocol import read_events as read_all

from .conftest import Workspace

pytestmark = pytest.mark.heavy

# Test hooks of the built-in demo model (see runners/spectravenv_builtins.py), as user models.
USER_MODELS = """
[models.slow-demo]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { sleep = 0.4 }

[models.flaky-demo]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { fail_on = ["DemoShapes"] }

[models.broken-demo]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { fail_load = true }

[models.env-demo]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { leak_env = ["HF_TOKEN"] }
"""
FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"


def eval_ok(ws: Workspace, *args: str, timeout: float = 900):
    proc = ws.run("eval", *args, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def events(run: Path, model: str) -> list[dict]:
    """Every event of a model's workers (`<model>.w<N>.jsonl`), in the order they happened."""
    files = sorted((run / ".spectravenv" / "events").glob(f"{model}.w*.jsonl"))
    evs = [dict(e, worker=f.name[: -len(".jsonl")]) for f in files for e in read_all(f)]
    return sorted(evs, key=lambda e: e.get("time", 0.0))


def kinds(evs: list[dict], kind: str, bench: str | None = None) -> list[dict]:
    return [e for e in evs if e["event"] == kind and (bench is None or e.get("benchmark") == bench)]


def snapshot(run: Path) -> dict[str, bytes]:
    files = [*sorted((run / "results").iterdir()), run / "EVALUATION_REPORT.md"]
    return {p.name: p.read_bytes() for p in files}


def learned(ws: Workspace, key: str) -> dict:
    try:
        return json.loads((ws.home / "stats.json").read_text()).get(key, {})
    except FileNotFoundError:
        return {}


def test_demo_two_benchmarks_one_process_results_agree_everywhere(demo_ws):
    before = learned(demo_ws, "demo-tiny-llava|cpu")  # the session's home: other tests ran too
    proc = eval_ok(
        demo_ws, "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--limit", "8", "--run-name", "r1"
    )
    run = demo_ws.cwd / "outputs" / "r1"
    evs = events(run, "demo-tiny-llava")
    # One process, model loaded once, both benchmarks done in it.
    assert len(kinds(evs, "job_started")) == 1 and len(kinds(evs, "model_loaded")) == 1
    assert {e["benchmark"] for e in kinds(evs, "benchmark_done")} == {"DemoMCQ", "DemoShapes"}
    assert len({e["pid"] for e in kinds(evs, "job_started")}) == 1

    # The layout users know.
    for rel in ("run.json", "logs/evaluation_summary.log", "logs/demo-tiny-llava.log",
                "results/demo-tiny-llava_results.csv", "results/demo-tiny-llava_results.xlsx",
                "results/summary.csv", "results/summary.xlsx", "EVALUATION_REPORT.md"):  # fmt: skip
        assert (run / rel).is_file(), rel
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["limit"] == 8
    assert manifest["envs"]["tf437"]["versions"]["transformers"] == "4.37.2"
    # No --judge: each benchmark's own judge; a custom MCQ set's is exact matching.
    assert manifest["judge"] is None and manifest["judges"]["DemoMCQ"]["model"] == "exact_matching"

    # Headline numbers = VLMEvalKit's own score file x 100, in CSV, XLSX, report and console.
    with (run / "results" / "summary.csv").open() as f:
        summary = {r["benchmark"]: r for r in csv.DictReader(f)}
    wb = openpyxl.load_workbook(run / "results" / "summary.xlsx")
    pairs = list(wb["pairs"].values)
    xlsx = {row[2]: row for row in pairs[1:]}
    report = (run / "EVALUATION_REPORT.md").read_text()
    for bench in ("DemoMCQ", "DemoShapes"):
        [done] = kinds(evs, "benchmark_done", bench)
        [acc_file] = [f for f in done["score_files"] if f.endswith("_acc.csv")]
        # Stored relative to the run folder: a moved or copied run still reads as itself.
        assert acc_file == f"demo-tiny-llava/{bench}/demo-tiny-llava_{bench}_acc.csv"
        with open(run / acc_file) as f:
            own = next(csv.DictReader(f))
        expected = float(own["Overall"]) * 100
        assert float(summary[bench]["value"]) == pytest.approx(expected, abs=1e-9)
        assert summary[bench]["status"] == "done" and summary[bench]["samples"] == "8"
        assert xlsx[bench][pairs[0].index("value")] == pytest.approx(expected, abs=1e-9)
        assert f"{expected:.1f}" in report  # the report shows one decimal (report/cells.py)
        # The limited subset: 8 rows really predicted and evaluated.
        assert done["samples"] == 8
    assert "DemoMCQ" in proc.stdout and "done" in proc.stdout

    # `report` rebuilds every table and the report byte for byte, from disk alone.
    tables = snapshot(run)
    rebuilt = demo_ws.run("report", str(run), check=True)
    assert "rebuilt" in rebuilt.stdout
    assert snapshot(run) == tables

    # Re-running the same command is safe and cheap: nothing is recomputed.
    again = eval_ok(
        demo_ws, "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--limit", "8", "--run-name", "r1"
    )
    assert "already done" in again.stderr
    assert len(kinds(events(run, "demo-tiny-llava"), "job_started")) == 1

    # Measured speeds were recorded once for the next plan, even though the run was re-run.
    after = learned(demo_ws, "demo-tiny-llava|cpu")
    assert after["samples"] - before.get("samples", 0) == 16
    assert after["loads"] - before.get("loads", 0) == 1
    assert after["seconds"] > before.get("seconds", 0)

    # A run with a different limit never mixes into this one.
    mixed = demo_ws.run("eval", "demo-tiny-llava", "DemoMCQ", "--limit", "4", "--run-name", "r1")
    assert mixed.returncode != 0 and "was made with --limit 8, not 4" in mixed.stderr


def test_the_same_samples_for_every_model(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    eval_ok(demo_ws, "demo-tiny-llava", "flaky-demo", "DemoMCQ", "--limit", "6", "--run-name", "s")
    run = demo_ws.cwd / "outputs" / "s"
    chosen = [kinds(events(run, m), "benchmark_started", "DemoMCQ")[0]["indices"]
              for m in ("demo-tiny-llava", "flaky-demo")]  # fmt: skip
    assert chosen[0] == chosen[1] and len(chosen[0]) == 6
    assert chosen[0] != list(range(6)), "not simply the first rows"


def wait_for(predicate, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_resume_after_a_killed_run_skips_finished_pairs(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    p = demo_ws.popen(
        "eval", "slow-demo", "DemoMCQ", "DemoShapes", "--limit", "20", "--run-name", "k"
    )
    run = demo_ws.cwd / "outputs" / "k"

    def past_first_save() -> bool:
        # VLMEvalKit saves partial predictions every 10 samples: kill after the first save.
        progress = kinds(events(run, "slow-demo"), "progress", "DemoShapes")
        return any(e["done"] >= 12 for e in progress)

    wait_for(past_first_save, what="DemoShapes past 12 samples")
    # Kill everything hard, dispatcher and runner alike: no chance to clean up.
    family = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
    runner_pids = [c.pid for c in family[1:]]
    for proc in family:
        proc.kill()
    for pid in runner_pids:
        psutil.wait_procs([psutil.Process(pid)] if psutil.pid_exists(pid) else [], timeout=10)

    resumed = demo_ws.run("eval", "--resume", str(run), timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    evs = events(run, "slow-demo")
    second = evs[max(i for i, e in enumerate(evs) if e["event"] == "job_started") :]
    assert kinds(evs, "unit_done", "DemoMCQ") and not kinds(second, "unit_started", "DemoMCQ"), (
        "the finished pair was recomputed"
    )
    # The killed unit starts again from what VLMEvalKit had saved of it (every 10 samples).
    [restart] = kinds(second, "unit_started", "DemoShapes")
    assert restart["reused"] >= 10, "partial predictions of the killed run were not reused"
    assert {e["benchmark"] for e in kinds(evs, "benchmark_done")} == {"DemoMCQ", "DemoShapes"}
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_a_failing_pair_is_reported_while_the_others_finish(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    proc = demo_ws.run("eval", "flaky-demo", "broken-demo", "demo-tiny-llava", "DemoMCQ", "DemoShapes",
                       "--limit", "4", "--run-name", "f", timeout=900)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    run = demo_ws.cwd / "outputs" / "f"
    with (run / "results" / "summary.csv").open() as f:
        status = {
            (r["model"], r["benchmark"]): (r["status"], r["error"]) for r in csv.DictReader(f)
        }
    assert status[("flaky-demo", "DemoMCQ")][0] == "done"
    assert status[("flaky-demo", "DemoShapes")] == (
        "failed",
        status[("flaky-demo", "DemoShapes")][1],
    )
    assert "fail_on test hook" in status[("flaky-demo", "DemoShapes")][1]
    assert status[("broken-demo", "DemoMCQ")][0] == "failed"
    assert "fail_load test hook" in status[("broken-demo", "DemoShapes")][1]
    assert status[("demo-tiny-llava", "DemoMCQ")][0] == "done"
    assert status[("demo-tiny-llava", "DemoShapes")][0] == "done"
    report = (run / "EVALUATION_REPORT.md").read_text()
    assert (
        "## Failures" in report
        and "fail_on test hook" in report
        and "logs/flaky-demo.log" in report
    )
    assert "fail_on test hook" in proc.stdout  # the console summary names the error


def test_ctrl_c_stops_every_child_and_keeps_what_finished(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    p = demo_ws.popen("eval", "slow-demo", "DemoMCQ", "--limit", "20", "--run-name", "c")
    run = demo_ws.cwd / "outputs" / "c"
    wait_for(lambda: kinds(events(run, "slow-demo"), "progress", "DemoMCQ"), what="progress")
    tree = psutil.Process(p.pid).children(recursive=True)
    assert tree, "the runner should be running"
    os.kill(p.pid, signal.SIGINT)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    _gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive, f"orphans left: {alive}"
    assert "--resume" in err
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "interrupted"
    with (run / "results" / "summary.csv").open() as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["interrupted"]


def test_secrets_reach_the_child_only(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    (demo_ws.cwd / ".env").write_text(
        f"# secrets\nHF_TOKEN={FAKE_TOKEN}\nOPENAI_API_KEY='sk-FAKE-abcdefgh'\n"
    )
    proc = eval_ok(demo_ws, "env-demo", "DemoMCQ", "--limit", "2", "--run-name", "s")
    run = demo_ws.cwd / "outputs" / "s"
    log = (run / "logs" / "env-demo.log").read_text()
    # The child saw the real value (it printed its hash), and printed the value itself too...
    digest = hashlib.sha256(FAKE_TOKEN.encode()).hexdigest()
    assert f"HF_TOKEN sha256={digest}" in log
    # ...which never reached the disk or the console.
    for path in run.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_TOKEN.encode() not in data and b"sk-FAKE-abcdefgh" not in data, path
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    assert json.loads((run / "run.json").read_text())["secrets_passed"] == [
        "HF_TOKEN",
        "OPENAI_API_KEY",
    ]


def test_each_child_sees_the_gpus_it_was_given(demo_ws, tmp_path):
    """Two fake GPUs (canned nvidia-smi): two jobs run at once, each with its own GPU."""
    from .gpu_fixtures import h100s

    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    (tmp_path / "gpus.csv").write_text(h100s(2))
    fakes = Path(__file__).parent / "fakes"
    demo_ws.env.update(
        PATH=f"{fakes}:{demo_ws.env['PATH']}", FAKE_SMI_GPUS=str(tmp_path / "gpus.csv")
    )
    eval_ok(demo_ws, "slow-demo", "demo-tiny-llava", "DemoMCQ", "--limit", "3", "--run-name", "g")
    run = demo_ws.cwd / "outputs" / "g"
    seen = {m: kinds(events(run, m), "job_started")[0] for m in ("slow-demo", "demo-tiny-llava")}
    assert sorted(e["cuda_visible_devices"] for e in seen.values()) == ["0", "1"]
    # They overlapped in time: started before the other finished.
    spans = {m: (kinds(events(run, m), "job_started")[0]["time"], kinds(events(run, m), "job_done")[0]["time"])
             for m in seen}  # fmt: skip
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1


def test_report_of_a_failed_and_interrupted_run_and_a_merge(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(
        USER_MODELS
        + '\n[models.flaky-slow]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
        'kwargs = { fail_on = ["DemoMCQ"], sleep = 0.4 }\n'
    )
    eval_ok(demo_ws, "demo-tiny-llava", "DemoMCQ", "--limit", "4", "--run-name", "m1")
    p = demo_ws.popen(
        "eval", "flaky-slow", "DemoMCQ", "DemoShapes", "--limit", "20", "--run-name", "m2"
    )
    m2 = demo_ws.cwd / "outputs" / "m2"
    wait_for(lambda: kinds(events(m2, "flaky-slow"), "progress", "DemoShapes"), what="DemoShapes")
    os.kill(p.pid, signal.SIGINT)
    p.communicate(timeout=120)
    assert p.returncode == 130

    st = demo_ws.run("status", str(m2), check=True).stdout
    assert st.startswith("m2: interrupted") and "failed" in st and "interrupted" in st
    rebuilt = demo_ws.run("report", str(m2), check=True)
    assert "failed" in rebuilt.stdout and "interrupted" in rebuilt.stdout
    with (m2 / "results" / "summary.csv").open() as f:
        status = {r["benchmark"]: (r["status"], r["value"]) for r in csv.DictReader(f)}
    assert status == {"DemoMCQ": ("failed", ""), "DemoShapes": ("interrupted", "")}
    report = (m2 / "EVALUATION_REPORT.md").read_text()
    assert "| 2 | 0 | 1 | 1 | 0.0% |" in report and "fail_on test hook" in report

    merged = demo_ws.run(
        "report", str(demo_ws.cwd / "outputs" / "m1"), str(m2), "-o", "merged", check=True
    )
    assert "merged 2 runs" in merged.stdout
    with (demo_ws.cwd / "merged" / "results" / "summary.csv").open() as f:
        rows = {(r["model"], r["benchmark"]): (r["status"], r["run"]) for r in csv.DictReader(f)}
    assert rows == {
        ("demo-tiny-llava", "DemoMCQ"): ("done", "m1"),
        ("flaky-slow", "DemoMCQ"): ("failed", "m2"),
        ("flaky-slow", "DemoShapes"): ("interrupted", "m2"),
    }
    matrix = openpyxl.load_workbook(demo_ws.cwd / "merged" / "results" / "summary.xlsx")["matrix"]
    assert [c.value for c in matrix[1]] == ["model", "DemoMCQ", "DemoShapes"]
    text = (demo_ws.cwd / "merged" / "EVALUATION_REPORT.md").read_text()
    assert "Runs: m1, m2" in text and "### Run m1" in text and "### Run m2" in text


def sheet_cells(path: Path) -> list[list[object]]:
    return [list(r) for r in openpyxl.load_workbook(path).active.values]


def predictions(run: Path, model: str, bench: str) -> dict:
    ws = openpyxl.load_workbook(run / model / bench / f"{model}_{bench}.xlsx").active
    rows = list(ws.values)
    i, p = rows[0].index("index"), rows[0].index("prediction")
    return {r[i]: r[p] for r in rows[1:]}


# A demo model whose estimate (30 s a sample) makes a benchmark worth dividing; it really
# takes `sleep` seconds a sample, so workers overlap and can be killed mid-unit.
SPLIT_MODEL = (
    '[models.split-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
    "seconds_per_sample = 30\nload_seconds = 1\nkwargs = { sleep = 0.25 }\n"
)


def fake_gpus(ws: Workspace, tmp_path: Path, n: int) -> None:
    from .gpu_fixtures import h100s

    (tmp_path / "gpus.csv").write_text(h100s(n))
    fakes = Path(__file__).parent / "fakes"
    ws.env.update(PATH=f"{fakes}:{ws.env['PATH']}", FAKE_SMI_GPUS=str(tmp_path / "gpus.csv"))


def score_files(run: Path, model: str, bench: str) -> dict[str, bytes]:
    folder = run / model / bench
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{model}_{bench}_*.csv"))}


def test_a_benchmark_split_over_three_workers_equals_one_process(demo_ws, tmp_path):
    """Three fake GPUs: DemoMCQ is divided into units, three workers (each its own process,
    its own CUDA_VISIBLE_DEVICES, the model loaded once) take them at the same time, and the
    merged predictions and VLMEvalKit's score files are exactly a single process's."""
    (demo_ws.cwd / "spectravenv.toml").write_text(SPLIT_MODEL)
    eval_ok(demo_ws, "split-demo", "DemoMCQ", "--limit", "18", "--run-name", "single")
    fake_gpus(demo_ws, tmp_path, 3)
    plan = demo_ws.run("eval", "split-demo", "DemoMCQ", "--limit", "18", "--dry-run", check=True)
    assert "expected makespan" in plan.stdout and "lower bound" in plan.stdout
    eval_ok(demo_ws, "split-demo", "DemoMCQ", "--limit", "18", "--run-name", "split")

    run, single = demo_ws.cwd / "outputs" / "split", demo_ws.cwd / "outputs" / "single"
    evs = events(run, "split-demo")
    started = kinds(evs, "job_started")
    assert sorted(e["cuda_visible_devices"] for e in started) == ["0", "1", "2"]
    assert len({e["pid"] for e in started}) == 3 and len(kinds(evs, "model_loaded")) == 3
    ends = [e["time"] for e in kinds(evs, "job_done")]
    assert max(e["time"] for e in started) < min(ends), "the three workers ran at once"
    units = kinds(evs, "unit_done", "DemoMCQ")
    # Workers claim units as they come free, so a worker that loads slowly on a busy machine
    # may find them all taken; the benchmark must still have been divided between workers.
    assert len({e["worker"] for e in units}) >= 2, units
    assert sorted(e["unit"] for e in units) == list(range(units[0]["of"]))  # each unit once
    assert sum(e["samples"] for e in units) == 18
    assert len(kinds(evs, "benchmark_done", "DemoMCQ")) == 1
    assert predictions(run, "split-demo", "DemoMCQ") == predictions(single, "split-demo", "DemoMCQ")
    # The same file, cell for cell and in the same row order (its bytes hold the time it was
    # written: openpyxl stamps the workbook's creation time).
    pred = "split-demo/DemoMCQ/split-demo_DemoMCQ.xlsx"
    assert sheet_cells(run / pred) == sheet_cells(single / pred)
    assert score_files(run, "split-demo", "DemoMCQ") == score_files(single, "split-demo", "DemoMCQ")


def test_a_worker_killed_mid_unit_loses_only_that_unit_and_resume_finishes_the_same(
    demo_ws, tmp_path
):
    (demo_ws.cwd / "spectravenv.toml").write_text(SPLIT_MODEL)
    eval_ok(demo_ws, "split-demo", "DemoShapes", "--limit", "16", "--run-name", "whole")
    fake_gpus(demo_ws, tmp_path, 2)
    p = demo_ws.popen("eval", "split-demo", "DemoShapes", "--limit", "16", "--run-name", "killed")
    run = demo_ws.cwd / "outputs" / "killed"
    # Once a unit is done and the next is under way: SIGKILL a worker, then the dispatcher.
    wait_for(
        lambda: kinds(events(run, "split-demo"), "unit_done"), what="a finished unit", timeout=300
    )
    wait_for(lambda: kinds(events(run, "split-demo"), "progress"), what="progress", timeout=300)
    victim = kinds(events(run, "split-demo"), "job_started")[0]["pid"]
    os.killpg(p.pid, signal.SIGKILL)
    os.kill(victim, signal.SIGKILL)
    p.communicate(timeout=60)
    for e in kinds(events(run, "split-demo"), "job_started"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(e["pid"], signal.SIGKILL)
    done_before = {(e["unit"], e["of"]) for e in kinds(events(run, "split-demo"), "unit_done")}
    assert done_before

    resumed = eval_ok(demo_ws, "--resume", str(run))
    evs = events(run, "split-demo")
    # Units finished before the kill were inferred once, never again.
    starts = collections.Counter((e["unit"], e["of"]) for e in kinds(evs, "unit_started"))
    assert all(starts[u] == 1 for u in done_before), (starts, resumed.stderr)
    assert {(e["unit"], e["of"]) for e in kinds(evs, "unit_done")} == set(starts)
    whole = demo_ws.cwd / "outputs" / "whole"
    assert predictions(run, "split-demo", "DemoShapes") == predictions(
        whole, "split-demo", "DemoShapes"
    )
    assert score_files(run, "split-demo", "DemoShapes") == score_files(
        whole, "split-demo", "DemoShapes"
    )


def test_retries_rerun_only_what_failed(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    proc = demo_ws.run("eval", "flaky-demo", "DemoMCQ", "DemoShapes", "--limit", "3",
                       "--retries", "1", "--run-name", "r", timeout=900)  # fmt: skip
    assert proc.returncode == 1 and "retry   flaky-demo (1/1): DemoShapes" in proc.stderr
    evs = events(demo_ws.cwd / "outputs" / "r", "flaky-demo")
    assert len(kinds(evs, "job_started")) == 2
    assert len(kinds(evs, "benchmark_started", "DemoMCQ")) == 1  # finished work is kept
    assert len(kinds(evs, "benchmark_failed", "DemoShapes")) == 2


def test_a_job_past_its_timeout_is_stopped_and_counted_as_failed(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    proc = demo_ws.run("eval", "slow-demo", "DemoMCQ", "--limit", "24", "--timeout", "12s",
                       "--run-name", "t", timeout=900)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    run = demo_ws.cwd / "outputs" / "t"
    with (run / "results" / "summary.csv").open() as f:
        [row] = list(csv.DictReader(f))
    assert row["status"] == "failed" and "timed out after 12s" in row["error"]
    pids = [e["pid"] for e in kinds(events(run, "slow-demo"), "job_started")]
    assert pids and not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
    )


def test_out_of_memory_is_retried_on_more_gpus(demo_ws, tmp_path):
    """A model that runs out of memory on one GPU is retried as one process over two."""
    from .gpu_fixtures import h100s

    (demo_ws.cwd / "spectravenv.toml").write_text(
        USER_MODELS + '\n[models.big-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\n'
        "cpu = true\nmulti_gpu = true\nkwargs = { oom_below_gpus = 2 }\n"
    )
    (tmp_path / "gpus.csv").write_text(h100s(2))
    fakes = Path(__file__).parent / "fakes"
    demo_ws.env.update(
        PATH=f"{fakes}:{demo_ws.env['PATH']}", FAKE_SMI_GPUS=str(tmp_path / "gpus.csv")
    )
    proc = demo_ws.run("eval", "big-demo", "DemoMCQ", "--limit", "2", "--retries", "1",
                       "--run-name", "oom", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ran out of GPU memory: retrying on 2 GPUs" in proc.stderr
    evs = events(demo_ws.cwd / "outputs" / "oom", "big-demo")
    assert any(e.get("oom") for e in kinds(evs, "job_failed"))
    last = kinds(evs, "job_started")[-1]
    assert last["cuda_visible_devices"] == "0,1" and last["world_size"] == 1

    # Without a bigger placement it is reported as out of memory, not retried forever.
    demo_ws.env["FAKE_SMI_GPUS"] = str(tmp_path / "one.csv")
    (tmp_path / "one.csv").write_text(h100s(1))
    proc = demo_ws.run("eval", "big-demo", "DemoShapes", "--limit", "2", "--retries", "3",
                       "--run-name", "oom1", timeout=900)  # fmt: skip
    assert proc.returncode == 1 and "no bigger placement exists here" in proc.stderr
    assert "CUDA out of memory" in proc.stdout

    # A wrapper that loads onto one GPU is not retried on more: they could not help it.
    demo_ws.env["FAKE_SMI_GPUS"] = str(tmp_path / "gpus.csv")
    with (demo_ws.cwd / "spectravenv.toml").open("a") as f:
        f.write('\n[models.big-single]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
                "kwargs = { oom_below_gpus = 2 }\n")  # fmt: skip
    proc = demo_ws.run("eval", "big-single", "DemoShapes", "--limit", "2", "--retries", "3",
                       "--run-name", "oom2", timeout=900)  # fmt: skip
    assert proc.returncode == 1
    assert "its VLMEvalKit wrapper loads onto one GPU, so more GPUs cannot help" in proc.stderr
    assert len(kinds(events(demo_ws.cwd / "outputs" / "oom2", "big-single"), "job_started")) == 1
