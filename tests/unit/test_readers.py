"""Readers: every format from the invented fixtures, mappings, every bad-input error, alignment."""

from __future__ import annotations

import json
import pickle

import pytest

from ray_cotd.data.errors import DataError
from ray_cotd.data.readers import (
    MAPPING_PRESETS,
    FieldMapping,
    ReadResult,
    align_by_question,
    detect_mapping,
    missing_by_list,
    read_questions,
    read_rows,
    to_ray_dataset,
    write_bad_rows,
)
from ray_cotd.data.schema import (
    ANNOTATED_COLUMNS,
    QUESTION_COLUMNS,
    AnnotatedRecord,
    QuestionRecord,
    annotated_id,
    stable_id,
)

# ---------------------------------------------------------------------------------------------
# formats


def test_json_array_with_alpaca_mapping(fixtures_dir):
    path = fixtures_dir / "questions.json"
    result = read_questions(path, domain="arithmetic")
    assert result.mapping == MAPPING_PRESETS["alpaca"]
    assert len(result.records) == 5 and result.bad == []
    first = result.records[0]
    assert first["question"].startswith("A baker made 48 rolls")
    assert first["output"].endswith("The answer is 18")
    assert (first["gold"], first["domain"], first["source"], first["row"]) == (None, "arithmetic", str(path), 0)
    assert first["id"] == stable_id(first["question"])
    assert QuestionRecord.from_dict(first).to_dict() == {k: first[k] for k in QUESTION_COLUMNS}


def test_jsonl_with_plain_mapping_and_domain_column(fixtures_dir):
    mapping = FieldMapping(question="question", answer="answer", domain="topic")
    result = read_questions(fixtures_dir / "questions.jsonl", mapping)
    assert [r["gold"] for r in result.records] == ["False", "yes", "no"]
    assert [r["domain"] for r in result.records] == ["animals", "physics", "objects"]
    assert [r["row"] for r in result.records] == [0, 1, 2]  # the blank line is not a row
    assert "output" not in result.records[0]


def test_csv_with_testset_mapping_keeps_multiline_questions(fixtures_dir):
    result = read_questions(fixtures_dir / "questions.csv")
    assert result.mapping == MAPPING_PRESETS["testset"]
    assert [r["gold"] for r in result.records] == ["A", "(B)"]
    assert "Answer Choices:\nA. linen closet" in result.records[0]["question"]


def test_parquet_with_arc_mapping(fixtures_dir):
    result = read_questions(fixtures_dir / "questions.parquet")
    assert result.mapping == MAPPING_PRESETS["arc"]
    assert [r["gold"] for r in result.records] == ["90", "2050.0", "12"]


def test_hf_saved_dataset_folder(fixtures_dir):
    rows = read_rows(fixtures_dir / "hf_questions")
    assert [r["answer"] for r in rows] == ["27", "180"]
    mapping = FieldMapping(question="question", answer="answer", domain="domain")
    result = read_questions(fixtures_dir / "hf_questions", mapping)
    assert [(r["gold"], r["domain"]) for r in result.records] == [("27", "arithmetic"), ("180", "arithmetic")]


def test_hf_saved_dataset_dict_needs_a_split(fixtures_dir):
    with pytest.raises(DataError) as err:
        read_rows(fixtures_dir / "hf_questions_dict")
    assert "hf_questions_dict" in str(err.value) and "'train'" in str(err.value) and "'test'" in str(err.value)
    assert len(read_rows(fixtures_dir / "hf_questions_dict", split="test")) == 2


def test_fmt_overrides_the_suffix(tmp_path, fixtures_dir):
    copy = tmp_path / "rows.txt"
    copy.write_text((fixtures_dir / "questions.jsonl").read_text())
    with pytest.raises(DataError, match="suffix '.txt'"):
        read_rows(copy)
    assert len(read_rows(copy, fmt="jsonl")) == 3
    with pytest.raises(DataError, match="unknown format 'yaml'.*'jsonl'"):
        read_rows(copy, fmt="yaml")


# ---------------------------------------------------------------------------------------------
# mappings


def test_detect_mapping_presets():
    assert detect_mapping(["instruction", "output"]) == MAPPING_PRESETS["alpaca"]
    # CommonsenseQA test rows have instruction, label and an empty output: testset wins.
    assert detect_mapping(["instruction", "output", "label"]) == MAPPING_PRESETS["testset"]
    assert detect_mapping(["input", "target", "extra"]) == MAPPING_PRESETS["arc"]
    assert detect_mapping(["question", "answer"]) == MAPPING_PRESETS["plain"]


def test_detect_mapping_error_lists_presets_and_columns(fixtures_dir):
    with pytest.raises(DataError) as err:
        detect_mapping(["prompt", "response"])
    message = str(err.value)
    assert "prompt, response" in message
    for name in MAPPING_PRESETS:
        assert repr(name) in message
    with pytest.raises(DataError, match="prompt, response"):
        read_questions(fixtures_dir / "unknown_columns.json")


def test_mapping_by_name_and_unknown_name(fixtures_dir):
    result = read_questions(fixtures_dir / "questions.json", "answer_only")
    assert result.records[0]["gold"] == "18"  # a gold that is a whole solution is read as its final answer
    with pytest.raises(DataError, match="unknown field mapping 'alpacca'.*'alpaca'"):
        read_questions(fixtures_dir / "questions.json", "alpacca")


# ---------------------------------------------------------------------------------------------
# bad input: every error names the file and, where there is one, the row and field


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError) as err:
        read_rows(missing)
    assert str(missing) in str(err.value) and "no such file" in str(err.value)


def test_non_json_line_names_file_and_line(fixtures_dir):
    with pytest.raises(DataError) as err:
        read_rows(fixtures_dir / "bad_line.jsonl")
    assert "bad_line.jsonl" in str(err.value) and "line 2" in str(err.value)


def test_missing_field_names_file_row_and_field(fixtures_dir):
    with pytest.raises(DataError) as err:
        read_questions(fixtures_dir / "missing_field.json")
    message = str(err.value)
    assert "missing_field.json" in message and "row index 1" in message and "field 'output'" in message


def test_empty_question_names_file_row_and_field(fixtures_dir):
    with pytest.raises(DataError) as err:
        read_questions(fixtures_dir / "empty_question.csv")
    message = str(err.value)
    assert "empty_question.csv" in message and "row index 1" in message and "'instruction'" in message


@pytest.mark.parametrize("name", ["empty.json", "empty.jsonl"])
def test_empty_dataset(fixtures_dir, name):
    with pytest.raises(DataError, match=f"{name}: the dataset has no rows"):
        read_rows(fixtures_dir / name)


def test_json_that_is_not_an_array(fixtures_dir):
    with pytest.raises(DataError, match="not_array.json: expected a JSON array of objects, found a dict"):
        read_rows(fixtures_dir / "not_array.json")


def test_json_row_that_is_not_an_object(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text('[{"question": "q?", "answer": "1"}, "stray string"]')
    with pytest.raises(DataError, match="row index 1.*expected a JSON object"):
        read_rows(path)


def test_broken_json_and_parquet_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q?"')
    with pytest.raises(DataError, match="broken.json: not valid JSON at line 1"):
        read_rows(broken)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(DataError, match="fake.parquet: not a readable Parquet file"):
        read_rows(fake)


def test_hub_dataset_without_network_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'no-such-owner/no-such-set' on the Hub (LocalEntryNotFoundError)")

    # The real call retries for tens of seconds without a network; the wrapping is what is tested.
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="hf:no-such-owner/no-such-set: could not load hub dataset 'no-such-owner/"):
        read_rows("hf:no-such-owner/no-such-set")


def test_collect_keeps_going_and_counts(fixtures_dir, tmp_path):
    result = read_questions(fixtures_dir / "missing_field.json", on_bad="collect")
    assert [r["row"] for r in result.records] == [0, 3]
    assert result.bad_by_reason() == {"missing_field": 1, "empty_question": 1}
    assert [(b.row, b.field, b.reason) for b in result.bad] == [
        (1, "output", "missing_field"),
        (2, "instruction", "empty_question"),
    ]

    lines = read_questions(fixtures_dir / "bad_line.jsonl", on_bad="collect")
    assert [r["row"] for r in lines.records] == [0, 2]  # later rows keep their position
    assert [(b.row, b.reason) for b in lines.bad] == [("line 2", "not_json")]

    out = tmp_path / "rejects" / "bad.jsonl"
    assert write_bad_rows(result.bad, out) == 2
    assert write_bad_rows(lines.bad, out) == 1  # appends
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["reason"] for w in written] == ["missing_field", "empty_question", "not_json"]
    assert written[0]["raw"] == {"instruction": "How many minutes are in 2 hours?"}


_NOT_UTF8 = b"caf\xe9"  # Latin-1 "café": not UTF-8


@pytest.mark.parametrize("name, content", [
    ("q.jsonl", b'{"question": "2 + 2?", "answer": "4"}\n{"question": "' + _NOT_UTF8 + b' 1 + 1?", "answer": "2"}\n'
                b'{"question": "lone \\udc80 surrogate?", "answer": "1"}\n{"question": "3 + 3?", "answer": "6"}\n'),
    ("q.json", b'[{"question": "2 + 2?", "answer": "4"}, {"question": "' + _NOT_UTF8 + b' 1 + 1?", "answer": "2"},\n'
               b'{"question": "lone \\udc80 surrogate?", "answer": "1"}, {"question": "3 + 3?", "answer": "6"}]'),
    ("q.csv", b'question,answer\n2 + 2?,4\n' + _NOT_UTF8 + b' 1 + 1?,2\n3 + 3?,6\n'),
])
def test_text_that_is_not_utf8_is_a_bad_row_naming_file_row_and_field(tmp_path, name, content):
    """Issue 23: a byte that is not UTF-8 crashed every command with a bare UnicodeDecodeError, and a
    lone surrogate escape in a JSONL string killed annotation in stable_id."""
    path = tmp_path / name
    path.write_bytes(content)
    result = read_questions(path, on_bad="collect")
    assert [r["question"] for r in result.records] == ["2 + 2?", "3 + 3?"]
    assert {(b.row, b.field, b.reason) for b in result.bad} >= {(1, "question", "bad_encoding")}
    assert all(b.reason == "bad_encoding" for b in result.bad)
    for b in result.bad:  # the raw row is writable to a UTF-8 file: the surrogates are escaped
        json.dumps(b.raw, ensure_ascii=False).encode("utf-8")
    assert write_bad_rows(result.bad, tmp_path / "bad.jsonl") == len(result.bad)
    with pytest.raises(DataError) as err:
        read_questions(path)
    assert str(err.value).startswith(f"file {path}, row index 1, field 'question': bad_encoding")


def test_a_csv_row_with_more_fields_than_the_header_is_a_bad_row(tmp_path):
    """Issue 23: an unquoted comma split the question and made its tail the gold answer."""
    path = tmp_path / "q.csv"
    path.write_text('question,answer\n"Is 1, 2 the list?",yes\nIs 1, 2 the list?,yes\n3 + 3?,6\n')
    result = read_questions(path, on_bad="collect")
    assert [(r["question"], r["gold"]) for r in result.records] == [("Is 1, 2 the list?", "yes"), ("3 + 3?", "6")]
    assert [(b.row, b.reason) for b in result.bad] == [(1, "extra_fields")]
    assert "(extra fields)" in result.bad[0].raw
    with pytest.raises(DataError, match=r"row index 1: extra_fields: the row has more fields than the header"):
        read_questions(path)


def test_a_binary_file_is_one_clear_error(tmp_path):
    path = tmp_path / "q.csv"  # a field over csv's limit (128 KiB) is a csv.Error
    path.write_text("question,answer\n1 + 1?,2\n" + "x" * 200_000 + ",1\n")
    with pytest.raises(DataError, match=rf"file {path}, line 3: not readable as CSV: field larger than field limit"):
        read_questions(path)
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match=rf"file {jsonl}, line 1: not JSON"):
        read_questions(jsonl)
    assert read_questions(jsonl, on_bad="collect").bad[0].reason == "not_json"


def test_on_bad_must_be_known(fixtures_dir):
    with pytest.raises(DataError, match="on_bad.*'collect'"):
        read_questions(fixtures_dir / "questions.json", on_bad="skip")


def test_data_error_survives_pickling():
    err = DataError("bad", path="f.json", row=3, field="q", choices=("a", "b"))
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "file f.json, row index 3, field 'q': bad (valid: 'a', 'b')"


# ---------------------------------------------------------------------------------------------
# Ray shell (the import stays lazy: no Ray is started here)


def test_to_ray_dataset_refuses_empty_result():
    with pytest.raises(DataError, match="no records"):
        to_ray_dataset(ReadResult(records=[], source="x.json"))


# ---------------------------------------------------------------------------------------------
# schema


def test_stable_id_normalizes_whitespace_and_is_fixed():
    assert stable_id("How many  apples?\n") == stable_id("How many apples?")
    assert stable_id("a", "b") != stable_id("a b")
    assert len(stable_id("x")) == 16
    assert stable_id("How many apples?") == "754f5a5fb868b7be"  # = sha256sum of the text; ids must not drift


def test_annotated_record_round_trip_and_sampling_as_json():
    record = AnnotatedRecord(
        id=annotated_id("q1", "gpt-4o", 3, "standard", "v1", 0), question_id="q1", question="q?",
        rationale="r", answer="5", gold="5", correct=True, domain="svamp", teacher="gpt-4o", level=3,
        format="standard", template_version="v1", sample_index=0, sampling={"temperature": 0.7, "seed": 1},
        prompt_tokens=10, completion_tokens=20, source="f.json",
    )
    row = record.to_dict()
    assert tuple(row) == ANNOTATED_COLUMNS
    assert row["sampling"] == '{"seed": 1, "temperature": 0.7}'
    assert AnnotatedRecord.from_dict(row) == record
    with pytest.raises(DataError, match="field 'teacher'"):
        AnnotatedRecord.from_dict({k: v for k, v in row.items() if k != "teacher"})
    assert annotated_id("q1", "gpt-4o", 3, "standard", "v1", 1) != record.id


# ---------------------------------------------------------------------------------------------
# alignment by question text


def test_align_by_question_on_invented_rows():
    a = [{"question": "one?"}, {"question": "two?"}, {"question": "three?"}]
    b = [{"question": "three?"}, {"question": " one? "}]
    pairs = [(x["question"], y["question"]) for x, y in align_by_question(a, b)]
    assert pairs == [("one?", " one? "), ("three?", "three?")]
    outer = align_by_question(a, b, how="outer")
    assert [y is None for _, y in outer] == [False, True, False]
    assert missing_by_list(a, b) == [[], ["two?"]]


def test_align_pairs_repeated_questions_in_order():
    a = [{"q": "dup", "n": 1}, {"q": "dup", "n": 2}]
    b = [{"q": "dup", "n": 3}]
    assert [(x["n"], y["n"]) for x, y in align_by_question(a, b, key="q")] == [(1, 3)]
    assert missing_by_list(a, b, key="q") == [[], ["dup"]]


def test_real_699_vs_700_rows_align_by_question(shared_data):
    level1 = read_rows(shared_data / "svamp" / "train_chatgpt_level1.json")
    level3 = read_rows(shared_data / "svamp" / "train_chatgpt_level3.json")
    assert (len(level1), len(level3)) == (700, 699)
    aligned = align_by_question(level1, level3, key="instruction")
    assert len(aligned) == 699
    assert all(" ".join(x["instruction"].split()) == " ".join(y["instruction"].split()) for x, y in aligned)
    missing_from_level1, missing_from_level3 = missing_by_list(level1, level3, key="instruction")
    assert missing_from_level1 == [] and len(missing_from_level3) == 1
    # Position would pair different questions after the missing row.
    assert any(x["instruction"] != y["instruction"] for x, y in zip(level1, level3))


@pytest.mark.parametrize(
    ("rel", "preset", "rows"),
    [
        ("svamp/train_chatgpt_level1.json", "alpaca", 700),
        ("strategyqa/test.json", "testset", 290),
        ("commonsenseqa/test.json", "testset", 1221),
    ],
)
def test_real_files_read_with_detected_mapping(shared_data, rel, preset, rows):
    result = read_questions(shared_data / rel, domain=rel.split("/")[0])
    assert result.mapping == MAPPING_PRESETS[preset]
    assert len(result.records) == rows and result.bad == []
