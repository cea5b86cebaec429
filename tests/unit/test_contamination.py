"""The contamination check on hand-made rows: exact match after normalization, 13-gram overlap,
counts, examples, and what `decontaminate: warn | drop | off` does in training's data preparation."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import ConfigError, TrainConfig
from ray_cotd.config import TestSetSpec as SetSpec  # not collected as a test class
from ray_cotd.data.contamination import NGRAM, check_overlap, format_overlap, ngrams, normalize_question, words
from ray_cotd.data.errors import DataError
from ray_cotd.data.splits import holdout_split
from ray_cotd.student.train import prepare_data

from char_tokenizer import TOK

# 16 words; its 13-grams are words 0-12, 1-13, 2-14, 3-15
LONG = "Ava has 18 beads in a small box. Ava gets 6 more beads from Tom. How many now?"
SHORT = "What is 2 + 2?"


def test_normalization_ignores_case_spacing_and_punctuation():
    assert words("Ava's 18 beads,  (Tom)!") == ["ava", "s", "18", "beads", "tom"]
    assert normalize_question("What is 2 + 2?") == normalize_question("  what IS 2+2 ") == "what is 2 2"
    assert normalize_question("snake_case") == "snake case"
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")] and ngrams(["a"], 2) == []


def test_exact_ngram_and_clean_rows_are_told_apart():
    train = [
        "what is 2+2",                                   # exact (normalized) copy of SHORT
        LONG.upper(),                                    # exact copy of LONG
        "Before lunch, " + LONG[:-len(" How many now?")] + " How many beads does Ava have?",  # shares a 13-gram
        "Ava has 18 beads in a small box. How many now?",  # 11 words: too short for a 13-gram
        "Something else entirely.",
    ]
    report = check_overlap(train, {"demo": [SHORT, LONG], "other": ["Unrelated question?"]})
    demo, other = report.sets
    assert (demo.name, demo.test_questions, demo.exact, demo.ngram) == ("demo", 2, 2, 1)
    assert demo.flagged == [0, 1, 2] and report.flagged == {0, 1, 2}
    assert (other.exact, other.ngram, other.flagged) == (0, 0, [])
    ngram = next(e for e in demo.examples if e["kind"] == "ngram")
    assert ngram["train_row"] == 2 and ngram["test_row"] == 1
    assert ngram["shared"] == "ava has 18 beads in a small box ava gets 6 more beads"
    assert len(ngram["shared"].split()) == NGRAM
    exact = [e for e in demo.examples if e["kind"] == "exact"]
    assert [(e["train_row"], e["test_row"], e["shared"]) for e in exact] == [(0, 0, None), (1, 1, None)]
    out = report.as_dict()
    assert out["ngram"] == 13 and out["train_rows"] == 5 and out["flagged_rows"] == 3
    assert "flagged" not in out["sets"][0]
    lines = format_overlap(report, action="kept")
    assert lines[0] == "demo (2 questions): 3 of 5 training rows overlap (2 exact, 1 by 13-gram); kept"
    assert lines[-1] == "other (1 questions): 0 of 5 training rows overlap (0 exact, 0 by 13-gram)"


def test_examples_are_capped_but_counts_are_not():
    report = check_overlap([SHORT] * 10, {"demo": [SHORT]}, max_examples=2)
    assert report.sets[0].exact == 10 and len(report.sets[0].examples) == 2


# -- training: decontaminate warn | drop | off in prepare_data (no Ray, a character tokenizer) ----


def _files(tmp_path):
    rows = [(f"How many apples are in basket {i}?", f"Basket {i} holds {i} apples. The answer is {i}")
            for i in range(6)]
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps([{"instruction": q, "output": out} for q, out in rows]))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in
                            [("how many apples are in basket 1", "1"), ("HOW MANY APPLES ARE IN BASKET 4?", "4"),
                             ("How many pears are in basket 9?", "9")]))
    return str(corpus), str(test)


def _cfg(corpus, test, **overrides):
    values = dict(corpus=corpus, objective="cascod", holdout_fraction=0.0, val_fraction=0.0, max_seq_len=512,
                  num_workers=1, contamination_sets=[SetSpec(path=test, name="held")])
    values.update(overrides)
    return TrainConfig(**values)


def test_warn_reports_and_keeps(tmp_path):
    data = prepare_data(_cfg(*_files(tmp_path)), TOK)
    assert len(data["corpus"].train) == 6 and len(data["train"]) == 6
    held = data["contamination"].sets[0]
    assert (held.name, held.exact, held.ngram, held.test_questions) == ("held", 2, 0, 3)


def test_drop_removes_and_counts(tmp_path):
    data = prepare_data(_cfg(*_files(tmp_path), decontaminate="drop"), TOK)
    assert [r["question"] for r in data["corpus"].train] == [
        f"How many apples are in basket {i}?" for i in (0, 2, 3, 5)]
    assert len(data["train"]) == 4 and data["corpus"].dropped["contaminated"] == 2


def test_off_and_no_sets_skip_the_check(tmp_path):
    corpus, test = _files(tmp_path)
    assert prepare_data(_cfg(corpus, test, decontaminate="off"), TOK)["contamination"] is None
    assert prepare_data(_cfg(corpus, test, contamination_sets=[]), TOK)["contamination"] is None


def test_drop_that_leaves_nothing_is_an_error(tmp_path):
    corpus, _ = _files(tmp_path)
    with pytest.raises(DataError, match="all 6 training rows overlap"):
        prepare_data(_cfg(corpus, corpus, decontaminate="drop"), TOK)  # the corpus is its own test set


def test_a_test_set_that_does_not_exist_is_a_clear_error(tmp_path):
    corpus, _ = _files(tmp_path)
    with pytest.raises(ConfigError, match=r"contamination_sets\[0\]\.path: test set not found: '.*nowhere.jsonl'"):
        prepare_data(_cfg(corpus, str(tmp_path / "nowhere.jsonl")), TOK)


def test_the_hold_out_side_is_what_is_checked(tmp_path):
    corpus, test = _files(tmp_path)
    spec = SetSpec(path=test, name="held", holdout="test")
    data = prepare_data(_cfg(corpus, test, contamination_sets=[spec], holdout_fraction=0.5), TOK)
    test_side = holdout_split([{"question": q} for q in ("how many apples are in basket 1",
                               "HOW MANY APPLES ARE IN BASKET 4?", "How many pears are in basket 9?")],
                              test_fraction=0.5, seed=0)[1]  # split_seed 0, the default
    held = data["contamination"].sets[0]
    assert held.test_questions == len(test_side)  # only the test side of the seeded split of the test file
