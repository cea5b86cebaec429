"""The main job's headline on hand-built predictions: pairing, counts, CIs and the exact McNemar p."""

from __future__ import annotations

import math

import pytest

from ray_cotd.headline import format_p, headline, headline_text, plot_headline
from ray_cotd.scoring import Prediction


def _p(system: str, position: int, correct: bool, *, test_set: str = "demo", split: str = "IND",
       qid: str | None = None) -> Prediction:
    return Prediction(system=system, test_set=test_set, split=split, position=position, row=position,
                      id=qid or f"{test_set}-{position}", question=f"q{position}?", gold="1", rationale="r",
                      answer_text=" 1." if correct else " 2.", predicted="1" if correct else "2", correct=correct,
                      parse_error=None, rationale_stop="eos", prompt_tokens=5, rationale_tokens=1, answer_tokens=2,
                      stage1_s=0.1, stage2_s=0.1)


def _report(systems=(("student", "student"), ("untrained", "baseline")), sets=(("demo", "IND"),)) -> dict:
    return {"systems": [{"name": n, "kind": k} for n, k in systems],
            "test_sets": [{"name": n, "split": s} for n, s in sets]}


def _predictions(student: list[bool], baseline: list[bool], **kw) -> list[Prediction]:
    return ([_p("student", i, c, **kw) for i, c in enumerate(student)]
            + [_p("untrained", i, c, **kw) for i, c in enumerate(baseline)])


def test_ten_questions_by_hand():
    # student right on 0-7, baseline right on 0-1 and 8: discordant 6 (student only) vs 1 (baseline only).
    student = [True] * 8 + [False] * 2
    baseline = [True, True] + [False] * 6 + [True, False]
    h = headline(_report(), _predictions(student, baseline))
    assert (h["n"], h["student_correct"], h["baseline_correct"]) == (10, 8, 3)
    assert (h["student_only"], h["baseline_only"]) == (6, 1)
    # exact two-sided: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    assert h["p_value"] == pytest.approx(0.125)
    assert h["student_accuracy"]["k"] == 8 and h["baseline_accuracy"]["k"] == 3
    assert (round(h["student_accuracy"]["ci_low"], 3), round(h["student_accuracy"]["ci_high"], 3)) == (0.490, 0.943)
    assert h["reason"] is None and h["student"] == "student" and h["baseline"] == "untrained"
    text = headline_text(h)
    assert "80.0% [49.0, 94.3] (8/10)" in text and "30.0%" in text and "n = 10" in text and "p = 0.125" in text


def test_a_significant_gain_on_sixty_questions():
    # 20 questions only the student gets right, none only the baseline: p = 2 / 2**20
    student = [True] * 30 + [False] * 30
    baseline = [True] * 10 + [False] * 50
    h = headline(_report(), _predictions(student, baseline))
    assert h["n"] == 60 and h["p_value"] == pytest.approx(2 / 2**20)
    assert format_p(h["p_value"]) == "p = 1.9e-06"


def test_only_ind_sets_count_and_pairs_are_by_set_and_position():
    preds = _predictions([True, False], [False, False]) + _predictions(
        [True] * 3, [False] * 3, test_set="ood", split="OOD")
    h = headline(_report(sets=(("demo", "IND"), ("ood", "OOD"))), preds)
    assert h["n"] == 2 and h["test_sets"] == ["demo"] and h["student_correct"] == 1


def test_two_ind_sets_are_pooled():
    preds = _predictions([True], [False]) + _predictions([True, True], [True, False], test_set="more")
    h = headline(_report(sets=(("demo", "IND"), ("more", "IND"))), preds)
    assert (h["n"], h["student_correct"], h["baseline_correct"]) == (3, 3, 1)
    assert h["test_sets"] == ["demo", "more"]


def test_without_the_untrained_baseline_the_headline_says_so():
    preds = [_p("student", 0, True), _p("student", 1, False)]
    h = headline(_report(systems=(("student", "student"), ("few_shot", "baseline"))), preds)
    assert h["reason"] is not None and "untrained" in h["reason"]
    assert h["baseline_correct"] is None and h["p_value"] is None
    assert (h["n"], h["student_correct"]) == (2, 1)
    assert headline_text(h).startswith("No headline comparison: ")


def test_without_an_ind_set_or_a_student_the_headline_says_so():
    assert "no IND test set" in headline(_report(sets=(("ood", "OOD"),)), [])["reason"]
    assert "no student" in headline(_report(systems=(("untrained", "baseline"),)), [])["reason"]


def test_different_questions_at_one_position_are_refused():
    preds = [_p("student", 0, True), _p("untrained", 0, True, qid="another")]
    with pytest.raises(ValueError, match="same questions"):
        headline(_report(), preds)


def test_plot_is_written_with_and_without_a_comparison(tmp_path):
    h = headline(_report(), _predictions([True, False, True], [False, False, True]))
    plot_headline(h, tmp_path / "a.png")
    plot_headline(headline(_report(systems=(("student", "student"),)), [_p("student", 0, True)]), tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000


def test_format_p():
    assert format_p(0.5) == "p = 0.5" and format_p(1.0) == "p = 1" and format_p(0.0123) == "p = 0.012"
    assert format_p(0.003) == "p = 0.003" and format_p(math.ldexp(1, -20)) == "p = 9.5e-07"
