"""Runner settings read from the environment (the host sets them for tests and tuning)."""

from __future__ import annotations

import os


def seconds(var: str, default: float, environ: dict[str, str] | None = None) -> float:
    """A positive number of seconds from `var`; `default` when unset, malformed or not positive
    (a bad setting must not stop a run that is already under way)."""
    raw = (os.environ if environ is None else environ).get(var, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default
