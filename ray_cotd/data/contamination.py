"""Overlap between training questions and test sets: normalized exact match and long n-gram overlap.

    check_overlap(train_questions, {"svamp-test": test_questions, ...}) -> ContaminationReport

Two tests, per training question and test set:
- **exact**: the normalized training question equals a normalized test question. Normalized =
  lowercased, every run of letters and digits a word, words joined by one space, so spacing,
  case and punctuation do not hide a copy.
- **n-gram**: not exact, but the two share a sequence of NGRAM = 13 consecutive normalized
  words: GPT-3's decontamination test (Brown et al. 2020, appendix C, 13-grams over lowercased
  words without punctuation). It catches a test question pasted into a longer one, or one with
  a changed ending. A question shorter than 13 words has no 13-gram, so only exact match can flag it.

Counts are of training rows (several teacher samples of one question are several rows); examples
show the training and test question side by side with the shared n-gram. Plain Python: no Ray,
no torch. Training (student/corpus.py) and `ray-cotd inspect --test-set` report it;
`decontaminate: warn | drop | off` in the train config decides what happens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NGRAM = 13
MAX_EXAMPLES = 3
_WORD = re.compile(r"[^\W_]+")  # letters and digits, any script; punctuation and "_" separate words


def words(text: str) -> list[str]:
    """Lowercased words of `text`: runs of letters and digits."""
    return _WORD.findall(text.lower())


def normalize_question(text: str) -> str:
    """What exact match compares: the words joined by one space."""
    return " ".join(words(text))


def ngrams(tokens: Sequence[str], n: int = NGRAM) -> list[tuple[str, ...]]:
    """Every run of n consecutive tokens, in order (none when there are fewer than n)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


@dataclass
class SetOverlap:
    """One test set's overlap with the training questions.

    exact / ngram: training rows flagged by each test (a row counts once, as exact when it is);
    flagged: their indices into the training questions; examples: up to MAX_EXAMPLES of each kind.
    """

    name: str
    test_questions: int
    exact: int = 0
    ngram: int = 0
    flagged: list[int] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["flagged"]
        return out


@dataclass
class ContaminationReport:
    """Every test set's overlap; `flagged` is the union of their flagged training rows."""

    n: int
    train_rows: int
    sets: list[SetOverlap]

    @property
    def flagged(self) -> set[int]:
        return {i for s in self.sets for i in s.flagged}

    def as_dict(self) -> dict[str, Any]:
        return {"ngram": self.n, "train_rows": self.train_rows, "flagged_rows": len(self.flagged),
                "sets": [s.as_dict() for s in self.sets]}


def check_overlap(train_questions: Sequence[str], test_sets: Mapping[str, Sequence[str]], *, n: int = NGRAM,
                  max_examples: int = MAX_EXAMPLES) -> ContaminationReport:
    """Which training questions appear in (exact) or share an n-gram with each test set's questions."""
    if n < 1:
        raise ValueError(f"n-gram length must be >= 1, got {n}")
    train_words = [words(q) for q in train_questions]
    sets = []
    for name, questions in test_sets.items():
        exact_index = {}
        gram_index: dict[tuple[str, ...], int] = {}
        for j, q in enumerate(questions):
            tokens = words(q)
            exact_index.setdefault(" ".join(tokens), j)
            for gram in ngrams(tokens, n):
                gram_index.setdefault(gram, j)
        overlap = SetOverlap(name=name, test_questions=len(questions))
        shown = {"exact": 0, "ngram": 0}
        for i, tokens in enumerate(train_words):
            j = exact_index.get(" ".join(tokens))
            kind, shared = "exact", None
            if j is None:
                hit = next((g for g in ngrams(tokens, n) if g in gram_index), None)
                if hit is None:
                    continue
                kind, j, shared = "ngram", gram_index[hit], " ".join(hit)
            overlap.flagged.append(i)
            if kind == "exact":
                overlap.exact += 1
            else:
                overlap.ngram += 1
            if shown[kind] < max_examples:
                shown[kind] += 1
                overlap.examples.append({"kind": kind, "train_row": i, "train": train_questions[i],
                                         "test_row": j, "test": questions[j], "shared": shared})
        sets.append(overlap)
    return ContaminationReport(n=n, train_rows=len(train_questions), sets=sets)


def format_overlap(report: ContaminationReport, *, action: str | None = None) -> list[str]:
    """Lines for a terminal: one per test set, then its examples (questions cut to 90 characters)."""
    lines = []
    for s in report.sets:
        total = s.exact + s.ngram
        head = (f"{s.name} ({s.test_questions} questions): {total} of {report.train_rows} training rows overlap "
                f"({s.exact} exact, {s.ngram} by {report.n}-gram)")
        lines.append(head + (f"; {action}" if total and action else ""))
        for e in s.examples:
            lines.append(f"  {e['kind']}: train row {e['train_row']} {_cut(e['train'])!r} ~ test row {e['test_row']} "
                         f"{_cut(e['test'])!r}")
    return lines


def _cut(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


__all__ = ["MAX_EXAMPLES", "NGRAM", "ContaminationReport", "SetOverlap", "check_overlap", "format_overlap",
           "ngrams", "normalize_question", "words"]
