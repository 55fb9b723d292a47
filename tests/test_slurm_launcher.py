"""`spectravenv eval --launcher slurm` against the real single-node Slurm that .ci/run starts
(4 fake GPUs as GRES). Skipped with the reason where no cluster is reachable; failed under CI."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import openpyxl
import pytest

from .test_envs import one_line_error
from .test_eval_demo import USER_MODELS, eval_ok, events, kinds, wait_for
from .test_slurm_cluster import slurm, slurm_cluster  # noqa: F401  (autouse: cluster or skip/fail)

pytestmark = [pytest.mark.slurm, pytest.mark.heavy]
SLURM = ["--launcher", "slurm", "--cpus-per-gpu", "1"]


def summary(run: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (run / "results" / "summary.csv").open() as f:
        return {(r["model"], r["benchmark"]): r for r in csv.DictReader(f)}


def test_demo_through_slurm_matches_a_local_run_in_shape(demo_ws):
    eval_ok(
        demo_ws, "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--limit", "4", "--run-name", "loc"
    )
    proc = eval_ok(demo_ws, "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--limit", "4",
                   "--run-name", "slu", *SLURM)  # fmt: skip
    assert "submitted demo-tiny-llava.w1 as Slurm job" in proc.stderr
    loc, slu = demo_ws.cwd / "outputs" / "loc", demo_ws.cwd / "outputs" / "slu"
    assert sorted(p.name for p in (loc / "results").iterdir()) == sorted(
        p.name for p in (slu / "results").iterdir()
    )
    a, b = summary(loc), summary(slu)
    assert a.keys() == b.keys() and all(r["status"] == "done" for r in b.values())
    # Same samples, same model, same scores.
    assert [a[k]["value"] for k in sorted(a)] == [b[k]["value"] for k in sorted(b)]
    manifest = json.loads((slu / "run.json").read_text())
    assert manifest["launcher"] == "slurm" and manifest["slurm_jobs"]["demo-tiny-llava.w1"]


def test_gpu_jobs_get_distinct_devices_from_slurm(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    eval_ok(demo_ws, "slow-demo", "flaky-demo", "demo-tiny-llava", "DemoMCQ", "--limit", "6",
            "--run-name", "g", *SLURM)  # fmt: skip
    run = demo_ws.cwd / "outputs" / "g"
    seen = [
        kinds(events(run, m), "job_started")[0]
        for m in ("slow-demo", "flaky-demo", "demo-tiny-llava")
    ]
    devices = [e["cuda_visible_devices"] for e in seen]
    assert len(set(devices)) == 3 and set(devices) <= {"0", "1", "2", "3"}, devices


def test_a_cancelled_job_is_reported_and_resume_completes_it(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    p = demo_ws.popen("eval", "slow-demo", "DemoMCQ", "--limit", "20", "--run-name", "c", *SLURM)
    run = demo_ws.cwd / "outputs" / "c"
    wait_for(lambda: kinds(events(run, "slow-demo"), "progress", "DemoMCQ"), what="progress")
    job_id = json.loads((run / "run.json").read_text())["slurm_jobs"]["slow-demo.w1"]
    slurm("scancel", job_id)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    row = summary(run)[("slow-demo", "DemoMCQ")]
    assert row["status"] == "failed" and f"Slurm job {job_id} CANCELLED" in row["error"]

    resumed = demo_ws.run("eval", "--resume", str(run), *SLURM, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert summary(run)[("slow-demo", "DemoMCQ")]["status"] == "done"


def test_an_impossible_request_is_refused_before_anything_is_submitted(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(
        '[models.huge-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ngpu_memory_gb = 300\ngpus = 5\n'
        "multi_gpu = true\n"
    )
    msg = one_line_error(demo_ws.run("eval", "huge-demo", "DemoMCQ", "--run-name", "x", *SLURM))
    assert "Slurm refuses the job for huge-demo (5 GPUs)" in msg
    assert "Requested node configuration is not available" in msg
    assert "slurm_jobs" not in json.loads((demo_ws.cwd / "outputs" / "x" / "run.json").read_text())


def test_controller_down_is_a_clear_error_within_seconds(demo_ws, tmp_path):
    conf = Path(os.environ["SLURM_CONF"]).read_text()
    dead = tmp_path / "slurm.conf"
    dead.write_text("\n".join(
        "SlurmctldPort=1" if line.startswith("SlurmctldPort") else line for line in conf.splitlines()
    ) + ("\n" if "SlurmctldPort" in conf else "\nSlurmctldPort=1\n"))  # fmt: skip
    demo_ws.env["SLURM_CONF"] = str(dead)
    t0 = time.monotonic()
    msg = one_line_error(
        demo_ws.run("eval", "demo-tiny-llava", "DemoMCQ", "--limit", "2", *SLURM, timeout=120)
    )
    assert time.monotonic() - t0 < 60
    assert "Slurm controller is not reachable" in msg


def test_retries_resubmit_only_what_failed(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    proc = demo_ws.run("eval", "flaky-demo", "DemoMCQ", "DemoShapes", "--limit", "3", "--retries", "1",
                       "--run-name", "r", *SLURM, timeout=600)  # fmt: skip
    assert proc.returncode == 1 and "retry   flaky-demo (1/1)" in proc.stderr
    assert proc.stderr.count("submitted flaky-demo.w") == 2  # w1, then w2 for the retry
    evs = events(demo_ws.cwd / "outputs" / "r", "flaky-demo")
    assert len(kinds(evs, "benchmark_started", "DemoMCQ")) == 1
    assert len(kinds(evs, "benchmark_failed", "DemoShapes")) == 2


def test_spaces_in_paths_and_secrets_stay_out_of_the_slurm_log(demo_ws):
    from .test_hardening import TOKEN, leaks

    (demo_ws.cwd / ".env").write_text(f"HF_TOKEN='{TOKEN}'\n")
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    out = demo_ws.cwd / "out dir"  # #SBATCH paths are quoted
    proc = eval_ok(demo_ws, "env-demo", "DemoMCQ", "--limit", "2", "--output-dir", str(out),
                   "--run-name", "sp", *SLURM)  # fmt: skip
    run = out / "sp"
    [slurm_log] = (run / "logs").glob("env-demo.slurm-*.log")
    text = slurm_log.read_text()
    assert "HF_TOKEN value=***" in text and "HF_TOKEN pieces=*** end" in text
    assert leaks(run) == [] and TOKEN not in proc.stdout + proc.stderr
    assert summary(run)[("env-demo", "DemoMCQ")]["status"] == "done"


def test_a_controller_that_stops_answering_for_a_while_does_not_stop_the_run(demo_ws):
    import signal

    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    p = demo_ws.popen(
        "eval", "slow-demo", "DemoMCQ", "--limit", "20", "--run-name", "pause", *SLURM
    )
    run = demo_ws.cwd / "outputs" / "pause"
    wait_for(lambda: kinds(events(run, "slow-demo"), "progress", "DemoMCQ"), what="progress")
    pid_file = Path(os.environ["SLURM_CONF"]).parent / "run" / "slurmctld.pid"
    ctld = int(pid_file.read_text().strip())
    os.kill(ctld, signal.SIGSTOP)  # squeue now times out, like a controller restarting
    try:
        time.sleep(25)
    finally:
        os.kill(ctld, signal.SIGCONT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "Slurm did not answer" in err and "Slurm answers again" in err
    assert summary(run)[("slow-demo", "DemoMCQ")]["status"] == "done"


def test_resume_waits_for_live_slurm_jobs_instead_of_duplicating_them(demo_ws):
    from .test_slurm_cluster import wait_for_job

    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    eval_ok(
        demo_ws, "slow-demo", "DemoMCQ", "--limit", "12", "--run-name", "nw", *SLURM, "--no-wait"
    )
    run = demo_ws.cwd / "outputs" / "nw"
    job_id = json.loads((run / "run.json").read_text())["slurm_jobs"]["slow-demo.w1"]
    for resume in (("--resume", str(run), *SLURM), ("--resume", str(run))):
        msg = one_line_error(demo_ws.run("eval", *resume, timeout=120))
        assert f"still has Slurm jobs queued or running ({job_id})" in msg
    assert wait_for_job(job_id, timeout=300).state == "COMPLETED"
    again = eval_ok(demo_ws, "--resume", str(run), *SLURM)
    assert "already done" in again.stderr
    assert len(kinds(events(run, "slow-demo"), "job_started")) == 1


def test_two_slurm_workers_share_one_benchmark_and_never_run_the_same_unit(demo_ws):
    """Workers are batch jobs that claim units from the run folder: a benchmark the cost model
    says is long is split into units, two Slurm jobs (--max-gpus 2) take them, and each unit
    is inferred once; the merged predictions equal a single local process's."""
    # The estimate (30 s a sample) makes DemoMCQ long enough to divide; the run itself is fast.
    (demo_ws.cwd / "spectravenv.toml").write_text(
        '[models.claim-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
        "seconds_per_sample = 30\nload_seconds = 1\nkwargs = { sleep = 0.3 }\n"
    )
    eval_ok(demo_ws, "claim-demo", "DemoMCQ", "--limit", "16", "--run-name", "one")
    proc = eval_ok(demo_ws, "claim-demo", "DemoMCQ", "--limit", "16", "--run-name", "two",
                   "--max-gpus", "2", *SLURM)  # fmt: skip
    run = demo_ws.cwd / "outputs" / "two"
    evs = events(run, "claim-demo")
    workers = {e["worker"] for e in kinds(evs, "job_started")}
    assert len(workers) == 2, proc.stderr
    assert len(json.loads((run / "run.json").read_text())["slurm_jobs"]) == 2
    started = [(e["unit"], e["of"]) for e in kinds(evs, "unit_started", "DemoMCQ")]
    done = [(e["unit"], e["of"]) for e in kinds(evs, "unit_done", "DemoMCQ")]
    [(_, shards)] = {(0, of) for _, of in started}
    assert shards > 2 and sorted(started) == sorted(done) == [(k, shards) for k in range(shards)]
    assert {e["worker"] for e in kinds(evs, "unit_done")} == workers  # both took units
    assert len(kinds(evs, "benchmark_done", "DemoMCQ")) == 1  # evaluated once, on the merged file

    def predictions(name: str) -> list:
        sheet = openpyxl.load_workbook(
            demo_ws.cwd / "outputs" / name / "claim-demo/DemoMCQ/claim-demo_DemoMCQ.xlsx"
        )
        return list(sheet.active.values)

    assert predictions("two") == predictions("one")
    assert (
        summary(run)[("claim-demo", "DemoMCQ")]["value"]
        == summary(demo_ws.cwd / "outputs" / "one")[("claim-demo", "DemoMCQ")]["value"]
    )


def test_a_worker_cancelled_mid_unit_loses_only_that_unit_to_another_worker(demo_ws):
    """scancel of one of two workers while it infers a unit: the dispatcher releases its claim
    as soon as Slurm says the job ended (no waiting for a time limit), the model has a retry
    left, and the unit is finished by another worker of the same run; the predictions equal a
    single local process's."""
    # 5 s a sample estimated: DemoMCQ --limit 8 is two units of four rows; a row takes 1 s.
    (demo_ws.cwd / "spectravenv.toml").write_text(
        '[models.claim-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
        "seconds_per_sample = 5\nload_seconds = 1\nkwargs = { sleep = 1.0 }\n"
    )
    eval_ok(demo_ws, "claim-demo", "DemoMCQ", "--limit", "8", "--run-name", "one")
    p = demo_ws.popen("eval", "claim-demo", "DemoMCQ", "--limit", "8", "--run-name", "sc", "--max-gpus", "2",
                      "--retries", "1", *SLURM)  # fmt: skip
    run = demo_ws.cwd / "outputs" / "sc"

    def mid_unit() -> dict | None:
        """A worker's first progress inside a unit, with rows of it still to do."""
        return next((e for e in kinds(events(run, "claim-demo"), "progress") if e["done"] < e["total"]), None)

    wait_for(mid_unit, what="a worker inside a unit", timeout=300)
    victim = mid_unit()["worker"]
    job_id = json.loads((run / "run.json").read_text())["slurm_jobs"][victim]
    slurm("scancel", job_id)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert f"Slurm job {job_id} CANCELLED" in err and "retry   claim-demo (1/1)" in err
    evs = events(run, "claim-demo")
    mine = [e for e in evs if e["worker"] == victim]
    lost = {e["unit"] for e in kinds(mine, "unit_started")} - {e["unit"] for e in kinds(mine, "unit_done")}
    assert lost, "the cancelled worker held no unit"
    for unit in lost:
        assert {e["worker"] for e in kinds(evs, "unit_done") if e["unit"] == unit} - {victim}, unit
    sheet = "claim-demo/DemoMCQ/claim-demo_DemoMCQ.xlsx"
    one = openpyxl.load_workbook(demo_ws.cwd / "outputs" / "one" / sheet).active.values
    assert list(openpyxl.load_workbook(run / sheet).active.values) == list(one)


def test_a_worker_that_does_not_load_in_time_is_cancelled_by_the_watchdog(demo_ws):
    """The local watchdog's rules hold on Slurm, from the job's first event (the time in the
    queue aside): here a load limit below `import vlmeval`'s time."""
    (demo_ws.cwd / "spectravenv.toml").write_text(USER_MODELS)
    demo_ws.env["SPECTRAVENV_LOAD_LIMIT"] = "1"
    proc = demo_ws.run("eval", "slow-demo", "DemoMCQ", "--limit", "2", "--run-name", "wd", *SLURM, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "its model was not loaded after 1s (the load limit" in proc.stderr and "(scancel " in proc.stderr
    run = demo_ws.cwd / "outputs" / "wd"
    row = summary(run)[("slow-demo", "DemoMCQ")]
    assert row["status"] == "failed" and "the load limit" in row["error"]
    assert not kinds(events(run, "slow-demo"), "model_loaded")
