"""Accuracy and Wilson intervals against hand-computed values, and scoring hand-checked predictions."""

from __future__ import annotations

import math

import pytest

from ray_cotd.evaluate import EvalSet, split_summary, summarize
from ray_cotd.metrics import accuracy, answer_change_rate, wilson_interval
from ray_cotd.scoring import Prediction, score


def test_wilson_8_of_10_by_hand():
    # p = 0.8, z² = 3.8415; center = (0.8 + 0.19208)/1.38415 = 0.71674;
    # half = 1.96/1.38415 · sqrt(0.016 + 0.0096039) = 1.41602 · 0.160012 = 0.226578
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.71674 - 0.226578, abs=1e-4)
    assert high == pytest.approx(0.71674 + 0.226578, abs=1e-4)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)


def test_wilson_extremes_stay_in_unit_interval_and_are_not_degenerate():
    low, high = wilson_interval(0, 5)
    assert low == 0.0
    # z²/(n+z²) = 3.8415/8.8415 = 0.43448
    assert high == pytest.approx(3.8415 / 8.8415, abs=1e-4)
    low, high = wilson_interval(5, 5)
    assert high == 1.0 and low == pytest.approx(1 - 3.8415 / 8.8415, abs=1e-4)


def test_wilson_large_n_approaches_normal_interval():
    low, high = wilson_interval(5000, 10000)
    half = 1.96 * math.sqrt(0.25 / 10000)
    assert low == pytest.approx(0.5 - half, abs=1e-4) and high == pytest.approx(0.5 + half, abs=1e-4)


@pytest.mark.parametrize("k,n", [(-1, 3), (4, 3)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_accuracy_needs_rows():
    with pytest.raises(ValueError, match="n >= 1"):
        accuracy([])


def test_answer_change_rate_counts_none_as_a_value():
    r = answer_change_rate(["5", "true", None, "B"], ["5", "false", "7", "B"])
    assert (r.k, r.n, r.rate) == (2, 4, 0.5)


# Hand-checked predictions: (stage-2 text, gold, type) -> (predicted, correct, parse_error).
HAND_CHECKED = [
    (" 145.", "145.0", "numeric", "145", True, None),
    (" 145 apples.", "145", "numeric", "145", True, None),
    (" 3 + 4 = 7.", "7", "numeric", "7", True, None),
    (" 12.", "13", "numeric", "12", False, None),
    (" about twelve.", "12", "numeric", None, False, "unreadable_answer"),
    ("", "12", "numeric", None, False, "empty_answer"),
    (" True.", "True", "boolean", "true", True, None),
    (" no.", "False", "boolean", "false", True, None),
    (" maybe.", "False", "boolean", None, False, "unreadable_answer"),
    (" B: library.", "B", "multiple_choice", "B", True, None),
    (" (c).", "A", "multiple_choice", "C", False, None),
]


@pytest.mark.parametrize("text,gold,kind,predicted,correct,error", HAND_CHECKED)
def test_score_hand_checked(text, gold, kind, predicted, correct, error):
    assert score(text, gold, kind) == {"predicted": predicted, "correct": correct, "parse_error": error}


def _pred(system, test_set, split, text, gold, kind):
    return Prediction(system=system, test_set=test_set, split=split, position=0, row=0, id="q", question="Q?",
                      gold=gold, rationale="", answer_text=text, **score(text, gold, kind), rationale_stop="eos",
                      prompt_tokens=5, rationale_tokens=10, answer_tokens=2, stage1_s=0.0, stage2_s=0.0)


def test_summarize_accuracy_and_ci_from_hand_checked_predictions():
    sets = [EvalSet("math", "IND", "m.json", "numeric", "all", []), EvalSet("yesno", "OOD", "y.json", "boolean", "all", [])]
    preds = [_pred("s", "math", "IND", t, g, "numeric") for t, g, *_ in HAND_CHECKED[:6]]
    preds += [_pred("s", "yesno", "OOD", t, g, "boolean") for t, g, *_ in HAND_CHECKED[6:9]]
    results = {r["test_set"]: r for r in summarize(preds, ["s"], sets)}
    math_acc = results["math"]["accuracy"]
    assert (math_acc["k"], math_acc["n"]) == (3, 6)  # 145.0, 145 apples, 3+4=7 right; 12/13, twelve, empty wrong
    assert math_acc["rate"] == 0.5
    assert (math_acc["ci_low"], math_acc["ci_high"]) == pytest.approx(wilson_interval(3, 6))
    assert results["math"]["unparseable"] == 2
    assert (results["yesno"]["accuracy"]["k"], results["yesno"]["accuracy"]["n"]) == (2, 3)
    assert results["yesno"]["faithfulness"] is None
    pooled = split_summary(preds, ["s"])["s"]
    assert (pooled["IND"]["k"], pooled["OOD"]["k"]) == (3, 2)


def test_wilson_interval_contains_the_rate_at_every_k():
    # at k = 0 or n, float rounding used to put a bound 1e-17 past p (a negative plot error bar)
    for n in (1, 7, 20, 30, 100, 290, 1221):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n, low, high)


def test_mcnemar_exact_counts_discordant_pairs_and_gives_the_binomial_p():
    from ray_cotd.metrics import mcnemar_exact

    a = [True] * 15 + [False] + [True] * 10 + [False] * 4  # 10 both right, 4 both wrong: ignored
    b = [False] * 15 + [True] + [True] * 10 + [False] * 4
    assert mcnemar_exact(a, b) == {"a_only": 15, "b_only": 1, "p": 2 * 17 / 2**16}
    assert mcnemar_exact(b, a)["p"] == mcnemar_exact(a, b)["p"]  # two-sided
    assert mcnemar_exact([True] * 5, [False] * 5)["p"] == 2 / 32
    assert mcnemar_exact([True, False, True, False], [False, True, False, True])["p"] == 1.0  # capped
    assert mcnemar_exact([True], [True]) == {"a_only": 0, "b_only": 0, "p": 1.0}
    with pytest.raises(ValueError, match="same questions"):
        mcnemar_exact([True], [True, False])
