"""Datasets in shapes other than the project's own: options in a column (MMLU, ARC, AQuA), a passage
(BoolQ), worked-solution golds (GSM8K, MATH) and LaTeX numbers. The rows are invented, in each
public dataset's layout."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import MappingSpec
from ray_cotd.config import TestSetSpec as SetSpec
from ray_cotd.data.answers import final_answer, normalize_answer, split_output
from ray_cotd.data.choices import gold_label, options_from_column, parse_choices, render_choices
from ray_cotd.data.errors import DataError
from ray_cotd.data.readers import MAPPING_PRESETS, FieldMapping, detect_mapping, read_questions
from ray_cotd.evaluate import prepare_test_set, question_choices

MMLU = [{"question": "Which city is the capital of France?", "subject": "geo",
         "choices": ["Berlin", "Paris", "Rome", "Madrid"], "answer": 1},
        {"question": "How many legs has a spider?", "subject": "bio", "choices": ["4", "6", "8", "10"], "answer": 2}]
ARC = [{"id": "q1", "question": "Which gas do plants take in?", "answerKey": "B",
        "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]}},
       {"id": "q2", "question": "What is ice?", "answerKey": "1",
        "choices": {"text": ["solid water", "a gas", "a plasma"], "label": ["1", "2", "3"]}}]
AQUA = [{"question": "A car goes 60 km an hour. How far does it go in 3 hours?",
         "options": ["A)120", "B)180", "C)200", "D)240", "E)60"], "rationale": "60*3 = 180", "correct": "B"}]
GSM8K = [{"question": "Tom has 3 bags of 24 apples. How many apples has he?",
          "answer": "He has 3 * 24 = <<3*24=72>>72 apples.\n#### 72"},
         {"question": "A box holds 1000 pins. How many in one box?", "answer": "One box holds them all.\n#### 1,000"}]
MATH = [{"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "solution": "The sum is $\\boxed{\\frac{3}{4}}$.",
         "level": "Level 1"},
        {"problem": "Compute $2^{10}$.", "solution": "$2^{10} = \\boxed{1024}$", "level": "Level 1"}]
BOOLQ = [{"question": "is the moon made of cheese", "passage": "The Moon is a rocky body.", "answer": False}]


def _write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


# -- options in a column --------------------------------------------------------------------------


def test_mmlu_options_are_written_into_the_question_and_the_position_becomes_a_letter(tmp_path):
    result = read_questions(_write(tmp_path, "mmlu.json", MMLU))
    assert result.mapping == FieldMapping(question="question", answer="answer", choices="choices")
    first, second = result.records
    assert first["question"] == ("Which city is the capital of France?\n"
                                 "Answer choices: (A) Berlin (B) Paris (C) Rome (D) Madrid")
    assert (first["gold"], second["gold"]) == ("B", "C")  # answer 2 over ["4", "6", "8", "10"] is "8", not "4"
    assert parse_choices(first["question"]) == {"A": "Berlin", "B": "Paris", "C": "Rome", "D": "Madrid"}


def test_arc_labels_are_relabelled_letters_in_order(tmp_path):
    result = read_questions(_write(tmp_path, "arc.json", ARC))
    assert result.mapping == MAPPING_PRESETS["mcq"]
    assert [r["gold"] for r in result.records] == ["B", "A"]  # answerKey "1" of labels 1-3 is the first
    assert result.records[1]["question"].endswith("Answer choices: (A) solid water (B) a gas (C) a plasma")


def test_aqua_labelled_option_strings_with_an_explicit_mapping(tmp_path):
    mapping = FieldMapping(question="question", gold="correct", choices="options")
    record = read_questions(_write(tmp_path, "aqua.json", AQUA), mapping).records[0]
    assert record["gold"] == "B"
    assert record["question"].endswith("Answer choices: (A) 120 (B) 180 (C) 200 (D) 240 (E) 60")


def test_a_test_set_with_options_in_a_column_is_multiple_choice_with_constrained_labels(tmp_path):
    spec = SetSpec(path=str(_write(tmp_path, "mmlu.json", MMLU)), name="mmlu")
    ts = prepare_test_set(spec, holdout_fraction=0.2, split_seed=0)
    assert ts.answer_type == "multiple_choice" and ts.not_fitting == 0
    assert [question_choices(r) for r in ts.records] == [["A", "B", "C", "D"]] * 2


@pytest.mark.parametrize("gold, expected", [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("(B) Paris", "B"), ("B: Paris", "B"), ("Paris", "B"), (" paris. ", "B"),
    ("1", "B"), (1, "B"), (0, "A"),
    (4, None), ("Lyon", None), (True, None),
])
def test_gold_label_reads_a_label_a_position_or_an_option_text(gold, expected):
    assert gold_label(gold, options_from_column(["Berlin", "Paris", "Rome", "Madrid"])) == expected


def test_a_json_int_is_a_position_and_a_string_is_an_option_text_first():
    options = options_from_column(["1", "2", "3", "4"])
    assert gold_label(1, options) == "B" and gold_label("1", options) == "A"


@pytest.mark.parametrize("value", [
    ["only one"], [], ["a", ["b"]], {"label": ["A"], "text": ["x", "y"]}, 5, "no options here", [""] * 3,
    [f"option {i}" for i in range(11)],
])
def test_what_is_not_a_choices_column(value):
    assert options_from_column(value) is None


@pytest.mark.parametrize("value, expected", [
    ({"A": "x", "B": "y"}, [("A", "x"), ("B", "y")]),
    ("A) x B) y", [("A", "x"), ("B", "y")]),
    ('["x", "y"]', [(None, "x"), (None, "y")]),          # a CSV cell holding JSON
    (["(1) x", "(2) y"], [("1", "x"), ("2", "y")]),
    ([3, 4.5], [(None, "3"), (None, "4.5")]),
])
def test_choices_column_forms(value, expected):
    assert options_from_column(value) == expected


def test_a_question_that_lists_its_options_already_is_not_listed_twice():
    question = "Where? Answer choices: A: bank, B: mall"
    assert render_choices(question, ["bank", "mall"]) == question


def test_bad_options_and_a_gold_naming_no_option_are_bad_rows_naming_the_field(tmp_path):
    rows = [{**MMLU[0], "choices": "Paris"}, {**MMLU[0], "answer": "Lyon"}, MMLU[1]]
    path = _write(tmp_path, "bad.json", rows)
    result = read_questions(path, on_bad="collect")
    assert [(b.row, b.field, b.reason) for b in result.bad] == [(0, "choices", "bad_choices"),
                                                                (1, "answer", "gold_not_a_choice")]
    assert len(result.records) == 1
    with pytest.raises(DataError, match=r"bad\.json, row index 0, field .choices.: bad_choices: .* 2-10 answer options"):
        read_questions(path)


# -- a passage ----------------------------------------------------------------------------------


def test_a_passage_goes_before_the_question(tmp_path):
    result = read_questions(_write(tmp_path, "boolq.json", BOOLQ))
    assert result.mapping == FieldMapping(question="question", answer="answer", context="passage")
    assert result.records[0]["question"] == "The Moon is a rocky body.\n\nis the moon made of cheese"
    assert result.records[0]["gold"] == "False"


def test_detection_leaves_a_preset_alone_without_extra_columns():
    assert detect_mapping(["question", "answer"]) == MAPPING_PRESETS["plain"]
    assert detect_mapping(["question", "answer", "options"]).choices == "options"


# -- worked-solution golds and LaTeX numbers ------------------------------------------------------


def test_gsm8k_golds_are_their_final_answers(tmp_path):
    spec = SetSpec(path=str(_write(tmp_path, "gsm8k.json", GSM8K)), name="gsm8k")
    ts = prepare_test_set(spec, holdout_fraction=0.2, split_seed=0)
    assert [r["gold"] for r in ts.records] == ["72", "1,000"] and ts.answer_type == "numeric"


def test_math_golds_are_the_last_boxed_answer_and_latex_fractions_are_numbers(tmp_path):
    mapping = MappingSpec(question="problem", gold="solution")
    spec = SetSpec(path=str(_write(tmp_path, "math.json", MATH)), name="math", mapping=mapping)
    ts = prepare_test_set(spec, holdout_fraction=0.2, split_seed=0)
    assert [r["gold"] for r in ts.records] == ["\\frac{3}{4}", "1024"] and ts.answer_type == "numeric"
    assert normalize_answer(ts.records[0]["gold"], "numeric") == normalize_answer("0.75", "numeric") == "0.75"


@pytest.mark.parametrize("gold, expected", [
    ("Step one.\n#### 72", "72"), ("#### 1,000", "1,000"), ("x = $\\boxed{2^{10}}$.", "2^{10}"),
    ("a \\boxed{1} then \\boxed{2}", "2"), ("3 + 2 = 5. The answer is 5.", "5"), ("Paris", "Paris"),
    ("True", "True"), ("\\boxed{1", "\\boxed{1"),  # unbalanced: left as it is
    ("3 + 4 = 7.\nAnswer: 7", "7"), ("Work.\n\n**Final Answer:** $\\boxed{9}$", "9"), ("ANSWER: (B)", "(B)"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "$5$. I hope it is correct"),  # Minerva
    ("Answer: 7\nExplanation: it adds up", "Answer: 7\nExplanation: it adds up"),  # not a last line: no marker
])
def test_final_answer(gold, expected):
    assert final_answer(gold) == expected


@pytest.mark.parametrize("text, expected", [
    ("\\frac{3}{4}", "0.75"), ("-\\dfrac{1}{3}", "-1/3"), ("\\$5", "5"), ("10\\%", "10"), ("90^\\circ", "90"),
    ("1{,}000", "1000"), ("5\\text{ cm}", "5"), ("$12$", "12"), ("12", "12"),
])
def test_latex_numbers(text, expected):
    assert normalize_answer(text, "numeric") == expected


def test_a_gsm8k_solution_splits_at_its_last_line_and_a_heading_is_no_answer():
    parsed = split_output("He has 3 * 24 = 72 apples.\n#### 72", answer_type="numeric")
    assert (parsed.rationale, parsed.answer, parsed.marker) == ("He has 3 * 24 = 72 apples.", "72", "####")
    assert split_output("#### Step 1\nadd them up").reason == "no_marker"
    assert split_output("#### Step 1\nadd. The answer is 5").answer == "5"


@pytest.mark.parametrize("text, answer_type, rationale, answer, marker", [
    ("3 + 4 = 7.\nAnswer: 7", "numeric", "3 + 4 = 7.", "7", "Answer:"),
    ("It is a whale.\n**Final Answer:** (B)", "multiple_choice", "It is a whale.", "B", "Final answer:"),
    ("So 2 + 3 = 5. Therefore, the final answer is: 5.", "numeric", "So 2 + 3 = 5.", "5",
     "Therefore, the final answer is"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "numeric", "Final Answer:", "5",
     "The final answer is"),  # Minerva's MATH format: the later marker wins
    ("First I thought the answer is 5.\nAnswer: 6", "numeric", "First I thought the answer is 5.", "6", "Answer:"),
    ("so the answer is 72.\n#### 72", "numeric", "so the answer is 72.", "72", "####"),
])
def test_other_answer_formats_split_at_the_last_marker(text, answer_type, rationale, answer, marker):
    parsed = split_output(text, answer_type=answer_type)
    assert (parsed.rationale, parsed.answer, parsed.marker) == (rationale, answer, marker)
    assert not parsed.lenient


def test_an_answer_line_that_is_not_the_last_line_and_the_correct_answer_are_no_markers():
    assert split_output("Answer: 7\nExplanation: it adds up", answer_type="numeric").reason == "no_marker"
    assert split_output("The answers is 7").reason == "no_marker"  # no marker in "answers is"
    # LLaMA's CommonsenseQA rationales say this mid-reasoning; it is no answer
    assert split_output("The correct answer is the one that fits. The answer is B").answer == "B"


def test_one_column_per_option_named_by_letter_is_detected(tmp_path):
    rows = [{"input": "Which is a mammal?", "A": "shark", "B": "whale", "C": "trout", "D": "eel", "target": "B"}]
    result = read_questions(_write(tmp_path, "lukaemon.json", rows))
    assert result.mapping == FieldMapping(question="input", gold="target", choices="A,B,C,D")
    assert result.records[0]["question"].endswith("Answer choices: (A) shark (B) whale (C) trout (D) eel")
    assert result.records[0]["gold"] == "B"


def test_option_columns_named_with_commas_and_a_one_based_key(tmp_path):
    rows = [{"question": "Which organ pumps blood?", "opa": "liver", "opb": "heart", "opc": "lung", "cop": "opb"},
            {"question": "Which organ filters blood?", "opa": "kidney", "opb": "heart", "opc": "lung"}]
    mapping = FieldMapping(question="question", gold="cop", choices="opa, opb, opc")
    result = read_questions(_write(tmp_path, "medmcqa.json", rows), mapping, on_bad="collect")
    assert result.records[0]["gold"] == "B"  # the gold names the option's column
    assert [(b.row, b.field, b.reason) for b in result.bad] == [(1, "cop", "missing_field")]


@pytest.mark.parametrize("columns, expected", [
    (["problem", "solution", "level"], FieldMapping(question="problem", gold="solution")),          # MATH
    (["question", "options", "rationale", "correct"],
     FieldMapping(question="question", gold="correct", choices="options")),                     # AQuA
    (["query", "label", "context"], FieldMapping(question="query", gold="label", context="context")),
])
def test_without_a_preset_a_question_column_pairs_with_a_gold_column(columns, expected):
    assert detect_mapping(columns) == expected


def test_math_reads_with_a_detected_mapping(tmp_path):
    assert [r["gold"] for r in read_questions(_write(tmp_path, "math.json", MATH)).records] == ["\\frac{3}{4}", "1024"]


def test_a_gold_written_as_label_and_text_matches_the_given_labels():
    arc = options_from_column({"label": ["1", "2", "3"], "text": ["ice", "gas", "plasma"]})
    assert gold_label("(2) gas", arc) == "B" and gold_label("(2)", arc) == "B"
    assert gold_label("D", options_from_column(["w", "x", "y"])) is None  # a letter past the options


def test_a_gsm8k_training_file_trains_on_its_own_rationales(tmp_path):
    from ray_cotd.student.corpus import read_training_rows

    rows, _ = read_training_rows(_write(tmp_path, "gsm8k_train.json", GSM8K))[:2]
    assert [(r["rationale"], r["answer"]) for r in rows] == [
        ("He has 3 * 24 = 72 apples.", "72"), ("One box holds them all.", "1,000")]  # no <<calculator>> notes
    math_rows, _ = read_training_rows(_write(tmp_path, "math_train.json", MATH), needs_rationale=False)[:2]
    assert [(r["rationale"], r["answer"]) for r in math_rows] == [("", "\\frac{3}{4}"), ("", "1024")]  # gold only


# -- several right answers ----------------------------------------------------------------------


def test_a_gold_listing_several_right_answers_accepts_any(tmp_path):
    from ray_cotd.scoring import score

    rows = [{"question": "What is the capital of France?", "answer": ["Paris", "City of Paris"]},
            {"question": "Who wrote Hamlet?", "answers": {"text": ["Shakespeare", "William Shakespeare"],
                                                          "answer_start": [0, 0]}},
            {"question": "How many legs has a cat?", "answer": [4]}]
    mapping = FieldMapping(question="question", gold="answers")
    first = read_questions(_write(tmp_path, "qa.json", rows[:1])).records[0]
    assert (first["gold"], first["accepted"]) == ("Paris", ["Paris", "City of Paris"])
    second = read_questions(_write(tmp_path, "squad.json", rows[1:2]), mapping).records[0]
    assert (second["gold"], second["accepted"]) == ("Shakespeare", ["Shakespeare", "William Shakespeare"])
    third = read_questions(_write(tmp_path, "one.json", rows[2:])).records[0]
    assert third["gold"] == "4" and "accepted" not in third
    assert score(" City of Paris.", first["gold"], "text", accepted=first["accepted"])["correct"]
    assert not score(" Lyon.", first["gold"], "text", accepted=first["accepted"])["correct"]
    empty = read_questions(_write(tmp_path, "empty.json", [{"question": "Q?", "answer": []}]), on_bad="collect")
    assert [(b.field, b.reason) for b in empty.bad] == [("answer", "missing_field")]


@pytest.mark.parametrize("answer, gold, right", [
    (" The Eiffel Tower.", "Eiffel Tower", True), (" US", "U.S.", True), (" an apple", "apple", True),
    (" Eiffel", "Eiffel Tower", False), (" theatre", "the", False),
])
def test_free_text_answers_compare_as_squad_does(answer, gold, right):
    from ray_cotd.scoring import score

    assert score(answer, gold, "text")["correct"] is right


# -- chat transcripts ---------------------------------------------------------------------------

CHAT = [{"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Tom has 3 bags of 4 apples. How many apples?"},
                      {"role": "assistant", "content": "3 * 4 = 12.\nThe answer is 12."}]},
        {"conversations": [{"from": "human", "value": [{"type": "text", "text": "Is snow cold?"}]},
                           {"from": "gpt", "value": "Snow is frozen water. #### yes"}]},
        {"messages": [{"role": "user", "content": "What is 2 + 2?"}]}]


def test_a_chat_transcript_is_a_question_and_a_worked_solution(tmp_path):
    from ray_cotd.student.corpus import read_training_rows

    first = read_questions(_write(tmp_path, "chat.json", CHAT[:1])).records[0]
    assert (first["question"], first["gold"]) == ("Tom has 3 bags of 4 apples. How many apples?", "12")
    rows, _, _ = read_training_rows(_write(tmp_path, "chat_train.json", CHAT[:1]))
    assert [(r["rationale"], r["answer"]) for r in rows] == [("3 * 4 = 12.", "12")]
    sharegpt = read_questions(_write(tmp_path, "sharegpt.json", CHAT[1:2])).records[0]
    assert (sharegpt["question"], sharegpt["gold"]) == ("Is snow cold?", "Snow is frozen water. #### yes")


def test_a_chat_without_a_reply_is_a_question_without_a_gold(tmp_path):
    result = read_questions(_write(tmp_path, "ask.json", CHAT[2:]), FieldMapping(question="messages"))
    assert result.records[0]["question"] == "What is 2 + 2?" and result.records[0]["gold"] is None
    asked = read_questions(_write(tmp_path, "ask2.json", CHAT[2:]), on_bad="collect")
    assert [(b.field, b.reason) for b in asked.bad] == [("messages", "missing_field")]  # no reply to be its gold
