"""The one Prediction type and its predictions file: same keys as before, read back, bad rows named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ray_cotd.data.errors import DataError
from ray_cotd.scoring import PREDICTION_KEYS, Prediction, read_predictions, score, write_predictions

# The keys (and their order) of every predictions/*.jsonl row written before Prediction existed.
FILE_KEYS = ("system", "test_set", "split", "position", "row", "id", "question", "gold", "rationale", "answer_text",
             "predicted", "correct", "parse_error", "rationale_stop", "prompt_tokens", "rationale_tokens",
             "answer_tokens", "stage1_s", "stage2_s", "swapped_from", "swapped_predicted", "answer_changed",
             "constrained_predicted", "constrained_correct")


def _prediction(**fields) -> Prediction:
    base = dict(system="cascod", test_set="svamp", split="IND", position=3, row=17, id="ab12", question="2+2?",
                gold="4", rationale="Two and two.", answer_text=" 4.", **score(" 4.", "4", "numeric"),
                rationale_stop="eos", prompt_tokens=30, rationale_tokens=4, answer_tokens=3, stage1_s=0.5,
                stage2_s=0.1)
    return Prediction(**{**base, **fields})


def test_rows_keep_the_file_keys_and_read_back(tmp_path):
    assert PREDICTION_KEYS == FILE_KEYS
    predictions = [_prediction(), _prediction(position=4, swapped_from=3, swapped_predicted="5", answer_changed=True)]
    path = tmp_path / "predictions" / "cascod" / "svamp.jsonl"
    write_predictions(path, predictions)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [tuple(r) for r in rows] == [FILE_KEYS, FILE_KEYS]
    assert rows[0]["predicted"] == "4" and rows[0]["correct"] is True and rows[0]["answer_changed"] is None
    assert read_predictions(path) == predictions


def test_rows_written_before_the_constrained_keys_still_read(tmp_path):
    path = tmp_path / "p.jsonl"
    old = {k: v for k, v in _prediction().to_dict().items() if not k.startswith("constrained_")}
    path.write_text(json.dumps(old) + "\n")
    assert read_predictions(path) == [_prediction()]


def test_a_row_lacking_keys_is_named_with_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_prediction().to_dict()) + "\n" + json.dumps({"id": "q", "correct": True}) + "\n")
    with pytest.raises(DataError, match=r"p.jsonl, line 2, field 'system': prediction row lacks key\(s\) system, "):
        read_predictions(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="line 1: not JSON"):
        read_predictions(path)


def test_unknown_keys_are_ignored():
    row = {**_prediction().to_dict(), "added_later": 1}
    assert Prediction.from_dict(row) == _prediction()


def test_scoring_needs_neither_torch_nor_ray():
    code = "import sys, ray_cotd.scoring; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_tune_validation_scores_with_the_evaluation_score(monkeypatch):
    """val_accuracy counts what the evaluation report counts: " 3 + 4 = 7." is a right answer to
    7 for both (the typed parse reads the result); the untyped parse it used before read no number."""
    from types import SimpleNamespace

    from ray_cotd.config import TrainConfig
    from ray_cotd.lm.generate import make_result
    from ray_cotd.student import train

    texts = {"Q1": " 3 + 4 = 7.", "Q2": " 12.", "Q3": " about twelve."}

    class FakeGenerator:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def two_stage(self, questions, limits):
            return [make_result(q, "r", texts[q], prompt_tokens=1, rationale_tokens=1, answer_tokens=1,
                                stage1_s=0.0, stage2_s=0.0, rationale_stop="eos") for q in questions]

    monkeypatch.setattr(train, "Generator", FakeGenerator)
    student = SimpleNamespace(lm=None, prompt_encoder=None, eval=lambda: None, train=lambda: None)
    questions = [{"question": "Q1", "answer": "7"}, {"question": "Q2", "answer": "13"},
                 {"question": "Q3", "answer": "12"}]
    assert train.val_accuracy(student, None, questions, TrainConfig()) == pytest.approx(1 / 3)
    assert [score(texts[q["question"]], q["answer"], "numeric")["correct"] for q in questions] == [True, False, False]


def test_an_option_text_answer_scores_as_its_label():
    question = "Q: Where do people gather? Answer choices: A: race track, B: populated areas, C: the desert"
    assert score(" populated areas.", "B", "multiple_choice", question=question) == {
        "predicted": "B", "correct": True, "parse_error": None}
    assert score(" populated areas.", "B", "multiple_choice")["parse_error"] == "unreadable_answer"  # no question
    assert score(" a big city", "B", "multiple_choice", question=question)["parse_error"] == "unreadable_answer"
    assert score(" (C) the desert", "(C)", "multiple_choice", question=question)["correct"] is True


def test_tune_validation_types_and_reads_choices_as_evaluation_does(monkeypatch):
    """Issue 19: val_accuracy types a mixed set as evaluate does (the type most golds read as, the
    others compared as text) and reads an option's text as its label from the question."""
    from types import SimpleNamespace

    from ray_cotd.config import TrainConfig
    from ray_cotd.lm.generate import make_result
    from ray_cotd.scoring import scored_type
    from ray_cotd.student import train

    options = " Options: (A) iron (B) glass (C) wood"
    texts = {"Q1" + options: " (A) iron.", "Q2" + options: " glass", "Q3" + options: " (C)", "Q4": " see above"}

    class FakeGenerator:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def two_stage(self, questions, limits):
            return [make_result(q, "r", texts[q], prompt_tokens=1, rationale_tokens=1, answer_tokens=1,
                                stage1_s=0.0, stage2_s=0.0, rationale_stop="eos") for q in questions]

    monkeypatch.setattr(train, "Generator", FakeGenerator)
    student = SimpleNamespace(lm=None, prompt_encoder=None, eval=lambda: None, train=lambda: None)
    golds = ["(A)", "(B)", "(B)", "see above"]  # three labels and one gold that is no label
    questions = [{"question": q, "answer": g} for q, g in zip(texts, golds)]
    assert train.val_accuracy(student, None, questions, TrainConfig()) == pytest.approx(3 / 4)
    assert [scored_type(g, "multiple_choice") for g in golds] == ["multiple_choice"] * 3 + ["text"]
