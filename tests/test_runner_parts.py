"""The runner's pure parts, imported on the host: events protocol, subset choice, fingerprints,
the heartbeat, the circular-evaluation guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from svrunner import fingerprint, sampling
from svrunner.protocol import KINDS, EventLog, EventReader, read_events

from .conftest import REPO


def test_every_event_kind_round_trips_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / "e.jsonl"
    log = EventLog(str(path), "j", 0)
    for kind in sorted(KINDS):
        log.emit(kind, benchmark="B", value=float("nan"), nested={"x": (1, 2)})
    evs = read_events(path)
    assert [e["event"] for e in evs] == sorted(KINDS)
    assert all(e["job_id"] == "j" and e["rank"] == 0 and e["value"] is None for e in evs)
    assert evs[0]["nested"] == {"x": [1, 2]}
    # A crash mid-write leaves half a line: readers skip it, the next writer starts afresh.
    with path.open("ab") as f:
        f.write(b'{"event": "progress", "ti')
    reader = EventReader(str(path))
    assert len(reader.read()) == len(KINDS)
    EventLog(str(path), "j", 0).emit("job_done", ok=True, failed=[], seconds=1.0)
    assert [e["event"] for e in reader.read()] == ["job_done"]


def test_the_limit_subset_is_stratified_deterministic_and_keeps_circular_groups():
    indices = list(range(40))
    cats = ["a"] * 30 + ["b"] * 8 + ["c"] * 2
    rows, info = sampling.choose_subset(indices, cats, 10, seed=0)
    assert len(rows) == 10 and info["per_category"] == {"a": 7, "b": 2, "c": 1}
    assert sampling.choose_subset(indices, cats, 10, seed=0)[0] == rows
    assert sampling.choose_subset(indices, cats, 10, seed=1)[0] != rows
    assert rows != list(range(10))
    # MMBench style: i + 1e6 is a rotation of question i; whole questions are chosen.
    circ = [1, 2, 3, 4, 1_000_001, 1_000_002, 1_000_003, 1_000_004]
    rows, info = sampling.choose_subset(circ, ["x"] * 8, 2, seed=0)
    assert info["circular"] and len(rows) == 4
    assert {r % 1_000_000 for r in rows} == {r for r in rows if r < 1_000_000}
    assert sampling.allocate({"a": 5, "b": 1}, 3) == {"a": 2, "b": 1}
    assert sampling.allocate({"a": 5, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}


def test_fingerprint_changes_name_the_part_and_ignore_unknowns(tmp_path):
    old = {"settings": {"limit": 8}, "model": {"kwargs": {"a": 1}}, "checkpoint": None, "dataset": "d1"}
    assert fingerprint.changes(old, {**old, "checkpoint": "hub:x@1"}) == []  # unknown before
    assert fingerprint.changes(old, {**old, "model": {"kwargs": {"a": 2}}}) == ["model (kwargs)"]
    assert fingerprint.changes(old, {**old, "dataset": "d2"}) == ["dataset"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    first = fingerprint.checkpoint_identity(str(ckpt), None)
    (ckpt / "model.safetensors").write_bytes(b"w")
    assert first.startswith("dir:") and fingerprint.checkpoint_identity(str(ckpt), None) != first
    hub = tmp_path / "hf" / "hub" / "models--org--m" / "refs"
    hub.mkdir(parents=True)
    (hub / "main").write_text("abc123\n")
    assert fingerprint.checkpoint_identity("org/m", str(tmp_path / "hf")) == "hub:org/m@abc123"
    assert fingerprint.checkpoint_identity("org/other", str(tmp_path / "hf")) is None


def test_dataset_hashes_are_cached_by_size_and_mtime(tmp_path):
    tsv = tmp_path / "B.tsv"
    tsv.write_text("index\tquestion\n1\tq\n")
    cache = tmp_path / "cache"
    first = fingerprint.dataset_sha256(str(tsv), str(cache))
    assert json.loads((cache / "B.tsv.sha256.json").read_text())["sha256"] == first
    tsv.write_text("index\tquestion\n1\tQ\n")
    os.utime(tsv, ns=(1, 1))
    assert fingerprint.dataset_sha256(str(tsv), str(cache)) != first


# VLMEvalKit's circular evaluation of another run on this host, holding the host-wide guard.
GUARD_HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from svrunner.kit import circular_eval_guard
with circular_eval_guard("MMBench_DEV_EN", lock_path=sys.argv[2]):
    print("evaluating", flush=True)
    time.sleep(600)
"""


def test_the_circular_evaluation_guard_waits_a_bounded_time_with_a_clear_error(tmp_path):
    from svrunner.kit import circular_eval_guard

    lock = str(tmp_path / "circular.lock")
    p = subprocess.Popen([sys.executable, "-c", GUARD_HOLDER, str(REPO / "runners"), lock],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout.readline().strip() == "evaluating"
        with pytest.raises(TimeoutError) as e, circular_eval_guard("CCBench", timeout=1.0, lock_path=lock):
            pass
        assert "another VLMEvalKit circular evaluation on this host" in str(e.value)
        assert "SPECTRAVENV_CIRCULAR_EVAL_TIMEOUT" in str(e.value) and lock in str(e.value)
        with circular_eval_guard("DemoMCQ", timeout=0.0, lock_path=lock):  # not circular: no wait
            pass
    finally:
        p.kill()
        p.wait()
    with circular_eval_guard("CCBench", timeout=5.0, lock_path=lock):  # free again
        pass


# A runner's phase in which the main thread is busy in code that emits nothing (here a Python
# loop holding the GIL, as VLMEvalKit's own code would), then a phase that ends, then silence.
BUSY = """
import sys, time
sys.path.insert(0, sys.argv[1])
from svrunner.heartbeat import Heartbeat
from svrunner.protocol import EventLog, read_events
log = EventLog(sys.argv[2], "m.w1", 0)
beat = Heartbeat(lambda phase, detail: log.emit("alive", phase=phase, detail=detail), 0.05)
def alive(phase):
    return [e for e in read_events(sys.argv[2]) if e.get("phase") == phase]
with beat.phase("evaluate", "MMBench"):
    while len(alive("evaluate")) < 4:  # busy until the thread has spoken several times
        sum(range(100000))
    with beat.phase("lock", "waiting for dataset lock"):
        while not alive("lock"):
            sum(range(100000))
log.emit("progress", benchmark="B", done=1, total=2)
time.sleep(1.0)  # twenty heartbeat periods outside any phase
print("done", flush=True)
"""


def test_the_heartbeat_speaks_while_the_main_thread_is_busy_and_only_in_its_phase(tmp_path):
    events = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-c", BUSY, str(REPO / "runners"), str(events)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "done", out.stderr
    evs = read_events(events)
    kinds = [e["event"] for e in evs]
    last = kinds.index("progress")
    assert "alive" not in kinds[last:]  # silent once no phase is open
    alive = [e for e in evs if e["event"] == "alive"]
    assert {e["phase"] for e in alive} == {"evaluate", "lock"}
    assert next(e["detail"] for e in alive if e["phase"] == "lock") == "waiting for dataset lock"


# A wrapper's own long steps (the demo's first-use training) through the worker's heartbeat,
# which it finds with current(): its steps as done/total, at most one event per STEP_EVERY.
COUNTED = """
import sys, time
sys.path.insert(0, sys.argv[1])
from svrunner import heartbeat
from svrunner.protocol import EventLog
log = EventLog(sys.argv[2], "m.w1", 0)
with heartbeat.counted_phase("train", "step {done} of {total}", 3) as step:
    step(1)  # no worker's heartbeat installed yet: nothing is written
heartbeat.STEP_EVERY = 0.2
heartbeat.install(heartbeat.Heartbeat(lambda phase, detail, **counts: log.emit("alive", phase=phase, detail=detail,
                                                                                 **counts), 60))
beat = heartbeat.current()
with beat.phase("model", "demo"):
    with heartbeat.counted_phase("train", "training the demo model: step {done} of {total}", 40) as step:
        for k in range(1, 41):
            time.sleep(0.025)
            step(k)
print("done", flush=True)
"""


def test_a_counted_phase_reports_its_steps_through_the_workers_heartbeat(tmp_path):
    events = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-c", COUNTED, str(REPO / "runners"), str(events)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "done", out.stderr
    evs = read_events(events)
    assert [e["phase"] for e in evs[:2]] == ["model", "train"]
    train = [e for e in evs if e["phase"] == "train"]
    assert (train[0]["done"], train[0]["total"]) == (0, 40)
    assert train[0]["detail"] == "training the demo model: step 0 of 40"
    steps = [e["done"] for e in train]
    assert steps == sorted(steps) and all(e["total"] == 40 for e in train)
    # 40 steps in about 1 s, one event at most every 0.2 s: a few, not 40.
    assert 3 <= len(train) <= 8, steps
    assert train[-1]["detail"] == f"training the demo model: step {train[-1]['done']} of 40"
    assert "done" not in evs[0]  # a phase that counts nothing carries no counts


# The heartbeat thread writes while the main thread imports vlmeval: pandas and numpy are then in
# sys.modules before their classes exist (Python puts a module there before running its code).
HALF_IMPORTED = """
import sys, types
sys.path.insert(0, sys.argv[1])
from svrunner.protocol import EventLog
sys.modules["pandas"], sys.modules["numpy"] = types.ModuleType("pandas"), types.ModuleType("numpy")
EventLog(sys.argv[2], "m.w1", 0).emit("alive", phase="import", detail="import vlmeval")
"""


def test_an_event_is_written_while_pandas_is_half_imported(tmp_path):
    events = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-c", HALF_IMPORTED, str(REPO / "runners"), str(events)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [e["phase"] for e in read_events(events)] == ["import"]
