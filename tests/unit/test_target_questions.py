"""PRADA's unlabeled target-domain questions: load_target_questions."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import MappingSpec
from ray_cotd.data.errors import DataError
from ray_cotd.student.corpus import load_target_questions


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_question_only_file_is_read_as_questions(tmp_path):
    path = write_jsonl(tmp_path / "target.jsonl", [{"question": "Where do penguins live?"},
                                                   {"question": "What melts ice?"}])
    assert load_target_questions(path) == ["Where do penguins live?", "What melts ice?"]


def test_instruction_only_file_and_labeled_files_keep_working(tmp_path):
    only = write_jsonl(tmp_path / "instr.jsonl", [{"instruction": "Is fire cold?"}])
    assert load_target_questions(only) == ["Is fire cold?"]
    labeled = write_jsonl(tmp_path / "plain.jsonl", [{"question": "2+2?", "answer": "4"}])
    assert load_target_questions(labeled) == ["2+2?"]
    named = write_jsonl(tmp_path / "named.jsonl", [{"q": "Is snow white?"}])
    assert load_target_questions(named, MappingSpec(question="q")) == ["Is snow white?"]


def test_file_without_a_question_column_names_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "response": "y"}])
    with pytest.raises(DataError, match="no field mapping preset fits columns \\[prompt, response\\]"):
        load_target_questions(path)


def test_empty_questions_are_an_error_naming_the_field(tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [{"question": ""}])
    with pytest.raises(DataError, match="no target-domain questions") as err:
        load_target_questions(path)
    assert "target_questions" in str(err.value)
