"""The options a multiple-choice question lists in its text, and the label of an option's text.

A student asked a choice question may answer with the option's text ("populated areas") instead of
its label ("B"); scoring (ray_cotd.scoring.score) maps such an answer to the label when the question
lists the options. Pure functions: no torch, no Ray.

Layouts read (the readers' presets and the release's CommonsenseQA files use the first three):

    "Answer Choices:\\nA. bank\\nB. library\\nC. mall"          one option per line, "A." / "A:" / "A)"
    "Answer choices: A: race track, B: populated areas, ..."   inline, one label style throughout
    "Options: (A) 3 km (B) 5 km (C) 7 km"                      inline, labels in parentheses
    "(1) iron (2) copper (3) glass"                           numbered options

Labels are letters A-J or numbers 1-10 in order from A (or 1), written in one style per question:
"(A)", "A)", "A:" or "A.". A label must not be glued to the word before it ("Vitamin B." is not
label B in a "A:"-style list, "U.S.A." is not label A). The option list is the latest run of at
least two consecutive labels, so a question that says "Plan A: ..." before its list is read from
the list. An option's text runs to the next label, the last one's to the end of its line.

Only meaningful for questions known to be multiple choice: "Step 1: add 3 eggs. Step 2: stir."
also reads as two options.

A dataset that keeps its options in a column of their own (MMLU's `choices` list, ARC's
`{"label": [...], "text": [...]}`, AQuA's ["A)21", "B)42"]) is read by `options_from_column`; the
readers then write them into the question as "Answer choices: (A) ... (B) ..." (`render_choices`),
always labelled A, B, C, ... in their order, so every stage and the student see one layout, and map
the row's gold to its label (`gold_label`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ray_cotd.data.answers import normalize_answer

LETTER_LABELS = tuple("ABCDEFGHIJ")
NUMBER_LABELS = tuple(str(n) for n in range(1, 11))

# label style -> the pattern of one label L followed by the space before its text
_STYLES = (
    r"\({label}\)\s*",
    r"(?<![\w(]){label}\)\s+",
    r"(?<![\w]){label}:\s+",
    r"(?<![\w.]){label}\.\s+",
)
_TRAILING_JOINERS = re.compile(r"(?:[\s,;]|\bor\b)+$", re.IGNORECASE)


def parse_choices(question: str) -> dict[str, str] | None:
    """{label: option text} in label order, or None when the question lists fewer than two options.

    >>> parse_choices("Where? Answer choices: A: race track, B: populated areas, C: the desert")
    {'A': 'race track', 'B': 'populated areas', 'C': 'the desert'}
    """
    if not isinstance(question, str):
        return None
    best: dict[str, str] | None = None
    for labels in (LETTER_LABELS, NUMBER_LABELS):
        for style in _STYLES:
            found = _latest_run(question, labels, style)
            if found is not None and (best is None or len(found) > len(best)):
                best = found
    return best


def option_label(answer: str, choices: dict[str, str] | None) -> str | None:
    """The label of the one option whose text `answer` is (case, spacing, quotes and a final period
    ignored), or None."""
    if not choices or not isinstance(answer, str):
        return None
    wanted = _plain(answer)
    matches = [label for label, text in choices.items() if wanted and _plain(text) == wanted]
    return matches[0] if len(matches) == 1 else None


def _latest_run(text: str, labels: tuple[str, ...], style: str) -> dict[str, str] | None:
    """The options of the latest occurrence of the first label that starts a run of >= 2 labels."""
    pattern = {label: re.compile(style.format(label=re.escape(label))) for label in labels}
    for first in reversed(list(pattern[labels[0]].finditer(text))):
        spans = [first]
        for label in labels[1:]:
            following = pattern[label].search(text, spans[-1].end())
            if following is None:
                break
            spans.append(following)
        if len(spans) < 2:
            continue
        options = {}
        for index, (label, span) in enumerate(zip(labels, spans)):
            end = spans[index + 1].start() if index + 1 < len(spans) else _line_end(text, span.end())
            options[label] = _TRAILING_JOINERS.sub("", text[span.end():end]).strip()
        return options
    return None


def options_from_column(value: Any) -> list[tuple[str | None, str]] | None:
    """The options a choices column holds, as (the label it gives or None, option text) in order;
    None when it is not 2-10 options in one of these forms:

        ["Berlin", "Paris", ...]                        texts (numbers are read as their text)
        ["A)21", "B)42", ...]  ["(A) 21", ...]          texts each behind its label, labels in order
        {"label": ["A", "B"], "text": ["x", "y"]}       ARC / CommonsenseQA on the Hugging Face hub
        {"A": "x", "B": "y"}                            label -> text
        "A) x B) y" or a JSON string of one of the above  (CSV cells)
    """
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{":
            try:
                return options_from_column(json.loads(text))
            except ValueError:
                return None
        found = parse_choices(text)
        return [(label, option) for label, option in found.items()] if found else None
    if isinstance(value, dict):
        if set(value) >= {"label", "text"}:
            labels, texts = value["label"], value["text"]
            if not isinstance(labels, (list, tuple)) or not isinstance(texts, (list, tuple)) or len(labels) != len(texts):
                return None
            pairs = list(zip(labels, texts))
        else:
            pairs = list(value.items())
        options = [(str(label).strip(), _option_text(text)) for label, text in pairs]
    elif isinstance(value, (list, tuple)):
        texts = [_option_text(item) for item in value]
        labelled = _labelled(texts)
        options = labelled if labelled is not None else [(None, text) for text in texts]
    else:
        return None
    if not 2 <= len(options) <= len(LETTER_LABELS) or any(text is None or not text for _, text in options):
        return None
    return options  # type: ignore[return-value]


def render_choices(question: str, texts: list[str]) -> str:
    """The question with its options appended as "Answer choices: (A) x (B) y" (parse_choices reads
    it back); the question as it is when it already lists that many options."""
    listed = parse_choices(question)
    if listed is not None and len(listed) == len(texts):
        return question
    options = " ".join(f"({label}) {' '.join(text.split())}" for label, text in zip(LETTER_LABELS, texts))
    return f"{question.rstrip()}\nAnswer choices: {options}"


def gold_label(gold: Any, options: list[tuple[str | None, str]]) -> str | None:
    """The letter (A, B, ... in the options' order) of the option `gold` names, or None.

    In this order: a label the column gave ("B", "(B)", "b", "B: Paris", ARC's "1"); a letter A-J
    when the column gave none ("B", "(B) Paris"); an int (a JSON number, as MMLU and Hugging Face
    class labels store it) or a string of digits as the option's 0-based position; the text of
    exactly one option ("Paris"). A JSON int is a position before it is a text: MMLU's `answer: 1`
    over ["1", "2", "3", "4"] is B.
    """
    if gold is None or isinstance(gold, bool):
        return None
    letters = LETTER_LABELS[: len(options)]
    if isinstance(gold, int):
        return letters[gold] if 0 <= gold < len(options) else None
    wanted = _label_key(str(gold))
    leading = normalize_answer(str(gold), "multiple_choice")  # "(B) Paris" -> "B", "(2)" -> "2"
    given = [label for label, _ in options]
    if any(label is not None for label in given):
        for key in (wanted, (leading or "").casefold()):
            matches = [letter for letter, label in zip(letters, given) if label is not None and _label_key(label) == key]
            if len(matches) == 1:
                return matches[0]
    elif leading in letters:
        return leading
    by_text = option_label(str(gold), dict(zip(letters, (text for _, text in options))))
    if by_text is not None:
        return by_text
    if wanted.isdigit() and int(wanted) < len(options):
        return letters[int(wanted)]
    return None


def _option_text(item: Any) -> str | None:
    if isinstance(item, bool) or not isinstance(item, (str, int, float)):
        return None
    return " ".join(str(item).split())


_GIVEN_LABEL_RE = re.compile(r"^\(?(?P<label>[A-Ja-j]|10|[1-9])\s*[).:]\s*(?P<text>\S.*)$", re.DOTALL)


def _labelled(texts: list[str | None]) -> list[tuple[str | None, str]] | None:
    """["A)21", "B)42"] as [("A", "21"), ("B", "42")] when every text starts with the next label of
    one sequence (A, B, ... or 1, 2, ...); else None."""
    matches = [_GIVEN_LABEL_RE.match(text) if text else None for text in texts]
    if not texts or any(m is None for m in matches):
        return None
    labels = [m.group("label").upper() for m in matches]  # type: ignore[union-attr]
    for sequence in (LETTER_LABELS, NUMBER_LABELS):
        if labels == list(sequence[: len(labels)]):
            return [(label, m.group("text").strip()) for label, m in zip(labels, matches)]  # type: ignore[union-attr]
    return None


def _label_key(label: str) -> str:
    return label.strip().strip("()[]").rstrip(".:)").strip().casefold()


def _line_end(text: str, start: int) -> int:
    newline = text.find("\n", start)
    return len(text) if newline < 0 else newline


def _plain(text: str) -> str:
    return " ".join(text.strip().strip("\"'`*").rstrip(".").split()).casefold()


__all__ = ["LETTER_LABELS", "NUMBER_LABELS", "gold_label", "option_label", "options_from_column", "parse_choices",
           "render_choices"]
