"""The statistics of spectravenv.results.uncertainty against values known by hand or from the
literature: Wilson intervals, the analytic standard error against the bootstrap on the same data,
cluster resampling, and McNemar's exact test as the binomial it is."""

from __future__ import annotations

import math

import pytest

from spectravenv.results import uncertainty as u


def test_wilson_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 and 15/148.
    assert u.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert u.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    # All right: the lower end is n / (n + z^2), not 100 (the normal approximation's zero width).
    lo, hi = u.wilson(8, 8)
    assert lo == pytest.approx(8 / (8 + u.Z**2)) and hi == 1.0


def test_a_binary_score_gets_the_wilson_interval_and_the_analytic_se():
    scores = [1.0] * 30 + [0.0] * 20
    iv = u.interval(scores)
    assert iv.method == "wilson" and iv.n == iv.clusters == 50
    assert iv.value == pytest.approx(60.0)
    assert (iv.low, iv.high) == pytest.approx(tuple(100 * x for x in u.wilson(30, 50)))
    assert iv.se == pytest.approx(100 * math.sqrt(0.6 * 0.4 / 50))


def test_bootstrap_agrees_with_the_analytic_standard_error():
    """On the same 400 binary samples, the bootstrap's 95% interval is about +-1.96 analytic SEs."""
    scores = [1.0 if (i * 7) % 10 < 6 else 0.0 for i in range(400)]  # 60% right
    iv = u.bootstrap(scores)
    se = 100 * u.proportion_se(0.6, 400)
    assert iv.se == pytest.approx(se, rel=0.01)  # the sandwich SE of a mean with one per cluster
    assert iv.half_width == pytest.approx(u.Z * se, rel=0.1)
    assert iv.low < 60 < iv.high


def test_partial_credit_scores_are_bootstrapped():
    scores = [1.0, 0.9, 0.0, 2 / 3, 1.0, 0.5, 0.0, 1.0]
    iv = u.interval(scores)
    assert iv.method == "bootstrap" and iv.value == pytest.approx(100 * sum(scores) / 8)
    assert 0 <= iv.low < iv.value < iv.high <= 100


def test_clusters_are_resampled_whole():
    """The same 40 answers, each repeated 4 times in one cluster (rotations of one question):
    the cluster bootstrap is as wide as 40 independent answers, not 160."""
    base = [1.0 if i % 4 else 0.0 for i in range(40)]  # 75% right
    repeated = [s for s in base for _ in range(4)]
    groups = [str(i) for i in range(40) for _ in range(4)]
    clustered = u.interval(repeated, groups)
    naive = u.bootstrap(repeated)
    alone = u.bootstrap(base)
    assert clustered.method == "cluster bootstrap" and clustered.clusters == 40 and clustered.n == 160
    assert clustered.half_width == pytest.approx(alone.half_width, rel=0.15)
    assert clustered.half_width > 1.6 * naive.half_width  # about 2x: sqrt(4)
    assert clustered.se == pytest.approx(alone.se, rel=1e-9)


def test_no_spread_in_clusters_falls_back_to_wilson_per_cluster():
    iv = u.interval([1.0] * 12, [str(i // 3) for i in range(12)])
    assert iv.method == "wilson (per cluster)" and iv.clusters == 4
    assert iv.low == pytest.approx(100 * 4 / (4 + u.Z**2)) and iv.high == 100


def test_mcnemar_exact_is_the_binomial_of_the_discordant_pairs():
    # 1 vs 6 discordant: P(X <= 1 | n=7, 1/2) = (1 + 7) / 128, two-sided 16/128.
    assert u.mcnemar_exact(1, 6) == pytest.approx(16 / 128)
    assert u.mcnemar_exact(6, 1) == pytest.approx(16 / 128)
    assert u.mcnemar_exact(0, 0) == 1.0 and u.mcnemar_exact(3, 3) == 1.0
    # 0 vs 10: 2 / 1024
    assert u.mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def test_paired_difference_of_binary_scores_uses_mcnemar():
    a = [1.0] * 20 + [0.0] * 20
    b = [1.0] * 20 + [1.0] * 10 + [0.0] * 10  # B also gets 10 of A's misses right
    d = u.paired(a, b)
    assert d.test == "mcnemar exact" and d.discordant == (0, 10)
    assert d.delta == pytest.approx(25.0) and d.significant
    assert d.p_value == pytest.approx(2 / 1024)
    assert 0 < d.low <= d.delta <= d.high
    same = u.paired(a, a)
    assert same.delta == 0 and same.p_value == 1.0 and not same.significant


def test_paired_bootstrap_of_partial_credit_and_determinism():
    a = [0.5, 0.9, 0.0, 1.0, 0.3, 0.6, 0.7, 0.2] * 5
    b = [x + 0.05 for x in a]  # B better by 5 points on every sample
    d = u.paired(a, b)
    assert d.test == "paired bootstrap" and d.delta == pytest.approx(5.0)
    assert d.low == pytest.approx(5.0) and d.high == pytest.approx(5.0) and d.significant
    noisy = [x + (0.1 if i % 2 else -0.1) for i, x in enumerate(a)]
    n = u.paired(a, noisy)
    assert n.low < 0 < n.high and not n.significant
    assert u.paired(a, noisy) == n and u.interval(a) == u.interval(a)  # seeded: same every time
    with pytest.raises(ValueError):
        u.paired(a, b[:3])
