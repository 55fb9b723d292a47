"""The one exception type users see: a message that says what is wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SpectravenvError(Exception):
    """An expected failure (bad input, missing tool, failed build): printed as one line, no traceback."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest names, matched case-insensitively; '' if none."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    # A case-insensitive substring is often what a user half-remembers ("mmbench", "llava").
    if len(close) < n:
        close += [c for c in by_lower if name.lower() in c and c not in close][: n - len(close)]
    return f" (did you mean: {', '.join(by_lower[c] for c in close)}?)" if close else ""
