"""Statistics against hand-computed tables."""

import math

import pytest

from selfplay.stats import (
    bootstrap_mean_interval, cohens_kappa, paired_bootstrap_diff, pearson, ranks, spearman, wilson_interval, win_rate,
)


def test_wilson_interval_hand_computed():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71673, half 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.22658
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    # 0 of 10: lower bound exactly 0, upper z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.2775
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_win_rate_counts_ties_as_half():
    wr = win_rate(["win", "win", "tie", "loss", "win", "tie", "loss", "win"], n_boot=500, seed=1)
    assert (wr.n, wr.wins, wr.losses, wr.ties) == (8, 4, 2, 2)
    assert wr.win_rate == pytest.approx((4 + 1) / 8)
    assert wr.tie_rate == pytest.approx(2 / 8)
    assert wr.ci_low <= wr.win_rate <= wr.ci_high
    assert 0.0 <= wr.ci_low and wr.ci_high <= 1.0
    # Seeded: the same interval every time.
    assert win_rate(["win", "win", "tie", "loss", "win", "tie", "loss", "win"], n_boot=500, seed=1) == wr


def test_win_rate_degenerate_and_interval_width():
    all_wins = win_rate(["win"] * 5, n_boot=200)
    assert (all_wins.win_rate, all_wins.ci_low, all_wins.ci_high) == (1.0, 1.0, 1.0)
    empty = win_rate([])
    assert empty.win_rate is None and empty.ci_low is None
    # 50/50 wins and losses: the bootstrap interval is close to the normal one, mean ± 1.96 * 0.5 / sqrt(n).
    wr = win_rate(["win", "loss"] * 200, n_boot=2000, seed=3)
    assert wr.win_rate == 0.5
    assert wr.ci_low == pytest.approx(0.5 - 1.96 * 0.5 / math.sqrt(400), abs=0.012)
    assert wr.ci_high == pytest.approx(0.5 + 1.96 * 0.5 / math.sqrt(400), abs=0.012)
    with pytest.raises(ValueError):
        win_rate(["win", "draw"])


def test_cohens_kappa_hand_computed():
    # Two raters, 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4.
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)
    assert cohens_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohens_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement 1: undefined
    assert cohens_kappa([], []) is None


def test_pearson_and_spearman_hand_computed():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    # dx = -2..2, dy = -2, 0, 1, 0, 1: sxy = 6, sxx = 10, syy = 6, r = 6 / sqrt(60)
    assert pearson(x, y) == pytest.approx(6 / math.sqrt(60))
    # ranks of y with ties averaged: 1, 2.5, 4.5, 2.5, 4.5: sxy = 7, syy = 9, rho = 7 / sqrt(90)
    assert ranks(y) == [1.0, 2.5, 4.5, 2.5, 4.5]
    assert spearman(x, y) == pytest.approx(7 / math.sqrt(90))
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([1], [2]) is None


def test_paired_bootstrap_diff():
    a, b = [3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]
    d = paired_bootstrap_diff(a, b, n_boot=300)
    assert (d.n, d.mean_diff, d.ci_low, d.ci_high) == (4, 2.0, 2.0, 2.0)  # every difference is 2: no spread
    d = paired_bootstrap_diff([1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 1, 0], n_boot=1000, seed=2)
    assert d.mean_diff == pytest.approx(0.5)
    assert d.ci_low <= 0.5 <= d.ci_high and d.ci_low >= 0.0  # no difference is negative
    assert bootstrap_mean_interval([]) is None
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1.0], [1.0, 2.0])
