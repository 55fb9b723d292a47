"""Work units on disk (svrunner.units): claims no two workers share, with real processes racing,
dying and being released."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from svrunner import units

from .conftest import REPO

# A worker's loop, reduced to claiming: take every unit it can, note each in a file, mark done.
CLAIMER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from svrunner import units
folder, me, shards = sys.argv[2], sys.argv[3], int(sys.argv[4])
units.record_prepared(folder, "m", "B", shards, "d1", {})
got = []
for k in range(shards):
    u = units.Unit("m", "B", shards, k)
    lock = units.claim(folder, u, me)
    if lock is None:
        continue
    got.append(k)
    time.sleep(0.002)  # the window in which a second claimer would slip in
    units.mark_done(folder, u, "d1", {"by": me}, lock)
print(json.dumps(got))
"""


def test_racing_workers_never_run_the_same_unit(tmp_path):
    folder, shards = str(tmp_path / "units"), 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(REPO / "runners"), folder, f"w{i}", str(shards)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    taken = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    flat = [k for got in taken for k in got]
    assert sorted(flat) == list(range(shards))  # every unit once, none twice
    st = units.state(folder, "m", "B", shards)
    assert (st.done, st.claimed, st.open_units, st.needs_eval) == (shards, 0, 0, True)
    # The evaluation is a unit too: one claim, then nobody else.
    ev = units.Unit("m", "B", shards, None)
    first = units.claim(folder, ev, "w0")
    assert first is not None and units.claim(folder, ev, "w1") is None


HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from svrunner import units
lock = units.claim(sys.argv[2], units.Unit("m", "B", 4, 1), "w-dies")
print("held" if lock else "missed", flush=True)
time.sleep(600)
"""


def test_a_unit_held_by_a_dead_worker_opens_again_and_nothing_done_is_lost(tmp_path):
    folder = str(tmp_path / "units")
    units.record_prepared(folder, "m", "B", 4, "d1", {})
    done = units.claim(folder, units.Unit("m", "B", 4, 0), "w1")
    units.mark_done(folder, units.Unit("m", "B", 4, 0), "d1", {}, done)
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(REPO / "runners"), folder],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "held"
    st = units.state(folder, "m", "B", 4)
    assert (st.done, st.claimed, st.open_units) == (1, 1, 2)
    assert units.claim(folder, units.Unit("m", "B", 4, 1), "w2") is None  # alive: not taken
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    st = units.state(folder, "m", "B", 4)
    assert (st.done, st.claimed, st.open_units) == (1, 0, 3)  # its unit is open, the done one stays
    again = units.claim(folder, units.Unit("m", "B", 4, 1), "w2")  # taken over at once on this host
    assert again is not None


def test_claims_of_a_worker_on_another_host_go_when_its_job_ended(tmp_path):
    """A claim from another node cannot be checked by pid: while its lease is renewed it holds,
    and the dispatcher releases it when Slurm says that worker's job ended."""
    folder = str(tmp_path / "units")
    units.record_prepared(folder, "m", "B", 3, "d1", {})
    lock = units.claim(folder, units.Unit("m", "B", 3, 0), "m.w1")
    units.mark_done(folder, units.Unit("m", "B", 3, 0), "d1", {}, lock)
    for k, owner in ((1, "m.w1"), (2, "m.w2")):
        path = units.claim(folder, units.Unit("m", "B", 3, k), owner).path
        with open(path) as fh:
            holder = json.load(fh)
        holder["host"] = "node-elsewhere"  # as a worker on another node writes it
        with open(path, "w") as fh:
            json.dump(holder, fh)
    st = units.state(folder, "m", "B", 3)
    assert st.claimed == 2  # unknown liveness counts as held: never run twice
    freed = units.release_claims_of(folder, "m.w1")
    assert [os.path.basename(f) for f in freed] == ["1.claim"]
    st = units.state(folder, "m", "B", 3)
    assert (st.done, st.claimed, st.open_units) == (1, 1, 1)


def test_a_failed_pair_stops_claims_until_a_retry_opens_it(tmp_path):
    folder = str(tmp_path / "units")
    lock = units.claim(folder, units.Unit("m", "B", 2, 0), "w1")
    units.mark_failed(folder, units.Unit("m", "B", 2, 0), "CUDA out of memory", lock)
    assert units.claim(folder, units.Unit("m", "B", 2, 1), "w2") is None
    assert units.state(folder, "m", "B", 2).open_units == 0
    units.reset_failed(folder, "m", "B", 2)
    assert units.state(folder, "m", "B", 2).open_units == 2


def test_units_done_under_another_fingerprint_are_open_again(tmp_path):
    """A pair prepared again under a new fingerprint (its old predictions moved aside): the units
    done before count as open, for the host's view and for a worker's claim alike."""
    folder = str(tmp_path / "units")
    units.record_prepared(folder, "m", "B", 3, "old", {})
    for k in (0, 1):
        u = units.Unit("m", "B", 3, k)
        units.mark_done(folder, u, "old", {}, units.claim(folder, u, "w1"))
    assert (units.state(folder, "m", "B", 3).done, units.divisions(folder, "m", "B")) == (2, {3: 2})
    assert units.claim(folder, units.Unit("m", "B", 3, 0), "w2") is None

    units.record_prepared(folder, "m", "B", 3, "new", {})
    st = units.state(folder, "m", "B", 3)
    assert (st.done, st.open_units, st.needs_eval) == (0, 3, False)
    assert units.divisions(folder, "m", "B") == {3: 0}
    again = units.claim(folder, units.Unit("m", "B", 3, 0), "w2")
    assert again is not None
    units.mark_done(folder, units.Unit("m", "B", 3, 0), "new", {}, again)
    assert units.state(folder, "m", "B", 3).done == 1

    # The same for the evaluation: done under the old fingerprint is not done.
    units.record_prepared(folder, "m", "B", 1, "old", {})
    ev = units.Unit("m", "B", 1, None)
    units.mark_done(folder, ev, "old", {}, units.claim(folder, ev, "w1"))
    assert units.state(folder, "m", "B", 1).evaluated
    units.record_prepared(folder, "m", "B", 1, "new", {})
    assert not units.state(folder, "m", "B", 1).evaluated


# A worker's loop (svrunner.runner.Worker.work) whose unit holds the dataset lock while it works;
# the unit's body stands in for VLMEvalKit's inference, which the host's Python lacks.
SIGTERMED = """
import sys, time
sys.path.insert(0, sys.argv[1])
from svrunner import lmudata, shutdown
from svrunner.locking import FileLock
from svrunner.protocol import EventLog
from svrunner.runner import Worker
shutdown.stop_on_sigterm()
root = sys.argv[2]
job = {"model": {"name": "m"}, "work_dir": root, "units_dir": root + "/units", "job_id": "m.w1",
       "data_root": root + "/LMUData", "benchmarks": [{"name": "B", "shards": 2}]}
worker = Worker(job, EventLog(root + "/events.jsonl", "m.w1", 0), 30.0)

def unit(bench, unit, lock):
    with worker.holding(FileLock(lmudata.dataset_lock(job["data_root"], "B"), "preparing B"), 10):
        print("working", flush=True)
        time.sleep(600)

worker.infer_unit = unit
try:
    worker.work()
except shutdown.Terminated:
    sys.exit(shutdown.EXIT_CODE)
"""


def test_sigterm_releases_the_claim_and_the_locks_a_worker_holds(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", SIGTERMED, str(REPO / "runners"), str(tmp_path)],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout.readline().strip() == "working"
    claim = tmp_path / "units" / "m" / "B" / "n2" / "0.claim"
    lock = tmp_path / "LMUData" / ".spectravenv" / "locks" / "B.lock"
    assert claim.exists() and lock.exists()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143
    assert not claim.exists() and not lock.exists()  # released on the way out, not left to a lease
