"""Live progress: the view folded from a run's events (light), and real runs drawn on a real
terminal under tmux, plain without one, and followed from elsewhere with `status --watch`."""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from svrunner.protocol import EventLog

from spectravenv.catalog import entries as catalog
from spectravenv.catalog import loader
from spectravenv.paths import Paths
from spectravenv.run import progress, rundir

from .conftest import DATA, Workspace


def shipped(tmp_path: Path) -> catalog.Catalog:
    return loader.load(Paths.from_env({"HOME": str(tmp_path)}, cwd=DATA / "no-config"))


def test_the_view_counts_units_rates_and_finished_pairs_from_events(tmp_path):
    run = rundir.RunDir(tmp_path / "run")
    run.write_manifest({"models": ["demo-tiny-llava"], "benchmarks": ["DemoMCQ", "DemoShapes"], "limit": 10,
                        "status": "running"})  # fmt: skip
    run.write_job({"job_id": "demo-tiny-llava.w1", "model": {"name": "demo-tiny-llava"},
                   "fingerprint": {"env": {"name": "tf437"}}})  # fmt: skip
    cat = shipped(tmp_path)
    tracker = progress.Tracker(run, cat, estimate=100.0)
    v = tracker.view()
    assert (v.done, v.total, v.pairs, v.workers) == (0, 20, 2, [])
    assert v.left is not None and v.left <= 100.0  # the plan's estimate until speeds are measured

    log = EventLog(str(run.events_file("demo-tiny-llava.w1")), "demo-tiny-llava.w1", 0)
    t = time.time()
    log.emit(
        "job_started", at=t, pid=os.getpid(), host=os.uname().nodename, cuda_visible_devices="3"
    )
    log.emit("benchmark_started", at=t + 1, benchmark="DemoMCQ", total=10, shards=2)
    log.emit("unit_started", at=t + 1, benchmark="DemoMCQ", unit=0, of=2, rows=5, reused=1)
    log.emit("progress", at=t + 2, benchmark="DemoMCQ", done=2, total=5, shard=[0, 2])
    log.emit("progress", at=t + 4, benchmark="DemoMCQ", done=4, total=5, shard=[0, 2])
    assert tracker.poll() == []
    v = tracker.view(now=t + 4)
    [w] = v.workers
    assert (w.worker, w.env, w.where, w.benchmark, w.done, w.total) == (
        "demo-tiny-llava.w1", "tf437", "gpu 3", "DemoMCQ", 4, 5)  # fmt: skip
    assert w.rate == pytest.approx(1.0) and w.eta == pytest.approx(1.0)  # 2 samples in 2 s
    assert v.done == 4 and v.left == pytest.approx(16.0)  # 16 left at the measured 1 sample/s
    assert "expected finish" in progress.overall_text(v)

    log.emit("unit_done", at=t + 5, benchmark="DemoMCQ", unit=0, of=2, samples=4, seconds=4)
    (run.path / "m").mkdir()
    (run.path / "m" / "acc.csv").write_text('"split","Overall"\n"none","0.75"\n')
    log.emit("benchmark_done", at=t + 6, benchmark="DemoMCQ", score_files=["m/acc.csv"], samples=10)
    assert tracker.poll() == ["done    demo-tiny-llava x DemoMCQ: Overall accuracy 75.00"]
    assert tracker.view().done == 10 and tracker.view().pairs_finished == 1
    log.emit("job_done", at=t + 7, ok=True)
    tracker.poll()
    assert tracker.view().workers == []
    text = progress.plain(tracker.view())
    assert "\x1b" not in text and "10/20 samples (50%), 1/2 pairs" in text


def test_a_worker_killed_without_a_word_leaves_the_view(tmp_path):
    run = rundir.RunDir(tmp_path / "run")
    run.write_manifest({"models": [], "benchmarks": [], "status": "running"})
    proc = subprocess.Popen(["sleep", "60"])
    log = EventLog(str(run.events_file("m.w1")), "m.w1", 0)
    log.emit("job_started", pid=proc.pid, host=os.uname().nodename)
    tracker = progress.Tracker(run, shipped(tmp_path))
    tracker.poll()
    assert [w.worker for w in tracker.view().workers] == ["m.w1"]
    proc.kill()
    proc.wait()
    assert tracker.view().workers == []


def test_the_demo_training_shows_its_steps_and_no_bogus_finish_while_loading(tmp_path):
    """The demo model trains for a minute inside the worker's model phase: its heartbeat's
    counted steps show as "training k/N" with their own rate and ETA, and once the plan's estimate
    has run out with nothing measured, the view says no finish rather than "in 0s"."""
    import io

    from rich.console import Console

    run = rundir.RunDir(tmp_path / "run")
    run.write_manifest({"models": ["demo-tiny-llava"], "benchmarks": ["DemoMCQ"], "limit": 8,
                        "status": "running"})  # fmt: skip
    run.write_job({"job_id": "demo-tiny-llava.w1", "model": {"name": "demo-tiny-llava"},
                   "fingerprint": {"env": {"name": "tf437"}}})  # fmt: skip
    tracker = progress.Tracker(run, shipped(tmp_path), estimate=5.0)
    log = EventLog(str(run.events_file("demo-tiny-llava.w1")), "demo-tiny-llava.w1", 0)
    t = tracker.began
    log.emit("job_started", at=t, pid=os.getpid(), host=os.uname().nodename)
    log.emit("alive", at=t + 1, phase="import", detail="import vlmeval")
    log.emit("alive", at=t + 2, phase="model", detail="demo-tiny-llava")
    for at, done in ((t + 3, 0), (t + 33, 120)):
        log.emit("alive", at=at, phase="train", detail=f"training the demo model: step {done} of 500",
                 done=done, total=500)  # fmt: skip
    tracker.poll()
    v = tracker.view(now=t + 33)
    [w] = v.workers
    assert (w.stage, w.benchmark, w.done, w.total) == ("training", None, 120, 500)
    assert w.rate == pytest.approx(4.0) and w.eta == pytest.approx(95.0)  # 120 steps in 30 s
    assert "training 120/500" in progress.worker_text(w, v.now)
    assert v.left is None  # the plan said 5 s; nothing measured yet: no finish, not "in 0s"
    text = progress.plain(v)
    assert "expected finish" not in text and "in 0s" not in text
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(progress.rich_view(v, 80))
    [row] = [ln for ln in out.getvalue().splitlines() if ln.startswith("demo-tiny-llava.w1")]
    assert "training" in row and "120/500" in row and "1m35s" in row, out.getvalue()
    assert "done" not in out.getvalue().splitlines()[-1]  # the compact overall line: no finish

    # Training over: the model phase again, then loaded; the steps are no longer shown.
    log.emit("alive", at=t + 80, phase="model", detail="demo-tiny-llava")
    tracker.poll()
    [w] = tracker.view(now=t + 80).workers
    assert (w.stage, w.total) == ("loading", None)
    log.emit("model_loaded", at=t + 81, seconds=80.0)
    log.emit("unit_started", at=t + 82, benchmark="DemoMCQ", unit=0, of=1, rows=8, reused=0)
    log.emit("alive", at=t + 83, phase="dataset", detail="DemoMCQ")
    tracker.poll()
    [w] = tracker.view(now=t + 83).workers
    assert (w.stage, w.benchmark, w.done, w.total) == ("inferring", "DemoMCQ", 0, 8)


def test_the_plan_estimate_gives_the_finish_until_it_runs_out(tmp_path):
    run = rundir.RunDir(tmp_path / "run")
    run.write_manifest({"models": ["demo-tiny-llava"], "benchmarks": ["DemoMCQ"], "limit": 8,
                        "status": "running"})  # fmt: skip
    tracker = progress.Tracker(run, shipped(tmp_path), estimate=100.0)
    assert tracker.view(now=tracker.began + 40).left == pytest.approx(60.0)
    assert tracker.view(now=tracker.began + 100).left is None


# ---- real runs ---------------------------------------------------------------------------------

SLOW = '[models.slow-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\nkwargs = { sleep = 0.5 }\n'


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", "spectravenv-test", *args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", "t")


def wait_screen(pred, what: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = screen()
        if pred(text):
            return text
        assert time.monotonic() < deadline, f"timed out waiting for {what}; screen:\n{text}"
        time.sleep(0.3)


def in_tmux(ws: Workspace, command: list[str]) -> None:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in ws.env.items() if k.isidentifier())
    line = f"cd {shlex.quote(str(ws.cwd))} && env -i {env} {shlex.join(command)}; echo EXITED $?; sleep 600"
    tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", line)


@pytest.fixture
def terminal():
    yield
    subprocess.run(["tmux", "-L", "spectravenv-test", "kill-server"], capture_output=True)


@pytest.mark.heavy
def test_a_run_on_a_terminal_shows_live_workers_and_an_overall_bar(demo_ws, terminal):
    from .conftest import spectravenv_exe

    (demo_ws.cwd / "spectravenv.toml").write_text(SLOW)
    in_tmux(
        demo_ws,
        [*spectravenv_exe(), "eval", "slow-demo", "DemoMCQ", "--limit", "16", "--run-name", "live"],
    )
    text = wait_screen(lambda s: "slow-demo.w1" in s and "/s" in s, "a worker line with its rate")
    assert "tf437" in text and "DemoMCQ" in text and "expected finish" in text
    # The live row (the "started slow-demo.w1 ..." line scrolled above it names the worker too).
    [line] = [ln for ln in text.splitlines() if "slow-demo.w1" in ln and "/s" in ln]
    done, total = line.split("DemoMCQ")[1].split()[0].split("/")
    assert total == "16" and 0 < int(done) <= 16
    final = wait_screen(lambda s: "EXITED" in s, "the run to end")
    assert "EXITED 0" in final
    run = demo_ws.cwd / "outputs" / "live"
    # The finished pair scrolled above the view with the score the tables hold.
    with (run / "results" / "summary.csv").open() as f:
        [row] = list(csv.DictReader(f))
    assert f"done    slow-demo x DemoMCQ: {row['metric']} {float(row['value']):.2f}" in final
    assert "slow-demo.w1" not in final.split("EXITED")[0].splitlines()[-3:], (
        "the live view was cleared"
    )


@pytest.mark.heavy
def test_without_a_terminal_progress_is_plain_lines(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(SLOW)
    proc = demo_ws.run("eval", "slow-demo", "DemoShapes", "--limit", "6", "--run-name", "plain")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr + proc.stdout and "\r" not in proc.stderr
    assert "done    slow-demo x DemoShapes: " in proc.stderr


@pytest.mark.heavy
def test_status_watch_follows_a_run_started_elsewhere(demo_ws, terminal):
    from .conftest import spectravenv_exe

    (demo_ws.cwd / "spectravenv.toml").write_text(SLOW)
    p = demo_ws.popen("eval", "slow-demo", "DemoMCQ", "--limit", "16", "--run-name", "w")
    run = demo_ws.cwd / "outputs" / "w"
    deadline = time.monotonic() + 300
    while not list((run / ".spectravenv" / "events").glob("*.jsonl")):
        assert time.monotonic() < deadline and p.poll() is None, "the run did not start"
        time.sleep(0.2)
    in_tmux(demo_ws, [*spectravenv_exe(), "status", str(run), "--watch"])
    text = wait_screen(lambda s: "slow-demo.w1" in s and "DemoMCQ" in s, "the watched worker")
    assert "samples" in text
    final = wait_screen(lambda s: "EXITED" in s, "watch to end with the run", timeout=400)
    p.communicate(timeout=60)
    assert "EXITED 0" in final and "slow-demo" in final and "done" in final


def _view_with_workers(tmp_path: Path) -> progress.View:
    run = rundir.RunDir(tmp_path / "run")
    run.write_manifest({"models": ["llava_v1.5_13b"], "benchmarks": ["MMBench_DEV_EN"], "status": "running"})
    for n, gpus in ((1, "0,1"), (2, "2,3")):
        job = f"llava_v1.5_13b.w{n}"
        run.write_job({"job_id": job, "model": {"name": "llava_v1.5_13b"}, "fingerprint": {"env": {"name": "tf437"}}})
        log = EventLog(str(run.events_file(job)), job, 0)
        t = time.time()
        log.emit("job_started", at=t, pid=os.getpid(), host=os.uname().nodename, cuda_visible_devices=gpus)
        log.emit("benchmark_started", at=t, benchmark="SEEDBench_IMG_KO", total=14232, shards=2)
        log.emit("unit_started", at=t, benchmark="SEEDBench_IMG_KO", unit=n - 1, of=2, rows=7116, reused=0)
        log.emit("progress", at=t + 1, benchmark="SEEDBench_IMG_KO", done=100, total=7116, shard=[n - 1, 2])
        log.emit("progress", at=t + 60, benchmark="SEEDBench_IMG_KO", done=1300, total=7116, shard=[n - 1, 2])
        log.close()
    tracker = progress.Tracker(run, shipped(tmp_path))
    tracker.poll()
    return tracker.view(now=time.time() + 60)


@pytest.mark.parametrize("width", [80, 132])
def test_the_live_view_fits_the_terminal_and_has_16_colours(tmp_path, width):
    """At 80 columns nothing is cut to "tf4…" and the overall bar is one line; on a 16-colour
    terminal the colours are standard ANSI ones (30-37, 90-97), not approximations."""
    import io
    import re

    from rich.console import Console

    v = _view_with_workers(tmp_path)
    out = io.StringIO()
    console = Console(file=out, width=width, color_system="standard", force_terminal=True)
    console.print(progress.rich_view(v, width))
    text = out.getvalue()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = plain.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= width, plain
    assert len(lines) == 1 + len(v.workers) + 1, plain  # header, one per worker, one overall line
    for line in lines[1:3]:
        assert " tf437 " in line and "…" not in line.split("tf437")[0][-3:], plain
    assert "samples" in lines[-1] and "pairs" in lines[-1]
    codes = {int(c) for seq in re.findall(r"\x1b\[([0-9;]*)m", text) for c in seq.split(";") if c}
    colours = {c for c in codes if 30 <= c <= 37 or 90 <= c <= 97}
    assert len(colours) >= 3, codes
    assert not any(c in (38, 48) for c in codes)  # no 256-colour or truecolor sequences


def test_the_display_on_an_80_column_16_colour_terminal(tmp_path, monkeypatch):
    """The console a run draws on is rich's own reading of the terminal (COLUMNS, TERM): on an
    80-column xterm (16 colours) no drawn line is wider than 80 and the colours are the standard
    ANSI ones, for inferring and training workers alike."""
    import io
    import re

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in ("COLORTERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "LINES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERM", "xterm")
    v = _view_with_workers(tmp_path)
    run = rundir.RunDir(tmp_path / "run")
    job = "demo-tiny-llava.w3"
    run.write_job({"job_id": job, "model": {"name": "demo-tiny-llava"},
                   "fingerprint": {"env": {"name": "tf437"}}})  # fmt: skip
    log = EventLog(str(run.events_file(job)), job, 0)
    log.emit("job_started", pid=os.getpid(), host=os.uname().nodename)
    log.emit("alive", phase="train", detail="training the demo model: step 120 of 500",
             done=120, total=500)  # fmt: skip
    log.close()
    tracker = progress.Tracker(run, shipped(tmp_path))
    out = Terminal()
    display = progress.Display(out, tracker)
    display.refresh()
    display.close()
    text = out.getvalue()
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")
    lines = [line for line in drawn.splitlines() if line.strip()]
    assert len(v.workers) == 2, v  # the two inferring workers; the training one joins them
    assert any("training" in line and "120/500" in line for line in lines), drawn
    assert sum("tf437" in line for line in lines) >= 3, drawn  # three workers, none cut to "tf4…"
    assert max(len(line) for line in lines) <= 80, drawn
    codes = {int(c) for seq in re.findall(r"\x1b\[([0-9;]*)m", text) for c in seq.split(";") if c}
    assert len({c for c in codes if 30 <= c <= 37 or 90 <= c <= 97}) >= 3, codes
    assert not any(c in (38, 48) for c in codes)  # no 256-colour or truecolor sequences
