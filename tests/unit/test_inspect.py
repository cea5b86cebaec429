"""inspect_path / format_inspect on the invented fixtures and on real files."""

from __future__ import annotations

import json
import re

import pytest

from ray_cotd.data.errors import DataError
from ray_cotd.data.inspect import format_inspect, inspect_path
from ray_cotd.data.readers import read_questions


def test_inspect_fixture_with_outputs(fixtures_dir):
    report = inspect_path(fixtures_dir / "questions.json")
    assert (report["format"], report["rows"], report["records"]) == ("json", 5, 5)
    assert report["mapping"] == {"question": "instruction", "output": "output"}
    assert (report["answer_type"], report["answer_type_source"]) == ("numeric", "inferred from parsed answers")
    outputs = report["outputs"]
    assert (outputs["parsed"], outputs["failed"]) == (4, 1)
    assert outputs["failures"] == {"no_marker": {"count": 1, "rows": [3]}}
    assert outputs["markers"] == {"The answer is": 2, "Therefore, the answer is": 1, "So, the answer is": 1}
    assert report["gold"] is None
    text = format_inspect(report)
    assert re.search(r"outputs parsed \(strict\)\s+4 / 5\n", text)
    assert re.search(r"failed: no_marker\s+1 \(e.g. rows 3\)", text)


def test_inspect_lenient_recovers_the_markerless_row(fixtures_dir):
    report = inspect_path(fixtures_dir / "questions.json", answer_type="numeric", lenient=True)
    assert report["outputs"]["failed"] == 0
    assert report["outputs"]["markers"]["final-number"] == 1
    assert report["answer_type_source"] == "given"


def test_inspect_counts_bad_rows(fixtures_dir):
    report = inspect_path(fixtures_dir / "missing_field.json")
    assert (report["rows"], report["records"]) == (4, 2)
    assert report["bad_rows"] == {"missing_field": 1, "empty_question": 1}
    assert report["bad_examples"] == {"missing_field": [1], "empty_question": [2]}
    assert "bad rows: missing_field" in format_inspect(report)


def test_inspect_gold_column_only(fixtures_dir):
    report = inspect_path(fixtures_dir / "questions.csv")
    assert report["outputs"] is None
    assert report["answer_type"] == "multiple_choice"
    assert report["gold"] == {
        "source": "gold column", "with_gold": 2, "gold_readable": 2, "compared": 0, "agree": 0, "agreement": None,
    }


def test_inspect_real_file_against_gold_file(shared_data):
    report = inspect_path(
        shared_data / "svamp" / "train_chatgpt_level6.json", gold_path=shared_data / "svamp" / "train_answer_only.json"
    )
    assert report["answer_type"] == "numeric"
    assert report["outputs"]["failures"] == {
        "no_marker": {"count": 2, "rows": [342, 525]},
        "empty_answer": {"count": 1, "rows": [297]},
    }
    assert (report["gold"]["compared"], report["gold"]["agree"]) == (696, 689)
    assert "689 / 696 = 99.0%" in format_inspect(report)


def test_inspect_real_test_file(shared_data):
    report = inspect_path(shared_data / "strategyqa" / "test.json")
    assert (report["rows"], report["answer_type"], report["outputs"]) == (290, "boolean", None)
    assert report["gold"]["gold_readable"] == 290


def test_inspect_reports_overlap_with_test_sets(fixtures_dir, tmp_path):
    test = tmp_path / "test.jsonl"
    questions = [r["question"] for r in read_questions(fixtures_dir / "questions.json").records]
    test.write_text(json.dumps({"question": questions[1].upper(), "answer": "1"}) + "\n"
                    + json.dumps({"question": "Nothing like the others?", "answer": "2"}) + "\n")
    report = inspect_path(fixtures_dir / "questions.json", test_sets=[test])
    (overlap,) = report["contamination"]["sets"]
    assert (overlap["name"], overlap["exact"], overlap["ngram"], overlap["test_questions"]) == (str(test), 1, 0, 2)
    assert overlap["examples"][0]["train_row"] == 1
    assert re.search(rf"overlap with {re.escape(str(test))}\s+1 of 5 rows \(1 exact, 0 by 13-gram; 2 test questions\)",
                     format_inspect(report))
    assert inspect_path(fixtures_dir / "questions.json")["contamination"] is None


def test_inspect_refuses_a_test_set_that_does_not_exist(fixtures_dir, tmp_path):
    with pytest.raises(DataError, match=r"nowhere.jsonl, field '--test-set': test set not found"):
        inspect_path(fixtures_dir / "questions.json", test_sets=[tmp_path / "nowhere.jsonl"])


def test_the_report_shows_the_first_row_as_every_stage_reads_it(tmp_path):
    """Options in a column written into the question, the gold as its letter: what the user checks
    before spending teacher or student time on a dataset of another shape."""
    path = tmp_path / "mmlu.json"
    path.write_text(json.dumps([{"question": "Which city is in France?", "choices": ["Rome", "Paris"], "answer": 1}]))
    text = format_inspect(inspect_path(path))
    assert "row 0 reads  Which city is in France? Answer choices: (A) Rome (B) Paris  -> gold 'B'" in text
