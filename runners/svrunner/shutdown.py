"""SIGTERM as an orderly exit: `scancel`, a Slurm time limit or the dispatcher's stop.

By default SIGTERM ends a Python process at once, skipping every `finally`: its unit claims, the
dataset lock and the pair's preparation lock would stay behind until their leases ran out. Here
the first SIGTERM raises `Terminated` in the main thread instead, so every `finally` and `with`
releases what it holds on the way out. The handler then steps aside: a second SIGTERM (or a
SIGKILL) ends the process at once; escalating is the launcher's business.
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that no `except Exception` (ours, VLMEvalKit's, a
    model wrapper's) swallows it on the way up."""


def _raise(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def stop_on_sigterm() -> None:
    """Turn the next SIGTERM into `Terminated` (call from the main thread)."""
    signal.signal(signal.SIGTERM, _raise)
