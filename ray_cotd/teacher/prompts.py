"""The teacher prompt library: granularity levels 1-6 x rationale formats, one template each.

A template is a system instruction (the format's instruction + the level's instruction + the answer
line rule) and a 1-shot exemplar written at that level and in that format, then the question as the
user turn. This follows "Unveiling the Key Factors for Distilling Chain-of-Thought Reasoning"
(ACL 2025), which controls granularity with a 1-shot prompt per level. The paper does not print its
level definitions; the ones below are ours, read off the release's level-1..6 rationales (level 1
names the method in one sentence without numbers; level 6 restates the facts, numbers every step and
checks the result). Formats: plain CoT, least-to-most (sub-questions, the release's `_bsm` files),
rephrase-and-respond (`_rar`) and symbolic (`_symbolic`).

Every exemplar ends with the data layer's answer line, `join_rationale_answer(rationale, answer)`
= "<rationale>\\nThe answer is X.", so teacher replies parse with `split_output` and the corpus target
text is the same string the student trains on.

Versions: a template's version for an answer type is TEMPLATE_SERIES plus a digest of everything
its prompt renders from, the answer shape that type puts into the system instruction included, so
editing any instruction or exemplar, or annotating with another answer type, changes the version,
and with it the row keys that resuming matches on; a corpus never mixes rows of an old and a new
wording under one key.

The exemplar question is our own invention (no dataset rows here). It is arithmetic; for yes/no and
multiple-choice questions the answer-line rule names the expected answer shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ray_cotd import names
from ray_cotd.configbase import ConfigError
from ray_cotd.data.answers import ANSWER_MARKER, ANSWER_TYPES, join_rationale_answer
from ray_cotd.names import check_choices

TEMPLATE_SERIES = "v1"

# Level instructions, keyed by names.LEVELS: 1 = tersest, 6 = most detailed (the paper's granularity axis).
LEVELS: dict[int, str] = {
    1: "Give only the key idea of the solution in one short sentence, without intermediate numbers.",
    2: "Give the solution in one sentence that names the operations and the numbers they use.",
    3: "Explain the solution briefly in two or three sentences, showing each calculation with its result.",
    4: "Explain the solution in a short paragraph: state the given quantities, say what must be "
    "computed and why, then show each calculation with its result.",
    5: "Solve the problem in numbered steps, one fact or one calculation per step.",
    6: "Solve the problem in detailed numbered steps: restate the goal and the given facts, explain "
    "the purpose of every step, show every calculation, and finish with a step that checks the result.",
}

# Format instructions, keyed by names.FORMATS: how the reasoning is presented, independent of how
# much of it there is.
FORMATS: dict[str, str] = {
    "cot": "Write the reasoning as plain sentences.",
    "least_to_most": "Break the problem into simpler sub-questions and answer them in order, from the "
    "simplest one up to the question itself; write each sub-question followed by its answer.",
    "rar": "First rephrase the question in your own words, expanding it so that nothing is ambiguous "
    "(start with 'Rephrased:'), then reason to the answer.",
    "symbolic": "Write the reasoning in symbolic form: name each quantity with a variable, state the "
    "relations as equations, and solve them.",
}

# The answer line rule, keyed by the data layer's answer types (None: unknown type).
ANSWER_SHAPES: dict[str | None, str] = {
    "numeric": "a number",
    "boolean": "True or False",
    "multiple_choice": "the letter of the correct choice",
    "text": "the short final answer",
    None: "the final answer",
}

SYSTEM_FRAME = (
    "You are a careful teacher writing worked solutions that students will learn from. "
    "{format} {level} End your reply with one final line of the form "
    '"' + ANSWER_MARKER + ' X." where X is {shape}, and write nothing after it.'
)

EXEMPLAR_QUESTION = (
    "A library has 5 shelves with 24 books on each shelf. The librarian lends out 38 books. "
    "How many books are still on the shelves?"
)
EXEMPLAR_ANSWER = "82"

# (format, level) -> the exemplar rationale, written at that level in that format.
EXEMPLARS: dict[tuple[str, int], str] = {
    ("cot", 1): "Multiply the shelves by the books per shelf, then subtract the books lent out.",
    ("cot", 2): "Multiply 5 shelves by 24 books to get the total, then subtract the 38 books lent out: 5 * 24 - 38.",
    ("cot", 3): "The shelves hold 5 * 24 = 120 books in total. After 38 are lent out, 120 - 38 = 82 books remain.",
    ("cot", 4): "There are 5 shelves with 24 books each, and the librarian lends out 38 books. First we "
    "need the total number of books, so we multiply: 5 * 24 = 120. The lent books leave the shelves, "
    "so we subtract them from the total: 120 - 38 = 82.",
    ("cot", 5): "1. Number of shelves: 5. 2. Books per shelf: 24. 3. Total books: 5 * 24 = 120. "
    "4. Books lent out: 38. 5. Books left: 120 - 38 = 82.",
    ("cot", 6): "We need the number of books left on the shelves after some are lent out. "
    "1. The library has 5 shelves. 2. Each shelf holds 24 books. 3. The total number of books is the "
    "number of shelves times the books per shelf: 5 * 24 = 120. 4. The librarian lends out 38 books, "
    "which leave the shelves. 5. Subtract them from the total: 120 - 38 = 82. 6. Check: the books left "
    "plus the books lent out give 82 + 38 = 120, the total we started with.",
    ("least_to_most", 1): "What is the total? The shelves times the books per shelf. What is left? "
    "The total minus the books lent out.",
    ("least_to_most", 2): "How many books are there in total? 5 * 24. How many are left after 38 are "
    "lent out? The total minus 38.",
    ("least_to_most", 3): "How many books are on the shelves at first? 5 * 24 = 120. How many are left "
    "after 38 are lent out? 120 - 38 = 82.",
    ("least_to_most", 4): "How many shelves and books per shelf are there? There are 5 shelves with 24 "
    "books each. How many books are there in total? We multiply them: 5 * 24 = 120. How many books "
    "leave the shelves? The librarian lends out 38. How many remain? We subtract: 120 - 38 = 82.",
    ("least_to_most", 5): "1. How many shelves are there? 5. 2. How many books does each shelf hold? 24. "
    "3. How many books are there in total? 5 * 24 = 120. 4. How many books are lent out? 38. "
    "5. How many books are left? 120 - 38 = 82.",
    ("least_to_most", 6): "We want the number of books left on the shelves. 1. How many shelves does "
    "the library have? 5. 2. How many books are on each shelf? 24. 3. How many books are there before "
    "lending? Multiply the shelves by the books per shelf: 5 * 24 = 120. 4. How many books leave the "
    "shelves? The librarian lends out 38. 5. How many books remain? Subtract the lent books from the "
    "total: 120 - 38 = 82. 6. Does this check out? 82 + 38 = 120, the starting total.",
    ("rar", 1): "Rephrased: 5 shelves of 24 books, 38 lent out; how many remain? Multiply, then subtract.",
    ("rar", 2): "Rephrased: a library holds 5 shelves of 24 books and lends out 38; find the books "
    "left. Compute 5 * 24 and subtract 38.",
    ("rar", 3): "Rephrased: a library has 5 shelves, each with 24 books, and the librarian lends 38 of "
    "them out; how many books are still on the shelves? The shelves hold 5 * 24 = 120 books, and "
    "120 - 38 = 82 remain.",
    ("rar", 4): "Rephrased: a library has 5 shelves, and every shelf holds 24 books. The librarian lends "
    "38 books to readers, so those books are no longer on the shelves. We must find how many books are "
    "still on the shelves. First we need the total number of books: 5 * 24 = 120. The lent books leave "
    "the shelves, so we subtract them: 120 - 38 = 82.",
    ("rar", 5): "Rephrased: a library has 5 shelves of 24 books each and lends out 38 books; how many "
    "books stay on the shelves? 1. Shelves: 5. 2. Books per shelf: 24. 3. Total books: 5 * 24 = 120. "
    "4. Books lent out: 38. 5. Books left: 120 - 38 = 82.",
    ("rar", 6): "Rephrased: a library has 5 shelves, and every shelf holds 24 books. The librarian lends "
    "38 of these books to readers, so they leave the shelves. The question asks how many books are "
    "still on the shelves afterwards. 1. The library has 5 shelves. 2. Each shelf holds 24 books. "
    "3. The total is the shelves times the books per shelf: 5 * 24 = 120. 4. 38 books are lent out. "
    "5. Subtract them from the total: 120 - 38 = 82. 6. Check: 82 + 38 = 120, the starting total.",
    ("symbolic", 1): "Let s = shelves, b = books per shelf, l = books lent out; x = s * b - l.",
    ("symbolic", 2): "Let s = 5, b = 24, l = 38. The books left are x = s * b - l = 5 * 24 - 38.",
    ("symbolic", 3): "Let s = 5, b = 24, l = 38. Total T = s * b = 120. Left x = T - l = 120 - 38 = 82.",
    ("symbolic", 4): "Let s = 5 (shelves), b = 24 (books per shelf), l = 38 (books lent out). The total "
    "is T = s * b, so T = 5 * 24 = 120. Lent books leave the shelves, so x = T - l = 120 - 38 = 82.",
    ("symbolic", 5): "1. s = 5 (shelves). 2. b = 24 (books per shelf). 3. T = s * b = 5 * 24 = 120. "
    "4. l = 38 (books lent out). 5. x = T - l = 120 - 38 = 82.",
    ("symbolic", 6): "Find x, the books left on the shelves. 1. s = 5 (shelves). 2. b = 24 (books per "
    "shelf). 3. T = s * b is the total number of books: T = 5 * 24 = 120. 4. l = 38 (books lent out), "
    "and lent books leave the shelves. 5. x = T - l = 120 - 38 = 82. 6. Check: x + l = 82 + 38 = 120 = T.",
}


names.require_keys("teacher/prompts.py LEVELS", LEVELS, names.LEVELS)
names.require_keys("teacher/prompts.py FORMATS", FORMATS, names.FORMATS)
names.require_keys("teacher/prompts.py ANSWER_SHAPES", ANSWER_SHAPES, (*ANSWER_TYPES, None))
names.require_keys("teacher/prompts.py EXEMPLARS", EXEMPLARS, [(f, lv) for f in names.FORMATS for lv in names.LEVELS])


@dataclass(frozen=True)
class PromptTemplate:
    """One (level, format) template. `version(answer_type)` goes into every row annotated with it."""

    level: int
    format: str
    exemplar_rationale: str

    def version(self, answer_type: str | None = None) -> str:
        """The version of this template's prompt for `answer_type` (see the module docstring)."""
        _check_answer_type(answer_type)
        return _version(self.level, self.format, answer_type)

    def messages(self, question: str, answer_type: str | None = None) -> list[dict[str, str]]:
        """Chat messages: system instruction, the 1-shot exemplar as a user/assistant turn, the question."""
        _check_answer_type(answer_type)
        system = SYSTEM_FRAME.format(format=FORMATS[self.format], level=LEVELS[self.level], shape=ANSWER_SHAPES[answer_type])
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": EXEMPLAR_QUESTION},
            {"role": "assistant", "content": join_rationale_answer(self.exemplar_rationale, EXEMPLAR_ANSWER)},
            {"role": "user", "content": question.strip()},
        ]


def _check_answer_type(answer_type: str | None) -> None:
    if answer_type not in ANSWER_SHAPES:
        raise ConfigError(f"answer_type: {answer_type!r} is not valid; choose from {[k for k in ANSWER_SHAPES if k]}")


def _version(level: int, fmt: str, answer_type: str | None) -> str:
    """TEMPLATE_SERIES + 8 hex chars over every string the (level, format) template's prompt for
    `answer_type` renders from: the answer shape it asks for is one of them (two answer types with
    one wording would share a version; none do)."""
    parts = [SYSTEM_FRAME, LEVELS[level], FORMATS[fmt], ANSWER_SHAPES[answer_type],
             EXEMPLAR_QUESTION, EXEMPLAR_ANSWER, EXEMPLARS[(fmt, level)]]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:8]
    return f"{TEMPLATE_SERIES}-{digest}"


TEMPLATES: dict[tuple[int, str], PromptTemplate] = {
    (level, fmt): PromptTemplate(level, fmt, EXEMPLARS[(fmt, level)])
    for level in names.LEVELS
    for fmt in names.FORMATS
}


def get_template(level: int, fmt: str) -> PromptTemplate:
    check_choices([level], [fmt])
    return TEMPLATES[(level, fmt)]


def render_messages(question: str, level: int, fmt: str, answer_type: str | None = None) -> list[dict[str, str]]:
    return get_template(level, fmt).messages(question, answer_type)


__all__ = [
    "ANSWER_SHAPES",
    "EXEMPLARS",
    "EXEMPLAR_ANSWER",
    "EXEMPLAR_QUESTION",
    "FORMATS",
    "LEVELS",
    "PromptTemplate",
    "TEMPLATES",
    "TEMPLATE_SERIES",
    "check_choices",
    "get_template",
    "render_messages",
]
