"""What a run shows while it goes: one line per running worker and an overall bar, from the
run's own events on disk.

The view is built from the events files alone (never from the launcher's memory), so
`spectravenv eval` on this machine, a Slurm run followed from the login node and
`spectravenv status RUN --watch` show the same thing. On a terminal it is drawn with rich (imported
only then, so the CLI starts fast); elsewhere (CI, Slurm logs, `| tee`) it is plain lines at a
sane rate with no control characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from svrunner.protocol import EventReader

from spectravenv.catalog.entries import Catalog
from spectravenv.results import rows as results
from spectravenv.results import scores
from spectravenv.run import events
from spectravenv.run.rundir import RunDir

PLAIN_EVERY = 30.0  # seconds between plain progress lines: a heartbeat for logs, not a flood
REDRAW_EVERY = 0.25  # a terminal redraw at most this often


@dataclass
class WorkerLine:
    """One worker as the view shows it."""

    worker: str
    model: str
    env: str
    where: str  # "gpu 0,1" or "cpu"
    started: float
    stage: str = "starting"  # starting | loading | inferring | evaluating
    benchmark: str | None = None
    done: int = 0  # samples of its current unit
    total: int | None = None
    rate: float | None = None  # samples per second in its current unit
    pid: int | None = None
    host: str | None = None
    _mark: tuple[float, int] | None = None  # (time, done) at the unit's first progress

    @property
    def eta(self) -> float | None:
        if self.rate and self.total is not None:
            return max(self.total - self.done, 0) / self.rate
        return None


@dataclass
class PairCount:
    total: int  # samples this run infers for the pair
    units: dict[int, int] = field(default_factory=dict)  # unit -> samples answered
    finished: bool = False

    @property
    def done(self) -> int:
        return self.total if self.finished else min(sum(self.units.values()), self.total)


@dataclass
class View:
    workers: list[WorkerLine]
    done: int  # samples answered, all pairs
    total: int
    pairs_finished: int
    pairs: int
    elapsed: float
    left: float | None  # expected seconds until the run ends; None: not known yet
    now: float

    @property
    def finish_at(self) -> float | None:
        return None if self.left is None else self.now + self.left


class Tracker:
    """Folds a run's events, as they are written, into a View and lines worth scrolling up
    (each finished pair with its score, each failure)."""

    def __init__(self, run: RunDir, catalog: Catalog, estimate: float | None = None) -> None:
        self.run, self.catalog = run, catalog
        self.estimate = estimate  # the plan's expected makespan, until speeds are measured
        self.readers: dict[str, EventReader] = {}
        self.workers: dict[str, WorkerLine] = {}
        self.pairs: dict[tuple[str, str], PairCount] = {}
        self.began = time.time()
        self.first: tuple[float, int] | None = None  # (time, samples done) at the first progress seen
        manifest = run.manifest() or {}
        limit = manifest.get("limit")
        skipped = {(m, b) for m, b in manifest.get("skipped_pairs", [])}
        for (model, bench), o in events.outcomes(run).items():
            if o.status == "done":  # finished before this view began (a resumed run)
                self.pairs[(model, bench)] = PairCount(o.samples or 0, finished=True)
        for model in manifest.get("models", []):
            for bench in manifest.get("benchmarks", []):
                b = catalog.benchmarks.get(bench)
                if (model, bench) in skipped or (model, bench) in self.pairs or b is None:
                    continue
                self.pairs[(model, bench)] = PairCount(min(b.samples, limit) if limit else b.samples)

    def poll(self) -> list[str]:
        """Read what was written since the last poll; return the lines to print above the view."""
        lines: list[str] = []
        for job_id in self.run.job_ids():
            reader = self.readers.get(job_id)
            if reader is None:
                reader = self.readers[job_id] = EventReader(str(self.run.events_file(job_id)))
            for ev in reader.read():
                lines += self._fold(job_id, ev)
        return lines

    def _fold(self, worker: str, ev: dict[str, Any]) -> list[str]:
        """One event into the view; returns the lines it makes worth scrolling up."""
        if ev["event"] == "job_started":
            self._job_started(worker, ev)
            return []
        w = self.workers.get(worker)
        fold = FOLDS.get(ev["event"])
        if w is None or fold is None:
            return []  # an attempt from before this view began, already counted in outcomes
        return fold(self, w, ev) or []

    def _job_started(self, worker: str, ev: dict[str, Any]) -> None:
        spec = self.run.job_spec(worker)
        env = (spec.get("fingerprint", {}).get("env") or {}).get("name") or spec.get("model", {}).get("env", "?")  # fmt: skip
        cvd = ev.get("cuda_visible_devices")
        self.workers[worker] = WorkerLine(worker, events.job_model(self.run, worker), env,
                                          f"gpu {cvd}" if cvd else "cpu", _time(ev), "loading",
                                          pid=ev.get("pid"), host=ev.get("host"))  # fmt: skip

    def _pair(self, w: WorkerLine, ev: dict[str, Any]) -> PairCount | None:
        bench = ev.get("benchmark")
        return self.pairs.get((w.model, bench)) if bench else None

    def _model_loaded(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        w.stage, w.done, w.total, w.rate, w._mark = "ready", 0, None, None, None

    def _alive(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        """Before its first unit, a worker's heartbeat says what it does: loading its model, or a
        phase that counts its steps (the demo's first-use training: "training 120/500")."""
        stage = PHASES.get(ev.get("phase", ""))
        if w.benchmark is not None or stage is None:
            return  # inferring or later: its benchmark and samples say more
        if ev.get("total") is None:
            w.stage, w.done, w.total, w.rate, w._mark = stage, 0, None, None, None
            return
        if stage != w.stage:
            w.rate, w._mark = None, None
        w.stage = stage
        _count(w, _time(ev), int(ev.get("done") or 0), int(ev["total"]))

    def _benchmark_started(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        pair = self._pair(w, ev)
        if ev.get("benchmark") and (pair is None or not pair.finished):
            self.pairs[(w.model, ev["benchmark"])] = PairCount(int(ev.get("total") or 0),
                                                               units=pair.units if pair else {})  # fmt: skip

    def _unit_started(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        w.stage, w.benchmark = "inferring", ev.get("benchmark")
        w.done, w.total = int(ev.get("reused") or 0), int(ev.get("rows") or 0)
        w.rate, w._mark = None, None
        pair = self._pair(w, ev)
        if pair is not None:
            pair.units[int(ev.get("unit", 0))] = w.done

    def _progress(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        w.stage, w.benchmark = "inferring", ev.get("benchmark")
        _count(w, _time(ev), int(ev.get("done", 0)), ev.get("total"))
        pair = self._pair(w, ev)
        if pair is not None:
            shard = ev.get("shard") or [0, 1]
            pair.units[int(shard[0])] = w.done
            if self.first is None:
                self.first = (_time(ev), self._done())

    def _unit_done(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        w.stage = "ready"
        pair = self._pair(w, ev)
        if pair is not None:
            unit = int(ev.get("unit", 0))
            pair.units[unit] = int(w.total or pair.units.get(unit, 0))

    def _benchmark_done(self, w: WorkerLine, ev: dict[str, Any]) -> list[str]:
        if not ev.get("benchmark"):
            return []
        w.stage = "ready"
        pair = self._pair(w, ev)
        if pair is not None:
            pair.finished = True
        return [f"done    {w.model} x {ev['benchmark']}: {self._score(w.model, ev['benchmark'], ev)}"]

    def _benchmark_failed(self, w: WorkerLine, ev: dict[str, Any]) -> list[str]:
        return [f"FAILED  {w.model} x {ev.get('benchmark')}: {ev.get('error', '')}"]

    def _job_ended(self, w: WorkerLine, ev: dict[str, Any]) -> None:
        self.workers.pop(w.worker, None)

    def _score(self, model: str, bench: str, ev: dict[str, Any]) -> str:
        b = self.catalog.benchmarks.get(bench)
        table = scores.read([self.run.resolve(f) for f in ev.get("score_files", [])])
        metric, value, note = results.headline(b, table.scores, ev.get("samples"), table.ambiguous)
        return f"{metric} {value:.2f}" if value is not None else (note or "no score")

    def _done(self) -> int:
        return sum(p.done for p in self.pairs.values())

    def view(self, now: float | None = None) -> View:
        now = time.time() if now is None else now
        done, total = self._done(), sum(p.total for p in self.pairs.values())
        left: float | None = None
        if self.first is not None and done > self.first[1] and now > self.first[0]:
            # Measured throughput of this run so far, all workers together.
            left = (total - done) / ((done - self.first[1]) / (now - self.first[0]))
        elif self.estimate is not None and self.estimate > now - self.began:
            # The plan's guess, until speeds are measured; once it has run out (a model loading
            # or training longer than planned) the finish is not known, never "in 0s".
            left = self.estimate - (now - self.began)
        finished = sum(p.finished for p in self.pairs.values())
        for w in [w for w in self.workers.values() if _gone(w)]:
            del self.workers[w.worker]  # killed without a last word
        return View(sorted(self.workers.values(), key=lambda w: w.worker), done, total, finished,
                    len(self.pairs), now - self.began, left, now)  # fmt: skip


# How each event after a worker's job_started changes the view (Tracker._fold).
FOLDS: dict[str, Callable[[Tracker, WorkerLine, dict[str, Any]], list[str] | None]] = {
    "model_loaded": Tracker._model_loaded,
    "alive": Tracker._alive,
    "benchmark_started": Tracker._benchmark_started,
    "unit_started": Tracker._unit_started,
    "progress": Tracker._progress,
    "unit_done": Tracker._unit_done,
    "benchmark_done": Tracker._benchmark_done,
    "benchmark_failed": Tracker._benchmark_failed,
    "job_done": Tracker._job_ended,
    "job_failed": Tracker._job_ended,
}
# The heartbeat phases before a worker's first unit that the view shows, as its stage.
PHASES = {"model": "loading", "train": "training"}


def _time(ev: dict[str, Any]) -> float:
    return float(ev.get("time") or time.time())


def _count(w: WorkerLine, now: float, done: int, total: int | None) -> None:
    """The worker's count (samples, or steps of a phase) and its rate since the first count."""
    w.done, w.total = done, total
    if w._mark is None:
        w._mark = (now, done)
    elif now > w._mark[0] and done > w._mark[1]:
        w.rate = (done - w._mark[1]) / (now - w._mark[0])


def _gone(w: WorkerLine) -> bool:
    """A worker of this host whose process is no more (one on another node: unknown, kept)."""
    import socket

    import psutil

    return w.host == socket.gethostname() and w.pid is not None and not psutil.pid_exists(w.pid)


# ---- drawing ------------------------------------------------------------------------------------


def _clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def worker_text(w: WorkerLine, now: float) -> str:
    from spectravenv.console import duration

    if w.benchmark:
        what = f"{w.benchmark} {w.done}/{w.total if w.total is not None else '?'}"
    else:
        what = w.stage if w.total is None else f"{w.stage} {w.done}/{w.total}"
    rate = f"{w.rate:.2f}/s" if w.rate else "-"
    eta = duration(w.eta) if w.eta is not None else "-"
    return f"{w.worker} {w.env} {w.where}: {what}, {rate}, unit ETA {eta}, up {duration(now - w.started)}"


def overall_text(v: View) -> str:
    from spectravenv.console import duration

    pct = 100.0 * v.done / v.total if v.total else 100.0
    finish = f", expected finish {_clock(v.finish_at)} (in {duration(v.left)})" if v.finish_at is not None else ""
    return (f"progress: {v.done}/{v.total} samples ({pct:.0f}%), {v.pairs_finished}/{v.pairs} pairs, "
            f"{len(v.workers)} worker(s) running{finish}")  # fmt: skip


def plain(v: View) -> str:
    """The view as plain lines (no control characters): for logs."""
    return "".join(f"  {worker_text(w, v.now)}\n" for w in v.workers) + overall_text(v) + "\n"


# The 16 ANSI colours by name: rich maps them 1:1 on a 16-colour terminal (a truecolor default
# such as the progress bar's pink is approximated, and may land on a colour the theme hides).
STYLES = {"worker": "cyan", "env": "magenta", "bench": "blue", "done": "green", "bar": "green",
          "bar_back": "bright_black", "eta": "yellow", "header": "bold"}  # fmt: skip
WIDE = 110  # from this width the view has a bar per worker and the long overall line


def compact_overall(v: View) -> str:
    """The overall line for a narrow terminal: `45% 86/192 samples, 3/8 pairs, done 14:33 (2m)`."""
    from spectravenv.console import duration

    pct = 100.0 * v.done / v.total if v.total else 100.0
    finish = f", done {_clock(v.finish_at)} ({duration(v.left)})" if v.finish_at is not None else ""
    return f"{pct:.0f}% {v.done}/{v.total} samples, {v.pairs_finished}/{v.pairs} pairs{finish}"


def rich_view(v: View, width: int = 80) -> Any:
    """The view for rich.live: a table of workers and an overall bar, fitted to `width` columns
    (no column cut, no wrapped bar) and coloured with the 16 standard colours."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    from spectravenv.console import duration

    wide = width >= WIDE
    table = Table(box=None, pad_edge=False, show_edge=False, header_style=STYLES["header"])
    table.add_column("worker", style=STYLES["worker"], overflow="ellipsis", ratio=1, min_width=8)
    table.add_column("env", style=STYLES["env"], no_wrap=True, min_width=5)
    table.add_column("GPUs", no_wrap=True)
    table.add_column("benchmark", style=STYLES["bench"], overflow="ellipsis", ratio=1, min_width=8)
    table.add_column("samples", no_wrap=True, justify="right")
    if wide:
        table.add_column("", no_wrap=True)
    table.add_column("rate", no_wrap=True, justify="right")
    table.add_column("ETA", style=STYLES["eta"], no_wrap=True, justify="right")
    for w in v.workers:
        total = w.total or 0
        cells = [w.worker, w.env, w.where.replace("gpu ", ""), w.benchmark or w.stage,
                 f"{w.done}/{w.total if w.total is not None else '?'}"]  # fmt: skip
        if wide:
            cells.append(ProgressBar(total=max(total, 1), completed=min(w.done, total), width=20,
                                     complete_style=STYLES["bar"], finished_style=STYLES["done"],
                                     style=STYLES["bar_back"]))  # fmt: skip
        cells += [f"{w.rate:.2f}/s" if w.rate else "-", duration(w.eta) if w.eta is not None else "-"]
        table.add_row(*cells)
    text = overall_text(v) if wide else compact_overall(v)
    bar_width = max(10, min(40, width - len(text) - 1))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(v.total, 1), completed=v.done, width=bar_width, complete_style=STYLES["bar"],
                            finished_style=STYLES["done"], style=STYLES["bar_back"]), text)  # fmt: skip
    return Group(table, bar)


class Display:
    """The console of a run: `event` lines scroll, the view stays at the bottom (a terminal) or
    is written every PLAIN_EVERY seconds (anything else)."""

    def __init__(self, stream: TextIO, tracker: Tracker | None = None) -> None:
        self.stream, self.tracker = stream, tracker
        self.tty = stream.isatty()
        self.live: Any = None
        self.last_plain = time.monotonic()
        self.last_draw = 0.0

    def _start(self) -> None:
        if self.live is None and self.tty and self.tracker is not None:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(file=self.stream), auto_refresh=False, transient=True)
            self.live.start()

    def event(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def refresh(self) -> None:
        if self.tracker is None:
            return
        for line in self.tracker.poll():
            self.event(line)
        now = time.monotonic()
        if self.tty:
            if now - self.last_draw >= REDRAW_EVERY:
                self._start()
                self.last_draw = now
                self.live.update(rich_view(self.tracker.view(), self.live.console.width), refresh=True)
        elif now - self.last_plain >= PLAIN_EVERY:
            self.last_plain = now
            self.stream.write(plain(self.tracker.view()))
            self.stream.flush()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def watch(run: RunDir, catalog: Catalog, stream: TextIO, every: float = 1.0) -> None:
    """`spectravenv status RUN --watch`: the live view of a run, until it is no longer live.
    Reads only; a finished pair seen before watching began is counted, not scrolled."""
    tracker = Tracker(run, catalog)
    tracker.poll()  # what happened before: folded silently
    display = Display(stream, tracker)
    try:
        while True:
            display.refresh()
            if not results.run_is_live(run, run.manifest() or {}):
                return
            time.sleep(every)
    finally:
        display.close()
