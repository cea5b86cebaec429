"""Options listed in a question's text, and option text read back as its label (invented questions)."""

from __future__ import annotations

import pytest

from ray_cotd.data.choices import option_label, parse_choices

CSQA_LINES = "Where do you keep a spare pillow? Answer Choices:\nA. linen closet\nB. oven\nC. mailbox\n"
CSQA_INLINE = "Q: Where do people gather? Answer choices: A: race track, B: populated areas, C: the desert"
ARC = "Which unit measures distance?\nOptions: (A) gram (B) litre (C) metre (D) second"
NUMBERED = "Which is a metal? (1) iron (2) glass (3) wood (4) paper"


@pytest.mark.parametrize(
    ("question", "choices"),
    [
        (CSQA_LINES, {"A": "linen closet", "B": "oven", "C": "mailbox"}),
        (CSQA_INLINE, {"A": "race track", "B": "populated areas", "C": "the desert"}),
        (ARC, {"A": "gram", "B": "litre", "C": "metre", "D": "second"}),
        (NUMBERED, {"1": "iron", "2": "glass", "3": "wood", "4": "paper"}),
        ("Which works? A) red, B) blue, or C) green\nAnswer:", {"A": "red", "B": "blue", "C": "green"}),
        # the list is the latest run of labels: "Plan A:" before it is no option
        ("Plan A: save. Which plan? A: save, B: spend", {"A": "save", "B": "spend"}),
        # a label glued to a word is no label: "Vitamin B." in an "A:" list
        ("Which one? A: Vitamin B. B: Vitamin C", {"A": "Vitamin B.", "B": "Vitamin C"}),
    ],
)
def test_parse_choices(question, choices):
    assert parse_choices(question) == choices


@pytest.mark.parametrize("question", ["How many apples are left if 3 of 8 are eaten?", "Is plan A safe?", "", None])
def test_questions_without_a_list_have_no_choices(question):
    assert parse_choices(question) is None


def test_option_text_reads_as_its_label():
    choices = parse_choices(CSQA_INLINE)
    assert option_label("populated areas", choices) == "B"
    assert option_label("  'Populated  Areas.' ", choices) == "B"
    assert option_label("populated", choices) is None
    assert option_label("populated areas", None) is None
    assert option_label("x", {"A": "x", "B": "x"}) is None  # two options with one text: no label
