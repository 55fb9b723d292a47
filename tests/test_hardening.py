"""End to end in the real tf437 env: secrets never reach a file or the console, run folders are
exclusive and relocatable, resume never mixes results of another fingerprint, signals and
GPU polling behave. Heavy: the demo model through the real runner and VLMEvalKit."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import openpyxl
import psutil
import pytest

from .conftest import Workspace
from .gpu_fixtures import h100s
from .test_envs import one_line_error
from .test_eval_demo import USER_MODELS, eval_ok, events, kinds, wait_for

pytestmark = pytest.mark.heavy
TOKEN = "hf_CANARYtoken9876543210zyxwvu"
FAKES = Path(__file__).parent / "fakes"


def leaks(root: Path, text: str = TOKEN) -> list[Path]:
    """Every file under root that holds the token, whole or in pieces of 10+ characters."""
    pieces = [text[i : i + 10] for i in range(0, len(text) - 9, 5)]
    out = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if text.encode() in data or any(piece.encode() in data for piece in pieces):
                out.append(p)
    return out


def test_secrets_reach_no_file_and_no_console_in_any_path(demo_ws, tmp_path):
    (demo_ws.cwd / ".env").write_text(f'# the hub\nHF_TOKEN="{TOKEN}" # quoted, with a comment\n')
    (demo_ws.cwd / "spectravenv.toml").write_text(f"""
[models.leaky]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = {{ leak_env = ["HF_TOKEN"], api_token = "{TOKEN}" }}

[models.leaky-raise]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = {{ leak_env = ["HF_TOKEN"], leak_raise = true }}

[models.leaky-path]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
model_path = "/nowhere/{TOKEN}/ckpt"
""")
    proc = demo_ws.run("eval", "leaky", "leaky-raise", "leaky-path", "DemoMCQ", "--limit", "2",
                       "--run-name", "s", timeout=900)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # two of the three fail, on purpose
    run = demo_ws.cwd / "outputs" / "s"
    log = (run / "logs" / "leaky.log").read_text()
    # The child got the real value from .env, without the quotes and the comment...
    import hashlib

    assert f"HF_TOKEN sha256={hashlib.sha256(TOKEN.encode()).hexdigest()}" in log
    # ...and its every way of printing it was masked: whole, over two lines, in two writes.
    assert "HF_TOKEN value=***" in log and "HF_TOKEN split=***\n***" in log and "HF_TOKEN pieces=*** end" in log
    # The job file refers to the secret in the model kwargs, never holds it.
    job = (run / ".spectravenv" / "jobs" / "leaky.w1.json").read_text()
    assert "${spectravenv-secret:HF_TOKEN}" in job
    errors = {m: kinds(events(run, m), "job_failed")[0]["error"] for m in ("leaky-raise", "leaky-path")}
    assert "leak_raise test hook: HF_TOKEN=***" in errors["leaky-raise"]
    assert "/nowhere/***/ckpt" in errors["leaky-path"]
    # status and report run elsewhere, without any .env: they need none, and show none.
    elsewhere = Workspace(tmp_path / "elsewhere", demo_ws.home, demo_ws.env)
    elsewhere.cwd.mkdir()
    st = elsewhere.run("status", str(run), check=True)
    rep = elsewhere.run("report", str(run), check=True)
    assert "leak_raise test hook" in st.stdout + rep.stdout
    for out in (proc, st, rep):
        assert TOKEN not in out.stdout + out.stderr
        assert TOKEN[:12] not in out.stdout + out.stderr
    assert leaks(run) == [] and leaks(demo_ws.home) == []


def test_a_copied_or_moved_run_reports_its_own_numbers(demo_ws, tmp_path):
    (demo_ws.cwd / "spectravenv.toml").write_text(
        '[models.answers-a]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
        'kwargs = { fixed_answer = "A" }\n'
    )
    eval_ok(demo_ws, "answers-a", "DemoMCQ", "--limit", "8", "--run-name", "orig")
    orig = demo_ws.cwd / "outputs" / "orig"
    original = (orig / "results" / "summary.csv").read_text()
    copy = tmp_path / "copies" / "copy"
    shutil.copytree(orig, copy, symlinks=True)
    # The original's score file changes afterwards: the copy must not see it.
    acc = orig / "answers-a" / "DemoMCQ" / "answers-a_DemoMCQ_acc.csv"
    acc.write_text(re.sub(r',"?[0-9.]+"?', ',"0.125"', acc.read_text(), count=1))  # VLMEvalKit quotes cells
    demo_ws.run("report", str(copy), check=True)
    assert (copy / "results" / "summary.csv").read_text().replace("copy", "orig") == original
    moved = tmp_path / "moved"
    shutil.move(copy, moved)
    rep = demo_ws.run("report", str(moved), check=True)
    assert "score files missing" not in rep.stdout and "done" in rep.stdout
    demo_ws.run("report", str(orig), check=True)
    assert "12.5" in (orig / "EVALUATION_REPORT.md").read_text()  # its own (changed) file


def test_resume_reuses_nothing_of_another_model_or_dataset(demo_ws):
    toml = demo_ws.cwd / "spectravenv.toml"
    tsv = demo_ws.cwd / "mine.tsv"
    tsv.write_text("index\tquestion\tA\tB\tanswer\tcategory\n"
                   + "".join(f"{i}\tpick one\tyes\tno\tA\tc{i % 2}\n" for i in range(6)))  # fmt: skip
    model = '[models.fixed]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
    bench = '[benchmarks.Mine]\ntsv = "mine.tsv"\nkind = "MCQ"\nsamples = 6\n'
    toml.write_text(model + 'kwargs = { fixed_answer = "A" }\n' + bench)
    eval_ok(demo_ws, "fixed", "DemoMCQ", "Mine", "--run-name", "fp")
    run = demo_ws.cwd / "outputs" / "fp"

    def predictions(bench: str) -> set:
        book = openpyxl.load_workbook(run / "fixed" / bench / f"fixed_{bench}.xlsx")
        rows = list(book.active.values)
        return {r[rows[0].index("prediction")] for r in rows[1:]}

    assert predictions("DemoMCQ") == {"A"}
    same = eval_ok(demo_ws, "fixed", "DemoMCQ", "Mine", "--run-name", "fp")
    assert "already done" in same.stderr  # nothing changed: nothing runs

    toml.write_text(model + 'kwargs = { fixed_answer = "B" }\n' + bench)
    again = eval_ok(demo_ws, "fixed", "DemoMCQ", "Mine", "--run-name", "fp")
    assert "fixed x DemoMCQ runs again: model (kwargs) changed" in again.stderr
    assert predictions("DemoMCQ") == {"B"} and predictions("Mine") == {"B"}
    assert "reset   fixed x DemoMCQ" in again.stderr
    assert (run / "fixed" / "DemoMCQ" / ".superseded" / "1" / "fixed_DemoMCQ.xlsx").is_file()

    tsv.write_text(tsv.read_text().replace("\tA\tc", "\tB\tc"))  # the user's data changed
    changed = eval_ok(demo_ws, "fixed", "DemoMCQ", "Mine", "--run-name", "fp")
    assert "fixed x Mine runs again: dataset changed" in changed.stderr
    assert "fixed x DemoMCQ runs again" not in changed.stderr
    with (run / "results" / "summary.csv").open() as f:
        assert "Mine,done,Overall,100.0" in f.read()  # all B now, and B is right


def test_one_dispatcher_per_run_hangup_stops_it_and_every_attempt_keeps_provenance(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    p = demo_ws.popen("eval", "slow-demo", "DemoMCQ", "--limit", "20", "--run-name", "x")
    run = demo_ws.cwd / "outputs" / "x"
    wait_for(lambda: kinds(events(run, "slow-demo"), "progress", "DemoMCQ"), what="progress")
    for args in (("eval", "slow-demo", "DemoMCQ", "--limit", "20", "--run-name", "x"),
                 ("eval", "--resume", str(run))):  # fmt: skip
        msg = one_line_error(demo_ws.run(*args, timeout=120))
        assert "another spectravenv is working on this run" in msg and f"pid {p.pid}" in msg
    os.kill(p.pid, signal.SIGHUP)  # a closed terminal: stops like Ctrl-C, keeps what finished
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    eval_ok(demo_ws, "--resume", str(run))
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["attempts"]) == 2
    for attempt in manifest["attempts"]:
        assert attempt["envs"]["tf437"]["versions"]["transformers"] == "4.37.2"
        assert attempt["spectravenv"]["version"] and attempt["started"]
    assert "2 attempts (each keeps its own provenance)" in (run / "EVALUATION_REPORT.md").read_text()


def test_one_duration_per_job_and_a_clean_log(demo_ws):
    eval_ok(demo_ws, "demo-tiny-llava", "DemoMCQ", "--limit", "4", "--run-name", "d")
    run = demo_ws.cwd / "outputs" / "d"
    from spectravenv.console import duration

    [done] = kinds(events(run, "demo-tiny-llava"), "job_done")
    took = duration(done["seconds"])
    assert f"ended: exited (exit 0) after {took}" in (run / "logs" / "evaluation_summary.log").read_text()
    report = (run / "EVALUATION_REPORT.md").read_text()
    assert re.search(rf"\| 1 \| 1 \| 0 \| 100.0% \| \S+ \| {took} \|", report), report
    log = (run / "logs" / "demo-tiny-llava.log").read_text()
    assert "Did not detect the .env file" not in log and "ERROR" not in log


def test_waiting_jobs_do_not_flood_nvidia_smi(demo_ws, tmp_path):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS + """
[models.slow-demo-2]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { sleep = 0.4 }
""")
    # Two GPUs, one of them mostly used by someone else: the second job waits for memory on a GPU
    # that is free in the dispatcher's own record.
    (tmp_path / "gpus.csv").write_text(h100s(2, [81000, 10240]))
    calls = tmp_path / "smi.log"
    demo_ws.env.update(PATH=f"{FAKES}:{demo_ws.env['PATH']}", FAKE_SMI_GPUS=str(tmp_path / "gpus.csv"),
                       FAKE_SMI_LOG=str(calls))  # fmt: skip
    eval_ok(demo_ws, "slow-demo", "slow-demo-2", "DemoMCQ", "--limit", "20", "--run-name", "w")
    run = demo_ws.cwd / "outputs" / "w"
    first, second = sorted((kinds(events(run, m), "job_started")[0]["time"], m) for m in ("slow-demo", "slow-demo-2"))
    waited = second[0] - first[0]
    assert waited > 8, "the second job should have waited for the only GPU"
    queries = [ln for ln in calls.read_text().splitlines() if "--query-gpu" in ln]
    # Once for the inventory; while waiting, at once and then at most every 10 s; and once
    # after each of the two workers' ends. A flood would be one a second.
    assert len(queries) <= 1 + (1 + waited / 10) + 2, (len(queries), waited)


def test_a_model_not_loaded_within_the_load_limit_is_stopped_without_timeout(demo_ws):
    """Without --timeout a worker hanging before model_loaded was waited for forever; now the
    load limit (default max(30 min, 10 loads); SPECTRAVENV_LOAD_LIMIT here, below the time
    `import vlmeval` takes) stops it, says why, and counts it as the model's failure."""
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    demo_ws.env["SPECTRAVENV_LOAD_LIMIT"] = "1"
    proc = demo_ws.run("eval", "slow-demo", "DemoMCQ", "--limit", "2", "--run-name", "ll", timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "its model was not loaded after 1s (the load limit" in proc.stderr
    run = demo_ws.cwd / "outputs" / "ll"
    [failed] = kinds(events(run, "slow-demo"), "job_failed")
    assert failed["source"] == "dispatcher" and not kinds(events(run, "slow-demo"), "model_loaded")
    pids = [e["pid"] for e in kinds(events(run, "slow-demo"), "job_started")]
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    del demo_ws.env["SPECTRAVENV_LOAD_LIMIT"]
    eval_ok(demo_ws, "--resume", str(run))  # a new attempt opens the given-up pair again
