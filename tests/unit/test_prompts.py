"""The teacher prompt library: every level x format renders, parses, and is versioned."""

from __future__ import annotations

import pytest

from ray_cotd.config import AnnotateConfig, ConfigError
from ray_cotd.data.answers import ParsedOutput, split_output
from ray_cotd.lm.format import render_chat
from ray_cotd.teacher import prompts
from ray_cotd.teacher.prompts import (
    ANSWER_SHAPES,
    EXEMPLAR_ANSWER,
    EXEMPLAR_QUESTION,
    FORMATS,
    LEVELS,
    TEMPLATE_SERIES,
    TEMPLATES,
    get_template,
    render_messages,
)

ALL = [(level, fmt) for level in LEVELS for fmt in FORMATS]


def test_the_library_has_six_levels_and_four_formats():
    assert list(LEVELS) == [1, 2, 3, 4, 5, 6]
    assert set(FORMATS) == {"cot", "least_to_most", "rar", "symbolic"}
    assert set(TEMPLATES) == set(ALL)


@pytest.mark.parametrize("level,fmt", ALL)
def test_every_template_renders_a_one_shot_chat(level, fmt):
    question = "  A tank holds 30 litres and 12 leak out. How many litres are left?  "
    messages = render_messages(question, level, fmt, "numeric")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert LEVELS[level] in system and FORMATS[fmt] in system
    assert 'The answer is X."' in system and ANSWER_SHAPES["numeric"] in system
    assert messages[1]["content"] == EXEMPLAR_QUESTION
    assert messages[3]["content"] == question.strip()
    # The exemplar reply is exactly what the data layer parses: rationale + one answer line.
    parsed = split_output(messages[2]["content"], answer_type="numeric", require_rationale=True)
    assert isinstance(parsed, ParsedOutput)
    assert parsed.answer == EXEMPLAR_ANSWER and parsed.marker == "The answer is"
    assert parsed.rationale == prompts.EXEMPLARS[(fmt, level)]
    assert messages[2]["content"].count("The answer is") == 1


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_level_one_is_the_tersest_and_level_six_the_most_detailed(fmt):
    words = {level: len(prompts.EXEMPLARS[(fmt, level)].split()) for level in LEVELS}
    assert words[1] == min(words.values())
    assert words[6] == max(words.values())
    assert words[1] < words[3] < words[6]


def test_format_exemplars_show_their_format():
    for level in LEVELS:
        assert "?" in prompts.EXEMPLARS[("least_to_most", level)]  # sub-questions
        assert prompts.EXEMPLARS[("rar", level)].startswith("Rephrased:")
        assert "=" in prompts.EXEMPLARS[("symbolic", level)]  # variables and equations


def test_versions_are_per_template_and_answer_type_stable_and_in_the_series():
    versions = [t.version(answer_type) for t in TEMPLATES.values() for answer_type in ANSWER_SHAPES]
    assert len(set(versions)) == len(versions) == len(ALL) * len(ANSWER_SHAPES)
    assert all(v.startswith(TEMPLATE_SERIES + "-") for v in versions)
    assert get_template(3, "cot").version("numeric") == prompts._version(3, "cot", "numeric")
    with pytest.raises(ConfigError, match="answer_type"):
        get_template(3, "cot").version("date")


def test_editing_an_exemplar_changes_only_its_templates_version(monkeypatch):
    before = {key: prompts._version(*key, "numeric") for key in ALL}
    monkeypatch.setitem(prompts.EXEMPLARS, ("cot", 3), prompts.EXEMPLARS[("cot", 3)] + " So 82 books remain.")
    after = {key: prompts._version(*key, "numeric") for key in ALL}
    assert [k for k in ALL if before[k] != after[k]] == [(3, "cot")]


def test_the_answer_shape_asked_for_is_part_of_the_version(monkeypatch):
    """Issue 19: rows annotated as boolean and as numeric were asked for different answer lines,
    so they must not share a version (nor the row keys built on it); rewording one shape changes
    only that answer type's versions."""
    template = get_template(1, "cot")
    assert template.version("boolean") != template.version("numeric") != template.version(None)
    before = {t: template.version(t) for t in ANSWER_SHAPES}
    monkeypatch.setitem(prompts.ANSWER_SHAPES, "boolean", "Yes or No")
    assert [t for t in ANSWER_SHAPES if template.version(t) != before[t]] == ["boolean"]


def test_answer_shape_follows_the_answer_type():
    assert "True or False" in render_messages("Is ice cold?", 1, "cot", "boolean")[0]["content"]
    assert "letter" in render_messages("Pick one: (A) x (B) y", 1, "cot", "multiple_choice")[0]["content"]
    with pytest.raises(ConfigError, match="answer_type"):
        render_messages("q", 1, "cot", "date")


def test_unknown_level_or_format_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"levels: \[7\] not valid; choose from \[1, 2, 3, 4, 5, 6\]"):
        get_template(7, "cot")
    with pytest.raises(ConfigError, match="formats: \\['bsm'\\] not valid; choose from \\['cot', 'least_to_most'"):
        get_template(3, "bsm")


def test_annotate_config_rejects_unknown_levels_formats_and_engines_on_load():
    with pytest.raises(ConfigError, match="symbolic"):
        AnnotateConfig(formats=["cot", "tree_of_thought"])
    with pytest.raises(ConfigError, match="choose from"):
        AnnotateConfig(levels=[0])
    from ray_cotd.config import load_stage_config

    with pytest.raises(ConfigError, match="'transformers', 'vllm', 'openai'"):
        load_stage_config("annotate", None, ["engine=llamacpp"])


class _PlainTokenizer:
    chat_template = None


def test_render_prompt_without_a_chat_template_keeps_every_turn():
    messages = render_messages("How many legs do 3 cats have?", 2, "cot", "numeric")
    text = render_chat(_PlainTokenizer(), messages)
    assert text.endswith("Question: How many legs do 3 cats have?\n\nAnswer: ")
    assert "Answer: " + messages[2]["content"] in text
    assert text.startswith(messages[0]["content"])
