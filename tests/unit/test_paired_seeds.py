"""The study's paired test across training seeds (paired_sign_flip), its power (paired_mde) and an
arm's spread over seeds, against hand-computed values."""

from __future__ import annotations

import random

import pytest

from ray_cotd.metrics import mcnemar_exact, paired_mde, paired_sign_flip, seed_spread

T, F = True, False


def test_sign_flip_two_seeds_each_by_hand():
    # per question, correct seeds of A minus correct seeds of B (L = lcm(2, 2) = 2, d_i = m_i / 2):
    # q0 2-1 = 1, q1 1-0 = 1, q2 0-0 = 0, q3 2-1 = 1 -> T = 3 over three nonzero |m_i| = 1.
    # T* = +-1 +-1 +-1: -3, -1, 1, 3 with 1/8, 3/8, 3/8, 1/8 -> P(|T*| >= 3) = 2/8.
    a = [[T, T, F, T], [T, F, F, T]]
    b = [[F, F, F, T], [T, F, F, F]]
    r = paired_sign_flip(a, b)
    assert r["p"] == pytest.approx(0.25)
    assert (r["n"], r["seeds_a"], r["seeds_b"], r["a_better"], r["b_better"]) == (4, 2, 2, 3, 0)
    assert (r["mean_a"], r["mean_b"], r["diff"]) == pytest.approx((5 / 8, 2 / 8, 3 / 8))
    assert r["mean_sq_diff"] == pytest.approx((0.25 + 0.25 + 0 + 0.25) / 4)


def test_sign_flip_mixed_magnitudes_by_hand():
    # m = 2, 1, -1, 2, 0 -> T = 4. T* = (+-2 +-2) + (+-1 +-1): the 2s give -4, 0, 4 (1/4, 1/2, 1/4),
    # the 1s -2, 0, 2 (1/4, 1/2, 1/4). |T*| >= 4: (4, 0), (4, 2), (-4, 0), (-4, -2)
    # = 1/8 + 1/16 + 1/8 + 1/16 = 3/8.
    a = [[T, T, F, T, T], [T, F, F, T, F]]
    b = [[F, F, T, F, T], [F, F, F, F, F]]
    r = paired_sign_flip(a, b)
    assert r["p"] == pytest.approx(3 / 8)
    assert (r["a_better"], r["b_better"]) == (3, 1)


def test_sign_flip_unequal_seed_counts_by_hand():
    # A one seed, B two: L = 2, m_i = 2*a_i - (b_i0 + b_i1): q0 2-1 = 1, q1 2-2 = 0, q2 2-0 = 2 -> T = 3.
    # T* = +-1 +-2: -3, -1, 1, 3 each 1/4 -> p = 1/2. d = 1/2, 0, 1: mean d^2 = 1.25 / 3.
    r = paired_sign_flip([[T, T, T]], [[T, T, F], [F, T, F]])
    assert r["p"] == pytest.approx(0.5)
    assert (r["mean_a"], r["mean_b"], r["diff"]) == pytest.approx((1.0, 0.5, 0.5))
    assert r["mean_sq_diff"] == pytest.approx(1.25 / 3)


def test_sign_flip_with_one_seed_is_the_exact_mcnemar_test():
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(1, 40)
        a = [rng.random() < 0.6 for _ in range(n)]
        b = [rng.random() < 0.4 for _ in range(n)]
        assert paired_sign_flip([a], [b])["p"] == pytest.approx(mcnemar_exact(a, b)["p"])


def test_sign_flip_no_difference_and_bad_input():
    assert paired_sign_flip([[T, F], [F, F]], [[T, F], [F, F]])["p"] == 1.0
    with pytest.raises(ValueError, match="same questions"):
        paired_sign_flip([[T, F]], [[T]])
    with pytest.raises(ValueError, match="at least one seed"):
        paired_sign_flip([], [[T]])


def test_sign_flip_is_fast_at_commonsenseqa_size():
    rng = random.Random(0)
    a = [[rng.random() < 0.3 for _ in range(1221)] for _ in range(3)]
    b = [[rng.random() < 0.25 for _ in range(1221)] for _ in range(3)]
    assert 0 <= paired_sign_flip(a, b)["p"] <= 1


def test_mde_by_hand():
    # n = 100, q = 0.2: D = (1.959964 * sqrt(0.2) + 0.841621 * sqrt(0.2 - D^2)) / 10; iterating from
    # 0.1238: 0.12381926 (Connor's sample size at that D: (0.876522 + 0.361670)^2 / 0.0153314 = 100.0)
    assert paired_mde(100, 0.2) == pytest.approx(0.123819, abs=2e-6)
    # more questions or fewer discordant ones detect less
    assert paired_mde(400, 0.2) < paired_mde(100, 0.2)
    assert paired_mde(100, 0.1) < paired_mde(100, 0.2)
    with pytest.raises(ValueError, match="no difference is detectable"):
        paired_mde(2, 0.5)
    with pytest.raises(ValueError, match="mean_sq_diff"):
        paired_mde(100, 0.0)


def test_seed_spread_by_hand():
    s = seed_spread([0.2, 0.3, 0.4])
    assert (s["seeds"], s["min"], s["max"]) == (3, 0.2, 0.4)
    assert s["mean"] == pytest.approx(0.3) and s["sd"] == pytest.approx(0.1)
    assert seed_spread([0.5])["sd"] == 0.0
    with pytest.raises(ValueError):
        seed_spread([])
