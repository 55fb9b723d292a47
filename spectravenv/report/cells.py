"""How a pair of the results document is written in a table: the one formatter of a score, its
interval and its sample count, shared by the console, Markdown, HTML and LaTeX outputs so they
never disagree.

`61.3 ± 1.4` when the 95% interval is about symmetric, `100.0 [86.2, 100.0]` when it is not (at
the ends of the scale); `8 of 24` when a --limit subset was scored; a pair without a score says
its status (never 0).
"""

from __future__ import annotations

from typing import Any

# An interval counts as symmetric when its two arms differ by less than this share of its width.
SYMMETRY = 0.1


def score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def interval(value: float | None, iv: dict[str, Any] | None) -> str:
    """`± 1.4` or `[86.2, 100.0]`; "" without an interval."""
    if value is None or not iv:
        return ""
    below, above = value - iv["low"], iv["high"] - value
    if abs(above - below) <= SYMMETRY * max(iv["high"] - iv["low"], 1e-9):
        return f"± {(iv['high'] - iv['low']) / 2:.1f}"
    return f"[{iv['low']:.1f}, {iv['high']:.1f}]"


def with_interval(value: float | None, iv: dict[str, Any] | None) -> str:
    ci = interval(value, iv)
    return f"{score(value)} {ci}" if ci else score(value)


def samples(p: dict[str, Any]) -> str:
    """`8 of 24` under a --limit (`8 (limit 8)` where the runner did not record the dataset's
    size), `24` for a full dataset, `-` when nothing was scored."""
    n, full = p.get("samples"), p.get("rows_full")
    if n is None:
        return "-"
    if p.get("limit") is not None:
        return f"{n} of {full}" if full else f"{n} (limit {p['limit']})"
    return str(n)


def limited(p: dict[str, Any]) -> bool:
    """Scored on a --limit subset (not the whole dataset)."""
    return p.get("limit") is not None and p.get("status") == "done"


def pair(p: dict[str, Any] | None, with_ci: bool = True) -> str:
    """A matrix cell: the score (with its interval), `(8 of 24)` under a limit, or the status."""
    if p is None:
        return ""
    if p["status"] != "done":
        return p["status"]
    text = with_interval(p["value"], p["interval"]) if with_ci else score(p["value"])
    return f"{text} ({samples(p)})" if limited(p) and p["value"] is not None else text


def signed(delta: float | None) -> str:
    return "" if delta is None else f"{delta:+.1f}"
