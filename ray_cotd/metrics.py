"""Accuracy with a Wilson 95% confidence interval, and the rationale-swap change rate.

Pure functions over booleans: evaluation, tuning and the report all count the same way.

Wilson score interval for k successes in n trials, p = k/n, z = 1.96 for 95%:

    center = (p + z²/(2n)) / (1 + z²/n)
    half   = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/(4n²))

It stays inside [0, 1] and is sensible at p = 0 or 1 and small n, where the normal
approximation p ± z·sqrt(p(1-p)/n) collapses to a zero-width interval.

Comparing systems on the same questions: mcnemar_exact (two students, one seed each),
paired_sign_flip (two arms over several training seeds each, question by question), paired_mde
(the smallest difference such a paired test detects at n questions) and seed_spread (an arm's
mean and spread over its seeds).
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


def seed_spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (n - 1; 0.0 for one value), min and max of one arm's
    per-seed accuracies: how far training seeds move the result. Raises on no values."""
    if not values:
        raise ValueError("seed_spread needs at least one value")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"seeds": n, "mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def paired_sign_flip(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]]) -> dict:
    """Exact paired permutation (sign-flip) test of two arms across training seeds, question by question.

    a: one list per training seed of arm A, each the per-question correctness on the same questions
    in the same order; b: the same for arm B (its own number of seeds). Per question i:

        d_i = mean over A's seeds of correct - mean over B's seeds of correct   (in [-1, 1])
        T   = sum_i d_i

    Under H0 (on every question the two arms' seed-averaged results are exchangeable) each d_i is
    as likely to have its sign flipped: T* = sum_i e_i |d_i| with independent e_i = +-1. p is the
    exact two-sided P(|T*| >= |T|), computed by convolving the 2^n sign patterns (the d_i are
    multiples of 1/L, L = lcm(seeds of A, seeds of B), so T* lives on a grid of integers / L).

    Why this test: the question is the unit. Each question's answers from all seeds become one
    paired difference, so the correlation of seeds on the same question (a hard question stays
    hard whatever the seed) cannot inflate the evidence, as pooling every (seed, question) pair into
    one stratified McNemar / Cochran-Mantel-Haenszel count would. With one seed per arm it is the
    exact McNemar test (mcnemar_exact gives the same p). It conditions on the trained students:
    training-seed variance enters only through the averaging, so the per-seed accuracies and their
    spread (seed_spread) are read beside it; a difference carried by one seed shows there.

    -> {"n": questions, "seeds_a", "seeds_b", "mean_a", "mean_b", "diff": mean_a - mean_b,
        "a_better": questions with d_i > 0, "b_better": d_i < 0, "mean_sq_diff": mean of d_i^2
        (the variance term of paired_mde), "p": the exact two-sided p (1.0 when every d_i is 0)}.
    """
    import numpy as np

    if not a or not b:
        raise ValueError("paired_sign_flip needs at least one seed per arm")
    n = len(a[0])
    if n == 0 or any(len(s) != n for s in (*a, *b)):
        raise ValueError(f"paired results need the same questions in every seed: lengths "
                         f"{[len(s) for s in a]} vs {[len(s) for s in b]}")
    lcm = math.lcm(len(a), len(b))
    wa, wb = lcm // len(a), lcm // len(b)
    # m_i = L * d_i, an integer in [-L, L]
    m = [wa * sum(1 for s in a if s[i]) - wb * sum(1 for s in b if s[i]) for i in range(n)]
    observed = sum(m)
    # The null distribution of sum(e_i |m_i|) as probabilities on the integer grid [-total, total]:
    # each nonzero |m_i| = k adds -k or +k with probability 1/2.
    total = sum(abs(x) for x in m)
    dist = np.zeros(2 * total + 1)
    dist[total] = 1.0
    for k in (abs(x) for x in m if x):
        shifted = np.zeros_like(dist)
        shifted[: len(dist) - k] += 0.5 * dist[k:]  # -k
        shifted[k:] += 0.5 * dist[: len(dist) - k]  # +k
        dist = shifted
    values = np.arange(-total, total + 1)
    p = float(dist[np.abs(values) >= abs(observed)].sum())
    mean_a = sum(sum(1 for x in s if x) for s in a) / (len(a) * n)
    mean_b = sum(sum(1 for x in s if x) for s in b) / (len(b) * n)
    return {"n": n, "seeds_a": len(a), "seeds_b": len(b), "mean_a": mean_a, "mean_b": mean_b,
            "diff": mean_a - mean_b, "a_better": sum(1 for x in m if x > 0), "b_better": sum(1 for x in m if x < 0),
            "mean_sq_diff": sum((x / lcm) ** 2 for x in m) / n, "p": min(1.0, p)}


def paired_mde(n: int, mean_sq_diff: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference in accuracy (as a share, e.g. 0.12 = 12 points) that a paired
    test at two-sided level `alpha` detects with probability `power` on `n` questions.

    mean_sq_diff: E[d_i^2] of the per-question paired differences (paired_sign_flip's d_i; with one
    seed per arm it is the share of discordant questions). The normal approximation of Connor
    (1987) for McNemar's test, which is the sign-flip test's as well: T = sum d_i has mean n*D and
    variance n*(q - D^2) under a true difference D, and the test rejects when |T| > z_(1-alpha/2)
    * sqrt(n q) (its null variance), so D solves

        sqrt(n) * D = z_(1-alpha/2) * sqrt(q) + z_power * sqrt(q - D^2),   q = mean_sq_diff

    found here by bisection on D in (0, sqrt(q)]. Raises when even D = sqrt(q) (every question
    differing in one direction) is not detectable at this n.
    """
    from statistics import NormalDist

    if n < 1 or not 0 < mean_sq_diff <= 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"paired_mde needs n >= 1, 0 < mean_sq_diff <= 1, 0 < alpha, power < 1; got "
                         f"n={n}, mean_sq_diff={mean_sq_diff}, alpha={alpha}, power={power}")
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    q = mean_sq_diff

    def gap(d: float) -> float:  # > 0 once D is detectable
        return math.sqrt(n) * d - z_a * math.sqrt(q) - z_b * math.sqrt(max(0.0, q - d * d))

    low, high = 0.0, math.sqrt(q)
    if gap(high) < 0:
        raise ValueError(f"no difference is detectable with power {power} at n={n}, mean_sq_diff={q}")
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if gap(mid) < 0 else (low, mid)
    return high


__all__ = ["Rate", "Z_95", "accuracy", "answer_change_rate", "mcnemar_exact", "paired_mde", "paired_sign_flip",
           "rate", "seed_spread", "wilson_interval"]

