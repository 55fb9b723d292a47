"""The built-in demo model is trained, not random: it answers DemoMCQ and DemoShapes from the
image AND the question, and the controls (the same rows with the image blanked, the images
permuted across rows, or the question stripped of its corner) fall to chance.

Real CLI, real env, real VLMEvalKit prompt building and exact-matching evaluation.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import openpyxl
import pytest
from svrunner.protocol import read_events

pytestmark = pytest.mark.heavy

DATASETS = ("DemoMCQ", "DemoShapes")
CONTROLS = ("Blank", "Shuffled", "NoQuestion")
CONTROL_NAMES = [f"{d}_{c}" for d in DATASETS for c in CONTROLS]

# The controls are built-in datasets too, but not in the shipped catalog: declared here.
CONTROL_CATALOG = "".join(
    f'[benchmarks.{name}]\ncategory = "Demo"\nkind = "MCQ"\nmetric = "Overall accuracy"\n'
    f'headline = "Overall"\nscale = 100\nsamples = 24\nbuiltin = "{name}"\n\n'
    for name in CONTROL_NAMES
)


def scores(run: Path) -> dict[str, float]:
    with (run / "results" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert all(r["status"] == "done" for r in rows), rows
    return {r["benchmark"]: float(r["value"]) for r in rows}


def predictions(run: Path, bench: str) -> dict[int, str]:
    wb = openpyxl.load_workbook(run / "demo-tiny-llava" / bench / f"demo-tiny-llava_{bench}.xlsx")
    rows = list(wb.active.values)
    col = {name: i for i, name in enumerate(rows[0])}
    return {int(r[col["index"]]): str(r[col["prediction"]]) for r in rows[1:]}


def test_the_trained_demo_needs_the_image_and_the_question(demo_ws):
    (demo_ws.cwd / "spectravenv.toml").write_text(CONTROL_CATALOG)
    full = demo_ws.run("eval", "demo-tiny-llava", *DATASETS, *CONTROL_NAMES,
                       "--run-name", "full", timeout=1200)  # fmt: skip
    assert full.returncode == 0, full.stderr
    run = demo_ws.cwd / "outputs" / "full"
    got = scores(run)
    for bench in DATASETS:
        assert got[bench] >= 90, got
    # 24 rows, 6 per answer letter and 6 per asked corner: chance is 25 (binomial sd ~9)
    for bench in CONTROL_NAMES:
        assert got[bench] <= 50, (bench, got)

    # Trained once, cached by recipe digest: one checkpoint folder with its training record.
    [ckpt] = (demo_ws.home / "assets").glob("demo-tiny-llava-*")
    assert (ckpt / "training.json").is_file() and (ckpt / "config.json").is_file()
    manifest_mtime = (ckpt / "MANIFEST.json").stat().st_mtime_ns

    # The stratified --limit subset: still above 90, and (same env, same checkpoint) the very
    # same answers as the full run gave for those rows.
    part = demo_ws.run("eval", "demo-tiny-llava", *DATASETS, "--limit", "8",
                       "--run-name", "limited", timeout=1200)  # fmt: skip
    assert part.returncode == 0, part.stderr
    limited = demo_ws.cwd / "outputs" / "limited"
    got = scores(limited)
    for bench in DATASETS:
        assert got[bench] >= 90, got
        some, every = predictions(limited, bench), predictions(run, bench)
        assert len(some) == 8 and some == {i: every[i] for i in some}
    assert (ckpt / "MANIFEST.json").stat().st_mtime_ns == manifest_mtime  # not retrained


# The demo's first-use training as a worker runs it, with the worker's heartbeat installed.
TRAIN = """
import sys
sys.path.insert(0, sys.argv[1])
from svrunner import heartbeat
from svrunner.demo import ensure_demo_model
from svrunner.protocol import EventLog
log = EventLog(sys.argv[3], "demo-tiny-llava.w1", 0)
heartbeat.install(heartbeat.Heartbeat(lambda phase, detail, **counts: log.emit("alive", phase=phase, detail=detail,
                                                                                 **counts), 600))
ensure_demo_model(sys.argv[2])
"""


def test_the_first_use_training_reports_its_steps(demo_ws, tmp_path):
    """The live view shows "training k/N" while the demo trains: the training itself says how
    far it is through the worker's heartbeat (tests/test_progress.py folds such events)."""
    from .conftest import REPO

    demo_ws.run("sync", "tf437", check=True)
    built = (demo_ws.home / "envs").glob("tf437-*/bin/python")
    python = max(built, key=lambda p: p.stat().st_mtime)
    events = tmp_path / "events.jsonl"
    proc = subprocess.run([str(python), "-c", TRAIN, str(REPO / "runners"), str(tmp_path / "assets"), str(events)],
                          env=demo_ws.env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [e for e in read_events(events) if e["event"] == "alive" and e["phase"] == "train"]
    assert (train[0]["done"], train[0]["total"]) == (0, 500)
    steps = [e["done"] for e in train]
    assert steps == sorted(steps) and len(steps) >= 4 and steps[-1] >= 400, steps
    assert train[-1]["detail"] == f"training the demo model: step {steps[-1]} of 500"
