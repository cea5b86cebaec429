"""Row schemas: a question to annotate, and one annotated teacher sample.

Rows travel as plain dicts through Ray Data and Parquet; these dataclasses are the single
definition of their columns, with `to_dict` / `from_dict` at the boundary. `from_dict` raises
DataError naming the missing column and ignores extra ones (pipelines add columns such as
`output` or a split name as rows move along).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ray_cotd.data.errors import DataError

_ID_CHARS = 16
_PART_SEPARATOR = "\x1f"  # ASCII unit separator: cannot come from a whitespace-normalized part


def normalize_text(text: str) -> str:
    """Whitespace-normalized text (runs of whitespace -> one space, stripped): the join key."""
    return " ".join(text.split())


def stable_id(*parts: str) -> str:
    """16 hex chars of sha256 over the whitespace-normalized parts; the same in every process.

    `stable_id(question)` is a question's id, so the same question read from two files (or from
    two granularity levels) gets the same id whatever the row order or spacing.
    """
    if not parts:
        raise DataError("stable_id needs at least one part")
    joined = _PART_SEPARATOR.join(normalize_text(str(part)) for part in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:_ID_CHARS]


@dataclass
class QuestionRecord:
    """One question as read from a dataset file.

    row: 0-based position of the row in its file (JSON array index, Parquet/CSV/JSONL data row).
    """

    id: str
    question: str
    gold: str | None
    domain: str | None
    source: str
    row: int

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise DataError("empty question", path=self.source, row=self.row, field="question")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> QuestionRecord:
        return cls(**_take_columns(row, QUESTION_COLUMNS, cls.__name__))


@dataclass
class AnnotatedRecord:
    """One teacher sample for one question: the rationale and answer split out of its output.

    id: `annotated_id(...)` of the fields that make a sample unique, so re-running an annotation
        job rewrites the same ids and resuming can skip rows already done.
    correct: answers_match(answer, gold) when there is a gold answer, else None.
    level: rationale granularity 1 (tersest) .. 6 (most detailed); None for human/answer-only rows.
    format: the CoT format (ray_cotd.teacher.prompts: "cot", "least_to_most", "rar", "symbolic"); None when unknown.
    sampling: generation settings (temperature, top_p, seed, ...). Stored by `to_dict` as a JSON
        string with sorted keys, because Parquet/Arrow would otherwise need one struct type shared
        by every row; `from_dict` accepts the string or a dict.

    The columns after `source` are optional (OPTIONAL_ANNOTATED_COLUMNS): rows written before them
    read as None.
    trace: a reasoning teacher's trace (<think>...</think> or the HTTP reasoning field,
        ray_cotd.data.reasoning); None when the reply had none.
    final_text: the reply after the trace (the whole reply when there is none): what the answer
        was read from. rationale_source: which of the two the rationale is ("final", "trace" or
        "both", AnnotateConfig.rationale_source).
    teacher_tokens, topk_ids, topk_logprobs, topk_k, teacher_vocab: the teacher's top-k
        log-probabilities per generated token (ray_cotd.data.logprobs: binary int32 / float16
        arrays, 4 + 6k bytes per token); None unless annotated with `logprobs: k`.
    """

    id: str
    question_id: str
    question: str
    rationale: str
    answer: str
    gold: str | None
    correct: bool | None
    domain: str | None
    teacher: str
    level: int | None
    format: str | None
    template_version: str | None
    sample_index: int
    sampling: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    source: str = ""
    trace: str | None = None
    final_text: str | None = None
    rationale_source: str | None = None
    teacher_tokens: bytes | None = None
    topk_ids: bytes | None = None
    topk_logprobs: bytes | None = None
    topk_k: int | None = None
    teacher_vocab: str | None = None

    def __post_init__(self) -> None:
        if self.sample_index < 0:
            raise DataError(f"sample_index must be >= 0, got {self.sample_index}", field="sample_index")
        if self.level is not None and self.level < 1:
            raise DataError(f"level must be >= 1 or None, got {self.level}", field="level")

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["sampling"] = json.dumps(self.sampling, sort_keys=True)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> AnnotatedRecord:
        values = _take_columns(row, ANNOTATED_COLUMNS, cls.__name__, optional=OPTIONAL_ANNOTATED_COLUMNS)
        sampling = values["sampling"]
        if isinstance(sampling, str):
            try:
                sampling = json.loads(sampling) if sampling else {}
            except json.JSONDecodeError as err:
                raise DataError(f"sampling is not a JSON object: {err}", field="sampling") from err
        if not isinstance(sampling, dict):
            raise DataError(f"sampling must be a JSON object, got {type(sampling).__name__}", field="sampling")
        values["sampling"] = sampling
        return cls(**values)


def annotated_id(
    question_id: str,
    teacher: str,
    level: int | None,
    format: str | None,
    template_version: str | None,
    sample_index: int,
) -> str:
    """The row key of an AnnotatedRecord: one id per (question, teacher, level, format, template, sample)."""
    return stable_id(question_id, teacher, str(level), str(format), str(template_version), str(sample_index))


QUESTION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(QuestionRecord))
ANNOTATED_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AnnotatedRecord))
# Columns added after corpora were first written (issue 22): a row without them reads them as None.
OPTIONAL_ANNOTATED_COLUMNS: tuple[str, ...] = ANNOTATED_COLUMNS[ANNOTATED_COLUMNS.index("trace"):]


def _take_columns(row: dict[str, Any], columns: tuple[str, ...], kind: str,
                  optional: tuple[str, ...] = ()) -> dict[str, Any]:
    missing = [c for c in columns if c not in row and c not in optional]
    if missing:
        raise DataError(
            f"{kind} row lacks column(s) {', '.join(missing)}; has {', '.join(sorted(row))}",
            field=missing[0],
            choices=columns,
        )
    return {c: row.get(c) for c in columns}
