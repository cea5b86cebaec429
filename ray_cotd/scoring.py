"""Scoring a student's answer, and the record of one evaluated question.

The one `score()` and the one `Prediction` type: evaluation (ray_cotd.evaluate) scores every
generated answer with `score` and writes `Prediction` rows; tune validation (val_accuracy in
ray_cotd.student.train) scores its validation questions with the same `score`, so the metric a
sweep selects on is the accuracy the evaluation report shows; the study (studies/run.py) reads the
rows back with `read_predictions`. Plain Python on the data layer's parser: no torch, no Ray.

A predictions file (`predictions/<system>/<test set>.jsonl`) holds one `Prediction.to_dict()` per
line, keys in field order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypedDict

from ray_cotd.data.answers import AnswerType, ParsedOutput, normalize_answer, parse_answer, text_key
from ray_cotd.data.choices import option_label, parse_choices
from ray_cotd.data.errors import DataError


class Score(TypedDict):
    """What `score` finds in one answer.

    predicted: the answer normalized as its answer type (normalize_answer), None when unreadable.
    correct: predicted equals the normalized gold; an unreadable answer is wrong.
    parse_error: why nothing could be read (a data.answers PARSE_FAILURE_REASONS value), else None;
        PROMPT_TOO_LONG for a question evaluation never generated.
    """

    predicted: str | None
    correct: bool
    parse_error: str | None


# The parse_error of a question that was never generated, because its prompt and the tokens its
# answer may take do not fit the model's context (ray_cotd.evaluate.fit_prompts): scored wrong.
PROMPT_TOO_LONG = "prompt_too_long"


def score(answer_text: str, gold: str, answer_type: AnswerType, *, question: str | None = None,
          accepted: Iterable[str] = ()) -> Score:
    """Parse stage-2 text (what the student wrote after the marker) as `answer_type` and compare
    it with `gold`.

    question: for multiple_choice, an answer that is no label but the text of one of the options
        the question lists ("populated areas" for "B: populated areas") reads as that option's
        label (ray_cotd.data.choices).
    accepted: further right answers (a gold that lists several: the record's "accepted"); the
        answer is correct when it equals the gold or any of them.
    A "text" answer equals a gold when both read the same after SQuAD's normalization
    (data.answers.text_key: case, punctuation and articles aside).
    """
    parsed = parse_answer(answer_text, answer_type)
    if isinstance(parsed, ParsedOutput):
        predicted = normalize_answer(parsed.answer, answer_type)
    elif parsed.reason == "unreadable_answer" and answer_type == "multiple_choice" and question is not None:
        as_text = parse_answer(answer_text, "text")
        predicted = option_label(as_text.answer, parse_choices(question)) if isinstance(as_text, ParsedOutput) else None
    else:
        return Score(predicted=None, correct=False, parse_error=parsed.reason)
    if predicted is None:
        return Score(predicted=None, correct=False, parse_error="unreadable_answer")
    right = {normalize_answer(g, answer_type) for g in (gold, *accepted)}
    if answer_type == "text":  # free text: SQuAD's normalization ("The Eiffel Tower." is "eiffel tower")
        return Score(predicted=predicted, correct=text_key(predicted) in {text_key(g) for g in right if g},
                     parse_error=None)
    return Score(predicted=predicted, correct=predicted in right, parse_error=None)


def scored_type(gold: str, answer_type: AnswerType) -> AnswerType:
    """The type one question is scored as: its set's, or "text" for a gold that does not read as
    that type (a set of mixed golds, whose type data.answers.fit_answer_type picked from most of
    them; evaluation counts and reports such rows)."""
    return answer_type if normalize_answer(gold, answer_type) is not None else "text"


@dataclass(frozen=True)
class Prediction:
    """One system's answer to one test question, scored: a row of a predictions file.

    system / test_set / split: who answered, on which set, IND or OOD. position: the question's
    index in its prepared test set; row: its 0-based row in the test file; id: its record id;
    gold: its gold answer (the first right answer when its row lists several; `correct` takes any).
    rationale, answer_text: the generated stage-1 and stage-2 text; rationale_stop: why stage 1
    ended ("eos", "marker" or "length"). predicted / correct / parse_error: `score` of answer_text.
    *_tokens: token counts of the prompt, rationale and answer; stage1_s / stage2_s: wall time of
    the generation batch the question ran in.
    constrained_predicted / constrained_correct: for a question whose choices are known (listed
    in its text), the choice the student scores highest at the answer position and whether it is
    the gold; None for other questions (free-form answers, or no choices found).
    swapped_from / swapped_predicted / answer_changed: the faithfulness check (two-stage only):
    the position of the question whose rationale replaced this one's, the answer given from it,
    and whether that answer differs from `predicted`; None when not measured.
    """

    system: str
    test_set: str
    split: str
    position: int
    row: int
    id: str
    question: str
    gold: str
    rationale: str
    answer_text: str
    predicted: str | None
    correct: bool
    parse_error: str | None
    rationale_stop: str
    prompt_tokens: int
    rationale_tokens: int
    answer_tokens: int
    stage1_s: float
    stage2_s: float
    swapped_from: int | None = None
    swapped_predicted: str | None = None
    answer_changed: bool | None = None
    constrained_predicted: str | None = None
    constrained_correct: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The predictions-file row: every field, in field order."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Prediction:
        """A Prediction from a predictions-file row; DataError naming the keys it lacks. Keys it
        does not know are ignored, so a file with added columns still reads; keys with a default
        (added later, e.g. the constrained ones) may be missing, so older files still read."""
        missing = [f.name for f in fields(cls) if f.name not in row and f.default is MISSING]
        if missing:
            raise DataError(f"prediction row lacks key(s) {', '.join(missing)}; has {', '.join(sorted(row))}",
                            field=missing[0])
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})


PREDICTION_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Prediction))


def write_predictions(path: str | Path, predictions: Iterable[Prediction]) -> None:
    """One JSON line per prediction (to_dict), replacing the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in predictions:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")


def read_predictions(path: str | Path) -> list[Prediction]:
    """The predictions of one file, in file order; DataError naming the line of a bad row."""
    predictions = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            predictions.append(Prediction.from_dict(json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"not JSON: {err}", path=path, row=f"line {number}") from err
        except DataError as err:
            raise DataError(err.message, path=path, row=f"line {number}", field=err.field) from err
    return predictions


__all__ = ["PREDICTION_KEYS", "PROMPT_TOO_LONG", "Prediction", "Score", "read_predictions", "score",
           "scored_type", "write_predictions"]
