"""The --limit subset: N questions spread over the dataset's categories, the same for every model.

Pure functions over plain lists (the runner passes the dataset's columns), so the host tests them
directly. The choice depends only on the dataset's content and the seed: each question's order
key is sha256(f"{seed}:{group}"), and the counts per category come from a largest-remainder
allocation in exact rational arithmetic, so every platform picks the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

CIRCULAR_OFFSET = 1_000_000  # MMBench-style: row i + k * 1e6 is a rotation of question i


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder proportional allocation of `n` over categories.

    At least one per category while `n` allows (then the rest proportional to what is left);
    with fewer samples than categories, one each for the largest (ties by name).
    """
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    cats = sorted(sizes)
    if n < len(cats):
        pick = sorted(cats, key=lambda c: (-sizes[c], c))[:n]
        return {c: int(c in pick) for c in cats}
    base = {c: 1 for c in cats}
    cap = {c: sizes[c] - 1 for c in cats}
    rest = n - len(cats)
    cap_total = sum(cap.values())
    if rest == 0 or cap_total == 0:
        return base
    quota = {c: Fraction(rest * cap[c], cap_total) for c in cats}
    alloc = {c: int(quota[c]) for c in cats}
    left = rest - sum(alloc.values())
    for c in sorted(cats, key=lambda c: (-(quota[c] - alloc[c]), -cap[c], c))[:left]:
        alloc[c] += 1
    return {c: base[c] + alloc[c] for c in cats}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) or type(x).__name__.startswith("int")


def groups_of(indices: Sequence[Any], g_index: Sequence[Any] | None) -> tuple[list[str], bool]:
    """The question each row belongs to, and whether the dataset is circular."""
    if g_index is not None:
        return [str(g) for g in g_index], True
    if all(_is_int(x) for x in indices) and any(int(x) >= CIRCULAR_OFFSET for x in indices):
        return [str(int(x) % CIRCULAR_OFFSET) for x in indices], True
    return [str(x) for x in indices], False


def choose_subset(
    indices: Sequence[Any],
    categories: Sequence[Any] | None,
    n: int,
    seed: int,
    g_index: Sequence[Any] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Pick `n` questions spread over the categories; returns (row indices, info).

    Circular datasets are chosen by whole groups: `n` counts questions, and all their rotations
    are inferred.
    """
    groups, circular = groups_of(indices, g_index)
    cats = [str(c) for c in categories] if categories is not None else [""] * len(indices)
    group_cat: dict[str, str] = {}
    for idx, g, c in zip(indices, groups, cats):
        if g not in group_cat or str(idx) == g:  # the main row (index == group) decides
            group_cat[g] = c
    by_cat: dict[str, list[str]] = {}
    for g, c in group_cat.items():
        by_cat.setdefault(c, []).append(g)
    alloc = allocate({c: len(v) for c, v in by_cat.items()}, n)

    def key(g: str) -> str:
        return hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()

    chosen: set[str] = set()
    for c, members in by_cat.items():
        chosen.update(sorted(members, key=key)[: alloc[c]])
    rows = [idx for idx, g in zip(indices, groups) if g in chosen]
    info = {
        "questions_total": len(group_cat),
        "questions_chosen": len(chosen),
        "circular": circular,
        "per_category": {c: alloc[c] for c in sorted(alloc)},
    }
    return rows, info
