"""How sure a score is: 95% intervals of one run's score and of the difference of two runs.

Everything here works on per-sample scores in [0, 1] (1 = right, or a partial credit such as
TextVQA's), with an optional cluster per sample (samples that are not independent: the rotations
of one MMBench question, several questions on one image). The headline on 0-100 is their mean x
100; `samples.py` checks that before an interval is given.

- One score: binary and unclustered -> the Wilson score interval (analytic; right at 0% and 100%,
  where the normal approximation gives a zero width); otherwise a percentile bootstrap that
  resamples clusters (each sample its own cluster when there are none).
- Two runs on the same samples: a paired bootstrap of the difference (clusters resampled
  together on both sides), and for binary scores McNemar's exact test on the discordant pairs.

Bootstrap draws come from numpy's PCG64 seeded with a fixed seed, so the same scores give the
same interval on every machine and every report is byte-stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5% quantile
RESAMPLES = 2000
SEED = 20261207


@dataclass(frozen=True)
class Interval:
    """A score on 0-100 with its 95% interval, and what it was computed from."""

    value: float
    low: float
    high: float
    se: float  # standard error on 0-100 (cluster-robust where clustered)
    n: int  # samples
    clusters: int  # independent units (== n when no sample shares a cluster)
    method: str  # "wilson" | "bootstrap" | "cluster bootstrap"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    """B - A on the samples both runs scored, on 0-100."""

    delta: float
    low: float
    high: float
    n: int  # samples in common
    p_value: float
    test: str  # "mcnemar exact" | "paired bootstrap"
    discordant: tuple[int, int] | None = None  # (A right B wrong, A wrong B right), binary only

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - LEVEL


def is_binary(scores: Sequence[float]) -> bool:
    return all(s in (0.0, 1.0) for s in scores)


def wilson(hits: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of a proportion, as fractions."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_se(p: float, n: int) -> float:
    """The analytic standard error of a proportion (a fraction)."""
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def _cluster_index(groups: Sequence[str] | None, n: int) -> tuple[np.ndarray, int]:
    """Each sample's cluster number 0..k-1 (in order of first appearance) and k."""
    if groups is None:
        return np.arange(n), n
    ids: dict[str, int] = {}
    codes = np.array([ids.setdefault(str(g), len(ids)) for g in groups], dtype=np.int64)
    return codes, len(ids)


def _cluster_sums(values: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=k)


def _resample_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means of RESAMPLES cluster bootstrap draws (a ratio estimator: clusters may differ in size)."""
    rng = np.random.Generator(np.random.PCG64(SEED))
    k = len(sums)
    draws = rng.integers(0, k, size=(RESAMPLES, k))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def _cluster_se(values: np.ndarray, codes: np.ndarray, k: int) -> float:
    """The cluster-robust (sandwich) standard error of a mean; the usual one when k == n."""
    n = len(values)
    if k < 2:
        return 0.0
    resid = _cluster_sums(values - values.mean(), codes, k)
    return math.sqrt(k / (k - 1) * float((resid**2).sum())) / n


def interval(scores: Sequence[float], groups: Sequence[str] | None = None) -> Interval:
    """The 95% interval of the mean of per-sample scores (on 0-100)."""
    values = np.asarray(scores, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("no samples")
    codes, k = _cluster_index(groups, n)
    mean = float(values.mean())
    se = _cluster_se(values, codes, k)
    binary = is_binary(scores)
    if binary and k == n:
        lo, hi = wilson(int(values.sum()), n)
        return Interval(100 * mean, 100 * lo, 100 * hi, 100 * proportion_se(mean, n), n, k, "wilson")
    if np.all(values == values[0]) and binary:
        # No spread to resample: as if each cluster were one sample (the cautious choice).
        lo, hi = wilson(round(mean * k), k)
        return Interval(100 * mean, 100 * lo, 100 * hi, 100 * se, n, k, "wilson (per cluster)")
    return bootstrap(values, groups)


def bootstrap(scores: Sequence[float], groups: Sequence[str] | None = None) -> Interval:
    """The percentile bootstrap interval of the mean, resampling clusters (or samples)."""
    values = np.asarray(scores, dtype=float)
    codes, k = _cluster_index(groups, len(values))
    counts = np.bincount(codes, minlength=k).astype(float)
    means = _resample_means(_cluster_sums(values, codes, k), counts)
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    se = _cluster_se(values, codes, k)
    method = "bootstrap" if k == len(values) else "cluster bootstrap"
    return Interval(100 * float(values.mean()), 100 * float(lo), 100 * float(hi), 100 * se,
                    len(values), k, method)  # fmt: skip


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as Binomial(n, 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired(a: Sequence[float], b: Sequence[float], groups: Sequence[str] | None = None) -> Difference:
    """B - A over the same samples (aligned lists): a paired bootstrap interval, and McNemar's
    exact test when both sides are right/wrong per sample."""
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(va) != len(vb) or len(va) == 0:
        raise ValueError("paired scores need the same, non-empty samples on both sides")
    codes, k = _cluster_index(groups, len(va))
    diff = vb - va
    counts = np.bincount(codes, minlength=k).astype(float)
    means = _resample_means(_cluster_sums(diff, codes, k), counts)
    lo, hi = (float(x) for x in np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    delta = 100 * float(diff.mean())
    if is_binary(a) and is_binary(b) and k == len(va):
        a_only = int(((va == 1) & (vb == 0)).sum())
        b_only = int(((va == 0) & (vb == 1)).sum())
        p = mcnemar_exact(a_only, b_only)
        return Difference(delta, 100 * lo, 100 * hi, len(va), p, "mcnemar exact", (a_only, b_only))
    # Two-sided bootstrap p-value: how often the resampled difference falls on the other side of 0.
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    if not diff.any():
        p = 1.0
    return Difference(delta, 100 * lo, 100 * hi, len(va), p, "paired bootstrap")
