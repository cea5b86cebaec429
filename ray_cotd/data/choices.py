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
"""

from __future__ import annotations

import re

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


def _line_end(text: str, start: int) -> int:
    newline = text.find("\n", start)
    return len(text) if newline < 0 else newline


def _plain(text: str) -> str:
    return " ".join(text.strip().strip("\"'`*").rstrip(".").split()).casefold()


__all__ = ["LETTER_LABELS", "NUMBER_LABELS", "option_label", "parse_choices"]
