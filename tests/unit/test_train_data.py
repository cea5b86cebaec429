"""Bad training input, refused or counted by the driver before any Ray worker starts
(`prepare_data` / `check_parallel` in ray_cotd/student/train.py; no Ray, a character tokenizer)."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import ConfigError, TrainConfig
from ray_cotd.data.errors import DataError
from ray_cotd.student.collate import ROLE_ANSWER, ROLE_RATIONALE
from ray_cotd.lm.format import STAGE2_PREFIX, answer_value_text
from ray_cotd.student.train import check_parallel, prepare_data

from char_tokenizer import TOK


def _corpus(tmp_path, rows, name="corpus.json"):
    path = tmp_path / name
    path.write_text(json.dumps([{"instruction": q, "output": out} for q, out in rows]))
    return str(path)


def _cfg(corpus, **overrides):
    values = dict(corpus=corpus, objective="cascod", holdout_fraction=0.0, val_fraction=0.0, max_seq_len=512,
                  num_workers=1)
    values.update(overrides)
    return TrainConfig(**values)


ROWS = [(f"How many apples are in basket {i}?", f"Basket {i} holds {i} apples. The answer is {i}") for i in range(6)]


def test_fully_filtered_corpus_names_what_was_dropped(tmp_path):
    no_marker = _corpus(tmp_path, [("What is 2 + 2?", "Two and two make four."), ("What is 3 + 3?", "")])
    with pytest.raises(DataError, match=r"no usable rows \(dropped: .*no_marker"):
        prepare_data(_cfg(no_marker), TOK)


def test_rows_without_rationale_are_dropped_and_counted_when_the_objective_needs_one(tmp_path):
    bare = [("What is 7 + 1?", "The answer is 8"), ("What is 9 + 1?", "The answer is 10")]
    corpus = _corpus(tmp_path, ROWS + bare)
    data = prepare_data(_cfg(corpus, objective="cascod"), TOK)
    assert len(data["train"]) == len(ROWS) and data["corpus"].dropped["no_rationale"] == 2
    assert {b["reason"] for b in data["corpus"].bad} == {"no_rationale"}
    # answer_only does not read rationales: the same rows all train
    assert len(prepare_data(_cfg(corpus, objective="answer_only"), TOK)["train"]) == len(ROWS) + 2
    # a corpus with no rationale at all cannot train a rationale objective
    with pytest.raises(DataError, match="none of the 2 rows has a rationale"):
        prepare_data(_cfg(_corpus(tmp_path, bare, "bare.json"), objective="std_cot"), TOK)


def test_long_rows_keep_the_whole_answer_and_are_counted(tmp_path):
    long_rationale = "Counting one by one. " * 40
    rows = [("How many pens?", long_rationale + "The answer is 1234"), ("How many cups?", "Six. The answer is 6"),
            ("Q" * 400 + "?", "Short. The answer is 5")]
    cfg = _cfg(_corpus(tmp_path, rows), max_seq_len=160)
    data = prepare_data(cfg, TOK)
    stats = data["stats"]
    assert stats.rows == 3 and stats.truncated_rationale == 1 and stats.dropped_too_long == 1
    assert stats.truncated_tokens > 0
    assert len(data["train"]) == 2
    answers = {"1234", "6"}
    for (seq,) in data["train"]:
        assert len(seq) <= cfg.max_seq_len
        answer_ids = [t for t, r in zip(seq.targets, seq.roles) if r == ROLE_ANSWER]
        text = "".join(chr(i) for i in answer_ids[:-1])  # the value, then EOS
        assert text in {answer_value_text(a) for a in answers}
        assert any(r == ROLE_RATIONALE for r in seq.roles)  # the rationale was cut, not removed
        assert [chr(i) for i in seq.input_ids].count("\n") >= STAGE2_PREFIX.count("\n")


def test_corpus_too_long_for_max_seq_len_says_raise_it(tmp_path):
    with pytest.raises(DataError, match="raise max_seq_len"):
        prepare_data(_cfg(_corpus(tmp_path, ROWS), max_seq_len=20), TOK)


def test_more_workers_than_rows(tmp_path):
    with pytest.raises(DataError, match="6 training rows cannot feed 8 workers"):
        prepare_data(_cfg(_corpus(tmp_path, ROWS), num_workers=8), TOK)


def test_prada_target_questions_empty_or_too_long(tmp_path):
    corpus = _corpus(tmp_path, ROWS)
    with pytest.raises(ConfigError, match="target_questions"):
        _cfg(corpus, objective="prada")
    empty = tmp_path / "targets.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="target"):
        prepare_data(_cfg(corpus, objective="prada", target_questions=str(empty)), TOK)
    targets = tmp_path / "long_targets.jsonl"
    # the answers are read past, never used: the target domain is unlabeled
    targets.write_text("".join(json.dumps({"question": q, "answer": "?"}) + "\n"
                               for q in ["Is it sunny?", "W" * 600 + "?"]))
    data = prepare_data(_cfg(corpus, objective="cascod+prada", target_questions=str(targets)), TOK)
    assert len(data["targets"]) == 1 and data["target_stats"] == {"questions": 2, "dropped_too_long": 1}
    assert all(seq.domain == 1 for (seq,) in data["targets"])
    with pytest.raises(DataError, match="1 of 2 target-domain questions fit max_seq_len=512; 2 workers"):
        prepare_data(_cfg(corpus, objective="cascod+prada", target_questions=str(targets), num_workers=2), TOK)


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("alpha", 1.01, "alpha: 1.01 is outside [0, 1]"),
    ("alpha", -0.2, "alpha: -0.2 is outside [0, 1]"),
    ("lambda_", -0.5, "lambda_: -0.5 must be >= 0"),
    ("lambda_", float("nan"), "lambda_: nan must be >= 0"),
])
def test_paper_symbols_out_of_range(tmp_path, key, value, fragment):
    with pytest.raises(ConfigError) as err:
        _cfg(_corpus(tmp_path, ROWS), **{key: value})
    assert fragment in str(err.value)


def test_fsdp_refuses_generation_scoring_before_workers_start(tmp_path):
    corpus = _corpus(tmp_path, ROWS)
    with pytest.raises(ConfigError, match="val_generate.*fsdp"):
        check_parallel(_cfg(corpus, parallel_strategy="fsdp", num_workers=2, val_generate=4))
    check_parallel(_cfg(corpus, parallel_strategy="fsdp", num_workers=2))
    check_parallel(_cfg(corpus, parallel_strategy="ddp", num_workers=2, val_generate=4))


def test_no_answer_trains_in_the_rationale(tmp_path):
    """Issue 19: a final restatement of the answer is cut off the rationale; any other inner answer
    marker drops the row, counted; answer_only (which reads no rationale) keeps every row."""
    restated = ("How many pens are in 3 boxes of 4?", "3 boxes of 4 pens make 12. Therefore, the answer is 12.\n"
                                                      "The answer is 12")
    intermediate = ("How many more birds than storks?", "2 + 5 = ? The answer is 7. With 4 storks, 7 - 4 = 3. "
                                                        "The answer is 3")
    other = ("How many left?", "8 - 3 = 5, so the answer is 6. The answer is 5")
    corpus = _corpus(tmp_path, ROWS + [restated, intermediate, other])
    data = prepare_data(_cfg(corpus), TOK)
    rationales = {r["question"]: r["rationale"] for r in data["corpus"].train}
    assert rationales[restated[0]] == "3 boxes of 4 pens make 12."
    assert intermediate[0] not in rationales and other[0] not in rationales
    assert data["corpus"].dropped["answer_in_rationale"] == 2
    assert data["corpus"].summary()["restated_answers_cut"] == 1
    assert [b["row"] for b in data["corpus"].bad if b["reason"] == "answer_in_rationale"] == [7, 8]
    assert len(prepare_data(_cfg(corpus, objective="answer_only"), TOK)["train"]) == len(ROWS) + 3


def test_real_rationales_that_state_the_answer(shared_data):
    """strategyqa/train_gemini_level3.json: 162 rationales hold the marker; 140 restate the answer
    last (cut), 22 do something else with it (dropped). 533 of the release's rationales do (240 cut,
    293 dropped)."""
    from ray_cotd.student.corpus import read_training_rows

    rows, dropped, _ = read_training_rows(shared_data / "strategyqa" / "train_gemini_level3.json")
    assert dropped["answer_in_rationale"] == 22
    assert sum(1 for r in rows if r.get("restated_answer_cut")) == 140
    assert not any("the answer is" in r["rationale"].lower() for r in rows)
