"""`alive` events from a thread, while the runner works in a phase that emits nothing else.

Importing VLMEvalKit, building a model, preparing a dataset (waiting for its lock, downloading its
TSV, hashing it), merging predictions and evaluating (an API judge can take an hour) all run in
VLMEvalKit or library code that says nothing for minutes. The dispatcher takes a worker that says
nothing for several heartbeat periods for hung, so here a thread emits `alive` (phase, detail)
when a phase begins and then every `SPECTRAVENV_HEARTBEAT` seconds (default 30) until it ends.
The thread keeps going while the main thread is busy in other code, and falls silent between
phases: inference is watched by its `progress` events instead.

A phase that counts its own steps (the demo model's first-use training) says how far it is with
`advance`: its beats then carry `done` and `total`, and a step is reported at once when the last
report is STEP_EVERY seconds old, so the live view shows "training 120/500" rather than a bare
"loading". Code that runs in a worker but cannot reach it (a model's wrapper) finds its heartbeat
with `current()`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import settings

HEARTBEAT_VAR = "SPECTRAVENV_HEARTBEAT"
DEFAULT_SECONDS = 30.0
STEP_EVERY = 2.0  # seconds: the most often `advance` writes an event (a step is often much faster)


def interval(environ: dict[str, str] | None = None) -> float:
    return settings.seconds(HEARTBEAT_VAR, DEFAULT_SECONDS, environ)


class Heartbeat:
    """`with heartbeat.phase("evaluate", "MMBench_DEV_EN"): dataset.evaluate(...)`.

    Phases nest (a lock wait inside a dataset's preparation): the innermost one is reported, and
    the one around it again once the inner one ends."""

    def __init__(self, emit: Callable[..., object], seconds: float) -> None:
        # emit(phase, detail, **counts): counts (done, total) only from a phase that advances
        self._emit, self.seconds = emit, seconds
        self._stack: list[tuple[str, str, dict[str, int]]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last = 0.0  # time.monotonic() of the last event written

    @contextlib.contextmanager
    def phase(self, phase: str, detail: str = "", **counts: int) -> Iterator[None]:
        self._enter((phase, detail, counts))
        try:
            yield
        finally:
            self._leave()

    def advance(self, detail: str, **counts: int) -> None:
        """The innermost phase moved on: `detail` and `counts` (done=, total=) replace its own,
        written at once when the last event is STEP_EVERY seconds old, else by the next beat."""
        with self._changed:
            if not self._stack:
                return
            top = self._stack[-1] = (self._stack[-1][0], detail, dict(counts))
            if time.monotonic() - self._last >= STEP_EVERY:
                self._beat(*top)

    def _enter(self, top: tuple[str, str, dict[str, int]]) -> None:
        with self._changed:
            self._stack.append(top)
            self._changed.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
        self._last = time.monotonic()
        self._emit(top[0], top[1], **top[2])  # at once: what the worker does now

    def _leave(self) -> None:
        with self._changed:
            self._stack.pop()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stack:
                    self._changed.wait()
                # A change of phase restarts the period: its start was just reported.
                if self._changed.wait(self.seconds) or not self._stack:
                    continue
                # Under the lock, so that no `alive` of a phase comes after the phase ended.
                self._beat(*self._stack[-1])

    def _beat(self, phase: str, detail: str, counts: dict[str, int]) -> None:
        self._last = time.monotonic()
        try:
            self._emit(phase, detail, **counts)
        except Exception as exc:  # a full disk, say: say so, and keep beating
            sys.stderr.write(f"[spectravenv-runner] heartbeat: could not write an event: {exc}\n")


_current: Heartbeat | None = None  # the worker's, in a runner process (install)


def install(beat: Heartbeat) -> None:
    """Make `beat` this process's heartbeat: the one `current()` gives (one worker a process)."""
    global _current
    _current = beat


def current() -> Heartbeat | None:
    """The worker's heartbeat, for code that runs inside a worker but is not handed it (a
    model's wrapper); None outside a worker (selftest, scripts): report nothing then."""
    return _current


@contextlib.contextmanager
def counted_phase(phase: str, detail: str, total: int) -> Iterator[Callable[[int], Any]]:
    """A phase of `total` steps of the worker's heartbeat, if this process has one; yields the
    function to call with the number of steps done. `detail` is formatted with done and total
    ("training: step {done} of {total}"). Outside a worker both do nothing."""
    beat = current()
    if beat is None:
        yield lambda done: None
        return

    def step(done: int) -> None:
        beat.advance(detail.format(done=done, total=total), done=done, total=total)

    with beat.phase(phase, detail.format(done=0, total=total), done=0, total=total):
        yield step
