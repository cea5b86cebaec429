"""`ray-cotd inspect`: what is in a dataset file and how well its outputs parse.

`inspect_path` reads with on_bad="collect" (it reports bad rows, it never stops at the first),
splits every output with the one parser (answers.split_output) and, where there is a gold answer,
says how often the parsed answer agrees with it. `format_inspect` renders the report as text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray_cotd.data.answers import (
    AnswerType,
    ParseFailure,
    answers_match,
    infer_answer_type,
    normalize_answer,
    split_output,
)
from ray_cotd.data.contamination import check_overlap
from ray_cotd.data.errors import DataError
from ray_cotd.data.readers import FieldMapping, infer_format, read_questions
from ray_cotd.data.schema import normalize_text

EXAMPLE_ROWS = 3  # example row numbers kept per failure reason
# Parsed teacher answers include a little garbage; 95% of them must read as a type to infer it.
_ANSWER_TYPE_SHARE = 0.95


def inspect_path(
    path: str | Path,
    mapping: FieldMapping | str | None = None,
    *,
    answer_type: AnswerType | None = None,
    lenient: bool = False,
    fmt: str | None = None,
    gold_path: str | Path | None = None,
    gold_mapping: FieldMapping | str = "answer_only",
    test_sets: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """A report dict on one dataset file (rows are 0-based positions in the file).

    answer_type: None infers it from the golds (all must read as the type), else from the parsed
        answers (95% must). lenient: passed to split_output.
    gold_path: a second file holding gold answers for this file's questions, joined on normalized
        question text (the release's train_answer_only.json; read with gold_mapping).
    test_sets: test files (columns detected, every row) whose questions this file's questions are
        checked against: normalized exact match and 13-gram overlap (data/contamination.py).
    """
    for test_path in test_sets:  # a missing test set fails before the file is read
        if not str(test_path).startswith("hf:") and not Path(test_path).exists():
            raise DataError("test set not found", path=test_path, field="--test-set")
    result = read_questions(path, mapping, on_bad="collect", fmt=fmt)
    records = result.records
    golds = _golds(records, gold_path, gold_mapping)

    bad_examples: dict[str, list] = defaultdict(list)
    for bad in result.bad:
        if len(bad_examples[bad.reason]) < EXAMPLE_ROWS:
            bad_examples[bad.reason].append(bad.row)

    has_output = result.mapping is not None and result.mapping.output is not None
    type_source = "given"
    if answer_type is None:
        gold_values = [g for g in golds if g is not None]
        if gold_values:
            answer_type, type_source = infer_answer_type(gold_values), "inferred from gold"
        elif has_output:
            untyped = [split_output(r["output"]) for r in records]
            answers = [p.answer for p in untyped if not isinstance(p, ParseFailure)]
            answer_type = infer_answer_type(answers, min_share=_ANSWER_TYPE_SHARE)
            type_source = "inferred from parsed answers"
        else:
            answer_type, type_source = "text", "default"

    report: dict[str, Any] = {
        "file": str(path),
        "format": fmt or infer_format(str(path)),
        "rows": len(records) + len(result.bad),
        "records": len(records),
        "mapping": result.mapping.columns() if result.mapping else {},
        # the first usable row as every stage reads it (options written in, the gold as its final answer)
        "example": {"row": records[0]["row"], "question": records[0]["question"], "gold": records[0]["gold"]}
        if records else None,
        "bad_rows": result.bad_by_reason(),
        "bad_examples": dict(bad_examples),
        "answer_type": answer_type,
        "answer_type_source": type_source,
        "lenient": lenient,
        "outputs": None,
        "gold": None,
        "contamination": None,
    }
    if test_sets:
        questions = {str(t): [r["question"] for r in read_questions(t, on_bad="collect").records] for t in test_sets}
        report["contamination"] = check_overlap([r["question"] for r in records], questions).as_dict()

    parsed_answers: list[str | None] = [None] * len(records)
    if has_output:
        failures: Counter[str] = Counter()
        failure_rows: dict[str, list[int]] = defaultdict(list)
        markers: Counter[str] = Counter()
        for index, record in enumerate(records):
            parsed = split_output(record["output"], answer_type=answer_type, lenient=lenient)
            if isinstance(parsed, ParseFailure):
                failures[parsed.reason] += 1
                if len(failure_rows[parsed.reason]) < EXAMPLE_ROWS:
                    failure_rows[parsed.reason].append(record["row"])
            else:
                markers[parsed.marker] += 1
                parsed_answers[index] = parsed.answer
        report["outputs"] = {
            "parsed": sum(markers.values()),
            "failed": sum(failures.values()),
            "failures": {r: {"count": n, "rows": failure_rows[r]} for r, n in failures.most_common()},
            "markers": dict(markers.most_common()),
        }

    with_gold = [(g, a) for g, a in zip(golds, parsed_answers) if g is not None]
    if with_gold:
        compared = [(g, a) for g, a in with_gold if a is not None]
        agree = sum(answers_match(a, g, answer_type) for g, a in compared)
        report["gold"] = {
            "source": str(gold_path) if gold_path is not None else "gold column",
            "with_gold": len(with_gold),
            "gold_readable": sum(normalize_answer(g, answer_type) is not None for g, _ in with_gold),
            "compared": len(compared),
            "agree": agree,
            "agreement": agree / len(compared) if compared else None,
        }
    return report


def format_inspect(report: dict[str, Any]) -> str:
    """The report as an aligned two-column text table."""
    lines: list[tuple[str, str]] = [
        ("file", report["file"]),
        ("format", report["format"]),
        ("rows", f"{report['rows']} ({report['records']} usable)"),
        ("mapping", ", ".join(f"{role}={column}" for role, column in report["mapping"].items()) or "-"),
        ("answer type", f"{report['answer_type']} ({report['answer_type_source']})"),
    ]
    example = report.get("example")
    if example is not None:
        question = " ".join(example["question"].split())
        lines.append((f"row {example['row']} reads", f"{question[:160]}{' ...' if len(question) > 160 else ''}"
                                                    f"  -> gold {example['gold']!r}"))
    for reason, count in report["bad_rows"].items():
        lines.append((f"bad rows: {reason}", f"{count} (e.g. rows {_rows(report['bad_examples'][reason])})"))
    outputs = report["outputs"]
    if outputs is not None:
        total = outputs["parsed"] + outputs["failed"]
        mode = "lenient" if report["lenient"] else "strict"
        lines.append((f"outputs parsed ({mode})", f"{outputs['parsed']} / {total}"))
        for reason, info in outputs["failures"].items():
            lines.append((f"  failed: {reason}", f"{info['count']} (e.g. rows {_rows(info['rows'])})"))
        for marker, count in outputs["markers"].items():
            lines.append((f"  marker: {marker}", str(count)))
    gold = report["gold"]
    if gold is not None:
        lines.append(("gold", f"{gold['with_gold']} rows from {gold['source']}, {gold['gold_readable']} readable"))
        if gold["agreement"] is not None:
            lines.append(("agreement with gold", f"{gold['agree']} / {gold['compared']} = {gold['agreement']:.1%}"))
    contamination = report["contamination"]
    if contamination is not None:
        for s in contamination["sets"]:
            total = s["exact"] + s["ngram"]
            lines.append((f"overlap with {s['name']}", f"{total} of {contamination['train_rows']} rows "
                          f"({s['exact']} exact, {s['ngram']} by {contamination['ngram']}-gram; "
                          f"{s['test_questions']} test questions)"))
            for e in s["examples"]:
                lines.append((f"  {e['kind']}", f"row {e['train_row']} ~ test row {e['test_row']}: {e['train']!r}"))
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)


def _rows(rows: list) -> str:
    return ", ".join(str(r) for r in rows)


def _golds(records: list[dict[str, Any]], gold_path: str | Path | None, gold_mapping: FieldMapping | str) -> list:
    """Gold answer per record: its own gold column, or the gold file's answer for its question."""
    if gold_path is None:
        return [r["gold"] for r in records]
    by_question: dict[str, str | None] = {}
    for row in read_questions(gold_path, gold_mapping, on_bad="collect").records:
        by_question.setdefault(normalize_text(row["question"]), row["gold"])
    return [by_question.get(normalize_text(r["question"])) for r in records]
