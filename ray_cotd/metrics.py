"""Accuracy with a Wilson 95% confidence interval, and the rationale-swap change rate.

Pure functions over booleans: evaluation, tuning and the report all count the same way.

Wilson score interval for k successes in n trials, p = k/n, z = 1.96 for 95%:

    center = (p + z²/(2n)) / (1 + z²/n)
    half   = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/(4n²))

It stays inside [0, 1] and is sensible at p = 0 or 1 and small n, where the normal
approximation p ± z·sqrt(p(1-p)/n) collapses to a zero-width interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) Wilson score interval for `successes` out of `n`."""
    if n <= 0:
        raise ValueError("a confidence interval needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The interval always contains p; at k = 0 or n, rounding can put a bound 1e-17 past it.
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))


def error_bars(rates: Sequence[dict]) -> list[list[float]]:
    """matplotlib's yerr ([below], [above]) for rate records {rate, ci_low, ci_high}; clamped at 0
    for reports written before wilson_interval kept p inside its bounds."""
    return [[max(0.0, r["rate"] - r["ci_low"]) for r in rates], [max(0.0, r["ci_high"] - r["rate"]) for r in rates]]


@dataclass(frozen=True)
class Rate:
    """k of n with its Wilson 95% interval (accuracy, or the share of answers that changed)."""

    n: int
    k: int
    rate: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def rate(flags: Sequence[bool]) -> Rate:
    """Share of True in `flags`, with its 95% Wilson interval. Raises on an empty sequence."""
    n = len(flags)
    k = sum(1 for f in flags if f)
    low, high = wilson_interval(k, n)
    return Rate(n=n, k=k, rate=k / n, ci_low=low, ci_high=high)


def accuracy(correct: Sequence[bool]) -> Rate:
    """Accuracy of predictions given their per-row correctness (unparseable rows count as False)."""
    return rate(correct)


def answer_change_rate(original: Sequence[str | None], swapped: Sequence[str | None]) -> Rate:
    """Share of answers that changed when each rationale was swapped for another question's.

    Answers are normalized values (None = unreadable); None -> "5" or "5" -> None is a change.
    A student whose answers follow its rationale changes often; one that ignores it, rarely.
    """
    if len(original) != len(swapped):
        raise ValueError(f"{len(original)} original answers but {len(swapped)} swapped ones")
    return rate([a != b for a, b in zip(original, swapped)])


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test of two systems scored on the same questions, in order.

    Only the discordant questions count: `a_only` (a right, b wrong) and `b_only`. Under no
    difference each is Binomial(a_only + b_only, 1/2); p is twice the smaller tail, capped at 1
    (1.0 when no question is discordant). Paired, so it sees differences that two overlapping
    Wilson intervals hide.
    """
    if len(a) != len(b):
        raise ValueError(f"paired results need the same questions: {len(a)} vs {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return {"a_only": a_only, "b_only": b_only, "p": min(1.0, 2 * tail)}


__all__ = ["Rate", "Z_95", "accuracy", "answer_change_rate", "mcnemar_exact", "rate", "wilson_interval"]

