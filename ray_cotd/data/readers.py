"""Reading question/answer datasets from files into QuestionRecord-shaped dicts.

Formats are chosen by a table (STYLE 2): the path's suffix, or `fmt=` to override.

    .json     a JSON array of objects            .jsonl / .ndjson  one JSON object per line
    .parquet  a Parquet table                    .csv              a header row, then rows
    a directory: a Hugging Face `datasets` save_to_disk() folder (Dataset or DatasetDict)
    "hf:owner/name": a Hugging Face hub dataset through datasets.load_dataset (needs the network)

Row numbers: BadRow.row and QuestionRecord.row are 0-based data-row positions in the file for every
format. The one exception is a JSONL line that is not JSON, which is reported by its 1-based line
number ("line 7") because that is what an editor shows.

Encoding: text files are decoded as UTF-8 with `surrogateescape`, so a byte that is not UTF-8 does
not stop the read; it becomes a lone surrogate in its string, exactly like a JSON `\udc80` escape
without its pair. Either way the row is bad ("bad_encoding", naming its field) instead of reaching
`stable_id` or a tokenizer, which cannot encode it. A CSV row with more fields than the header (an
unquoted comma) is bad ("extra_fields"), never split into the wrong columns.

Field mappings name which columns hold the question, the raw teacher output (rationale + "The
answer is X", split later by answers.split_output), and plain answers.

What a record's question and gold are, for datasets in other shapes:
  - a `context` column (a reading passage: BoolQ's `passage`) goes before the question, a blank
    line between them;
  - a `choices` column (MMLU's list, ARC's {label, text}, AQuA's ["A)21", ...]) is written into the
    question as "Answer choices: (A) ... (B) ...", and the gold becomes its option's letter, whether
    the row gives a label, a 0-based position or the option's text (data.choices.gold_label);
  - a gold that lists several right answers (["Paris", "City of Paris"], SQuAD's {"text": [...]})
    is the first, and the record keeps them all as "accepted" (scoring takes any);
  - a gold that is a worked solution becomes its final answer ("... #### 72" -> "72", the last
    \\boxed{...}, or what follows "The answer is": answers.final_answer); the record keeps the
    solution as "solution" (training reads its rationale from it, ray_cotd.student.corpus).
A chat transcript column (OpenAI `messages`, ShareGPT `conversations`) mapped as the question
gives its last user turn; mapped as the gold (or answer, or output), the assistant's reply to it,
which as a worked solution ("... The answer is 5") gives its final answer and its rationale.
Detection (no mapping given) takes the first preset whose columns are there, else pairs a
question-like column with a gold-like one (`problem` with `solution`, `question` with `correct`),
else maps a `messages`/`conversations` column as both question and gold, and adds a `choices`/`options` (or one column per option named A, B, C, ...) and a
`context`/`passage` column.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import takewhile
from pathlib import Path
from typing import Any, Literal, get_args

from ray_cotd.data.answers import final_answer
from ray_cotd.data.choices import gold_label, options_from_column, render_choices
from ray_cotd.data.errors import DataError
from ray_cotd.data.schema import normalize_text, stable_id
from ray_cotd.names import require_keys

HUB_PREFIX = "hf:"
BAD_ROW_REASONS = (
    "not_json",  # a JSONL line that does not parse (raw is the line)
    "not_object",  # a row that is not a JSON object
    "missing_field",  # a mapped column absent from the row, or null
    "not_text",  # a mapped text column holding a non-string (a list, a dict, ...)
    "empty_question",  # the question is empty or whitespace only
    "bad_encoding",  # a text field holds bytes that are not UTF-8, or a lone surrogate escape (\udc80)
    "extra_fields",  # a CSV row with more fields than the header (an unquoted comma)
    "bad_choices",  # the choices column is not 2-10 options in a form data.choices reads
    "gold_not_a_choice",  # the gold names none of the row's options
)
# When no preset fits, detection pairs the first of these question columns with the first of these
# gold columns.
_QUESTION_COLUMNS = ("question", "problem", "input", "instruction", "query", "prompt")
_GOLD_COLUMNS = ("answer", "answerKey", "label", "target", "gold", "correct", "solution", "output")
# Columns detection adds to the mapping it finds, by role, first present wins.
_DETECTED_EXTRAS = {"choices": ("choices", "options"), "context": ("context", "passage")}
# A chat transcript column (OpenAI-style messages, ShareGPT conversations): detected when nothing else fits.
_CHAT_COLUMNS = ("messages", "conversations")
_USER_ROLES, _ASSISTANT_ROLES = {"user", "human"}, {"assistant", "gpt", "model"}


@dataclass(frozen=True)
class FieldMapping:
    """Which columns of a row hold what.

    question: the question text (required).
    output: raw teacher text, "<rationale> The answer is X", to split into rationale and answer.
    answer: a plain answer column; used as the gold answer when `gold` is not named (plain
        datasets call their gold "answer"), else carried as the record's "answer".
    gold: the gold answer column.
    domain: a per-row domain column; read_questions(domain=...) sets one domain for all rows.
    id: a per-row id column; otherwise the id is stable_id(question).
    choices: the answer options of a multiple-choice row (module doc); its gold becomes a letter.
        Several columns, one option each, are named with commas: "A,B,C,D" (their names are the
        options' labels).
    context: a passage the question is about, put before it.
    """

    question: str
    output: str | None = None
    answer: str | None = None
    gold: str | None = None
    domain: str | None = None
    id: str | None = None
    choices: str | None = None
    context: str | None = None

    def columns(self) -> dict[str, str]:
        """Role -> column name, for the roles this mapping uses."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


MAPPING_PRESETS: dict[str, FieldMapping] = {
    "alpaca": FieldMapping(question="instruction", output="output"),
    "testset": FieldMapping(question="instruction", gold="label"),
    "arc": FieldMapping(question="input", gold="target"),
    "plain": FieldMapping(question="question", answer="answer"),
    # ARC, OpenBookQA-style rows on the Hugging Face hub: {"question", "choices": {label, text}, "answerKey"}
    "mcq": FieldMapping(question="question", gold="answerKey", choices="choices"),
    # The release's train_answer_only.json files: "output" holds only the gold answer. Never
    # detected (the columns look like alpaca); ask for it by name.
    "answer_only": FieldMapping(question="instruction", gold="output"),
}
MappingPreset = Literal["alpaca", "testset", "arc", "plain", "mcq", "answer_only"]  # MAPPING_PRESETS' names, for configs
require_keys("data/readers.py MappingPreset", get_args(MappingPreset), MAPPING_PRESETS)
# detect_mapping tries these in order: a test file has instruction + label (+ an empty output in
# CommonsenseQA), so testset must win over alpaca.
_DETECT_ORDER = ("testset", "alpaca", "arc", "mcq", "plain")


@dataclass(frozen=True)
class _Unreadable:
    """A row that could not be read as a row (a JSONL line that is not JSON, a CSV row with extra
    fields, a text field that is not UTF-8), kept in place (collect mode) so later rows keep their
    index. `row` is "line N" for a JSONL line, else the 0-based row."""

    row: int | str
    reason: str
    field: str | None
    raw: str


@dataclass
class BadRow:
    """A row that could not become a record. `reason` is one of BAD_ROW_REASONS."""

    path: str
    row: int | str
    field: str | None
    reason: str
    raw: dict[str, Any] | str


@dataclass
class ReadResult:
    """Records (QuestionRecord.to_dict() shape, plus "output"/"answer" when the mapping names
    them) and the rows that were rejected."""

    records: list[dict[str, Any]]
    bad: list[BadRow] = field(default_factory=list)
    source: str = ""
    mapping: FieldMapping | None = None

    def bad_by_reason(self) -> dict[str, int]:
        return dict(Counter(b.reason for b in self.bad))


def detect_mapping(columns: Iterable[str]) -> FieldMapping:
    """The first preset (testset, alpaca, arc, mcq, plain) whose columns are all present; else the
    first question-like column (_QUESTION_COLUMNS) with the first gold-like one (_GOLD_COLUMNS).
    A choices and a context column are added when the columns hold one (_DETECTED_EXTRAS, or one
    column per option named A, B, C, ...)."""
    present = set(columns)
    found = next((MAPPING_PRESETS[name] for name in _DETECT_ORDER
                  if set(MAPPING_PRESETS[name].columns().values()) <= present), None)
    question = next((c for c in _QUESTION_COLUMNS if c in present), None)
    gold = next((c for c in _GOLD_COLUMNS if c in present), None)
    if found is None and question is not None and gold is not None:
        found = FieldMapping(question=question, gold=gold)  # e.g. MATH's problem / solution
    chat = next((c for c in _CHAT_COLUMNS if c in present), None)
    if found is None and chat is not None:  # the user's turn is the question, the reply its worked solution
        found = FieldMapping(question=chat, gold=chat)
    if found is None:
        presets = "; ".join(f"{n}: {', '.join(p.columns().values())}" for n, p in MAPPING_PRESETS.items())
        raise DataError(
            f"no field mapping preset fits columns [{', '.join(sorted(present))}]; presets need {presets}; or a "
            f"question column ({', '.join(_QUESTION_COLUMNS)}) with a gold column ({', '.join(_GOLD_COLUMNS)}). "
            "Pass a FieldMapping naming the columns",
            choices=MAPPING_PRESETS,
        )
    extras = {role: next(c for c in candidates if c in present) for role, candidates in _DETECTED_EXTRAS.items()
              if getattr(found, role) is None and any(c in present for c in candidates)}
    letters = list(takewhile(present.__contains__, "ABCDEFGHIJ"))
    if found.choices is None and "choices" not in extras and len(letters) >= 2:
        extras["choices"] = ",".join(letters)  # one column per option: A, B, C, D (lukaemon/mmlu)
    return replace(found, **extras) if extras else found


def resolve_mapping(mapping: FieldMapping | str | None, columns: Iterable[str]) -> FieldMapping:
    """A FieldMapping from a preset name, a FieldMapping, or None (detect from the columns)."""
    if mapping is None:
        return detect_mapping(columns)
    if isinstance(mapping, FieldMapping):
        return mapping
    if mapping not in MAPPING_PRESETS:
        raise DataError(f"unknown field mapping {mapping!r}", field="mapping", choices=MAPPING_PRESETS)
    return MAPPING_PRESETS[mapping]


def read_rows(path: str | Path, *, fmt: str | None = None, split: str | None = None) -> list[dict[str, Any]]:
    """All rows of a dataset as dicts. Raises DataError for a missing file, an unknown format, a
    malformed file (naming the JSONL line, or the JSON row that is not an object) or an empty one.

    fmt: one of READERS' keys, overriding the suffix. split: which split of a DatasetDict (saved
    folder or hub dataset); needed only when there is more than one.
    """
    return _read_rows(path, fmt=fmt, split=split, bad=None)


def read_questions(
    path: str | Path,
    mapping: FieldMapping | str | None = None,
    *,
    domain: str | None = None,
    on_bad: Literal["raise", "collect"] = "raise",
    fmt: str | None = None,
    split: str | None = None,
) -> ReadResult:
    """Rows mapped to question records.

    A row missing a mapped field, holding a non-string question/output, or with an empty question
    is bad: on_bad="raise" raises DataError naming file, row and field; on_bad="collect" puts it in
    ReadResult.bad with its reason and goes on (long jobs collect, then write_bad_rows).
    domain: the domain of every row (e.g. "svamp") when the mapping has no domain column.
    """
    if on_bad not in ("raise", "collect"):
        raise DataError(f"unknown on_bad {on_bad!r}", field="on_bad", choices=("raise", "collect"))
    source = str(path)
    bad: list[BadRow] = []
    rows = _read_rows(path, fmt=fmt, split=split, bad=bad if on_bad == "collect" else None)
    first = next((r for r in rows if isinstance(r, dict)), None)
    # no readable row at all (collect mode): every row is bad, and there are no columns to map
    resolved = resolve_mapping(mapping, first.keys()) if first is not None else None
    records = []
    for index, row in enumerate(rows):
        record, problem = _map_row(row, index, resolved, source, domain)
        if problem is None:
            records.append(record)
            continue
        if on_bad == "raise":
            raise DataError(f"{problem.reason}: {_describe(problem)}", path=source, row=index, field=problem.field)
        bad.append(problem)
    return ReadResult(records=records, bad=bad, source=source, mapping=resolved)


def write_bad_rows(bad: list[BadRow], path: str | Path) -> int:
    """Append rejected rows with their reasons to a JSONL file (created with its folder); returns
    how many were written. Appending keeps earlier runs' rows: a resumed job adds, never clobbers."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as out:
        for item in bad:
            out.write(json.dumps(asdict(item), ensure_ascii=False, default=str) + "\n")
    return len(bad)


def to_ray_dataset(result: ReadResult):
    """ray.data.from_items(result.records): the thin Ray shell over the plain reader."""
    if not result.records:
        raise DataError("no records to turn into a Ray dataset", path=result.source or None)
    import ray.data  # Ray is imported here only: the readers work (and test) without it.

    return ray.data.from_items(result.records)


def align_by_question(
    *row_lists: list[dict[str, Any]],
    key: str = "question",
    how: Literal["inner", "outer"] = "inner",
) -> list[tuple[dict[str, Any] | None, ...]]:
    """Join rows of several files on whitespace-normalized question text, never on position.

    Files of one dataset differ by a row or two between levels (699 vs 700), so row i of one file
    is not row i of another. Returns one tuple per question, one element per list, in the order of
    the first list (then of later lists for questions the first lacks). A question repeated within a
    list pairs occurrence by occurrence. how="inner" keeps questions every list has; "outer" keeps
    all, with None where a list lacks the question. `missing_by_list` says which are missing where.
    key: the question column ("instruction" for raw release rows).
    """
    if how not in ("inner", "outer"):
        raise DataError(f"unknown join {how!r}", field="how", choices=("inner", "outer"))
    indexed = [_index_by_question(rows, key) for rows in row_lists]
    order: dict[tuple[str, int], None] = {}
    for index in indexed:
        order.update(dict.fromkeys(index))
    aligned = []
    for join_key in order:
        group = tuple(index.get(join_key) for index in indexed)
        if how == "outer" or all(row is not None for row in group):
            aligned.append(group)
    return aligned


def missing_by_list(*row_lists: list[dict[str, Any]], key: str = "question") -> list[list[str]]:
    """For each list, the normalized questions that some other list has and it lacks."""
    indexed = [_index_by_question(rows, key) for rows in row_lists]
    every: dict[tuple[str, int], None] = {}
    for index in indexed:
        every.update(dict.fromkeys(index))
    return [[question for question, _ in every if (question, _) not in index] for index in indexed]


def _index_by_question(rows: list[dict[str, Any]], key: str) -> dict[tuple[str, int], dict[str, Any]]:
    seen: Counter[str] = Counter()
    index = {}
    for position, row in enumerate(rows):
        text = row.get(key)
        if not isinstance(text, str):
            raise DataError("no question text to align on", row=position, field=key)
        question = normalize_text(text)
        index[(question, seen[question])] = row
        seen[question] += 1
    return index


def _map_row(
    row: Any, index: int, mapping: FieldMapping | None, source: str, domain: str | None
) -> tuple[dict[str, Any], None] | tuple[None, BadRow]:
    if isinstance(row, _Unreadable):
        return None, BadRow(source, row.row, row.field, row.reason, row.raw)
    if not isinstance(row, dict) or mapping is None:
        return None, BadRow(source, index, None, "not_object", json.dumps(row, default=str)[:500])
    values: dict[str, Any] = {}
    for role, column in mapping.columns().items():
        if role in ("question", "gold", "answer", "output") and isinstance(row.get(column), list) and \
                all(isinstance(turn, dict) for turn in row[column]):  # a chat transcript
            question_turn, reply = chat_turns(row[column])
            value = question_turn if role == "question" else reply
            if value is None:
                return None, BadRow(source, index, column, "missing_field", row)
            values[role] = value
            continue
        if role == "choices" and "," in column:  # one column per option, the column names their labels
            names = [name.strip() for name in column.split(",")]
            absent = next((name for name in names if row.get(name) is None), None)
            if absent is not None:
                return None, BadRow(source, index, absent, "missing_field", row)
            values[role] = {name: row[name] for name in names}
            continue
        value = row.get(column)
        if role in ("gold", "answer") and isinstance(value, (list, tuple, dict)):
            accepted = _accepted_answers(value)  # several right answers: the first is the gold
            value = accepted[0] if accepted else None
            if len(accepted) > 1:
                values["accepted"] = accepted
        if value is None:
            return None, BadRow(source, index, column, "missing_field", row)
        if role in ("question", "output", "context") and not isinstance(value, str):
            return None, BadRow(source, index, column, "not_text", row)
        values[role] = value if role in ("question", "output", "context", "choices") else str(value)
    question = values["question"]
    if not question.strip():
        return None, BadRow(source, index, mapping.question, "empty_question", row)
    if values.get("context", "").strip():
        question = f"{values['context'].strip()}\n\n{question}"
    gold_column = mapping.gold or mapping.answer
    gold = solution = values.get("gold", values.get("answer"))
    if gold is not None:
        gold = final_answer(gold)
    accepted = [final_answer(a) for a in values.get("accepted", [])]
    if mapping.choices is not None:
        options = options_from_column(values["choices"])
        if options is None:
            return None, BadRow(source, index, mapping.choices, "bad_choices", row)
        if gold is not None and gold.strip():
            raw = row.get(gold_column)  # a JSON int is an option's position, a string a label or text
            gold = gold_label(raw if isinstance(raw, int) and not isinstance(raw, bool) else gold, options)
            if gold is None:
                return None, BadRow(source, index, gold_column, "gold_not_a_choice", row)
        question = render_choices(question, [text for _, text in options])
    record: dict[str, Any] = {
        "id": values.get("id") or stable_id(question),
        "question": question,
        "gold": gold if gold is None or gold.strip() else None,
        "domain": values.get("domain", domain),
        "source": source,
        "row": index,
    }
    if mapping.output is not None:
        record["output"] = values["output"]
    if mapping.answer is not None and mapping.gold is not None:
        record["answer"] = values["answer"]
    if solution is not None and gold != solution and mapping.choices is None:
        record["solution"] = solution  # the worked solution the gold was read out of (GSM8K, MATH)
    if accepted and mapping.choices is None:
        record["accepted"] = accepted  # every right answer, the gold first (scoring.score takes any)
    return record, None


def chat_turns(turns: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(question, reply) of a chat transcript: the last user turn before the final assistant turn
    (or the last user turn when none follows), and that assistant turn; None where there is none.
    Turns are {"role", "content"} (OpenAI; content a string or a list of {"type": "text", "text"}
    parts) or {"from", "value"} (ShareGPT: human / gpt)."""
    def text(turn: dict[str, Any]) -> str | None:
        content = turn.get("content", turn.get("value"))
        if isinstance(content, list):
            content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content if isinstance(content, str) and content.strip() else None

    roles = [str(turn.get("role", turn.get("from", ""))).lower() for turn in turns]
    last_reply = max((i for i, r in enumerate(roles) if r in _ASSISTANT_ROLES), default=None)
    users = [i for i, r in enumerate(roles) if r in _USER_ROLES and (last_reply is None or i < last_reply)]
    question = text(turns[users[-1]]) if users else None
    return question, text(turns[last_reply]) if last_reply is not None and users else None


def _accepted_answers(value: list | tuple | dict) -> list[str]:
    """The right answers a list gold holds (["Paris", "City of Paris"]), or a SQuAD-style
    {"text": [...], ...} one, as strings in order; empty entries dropped."""
    if isinstance(value, dict):
        value = value.get("text", value.get("aliases", []))
        value = [value] if isinstance(value, str) else value
    if not isinstance(value, (list, tuple)):
        return []
    return [str(v) for v in value if v is not None and not isinstance(v, (list, dict)) and str(v).strip()]


def _describe(bad: BadRow) -> str:
    return {
        "missing_field": f"the row has no {bad.field!r} (or it is null)",
        "not_text": f"{bad.field!r} is not a string",
        "empty_question": "the question is empty",
        "not_object": "the row is not a JSON object",
        "not_json": "the line is not JSON",
        "bad_encoding": f"{bad.field!r} is not UTF-8 text (bytes that are not UTF-8, or a lone surrogate such as \\udc80)",
        "extra_fields": "the row has more fields than the header (an unquoted comma?)",
        "bad_choices": f"{bad.field!r} is not 2-10 answer options (a list of texts, {{label: [...], text: [...]}} "
                       "or {label: text})",
        "gold_not_a_choice": f"{bad.field!r} names none of the row's options (a label, a 0-based position or an "
                             "option's text)",
    }[bad.reason]


def _read_rows(
    path: str | Path, *, fmt: str | None, split: str | None, bad: list[BadRow] | None
) -> list[dict[str, Any]]:
    name = str(path)
    if fmt is None:
        fmt = infer_format(name)
    if fmt not in READERS:
        raise DataError(f"unknown format {fmt!r}", path=name, field="fmt", choices=READERS)
    if fmt != "hub" and not Path(name).exists():
        raise DataError(
            f"no such file or folder (for a Hugging Face hub dataset write {HUB_PREFIX}owner/name)", path=name
        )
    rows = READERS[fmt](name, split, bad)
    if not rows:
        raise DataError("the dataset has no rows", path=name)
    for index, row in enumerate(rows):
        unreadable = row if isinstance(row, _Unreadable) else _bad_encoding(row, index)
        if unreadable is not None and bad is None:
            problem = BadRow(name, unreadable.row, unreadable.field, unreadable.reason, unreadable.raw)
            raise DataError(f"{problem.reason}: {_describe(problem)}", path=name, row=problem.row, field=problem.field)
        if unreadable is not None:
            rows[index] = unreadable
        elif bad is None and not isinstance(row, dict):
            raise DataError(f"expected a JSON object, found {type(row).__name__}", path=name, row=index)
    return rows


def _bad_encoding(row: Any, index: int) -> _Unreadable | None:
    """The row as a bad_encoding row when one of its text fields cannot be encoded as UTF-8 (a lone
    surrogate), else None. Its raw text escapes the surrogates, so rejected-row files stay writable."""
    if not isinstance(row, dict):
        return None
    for key, value in row.items():
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return _Unreadable(index, "bad_encoding", str(key), json.dumps(row, default=str)[:500])
    return None


def infer_format(name: str) -> str:
    """The READERS key for a path: hf: prefix -> hub, a folder -> hf_disk, else by suffix."""
    if name.startswith(HUB_PREFIX):
        return "hub"
    path = Path(name)
    if path.is_dir():
        return "hf_disk"
    suffix = path.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise DataError(
            f"cannot tell the format from suffix {suffix!r}; pass fmt=",
            path=name,
            choices=[*SUFFIX_FORMATS, "<folder>", f"{HUB_PREFIX}owner/name"],
        )
    return SUFFIX_FORMATS[suffix]


def _read_json(name: str, split: str | None, bad: list[BadRow] | None) -> list[dict[str, Any]]:
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON at line {err.lineno} column {err.colno}: {err.msg}", path=name) from err
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of objects, found a {type(data).__name__}", path=name)
    return data


def _read_jsonl(name: str, split: str | None, bad: list[BadRow] | None) -> list[dict[str, Any]]:
    rows: list[Any] = []
    with open(name, encoding="utf-8", errors="surrogateescape") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if bad is None:
                    raise DataError(f"not JSON: {err.msg}", path=name, row=f"line {line_number}") from err
                text = line.rstrip("\n")[:500].encode("utf-8", "backslashreplace").decode("utf-8")
                rows.append(_Unreadable(f"line {line_number}", "not_json", None, text))
    return rows


def _read_csv(name: str, split: str | None, bad: list[BadRow] | None) -> list[Any]:
    rows: list[Any] = []
    with open(name, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)  # fields beyond the header land under the key None
        try:
            for index, row in enumerate(reader):
                extra = row.pop(None, None)
                rows.append(row if extra is None else _Unreadable(
                    index, "extra_fields", None, json.dumps({**row, "(extra fields)": extra}, default=str)[:500]))
        except csv.Error as err:  # e.g. a field over csv's 128 KiB limit; line_num counts the lines before it
            raise DataError(f"not readable as CSV: {err}", path=name, row=f"line {reader.line_num + 1}") from err
    return rows


def _read_parquet(name: str, split: str | None, bad: list[BadRow] | None) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(name).to_pylist()
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"not a readable Parquet file: {err}", path=name) from err


def _read_hf_disk(name: str, split: str | None, bad: list[BadRow] | None) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(name)
    except FileNotFoundError as err:
        raise DataError(f"not a Hugging Face save_to_disk folder: {err}", path=name) from err
    return _hf_rows(loaded, name, split)


def _read_hub(name: str, split: str | None, bad: list[BadRow] | None) -> list[dict[str, Any]]:
    import datasets

    repo = name.removeprefix(HUB_PREFIX)
    try:
        loaded = datasets.load_dataset(repo, split=split)
    except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DataError(
            f"could not load hub dataset {repo!r} (no network, or no such dataset/split): {err}", path=name
        ) from err
    return _hf_rows(loaded, name, split)


def _hf_rows(loaded: Any, name: str, split: str | None) -> list[dict[str, Any]]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in loaded:
            raise DataError("pick a split of this DatasetDict", path=name, field="split", choices=splits)
        loaded = loaded[split]
    return loaded.to_list()


READERS: dict[str, Callable[[str, str | None, list[BadRow] | None], list[dict[str, Any]]]] = {
    "json": _read_json,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "hf_disk": _read_hf_disk,
    "hub": _read_hub,
}
SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
