"""The annotated corpus as training rows: read, split into rationale + answer, hold out, validate.

Two kinds of input, told apart by their columns:
- our annotated Parquet (a directory of shards or one file) with `rationale` and `answer` columns
  (ray_cotd.data.schema.AnnotatedRecord), used as written;
- any file `ray_cotd.data.readers` can map (e.g. the release's alpaca-style JSON, whose `output`
  is "<rationale> The answer is X", split here with `split_output`; a dataset whose gold is a
  worked solution, such as GSM8K's "... #### 72", split the same way into its own rationale and
  answer; or gold-only files, whose rows have no rationale).

Every training row is {"id", "question", "rationale", "answer", "domain"}; an annotated row with the
teacher's top-k log-probabilities also carries their columns (ray_cotd.data.logprobs.LOGPROB_COLUMNS)
and completion_tokens, which token-level KD reads (ray_cotd/student/kd.py). Rows that cannot be used
are counted by reason and kept (with file, row and field) for the caller to write aside.

A rationale must not state the answer: it is what L_rationale trains (CasCoD's premise is a
rationale learned apart from its answer), and the marker ends stage 1 at inference. When a rationale
still holds an answer marker (533 of ~90k rows of the key-factors release), a final restatement of
the answer ("... Therefore, the answer is true.") is cut off and the row kept (counted as
restated_answers_cut); any other inner marker (an intermediate result, the gold quoted, a
contradiction) drops the row as "answer_in_rationale": cutting there would leave a rationale that
stops mid-reasoning or still argues toward another answer (data.answers.without_restated_answer).

The test side of `holdout_split(test_fraction=holdout_fraction, seed=split_seed)` is removed first,
so no evaluation question is ever trained on; validation questions are a second seeded split
(split_seed + 1) of what is left. Both split by question text, so all samples of one question stay
on one side. The split has its own seed (TrainConfig.split_seed), apart from the init and data-order
seed, so runs that vary `seed` keep one test set; training records it in student.json.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_cotd.config import ConfigError, MappingSpec, TestSetSpec
from ray_cotd.data.answers import ParsedOutput, ParseFailure, split_output, without_restated_answer
from ray_cotd.data.contamination import ContaminationReport, check_overlap
from ray_cotd.data.errors import DataError
from ray_cotd.data.logprobs import LOGPROB_COLUMNS
from ray_cotd.data.readers import FieldMapping, detect_mapping, read_questions, read_rows
from ray_cotd.data.splits import holdout_split, select_test_rows

ANNOTATED_KEYS = ("question", "rationale", "answer")
_CALCULATOR = re.compile(r"<<[^<>\n]*>>")


@dataclass
class Corpus:
    """Training and validation rows, and what was dropped on the way (reason -> count)."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    held_out: int  # rows on the test side of the hold-out split, never trained on
    source: str
    dropped: Counter = field(default_factory=Counter)
    bad: list[dict[str, Any]] = field(default_factory=list)  # {"path", "row", "field", "reason", "detail"}

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "train_rows": len(self.train), "val_rows": len(self.val),
                "held_out_rows": self.held_out, "dropped": dict(self.dropped),
                "restated_answers_cut": sum(1 for r in self.train + self.val if r.get("restated_answer_cut"))}


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        shards = sorted(path.glob("*.parquet"))
        return shards or [path]  # a directory without shards: a `datasets` save_to_disk folder
    return [path]


def read_training_rows(path: str | Path, mapping: MappingSpec | None = None, *,
                       needs_rationale: bool = True) -> tuple[list[dict[str, Any]], Counter, list[dict[str, Any]]]:
    """(rows, dropped counts by reason, bad rows) of a corpus file or shard directory."""
    root = Path(path)
    if not root.exists():
        raise DataError("corpus not found", path=root)
    rows: list[dict[str, Any]] = []
    dropped: Counter = Counter()
    bad: list[dict[str, Any]] = []

    def drop(source: str, row: Any, column: str, reason: str, detail: str = "") -> None:
        dropped[reason] += 1
        bad.append({"path": source, "row": row, "field": column, "reason": reason, "detail": detail})

    for file in _files(root):
        raw = read_rows(file)
        if raw and isinstance(raw[0], dict) and all(k in raw[0] for k in ANNOTATED_KEYS):
            for index, r in enumerate(raw):
                missing = next((k for k in ANNOTATED_KEYS if not isinstance(r.get(k), str)), None)
                if missing is not None:
                    drop(str(file), index, missing, "missing_field")
                    continue
                logprobs = ({c: r.get(c) for c in (*LOGPROB_COLUMNS, "completion_tokens")}
                            if r.get("topk_ids") is not None else {})
                rows.append({"id": r.get("id") or f"{file.name}:{index}", "question": r["question"],
                             "rationale": r["rationale"].strip(), "answer": r["answer"].strip(),
                             "domain": r.get("domain"), "source": str(file), "row": index, **logprobs})
            continue
        result = read_questions(file, (mapping or MappingSpec()).field_mapping(), on_bad="collect")
        for b in result.bad:
            drop(b.path, b.row, b.field or "", b.reason)
        for rec in result.records:
            if "output" in rec:
                parsed = split_output(rec["output"])
                if isinstance(parsed, ParseFailure):
                    drop(rec["source"], rec["row"], "output", parsed.reason, parsed.detail)
                    continue
                rationale, answer = parsed.rationale, parsed.answer
            elif rec.get("gold"):
                # a worked-solution gold ("... #### 72") holds the dataset's own rationale; GSM8K's
                # calculator annotations ("48/2 = <<48/2=24>>24") are no part of it
                parsed = split_output(rec["solution"]) if rec.get("solution") else None
                rationale, answer = ((_CALCULATOR.sub("", parsed.rationale), parsed.answer)
                                     if isinstance(parsed, ParsedOutput) else ("", rec["gold"]))
            else:
                drop(rec["source"], rec["row"], "gold", "no_answer")
                continue
            rows.append({"id": f"{rec['id']}:{rec['row']}", "question": rec["question"], "rationale": rationale,
                         "answer": answer, "domain": rec.get("domain"), "source": rec["source"], "row": rec["row"]})
    if not rows:
        raise DataError(f"the corpus has no usable rows (dropped: {dict(dropped) or 'none; it is empty'})", path=root)
    if needs_rationale:
        with_rationale = [r for r in rows if r["rationale"].strip()]
        if not with_rationale:
            raise DataError(
                f"none of the {len(rows)} rows has a rationale, and this objective trains on rationales "
                "(use objective answer_only, or an annotated corpus)", path=root, field="rationale")
        for r in rows:
            if not r["rationale"].strip():
                drop(r["source"], r["row"], "rationale", "no_rationale")
        rows = []
        for r in with_rationale:  # no answer in L_rationale: see the module docstring
            rationale = without_restated_answer(r["rationale"], r["answer"])
            if rationale is None:
                drop(r["source"], r["row"], "rationale", "answer_in_rationale", " ".join(r["rationale"][-80:].split()))
            elif not rationale:
                drop(r["source"], r["row"], "rationale", "no_rationale", "only a restatement of the answer")
            else:
                rows.append(r if rationale == r["rationale"] else {**r, "rationale": rationale,
                                                                   "restated_answer_cut": True})
        if not rows:
            raise DataError(f"every rationale states an answer before its final answer line (dropped: {dict(dropped)})",
                            path=root, field="rationale")
    return rows, dropped, bad


def load_corpus(path: str | Path, mapping: MappingSpec | None = None, *, needs_rationale: bool = True,
                holdout_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0) -> Corpus:
    """Training rows with the hold-out test side removed and a validation split taken out."""
    rows, dropped, bad = read_training_rows(path, mapping, needs_rationale=needs_rationale)
    train, test = (holdout_split(rows, test_fraction=holdout_fraction, seed=split_seed) if holdout_fraction > 0
                   else (rows, []))
    train, val = (holdout_split(train, test_fraction=val_fraction, seed=split_seed + 1) if val_fraction > 0
                  else (train, []))
    if not train:
        raise DataError(f"no training rows left after holding out {len(test)} test and {len(val)} validation rows",
                        path=path)
    return Corpus(train=train, val=val, held_out=len(test), source=str(path), dropped=dropped, bad=bad)


def contamination_questions(specs: list[TestSetSpec], *, holdout_fraction: float, split_seed: int,
                            key: str = "contamination_sets") -> dict[str, list[str]]:
    """Test set name -> the questions it scores (its hold-out side, offset and limit applied as
    evaluate applies them). A path that does not exist is a ConfigError naming the entry."""
    questions: dict[str, list[str]] = {}
    for i, spec in enumerate(specs):
        if not spec.path or not (spec.path.startswith("hf:") or Path(spec.path).exists()):
            raise ConfigError(f"{key}[{i}].path: test set not found: {spec.path!r}")
        records = read_questions(spec.path, spec.mapping.field_mapping(), on_bad="collect").records
        records = select_test_rows(records, holdout=spec.holdout, test_fraction=holdout_fraction, seed=split_seed,
                                   offset=spec.offset, limit=spec.limit)
        questions[spec.set_name()] = [r["question"] for r in records]
    return questions


def decontaminate(corpus: Corpus, test_sets: dict[str, list[str]], mode: str) -> ContaminationReport:
    """Check corpus.train's questions against `test_sets`; with mode "drop", remove the flagged rows
    from corpus.train (counted in corpus.dropped as "contaminated"). Raises DataError when dropping
    leaves nothing to train on."""
    report = check_overlap([r["question"] for r in corpus.train], test_sets)
    flagged = report.flagged
    if mode == "drop" and flagged:
        if len(flagged) == len(corpus.train):
            raise DataError(f"all {len(flagged)} training rows overlap the contamination sets; nothing is left to "
                            "train on (decontaminate: drop)", path=corpus.source, field="decontaminate")
        corpus.train = [r for i, r in enumerate(corpus.train) if i not in flagged]
        corpus.dropped["contaminated"] += len(flagged)
    return report


# Unlabeled target files may hold nothing but questions; no preset detects that (they all need an
# answer or output column), so these question-only columns are tried after the presets.
QUESTION_ONLY_COLUMNS = ("question", "instruction", "input")


def load_target_questions(path: str | Path, mapping: MappingSpec | None = None) -> list[str]:
    """PRADA's unlabeled target-domain questions (any readable file; only the question is used).

    With no mapping, the columns are detected as for a corpus; a file whose rows have only a
    question column (QUESTION_ONLY_COLUMNS) is read as questions alone.
    """
    field_mapping = (mapping or MappingSpec()).field_mapping()
    if field_mapping is None:
        columns = next((r.keys() for r in read_rows(path) if isinstance(r, dict)), ())
        try:
            detect_mapping(columns)
        except DataError:
            question = next((c for c in QUESTION_ONLY_COLUMNS if c in columns), None)
            if question is None:
                raise
            field_mapping = FieldMapping(question=question)
    result = read_questions(path, field_mapping, on_bad="collect")
    questions = [r["question"] for r in result.records]
    if not questions:
        raise DataError("no target-domain questions", path=path, field="target_questions")
    return questions


__all__ = ["Corpus", "contamination_questions", "decontaminate", "load_corpus", "load_target_questions",
           "read_training_rows"]
