"""Issue 19, item 8: a test set's answer type never degrades silently. An invented held-out set in
the `arc` preset's format (input / target, golds like "(C)", some questions with numbered options
(1)-(4)) is scored as multiple choice, answers that give the label with its option text count, and
a set whose golds do not all fit one type says which type it scored with and how many did not fit.
No Ray, no model: preparation and scoring are plain functions."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import TestSetSpec as SetSpec  # not Test*: pytest would try to collect it
from ray_cotd.data.answers import normalize_answer
from ray_cotd.evaluate import answer_type_note, prepare_test_set
from ray_cotd.scoring import score

# (question, gold, an answer a student might give after the marker, whether it is right)
ARC_ROWS = [
    ("Question: Which gas do plants take in to make food?\nOptions: (A) oxygen (B) carbon dioxide (C) helium "
     "(D) neon", "(B)", " (B) carbon dioxide.", True),
    ("Question: What tool measures the mass of a rock?\nOptions: (A) ruler (B) thermometer (C) balance (D) clock",
     "(C)", " (C) balance", True),
    ("Question: Which is a source of light?\nOptions: (A) the Moon (B) a mirror (C) the Sun (D) a window", "(C)",
     " the Sun.", True),  # the option's text alone: read as its label from the question's list
    ("Question: Which layer of Earth is liquid?\nOptions: (A) crust (B) outer core (C) inner core (D) mantle",
     "(B)", " (A) crust", False),
    ("Question: Which is a metal?\nOptions: (1) glass (2) copper (3) wood (4) rubber", "(2)", " (2) copper.", True),
    ("Question: Which animal is a mammal?\nOptions: (1) shark (2) frog (3) whale (4) eagle", "(3)", " 3", True),
]


def _arc_set(tmp_path, rows, name="arc.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"input": q, "target": gold}) + "\n" for q, gold, _, _ in rows))
    return str(path)


def _scores(test_set, answers):
    return [score(a, r["gold"], r["answer_type"], question=r["question"])["correct"]
            for r, a in zip(test_set.records, answers)]


def test_an_arc_format_set_is_scored_as_multiple_choice(tmp_path):
    test_set = prepare_test_set(SetSpec(path=_arc_set(tmp_path, ARC_ROWS)), holdout_fraction=0.2, split_seed=0)
    assert (test_set.answer_type, test_set.answer_type_from, test_set.not_fitting) == ("multiple_choice", "golds", 0)
    assert _scores(test_set, [a for _, _, a, _ in ARC_ROWS]) == [right for _, _, _, right in ARC_ROWS]
    # what scoring by string equality made of the same answers (the text type it used to fall back to)
    as_text = [normalize_answer(a, "text") == normalize_answer(g, "text") for _, g, a, _ in ARC_ROWS]
    assert sum(as_text) == 0 and sum(right for *_, right in ARC_ROWS) == 5


def test_golds_that_do_not_fit_are_counted_and_said(tmp_path):
    rows = ARC_ROWS + [("Question: Label the diagram.", "see the diagram", " see the diagram", True),
                       ("Question: Which is heavier?\nOptions: (A) a kilo of lead (B) a kilo of feathers",
                        "neither", " (A)", False)]
    with pytest.warns(UserWarning, match=r"scored as multiple_choice .* 2 of 8 golds are not multiple_choice"):
        test_set = prepare_test_set(SetSpec(path=_arc_set(tmp_path, rows)), holdout_fraction=0.2, split_seed=0)
    assert (test_set.answer_type, test_set.not_fitting) == ("multiple_choice", 2)
    assert [r["answer_type"] for r in test_set.records][-2:] == ["text", "text"]  # compared as text
    assert _scores(test_set, [a for _, _, a, _ in rows]) == [right for _, _, _, right in rows]
    note = answer_type_note({"name": "arc", "answer_type": test_set.answer_type, "n": len(test_set.records),
                             "answer_type_from": test_set.answer_type_from, "golds_not_fitting": test_set.not_fitting})
    assert note == ("arc multiple_choice (inferred from the golds), 2 of 8 golds are not multiple_choice answers "
                    "and were compared as text")


def test_a_given_answer_type_is_still_checked_strictly(tmp_path):
    from ray_cotd.data.errors import DataError

    path = _arc_set(tmp_path, ARC_ROWS)
    assert prepare_test_set(SetSpec(path=path, answer_type="multiple_choice"), holdout_fraction=0.2,
                            split_seed=0).answer_type_from == "config"
    with pytest.raises(DataError, match=r"gold '\(B\)' is not a numeric answer"):
        prepare_test_set(SetSpec(path=path, answer_type="numeric"), holdout_fraction=0.2, split_seed=0)
