"""`alive` events from a thread, while the runner works in a phase that emits nothing else.

Importing VLMEvalKit, building a model, preparing a dataset (waiting for its lock, downloading its
TSV, hashing it), merging predictions and evaluating (an API judge can take an hour) all run in
VLMEvalKit or library code that says nothing for minutes. The dispatcher takes a worker that says
nothing for several heartbeat periods for hung, so here a thread emits `alive` (phase, detail)
when a phase begins and then every `SPECTRAVENV_HEARTBEAT` seconds (default 30) until it ends.
The thread keeps going while the main thread is busy in other code, and falls silent between
phases: inference is watched by its `progress` events instead.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

from . import settings

HEARTBEAT_VAR = "SPECTRAVENV_HEARTBEAT"
DEFAULT_SECONDS = 30.0


def interval(environ: dict[str, str] | None = None) -> float:
    return settings.seconds(HEARTBEAT_VAR, DEFAULT_SECONDS, environ)


class Heartbeat:
    """`with heartbeat.phase("evaluate", "MMBench_DEV_EN"): dataset.evaluate(...)`.

    Phases nest (a lock wait inside a dataset's preparation): the innermost one is reported, and
    the one around it again once the inner one ends."""

    def __init__(self, emit: Callable[[str, str], object], seconds: float) -> None:
        self._emit, self.seconds = emit, seconds
        self._stack: list[tuple[str, str]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def phase(self, phase: str, detail: str = "") -> Iterator[None]:
        self._enter((phase, detail))
        try:
            yield
        finally:
            self._leave()

    def _enter(self, top: tuple[str, str]) -> None:
        with self._changed:
            self._stack.append(top)
            self._changed.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
        self._emit(*top)  # at once: what the worker does now

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

    def _beat(self, phase: str, detail: str) -> None:
        try:
            self._emit(phase, detail)
        except Exception as exc:  # a full disk, say: say so, and keep beating
            sys.stderr.write(f"[spectravenv-runner] heartbeat: could not write an event: {exc}\n")
