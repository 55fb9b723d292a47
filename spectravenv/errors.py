"""The one exception type users see: a message that says what is wrong and what to do."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class SpectravenvError(Exception):
    """An expected failure (bad input, missing tool, failed build): printed as one line, no traceback."""

    exit_code = 2


CUTOFF = 0.6  # similarity (difflib's ratio) below which a name that is not a part of another is no suggestion


def folded(text: str) -> str:
    """Lower case without separators: "qwen2.5-vl-7b" and "Qwen2.5_VL 7B" are one name to a user."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _closeness(typed: str, choice: str) -> tuple[int, float, int]:
    """A sort key, smallest first: how the choice relates to what was typed (the same name once
    folded, a name it starts, one it is inside, or one only similar to it), then how similar the
    two are, then the shorter name."""
    b = folded(choice)
    if typed == b:
        tier = 0
    elif len(typed) >= 3 and b.startswith(typed):
        tier = 1
    elif len(typed) >= 3 and typed in b:
        tier = 2
    else:
        tier = 3
    return tier, -difflib.SequenceMatcher(None, typed, b).ratio(), len(choice)


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest names, closest first; '' if none is close.

    A name that starts with what was typed ("Qwen2.5-VL-7B" -> Qwen2.5-VL-7B-Instruct) or holds it
    comes before one that is only similar (Qwen2.5-Omni-7B), case and separators aside: users
    half-remember the start of a long name far more often than they mistype a letter of it."""
    typed = folded(name)
    ranked = sorted((_closeness(typed, c), c) for c in dict.fromkeys(choices))
    close = [c for (tier, similarity, _), c in ranked if tier < 3 or -similarity >= CUTOFF][:n]
    return f" (did you mean: {', '.join(close)}?)" if close else ""
