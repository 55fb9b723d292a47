"""The local dispatcher with scripted workers (tests/scripted_worker.py: the runner's protocol and
units, no torch): every way out stops what it started, GPU re-reads that fail, the watchdog's
rules, retries and the given-up marker, --max-gpus, and when a stop is an interruption.
Real processes, real event files, real unit files; only the GPUs are canned."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from svrunner import units
from svrunner.protocol import read_events

from spectravenv.catalog.entries import Benchmark, Env, Model
from spectravenv.errors import SpectravenvError
from spectravenv.plan import gpus
from spectravenv.plan.jobs import Job, Plan
from spectravenv.run import work
from spectravenv.run.local import Launch, run_plan
from spectravenv.run.progress import Display
from spectravenv.run.rundir import RunDir
from spectravenv.run.watchdog import Limits
from spectravenv.secrets import Secrets

from .gpu_fixtures import h100s

SCRIPTED = Path(__file__).parent / "scripted_worker.py"
ENV = Env("scripted", "3.11", "4.37.2", Path("none.lock"))


def job(name: str, script: dict, benches: tuple[str, ...] = ("B",), rows: int = 2, shards: int = 1,
        load_seconds: float = 1.0, gb: float = 1) -> Job:  # fmt: skip
    model = Model(name=name, env=ENV.name, gpu_memory_gb=gb, load_seconds=load_seconds, kwargs={"script": script})
    return Job(id=name, model=model, env=ENV, benchmarks=[Benchmark(b, samples=rows) for b in benches],
               shards={b: shards for b in benches})  # fmt: skip


class Harness:
    """A run folder, a fake env python that runs the scripted worker, and the dispatcher."""

    def __init__(self, tmp: Path, n_gpus: int = 1) -> None:
        self.run = RunDir(tmp / "run")
        self.run.internal.mkdir(parents=True)
        self.python = tmp / "python"  # the "env's python": drops the runner's path, runs the script
        self.python.write_text(f'#!/bin/sh\nshift\nexec {sys.executable} {SCRIPTED} "$@"\n')
        self.python.chmod(0o755)
        self.gpus = gpus.parse_query(h100s(n_gpus)) if n_gpus else []
        self.console = io.StringIO()
        self.stop = threading.Event()
        self.pids: list[int] = []

    def spec(self, j: Job, worker: str) -> Path:
        return self.run.write_job({
            "job_id": worker, "model": {"name": j.model.name, "kwargs": j.model.kwargs},
            "benchmarks": [{"name": b.name, "shards": j.shards[b.name], "rows": b.samples} for b in j.benchmarks],
            "units_dir": work.units_dir(self.run), "events": str(self.run.events_file(worker)),
        })  # fmt: skip

    def env(self, g: list | None, addons: list, threads: int | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if g is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(x.cuda_id for x in g)
        return env

    def launch(self, **kw) -> Launch:
        return Launch(run=self.run, pythons={ENV.name: self.python}, addons={}, secrets=Secrets(),
                      child_env=self.env, write_job=self.spec, **kw)  # fmt: skip

    def dispatch(self, jobs: list[Job], launch: Launch, timeout: float = 120) -> bool:
        """Run the dispatcher in a thread (the test watches), with a deadline: a dispatcher that
        would wait forever fails the test instead of hanging it."""
        plan = Plan(jobs, self.gpus, None)
        out: dict = {}

        def go() -> None:
            try:
                out["interrupted"] = run_plan(plan, launch, Display(self.console), self.stop)
            except BaseException as e:  # handed to the test
                out["error"] = e

        t = threading.Thread(target=go, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.stop.set()
            t.join(60)
            raise AssertionError(f"the dispatcher was still running after {timeout}s:\n{self.console.getvalue()}")
        if "error" in out:
            raise out["error"]
        return out["interrupted"]

    def events(self, worker: str) -> list[dict]:
        return read_events(self.run.events_file(worker))

    def kinds(self, worker: str) -> list[str]:
        return [e["event"] for e in self.events(worker)]

    def worker_pids(self) -> list[int]:
        return [e["pid"] for w in self.run.job_ids() for e in self.events(w) if e["event"] == "job_started"]

    def alive(self) -> list[int]:
        """Workers of this run still running (none may outlive the dispatcher)."""
        live = []
        for pid in self.worker_pids():
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    live.append(pid)
            except psutil.NoSuchProcess:
                pass
        return live

    def wait_for(self, pred, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.console.getvalue()}"
            time.sleep(0.05)

    def summary(self) -> str:
        return self.run.summary_log.read_text() if self.run.summary_log.exists() else ""


def fast(**kw) -> Limits:
    return Limits(**{"stall": 60.0, "heartbeat": 0.2, "heartbeat_lost": 60.0, "load": 60.0, **kw})


# ---- every way out stops what it started ------------------------------------------------------


def test_an_error_inside_the_dispatcher_stops_its_workers(tmp_path):
    """A bug of the dispatcher's own (here: the GPU re-read raises something unexpected) ends the
    run with the error, but never with its workers left running on the GPUs."""
    h = Harness(tmp_path)
    calls = []

    def requery() -> list:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom in the dispatcher")
        return h.gpus

    # Two models of 20 GB, and two GPUs of which one has 10 GB free: the second model waits, and
    # the re-read for it (every 10 s) comes while the first runs.
    h.gpus = gpus.parse_query(h100s(2, [81000, 10240]))
    jobs = [job("a", {"load": 0.1, "sample": 0.5}, rows=100, gb=20), job("b", {"load": 0.1}, gb=20)]
    with pytest.raises(RuntimeError, match="boom in the dispatcher"):
        h.dispatch(jobs, h.launch(requery=requery, limits=fast()))
    assert h.worker_pids(), "the first worker should have started"
    assert h.alive() == []
    assert "the dispatcher stopped: RuntimeError: boom in the dispatcher" in h.events("a.w1")[-1].get("error", "")


def test_a_failed_gpu_reread_keeps_the_last_readings_and_the_run_goes_on(tmp_path):
    h = Harness(tmp_path)
    calls = []

    def requery() -> list:
        calls.append(1)
        if len(calls) > 1:
            raise SpectravenvError("nvidia-smi did not answer within 30 s: nvidia-smi --query-gpu=...")
        return h.gpus

    jobs = [job("a", {"load": 0.1}, rows=3), job("b", {"load": 0.1}, rows=3), job("c", {"load": 0.1})]
    assert h.dispatch(jobs, h.launch(requery=requery, limits=fast())) is False
    assert len(calls) >= 3  # asked again after each worker ended
    for name in ("a", "b", "c"):
        assert h.kinds(f"{name}.w1")[-1] == "job_done"
    warned = [ln for ln in h.console.getvalue().splitlines() if "could not re-read GPU memory" in ln]
    assert len(warned) == 1 and "going on with the last readings" in warned[0]


def test_a_stop_after_every_pair_finished_is_no_interruption(tmp_path):
    """Ctrl-C while the last worker tears down (job_done written, process not yet gone): the
    run is finished, not interrupted; the lingering worker is stopped all the same."""
    h = Harness(tmp_path)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(
        r=h.dispatch([job("a", {"load": 0.1, "linger": 600})], h.launch(limits=fast()))))  # fmt: skip
    t.start()
    h.wait_for(lambda: "job_done" in h.kinds("a.w1") if h.run.events_file("a.w1").exists() else False, "job_done")
    h.stop.set()
    t.join(60)
    assert out["r"] is False
    assert h.alive() == []


def test_a_stop_with_work_left_is_an_interruption(tmp_path):
    h = Harness(tmp_path)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(
        r=h.dispatch([job("a", {"load": 0.1, "sample": 0.5}, rows=100)], h.launch(limits=fast()))))  # fmt: skip
    t.start()
    h.wait_for(lambda: "progress" in h.kinds("a.w1") if h.run.events_file("a.w1").exists() else False, "progress")
    h.stop.set()
    t.join(60)
    assert out["r"] is True and h.alive() == []


def test_workers_end_with_a_dispatcher_killed_outright(tmp_path):
    """SIGKILL (or the OOM killer) gives the dispatcher no chance to stop anything: its workers
    are told by the kernel (procs.spawn) and end."""
    code = (
        "import os, sys, time; from pathlib import Path; from spectravenv import procs\n"
        "p, _ = procs.spawn(['sleep', '600'], log=Path(sys.argv[1]), env=dict(os.environ))\n"
        "print(p.pid, flush=True); time.sleep(600)\n"
    )
    import subprocess

    boss = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(boss.stdout.readline()))
    assert worker.is_running()
    boss.kill()
    boss.wait()
    try:
        worker.wait(timeout=30)
    except psutil.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker outlived its killed dispatcher") from None


# ---- the watchdog -----------------------------------------------------------------------------


def test_a_worker_silent_in_evaluation_is_not_stopped(tmp_path):
    """Merge and evaluation (an API judge, minutes) say nothing: that is no stall. Here the stall
    limit is 1 s and the evaluation takes 4 s, with no event at all (an older runner)."""
    h = Harness(tmp_path)
    j = job("a", {"load": 0.1, "evaluate": 4})
    assert h.dispatch([j], h.launch(limits=fast(stall=1.0))) is False
    assert h.kinds("a.w1")[-1] == "job_done" and "benchmark_done" in h.kinds("a.w1")
    assert "stopped" not in h.console.getvalue()


def test_heartbeats_keep_a_slow_phase_alive_and_their_loss_stops_a_hung_worker(tmp_path):
    h = Harness(tmp_path)
    # Loading for 3 s with a heartbeat every 0.2 s: alive, though the limit of silence is 1 s.
    ok = job("ok", {"load": 3, "heartbeat": 0.2})
    # Heartbeats during load, then frozen in evaluation: no event at all for 1 s -> hung.
    frozen = job("frozen", {"load": 0.2, "heartbeat": 0.2, "hang": "evaluate", "silent": True})
    h.gpus = gpus.parse_query(h100s(2))
    h.dispatch([ok, frozen], h.launch(limits=fast(heartbeat_lost=1.0)))
    assert h.kinds("ok.w1")[-1] == "job_done"
    [failed] = [e for e in h.events("frozen.w1") if e["event"] == "job_failed"]
    assert "no event and no heartbeat for 1s" in failed["error"]
    assert h.alive() == []
    st = units.state(work.units_dir(h.run), "frozen", "B", 1)
    assert st.failed and st.failed["given_up"]  # --retries 0: given up


def test_a_generate_call_that_hangs_is_a_stall_though_heartbeats_go_on(tmp_path):
    h = Harness(tmp_path)
    j = job("a", {"load": 0.1, "heartbeat": 0.2, "hang": "infer"})
    h.dispatch([j], h.launch(limits=fast(stall=1.5)))
    [failed] = [e for e in h.events("a.w1") if e["event"] == "job_failed"]
    assert "no progress for 1.5s while inferring" in failed["error"]
    assert h.alive() == []


def test_a_model_that_never_loads_is_stopped_without_timeout(tmp_path):
    h = Harness(tmp_path)
    j = job("a", {"heartbeat": 0.2, "hang": "load"})
    h.dispatch([j], h.launch(limits=fast(load=1.5), retries=1))
    evs = [e for w in ("a.w1", "a.w2") for e in h.events(w) if e["event"] == "job_failed"]
    assert len(evs) == 2 and all("was not loaded after 1.5s (the load limit" in e["error"] for e in evs)
    assert "retry   a (1/1)" in h.console.getvalue()
    assert h.alive() == []


def test_the_load_limit_is_ten_loads_and_at_least_half_an_hour():
    assert Limits().load_limit(job("a", {}, load_seconds=30)) == 1800
    assert Limits().load_limit(job("a", {}, load_seconds=600)) == 6000
    assert Limits(load=5).load_limit(job("a", {}, load_seconds=600)) == 5
    assert Limits(heartbeat=30).lost == 300 and Limits(heartbeat=60).lost == 600
    with pytest.raises(SpectravenvError, match="SPECTRAVENV_STALL='soon' is not a number of seconds"):
        Limits.from_env({"SPECTRAVENV_STALL": "soon"})


# ---- retries, given up, --max-gpus ------------------------------------------------------------


def test_a_worker_that_dies_is_retried_and_a_model_given_up_stays_given_up(tmp_path):
    h = Harness(tmp_path)
    dies = job("d", {"load": 0.1, "exit_after": "load"}, benches=("B1", "B2"))
    h.dispatch([dies], h.launch(limits=fast(), retries=1))
    console = h.console.getvalue()
    assert "retry   d (1/1)" in console and "the runner exited with code 3 without reporting" in console
    assert sorted(h.run.job_ids()) == ["d.w1", "d.w2"]  # one retry, then given up: no third start
    lf = work.left(h.run, dies, None)
    assert lf.given_up == ["B1", "B2"] and lf.failed == [] and lf.finished
    assert work.reopen(h.run, dies) == []  # a retry of this attempt leaves them closed
    assert "job d gave up on B1, B2" in h.summary()
    assert work.reopen(h.run, dies, given_up=True) == ["B1", "B2"]  # a new attempt opens them


def test_max_gpus_caps_the_workers_of_a_local_run(tmp_path):
    h = Harness(tmp_path, n_gpus=3)
    jobs = [job(n, {"load": 0.1, "sample": 0.1}, rows=4) for n in ("a", "b", "c")]
    h.dispatch(jobs, h.launch(limits=fast(), max_gpus=1))
    lines = [ln.split(" ", 2)[2] for ln in h.summary().splitlines() if " worker " in ln]
    running = 0
    for line in lines:
        running += 1 if " started on " in line else -1 if " ended: " in line else 0
        assert running <= 1, lines
    assert all(h.kinds(f"{n}.w1")[-1] == "job_done" for n in ("a", "b", "c"))


def test_max_gpus_on_the_command_line_of_a_local_run(ws):
    proc = ws.run("eval", "qwen_chat", "llava_v1.5_7b", "MMBench_DEV_EN", "--dry-run", "--assume-gpus", "4x80",
                  "--max-gpus", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [first] = [ln for ln in proc.stdout.splitlines() if ln.startswith("first workers:")]
    assert first.count(" on GPU ") == 1 and "(--max-gpus 1: at most 1 GPUs at once)" in first
    assert "watchdog: a worker is stopped when its model is not loaded within 30m" in proc.stdout


def test_json_of_a_given_up_pair(tmp_path):
    folder = str(tmp_path)
    units.mark_given_up(folder, "m", "B", 2, "out of retries")
    marker = json.loads((tmp_path / "m" / "B" / "n2" / "failed").read_text())
    assert marker["given_up"] and marker["error"] == "out of retries"
    assert units.claim(folder, units.Unit("m", "B", 2, 0), "w") is None  # workers stop, as for any failure
    units.reset_failed(folder, "m", "B", 2)
    assert units.pair_failed(folder, "m", "B", 2) is None
