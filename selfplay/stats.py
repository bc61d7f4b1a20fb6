"""Statistics for evaluation: intervals, win rates, agreement, correlation. Pure Python, seeded, no numpy.

Every function takes plain sequences and returns numbers (or a small record); degenerate inputs (no data,
zero variance, chance agreement of 1) give None rather than a misleading 0 or a division error.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

from pydantic import BaseModel

Z95 = 1.959963984540054  # two-sided 95% normal quantile
Outcome = Literal["win", "loss", "tie"]
_POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927); better than p ± z·se near 0 and 1 and for
    small n. n = 0 gives (0, 1): no data rules nothing out."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 the bound is exactly 0 or 1; say so rather than 0.9999999999999999.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in 0..1."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_mean_interval(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean, resampling items with replacement; None without data."""
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    tail = (1 - level) / 2
    return _percentile(means, tail), _percentile(means, 1 - tail)


class WinRate(BaseModel):
    n: int  # comparisons (one per prompt)
    wins: int
    losses: int
    ties: int
    win_rate: float | None  # (wins + ties / 2) / n, 0..1; None when n = 0
    tie_rate: float | None  # ties / n
    ci_low: float | None  # 95% percentile bootstrap over prompts
    ci_high: float | None


def win_rate(outcomes: Sequence[Outcome], *, n_boot: int = 2000, seed: int = 0) -> WinRate:
    """Win rate with ties as half a win, and a bootstrap-over-prompts 95% interval (one outcome a prompt)."""
    counts = Counter(outcomes)
    unknown = set(counts) - set(_POINTS)
    if unknown:
        raise ValueError(f"outcomes must be win, loss or tie; got {sorted(unknown)}")
    n = len(outcomes)
    points = [_POINTS[o] for o in outcomes]
    ci = bootstrap_mean_interval(points, n_boot=n_boot, seed=seed)
    return WinRate(
        n=n,
        wins=counts["win"],
        losses=counts["loss"],
        ties=counts["tie"],
        win_rate=sum(points) / n if n else None,
        tie_rate=counts["tie"] / n if n else None,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
    )


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa between two raters' labels of the same items: (p_o - p_e) / (1 - p_e).

    None when there are no items or chance agreement is 1 (both raters always gave one same label).
    """
    if len(a) != len(b):
        raise ValueError(f"raters labelled {len(a)} and {len(b)} items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[label] * cb[label] for label in ca) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than two points or a constant variable."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y has {len(y)}")
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (so Spearman = Pearson of ranks)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            out[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None as for pearson."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y has {len(y)}")
    return pearson(ranks(x), ranks(y))


class PairedDiff(BaseModel):
    n: int
    mean_diff: float | None  # mean of a - b
    ci_low: float | None  # 95% paired bootstrap (items resampled together)
    ci_high: float | None


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> PairedDiff:
    """Mean difference a - b over paired items (e.g. one prompt's score under two policies) with a
    bootstrap interval that resamples items, keeping each pair together."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    ci = bootstrap_mean_interval(diffs, n_boot=n_boot, seed=seed)
    return PairedDiff(
        n=len(diffs),
        mean_diff=sum(diffs) / len(diffs) if diffs else None,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
    )


def change_verdict(diff: PairedDiff | None) -> str:
    """How a change is reported: improved / worse only when the 95% interval excludes zero, else
    "no measurable change" (never an improvement inside the noise)."""
    if diff is None or diff.ci_low is None or diff.ci_high is None:
        return "-"
    if diff.ci_low > 0:
        return "improved"
    if diff.ci_high < 0:
        return "worse"
    return "no measurable change"
