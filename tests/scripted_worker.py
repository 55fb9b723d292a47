"""A stand-in for the runner that follows a script: the dispatcher's tests make workers that hang,
stay silent, send heartbeats, die or linger on purpose, in seconds, without torch or VLMEvalKit.

It speaks the runner's real protocol (svrunner.protocol events) and takes real units
(svrunner.units claims and markers), so the dispatcher sees exactly what a runner would make it
see. Started as `<python> RUNNER JOB_FILE`, like the runner (a test's fake env python drops the
RUNNER argument). The script is the model's kwargs["script"]:

    load        seconds before model_loaded (import and build)
    heartbeat   seconds between `alive` events in phases that say nothing else (0: none)
    sample      seconds per row while inferring (a `progress` event after each)
    evaluate    seconds of merge and evaluation before benchmark_done
    hang        "load", "infer" or "evaluate": stop there for good (heartbeats go on) ...
    silent      ... and with this set, the heartbeats stop too (a frozen process)
    fail_load   job_failed at the model stage instead of loading
    exit_after  "load": exit without a word after model_loaded
    linger      seconds to stay alive after job_done (a runner tearing down)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from svrunner import units
from svrunner.protocol import EventLog


class Heart:
    """`alive` every `period` seconds from a thread, like the real runner's."""

    def __init__(self, log: EventLog, period: float) -> None:
        self.log, self.period, self.phase = log, period, "import"
        self.beating = period > 0
        if self.beating:
            threading.Thread(target=self.beat, daemon=True).start()

    def beat(self) -> None:
        while True:
            time.sleep(self.period)
            if self.beating:
                self.log.emit("alive", phase=self.phase, detail="")


def hang(heart: Heart, script: dict, phase: str) -> None:
    if script.get("hang") == phase:
        heart.phase = phase
        heart.beating = heart.beating and not script.get("silent")
        time.sleep(3600)


def digest(job: dict, unit: units.Unit) -> str:
    """The pair's fingerprint digest as the real runner records it when it prepares the pair
    (scripted pairs have one fixed fingerprint; workers racing here write the same file)."""
    args = (job["units_dir"], unit.model, unit.benchmark, unit.shards)
    if units.prepared(*args) is None:
        units.record_prepared(*args, "scripted", {"worker": job["job_id"]})
    return "scripted"


def infer(job: dict, log: EventLog, heart: Heart, script: dict, bench: dict, unit: units.Unit, lock) -> None:
    rows = int(bench.get("rows", 2))
    log.emit("unit_started", benchmark=bench["name"], unit=unit.index, of=unit.shards, rows=rows, reused=0)
    heart.phase = "infer"
    for done in range(1, rows + 1):
        if done == rows:
            hang(heart, script, "infer")
        time.sleep(float(script.get("sample", 0.05)))
        log.emit("progress", benchmark=bench["name"], done=done, total=rows)
    units.mark_done(job["units_dir"], unit, digest(job, unit), {"worker": job["job_id"]}, lock)
    log.emit("unit_done", benchmark=bench["name"], unit=unit.index, of=unit.shards, samples=rows, seconds=0.1)


def evaluate(job: dict, log: EventLog, heart: Heart, script: dict, bench: dict, unit: units.Unit, lock) -> None:
    heart.phase = "evaluate"
    hang(heart, script, "evaluate")
    time.sleep(float(script.get("evaluate", 0.0)))
    units.mark_done(job["units_dir"], unit, digest(job, unit), {"worker": job["job_id"]}, lock)
    log.emit("benchmark_done", benchmark=bench["name"], score_files=[], samples=int(bench.get("rows", 2)),
             seconds=0.1, shards=unit.shards)  # fmt: skip


def next_unit(job: dict, model: str) -> tuple[dict, units.Unit, object] | None:
    for bench in job["benchmarks"]:
        for unit in units.infer_units(model, bench["name"], int(bench.get("shards", 1))):
            lock = units.claim(job["units_dir"], unit, job["job_id"])
            if lock is not None:
                return bench, unit, lock
    for bench in job["benchmarks"]:
        n = int(bench.get("shards", 1))
        if units.state(job["units_dir"], model, bench["name"], n).needs_eval:
            unit = units.Unit(model, bench["name"], n, None)
            lock = units.claim(job["units_dir"], unit, job["job_id"])
            if lock is not None:
                return bench, unit, lock
    return None


def main(job_file: str) -> int:
    with open(job_file) as fh:
        job = json.load(fh)
    model = job["model"]["name"]
    script = job["model"].get("kwargs", {}).get("script", {})
    log = EventLog(job["events"], job["job_id"], 0)
    log.emit("job_started", pid=os.getpid(), host=os.uname().nodename, world_size=1,
             cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
    heart = Heart(log, float(script.get("heartbeat", 0)))
    hang(heart, script, "load")
    time.sleep(float(script.get("load", 0)))
    if script.get("fail_load"):
        log.emit("job_failed", stage="model", error="scripted: fail_load", traceback="", oom=False)
        return 2
    log.emit("model_loaded", seconds=float(script.get("load", 0)))
    if script.get("exit_after") == "load":
        os._exit(3)
    while (got := next_unit(job, model)) is not None:
        bench, unit, lock = got
        (evaluate if unit.index is None else infer)(job, log, heart, script, bench, unit, lock)
        heart.phase = "claim"
    log.emit("job_done", ok=True, failed=[], seconds=0.0)
    time.sleep(float(script.get("linger", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[-1]))
