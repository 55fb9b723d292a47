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
got = []
for k in range(shards):
    u = units.Unit("m", "B", shards, k)
    lock = units.claim(folder, u, me)
    if lock is None:
        continue
    got.append(k)
    time.sleep(0.002)  # the window in which a second claimer would slip in
    units.mark_done(folder, u, {"by": me}, lock)
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
    done = units.claim(folder, units.Unit("m", "B", 4, 0), "w1")
    units.mark_done(folder, units.Unit("m", "B", 4, 0), {}, done)
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
    """A claim from another node cannot be checked by pid: the dispatcher releases it when
    Slurm says that worker's job ended (and never a unit it had finished)."""
    folder = str(tmp_path / "units")
    lock = units.claim(folder, units.Unit("m", "B", 3, 0), "m.w1")
    units.mark_done(folder, units.Unit("m", "B", 3, 0), {}, lock)
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
