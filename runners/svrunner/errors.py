"""A failure as the events carry it: one line, a traceback tail, and whether it was out of memory."""

from __future__ import annotations

import sys
import traceback
from typing import Any

OOM_MARKERS = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "OutOfMemoryError")


def failure_info(exc: BaseException) -> dict[str, Any]:
    """Secrets are masked later, by the event writer, like everything else it writes."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    oom = False
    torch = sys.modules.get("torch")
    if torch is not None:
        oom = isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ()))
    oom = oom or any(m in str(exc) or m in type(exc).__name__ for m in OOM_MARKERS)
    return {"error": error[:500], "traceback": tb[-4000:], "oom": bool(oom)}
