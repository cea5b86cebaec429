"""`ray-cotd annotate`: questions -> teacher rationales -> a checked, resumable Parquet corpus.

    read questions (bad rows set aside) -> plan work rows (question x level x format x sample)
      -> drop rows already committed -> Ray Data: engine stage (engines.generate_stage)
      -> driver: judge each reply (trace apart, parse, dedup, check against gold) -> commit the batch

Reasoning teachers: a reply's trace (<think>...</think> text, or an HTTP reasoning field) is split
from its final text (ray_cotd.data.reasoning); both go into the row (`trace`, `final_text`), the
answer is read from the final text, and `rationale_source` (final | trace | both) says what the
rationale is. With `logprobs: k` (vLLM) each kept row also holds the teacher's top-k
log-probabilities per generated token (ray_cotd.data.logprobs).

Output directory:
    corpus/part-*.parquet   kept rows, AnnotatedRecord columns (the annotated corpus)
    aside/part-*.parquet    wrong-answer rows when wrong="aside" (same columns)
    ledger/part-*.jsonl     one line per processed row and outcome: the commit record
    rejected.jsonl          every row not in the corpus, with its reason (rebuilt at the end)
    stats.json              counts, accuracy, tokens, wall time, tokens/s
    resolved_config.yaml    the config that ran

Resuming. Every work row has a key, `id` = stable_id(annotated_id(question id, teacher, level,
format, template version, sample index), sampling JSON[, "rationale_source=<s>" unless final]), so
changing the template wording, the answer type (its answer shape is part of the template version),
the teacher, any sampling setting (chat_template_kwargs and logprobs are in the sampling JSON when
set) or the rationale source gives new keys and new rows. A batch is committed by writing its
Parquet part(s) and then its ledger part, each to a temp file renamed into place; the ledger part
is the commit point. On start, parts without a ledger part (a run killed between the renames) are
deleted, and every key in the ledger is skipped, except rows that failed for a transient reason
(HTTP timeout / engine error), which are retried. Ray Data runs with preserve_order, so the rows
reach the driver in plan order: a killed run has committed a prefix of the plan, duplicate
detection ("keep the lowest sample index") sees the same order, and a resumed run ends with
exactly the rows of a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from ray_cotd import dirlock
from ray_cotd.config import AnnotateConfig, ConfigError, load_stage_config, save_resolved
from ray_cotd.console import progress_bar, ray_data_bars_on_a_terminal_only
from ray_cotd.data.answers import ParsedOutput, ParseFailure, infer_answer_type, split_output
from ray_cotd.data.choices import option_label, parse_choices
from ray_cotd.data.logprobs import LogprobFailure, TopK, vocab_difference
from ray_cotd.data.reasoning import TraceFailure, prompt_opens_trace, split_reasoning
from ray_cotd.data.readers import read_questions
from ray_cotd.data.schema import ANNOTATED_COLUMNS, AnnotatedRecord, annotated_id, stable_id
from ray_cotd.data.splits import holdout_split
from ray_cotd.lm.format import encode, render_chat
from ray_cotd.lm.model import check_model, context_length, load_tokenizer, resolve_source
from ray_cotd.ray_session import connect
from ray_cotd.scoring import score
from ray_cotd.teacher.engines import (
    OUTPUT_COLUMNS,
    REQUEST_COLUMNS,
    OpenAITeacher,
    engine_rows,
    generate_stage,
    teacher_name,
    vllm_stage_resources,
)
from ray_cotd.teacher.prompts import check_choices, get_template

# Why a row is not in the corpus. Parse failures use the data layer's reasons unchanged; unreadable
# question rows keep the reader's reasons (readers.BAD_ROW_REASONS).
REJECT_REASONS: dict[str, str] = {
    "duplicate_question": "the same question id appeared earlier in the input",
    "empty_reply": "the teacher returned no text",
    "truncated": "the reply hit max_new_tokens and is cut off",
    "no_marker": "no 'The answer is X' line in the reply",
    "empty_answer": "the answer line has nothing readable after the marker",
    "unreadable_answer": "the text after the marker is not of the answer type",
    "empty_rationale": "the reply is only an answer line, without reasoning",
    "truncated_trace": "the reasoning trace never closes (<think> without </think>, or a reasoning field and no "
                       "final text): the reply was cut off, or ended, inside it",
    "multiple_traces": "more than one reasoning trace (two <think> blocks, a stray tag, or a reasoning field "
                       "beside a tag in the text)",
    "no_trace": "rationale_source is trace or both, and the reply has no reasoning trace",
    "logprobs_mismatch": "the teacher's logprob record does not match its generated tokens",
    "not_text": "the reply is not text",
    "empty": "the reply is whitespace only",
    "duplicate_rationale": "the same rationale as a lower sample index of this question",
    "wrong_answer": "the parsed answer disagrees with the gold answer",
    "prompt_too_long": "the rendered prompt plus max_new_tokens does not fit the engine's context (in tokens)",
    "timeout": "the HTTP engine did not answer within timeout_s, after every retry",
    "engine_error": "the engine failed (HTTP 429/5xx or connection errors after every retry)",
    "request_refused": "the HTTP endpoint refused this request (HTTP 400/413/422, e.g. a prompt over its context); "
                       "not retried",
}
# Failures a re-run should try again instead of skipping as done.
TRANSIENT_REASONS = frozenset({"timeout", "engine_error"})
FINISH_TO_REASON = {"timeout": "timeout", "error": "engine_error", "refused": "request_refused", "length": "truncated"}
# The engine failed to answer at all: the row is rejected with the engine's own detail, before any parsing.
ENGINE_REASONS = TRANSIENT_REASONS | {"request_refused"}

Outcome = Literal["kept", "aside", "rejected"]


class NothingKept(RuntimeError):
    """An annotation whose corpus is empty: every row rejected (a mapping to a column the file lacks,
    a teacher that never answers, ...). The message is the rejection summary; `stats` is stats.json."""

    def __init__(self, message: str, stats: dict[str, Any]) -> None:
        super().__init__(message)
        self.stats = stats


def arrow_schema() -> Any:
    """One explicit schema for every corpus part: a part whose golds are all None still has string golds."""
    import pyarrow as pa

    types = {
        "id": pa.string(), "question_id": pa.string(), "question": pa.string(), "rationale": pa.string(),
        "answer": pa.string(), "gold": pa.string(), "correct": pa.bool_(), "domain": pa.string(),
        "teacher": pa.string(), "level": pa.int64(), "format": pa.string(), "template_version": pa.string(),
        "sample_index": pa.int64(), "sampling": pa.string(), "prompt_tokens": pa.int64(),
        "completion_tokens": pa.int64(), "source": pa.string(),
        "trace": pa.string(), "final_text": pa.string(), "rationale_source": pa.string(),
        "teacher_tokens": pa.binary(), "topk_ids": pa.binary(), "topk_logprobs": pa.binary(),
        "topk_k": pa.int64(), "teacher_vocab": pa.string(),
    }
    return pa.schema([(name, types[name]) for name in ANNOTATED_COLUMNS])


# --------------------------------------------------------------------------- plan


SAMPLING_REQUEST_KEYS = ("temperature", "top_p", "seed", "max_new_tokens")


def sampling_of(cfg: AnnotateConfig, sample_index: int) -> dict[str, Any]:
    """The generation settings of one sample; part of its row key. chat_template_kwargs and logprobs
    appear only when set, so rows planned before they existed keep their keys."""
    sampling: dict[str, Any] = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "seed": cfg.seed + sample_index,
        "max_new_tokens": cfg.max_new_tokens,
    }
    if cfg.chat_template_kwargs:
        sampling["chat_template_kwargs"] = cfg.chat_template_kwargs
    if cfg.logprobs is not None:
        sampling["logprobs"] = cfg.logprobs
    return sampling


def plan_work(records: list[dict[str, Any]], cfg: AnnotateConfig, teacher: str, answer_type: str) -> list[dict[str, Any]]:
    """Work rows in plan order: question, then level, format, sample (a question's samples adjacent)."""
    rows = []
    # the same reply gives another row under another rationale source (final keeps the old keys)
    source_part = () if cfg.rationale_source == "final" else (f"rationale_source={cfg.rationale_source}",)
    for record in records:
        for level in cfg.levels:
            for fmt in cfg.formats:
                template = get_template(level, fmt)
                version = template.version(answer_type)  # the answer shape asked for is part of it
                messages = json.dumps(template.messages(record["question"], answer_type))
                for i in range(cfg.n_samples):
                    sampling = sampling_of(cfg, i)
                    sampling_json = json.dumps(sampling, sort_keys=True)
                    key = annotated_id(record["id"], teacher, level, fmt, version, i)
                    rows.append({
                        "id": stable_id(key, sampling_json, *source_part),
                        "question_id": record["id"],
                        "question": record["question"],
                        "gold": record["gold"],
                        "accepted": record.get("accepted") or [],  # every right answer, when several
                        "domain": cfg.domain or record["domain"],
                        "source": record["source"],
                        "teacher": teacher,
                        "level": level,
                        "format": fmt,
                        "template_version": version,
                        "sample_index": i,
                        "sampling": sampling_json,
                        "messages": messages,
                        **{k: sampling[k] for k in SAMPLING_REQUEST_KEYS},
                    })
    return rows


# --------------------------------------------------------------------------- judge


def option_answer(text: str, question: str, require_rationale: bool) -> ParsedOutput | None:
    """A multiple-choice reply whose answer is an option's text ("The answer is populated areas")
    read as that option's label, as scoring reads a student's (ray_cotd.scoring.score); else None."""
    as_text = split_output(text, answer_type="text", require_rationale=require_rationale)
    if not isinstance(as_text, ParsedOutput):
        return None
    label = option_label(as_text.answer, parse_choices(question))
    return ParsedOutput(as_text.rationale, label, as_text.marker) if label is not None else None


@dataclass
class Verdict:
    """What happens to one generated row. `rationale_key` is set once a rationale was parsed."""

    outcome: Outcome
    reason: str | None
    detail: str = ""
    record: AnnotatedRecord | None = None
    rationale_key: str | None = None


def rationale_key(row: dict[str, Any], rationale: str) -> str:
    """Duplicate-detection key: the same rationale text for the same question/teacher/level/format/template."""
    group = (row["question_id"], row["teacher"], str(row["level"]), row["format"], row["template_version"])
    return hashlib.sha256("\x1f".join([*group, rationale]).encode("utf-8")).hexdigest()[:16]


# What becomes the rationale (AnnotateConfig.rationale_source), from the trace and the rationale
# part of the final text (before its answer line). trace and both need a trace (else no_trace).
RATIONALE_SOURCES: dict[str, Callable[[str | None, str], str]] = {
    "final": lambda trace, final: final,
    "trace": lambda trace, final: trace or "",
    "both": lambda trace, final: "\n\n".join(part for part in (trace, final) if part),
}


def judge(row: dict[str, Any], answer_type: str, wrong: str, seen: set[str], *,
          rationale_source: str = "final") -> Verdict:
    """Split off a reasoning trace, parse, dedup and check one generated row. Adds a new
    rationale's key to `seen`. The answer is read from the final text (after any trace)."""
    text = row["generated_text"] or ""
    reasoning = row.get("reasoning")
    reason = FINISH_TO_REASON.get(row["finish_reason"])
    if reason in ENGINE_REASONS:
        return Verdict("rejected", reason, row.get("error") or "")
    if not text.strip() and not (reasoning or "").strip():
        return Verdict("rejected", "empty_reply")
    split = split_reasoning(text, reasoning, opened=bool(row.get("prompt_opens_trace")))
    if isinstance(split, TraceFailure):
        cut = f" (cut off at {row['completion_tokens']} tokens)" if reason == "truncated" else ""
        return Verdict("rejected", split.reason, split.detail + cut)
    if reason == "truncated":
        return Verdict("rejected", "truncated", f"{row['completion_tokens']} tokens")
    if rationale_source != "final" and split.trace is None:
        return Verdict("rejected", "no_trace", f"rationale_source {rationale_source} reads the reasoning trace")
    if not split.final:
        return Verdict("rejected", "empty_reply", "nothing after the reasoning trace")
    parsed = split_output(split.final, answer_type=answer_type, require_rationale=rationale_source == "final")
    if isinstance(parsed, ParseFailure) and parsed.reason == "unreadable_answer" and answer_type == "multiple_choice":
        parsed = option_answer(split.final, row["question"], rationale_source == "final") or parsed
    if isinstance(parsed, ParseFailure):
        return Verdict("rejected", parsed.reason, parsed.detail)
    topk = row.get("topk")
    if isinstance(topk, LogprobFailure):
        return Verdict("rejected", topk.reason, topk.detail)
    rationale = RATIONALE_SOURCES[rationale_source](split.trace, parsed.rationale)
    key = rationale_key(row, rationale)
    if key in seen:
        return Verdict("rejected", "duplicate_rationale", rationale_key=key)
    seen.add(key)
    correct = (score(parsed.answer, row["gold"], answer_type, question=row["question"],
                     accepted=row.get("accepted") or ())["correct"] if row["gold"] is not None else None)
    record = AnnotatedRecord(
        id=row["id"], question_id=row["question_id"], question=row["question"], rationale=rationale,
        answer=parsed.answer, gold=row["gold"], correct=correct, domain=row["domain"], teacher=row["teacher"],
        level=int(row["level"]), format=row["format"], template_version=row["template_version"],
        sample_index=int(row["sample_index"]), sampling=json.loads(row["sampling"]),
        prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"], source=row["source"],
        trace=split.trace, final_text=split.final, rationale_source=rationale_source,
        **(topk.columns() if isinstance(topk, TopK) else {}),
    )
    if correct is False and wrong != "keep":
        outcome: Outcome = "aside" if wrong == "aside" else "rejected"
        return Verdict(outcome, "wrong_answer", f"answer {parsed.answer!r}, gold {row['gold']!r}", record, key)
    return Verdict("kept", None, record=record, rationale_key=key)


# --------------------------------------------------------------------------- the shard store


def _atomic_write(path: Path, write: Any) -> None:
    """write(tmp_path), then rename onto `path`: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class ShardStore:
    """Corpus/aside Parquet parts and the ledger that commits them (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.corpus, self.aside, self.ledger = root / "corpus", root / "aside", root / "ledger"
        for d in (self.corpus, self.aside, self.ledger):
            d.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}  # id -> its latest ledger entry (final outcomes win)
        self.seq = 0
        self.recovered_orphans = self._recover()

    def _recover(self) -> int:
        for tmp in [*self.corpus.glob("*.tmp"), *self.aside.glob("*.tmp"), *self.ledger.glob("*.tmp")]:
            tmp.unlink()
        committed = {p.stem for p in self.ledger.glob("part-*.jsonl")}
        orphans = [p for d in (self.corpus, self.aside) for p in d.glob("part-*.parquet") if p.stem not in committed]
        for part in orphans:
            part.unlink()
        for part in sorted(self.ledger.glob("part-*.jsonl")):
            self.seq = max(self.seq, int(part.stem.split("-")[1]))
            for line in part.read_text(encoding="utf-8").splitlines():
                self._remember(json.loads(line))
        return len(orphans)

    def _remember(self, entry: dict[str, Any]) -> None:
        old = self.entries.get(entry["id"])
        if old is None or old["reason"] in TRANSIENT_REASONS:
            self.entries[entry["id"]] = entry

    @property
    def done(self) -> set[str]:
        return {i for i, e in self.entries.items() if e["reason"] not in TRANSIENT_REASONS}

    @property
    def seen(self) -> set[str]:
        return {e["rationale_key"] for e in self.entries.values() if e["rationale_key"]}

    def commit(self, rows: list[dict[str, Any]], verdicts: list[Verdict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.seq += 1
        name = f"part-{self.seq:06d}-{uuid.uuid4().hex[:8]}"
        for outcome, folder in (("kept", self.corpus), ("aside", self.aside)):
            records = [v.record.to_dict() for v in verdicts if v.outcome == outcome and v.record is not None]
            if records:
                table = pa.Table.from_pylist(records, schema=arrow_schema())
                _atomic_write(folder / f"{name}.parquet", lambda tmp, t=table: pq.write_table(t, tmp))
        entries = [self._entry(row, v) for row, v in zip(rows, verdicts)]
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        _atomic_write(self.ledger / f"{name}.jsonl", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        for entry in entries:
            self._remember(entry)

    def _entry(self, row: dict[str, Any], v: Verdict) -> dict[str, Any]:
        return {
            "id": row["id"], "outcome": v.outcome, "reason": v.reason, "detail": v.detail,
            "question_id": row["question_id"], "question": row["question"], "gold": row["gold"],
            "teacher": row["teacher"], "level": int(row["level"]), "format": row["format"],
            "template_version": row["template_version"], "sample_index": int(row["sample_index"]),
            "sampling": row["sampling"], "correct": v.record.correct if v.record is not None else None,
            "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
            "rationale_key": v.rationale_key,
            # the raw reply of a row that is not kept, so rejected.jsonl shows what went wrong
            "reply": None if v.outcome == "kept" else row["generated_text"],
            "reasoning": None if v.outcome == "kept" else row.get("reasoning"),
            "seq": self.seq,
        }

    def write_rejected(self, path: Path, bad_questions: list[dict[str, Any]]) -> int:
        """rejected.jsonl: unreadable question rows, then every non-kept row in commit order."""
        rows = bad_questions + sorted(
            (e for e in self.entries.values() if e["outcome"] != "kept"), key=lambda e: (e["seq"], e["id"])
        )
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return len(rows)


# --------------------------------------------------------------------------- the run


def _outputs(row: dict[str, Any]) -> dict[str, Any]:
    """The engine's output columns of one row (and the vLLM engine's `topk` record when asked for);
    a token count that is missing (None/NaN) becomes None, and so does a reasoning field that is not
    text (an all-None column comes back from numpy batches as NaN)."""
    out = {k: row[k] for k in OUTPUT_COLUMNS}
    for k in ("prompt_tokens", "completion_tokens"):
        out[k] = int(out[k]) if isinstance(out[k], (int, float)) and out[k] == out[k] else None
    out["reasoning"] = out["reasoning"] if isinstance(out["reasoning"], str) else None
    if "topk" in row:
        out["topk"] = row["topk"]
    return out


def unique_questions(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(first record of every question id, rejected rows for the repeats).

    A question listed twice would plan the same row keys twice and write duplicate rows.
    """
    first: dict[str, dict[str, Any]] = {}
    repeats = []
    for record in records:
        if record["id"] in first:
            repeats.append({"outcome": "rejected", "reason": "duplicate_question", "source": record["source"],
                            "row": record["row"], "field": "question",
                            "raw": f"same question as row {first[record['id']]['row']}"})
        else:
            first[record["id"]] = record
    return list(first.values()), repeats


def _bad_question(bad: Any) -> dict[str, Any]:
    return {"outcome": "rejected", "reason": bad.reason, "source": bad.path, "row": bad.row, "field": bad.field,
            "raw": bad.raw}


def summarize(store: ShardStore, *, questions_in: int, bad_questions: list[dict[str, Any]], planned: int,
              skipped: int, generated: int, gen_tokens: int, gen_seconds: float, wall: float, answer_type: str,
              orphans: int) -> dict[str, Any]:
    """stats.json: totals over every run into this directory, plus what this run did."""
    entries = [store.entries[k] for k in sorted(store.entries)]
    by_reason = Counter(e["reason"] for e in entries if e["outcome"] != "kept")
    by_reason.update(b["reason"] for b in bad_questions)
    checked = [e["correct"] for e in entries if e["correct"] is not None]
    with_gold = [e for e in entries if e["gold"] is not None]
    return {
        "questions_in": questions_in,
        "bad_questions": len(bad_questions),
        "rows_in": planned,
        "rows_done": len(entries),
        "kept": sum(e["outcome"] == "kept" for e in entries),
        "written_aside": sum(e["outcome"] == "aside" for e in entries),
        "dropped_by_reason": dict(sorted(by_reason.items())),
        "answer_type": answer_type,
        # accuracy: share of parsed answers that match gold; of_generated counts unparsed as wrong
        "accuracy": sum(checked) / len(checked) if checked else None,
        "accuracy_of_generated": sum(e["correct"] is True for e in with_gold) / len(with_gold) if with_gold else None,
        "tokens": {
            "prompt": sum(e["prompt_tokens"] or 0 for e in entries),
            "completion": sum(e["completion_tokens"] or 0 for e in entries),
        },
        "this_run": {
            "rows_skipped_as_done": skipped,
            "rows_generated": generated,
            "orphan_parts_removed": orphans,
            "completion_tokens": gen_tokens,
            "generate_seconds": round(gen_seconds, 3),
            "tokens_per_s": gen_tokens / gen_seconds if gen_seconds > 0 else None,
            "wall_time_s": round(wall, 3),
        },
    }


def fit_prompts(work: list[dict[str, Any]], cfg: AnnotateConfig) -> list[dict[str, Any]]:
    """Count every row's prompt in tokens (the teacher's chat rendering, with chat_template_kwargs)
    and set `prompt_ids` and `prompt_opens_trace` (the template ended inside a <think> trace, so the
    reply starts in it); return the rows whose prompt + max_new_tokens exceeds the engine's context,
    which are rejected as "prompt_too_long" without reaching the engine. The HTTP engine's context
    and prompt are the server's business: nothing is counted or dropped here for it.
    """
    if cfg.engine == "openai":
        return []
    limit = context_length(cfg.teacher, cfg.vllm.max_model_len if cfg.engine == "vllm" else None)
    tokenizer = load_tokenizer(cfg.teacher)
    rendered: dict[str, tuple[list[int], bool]] = {}
    too_long = []
    for row in work:
        if row["messages"] not in rendered:  # the samples of a question share one prompt
            prompt = render_chat(tokenizer, json.loads(row["messages"]), cfg.chat_template_kwargs)
            rendered[row["messages"]] = (encode(tokenizer, prompt), prompt_opens_trace(prompt))
        row["prompt_ids"], row["prompt_opens_trace"] = rendered[row["messages"]]
        if limit is not None and len(row["prompt_ids"]) + cfg.max_new_tokens > limit:
            too_long.append(row)
    return too_long


def check_placement(cfg: AnnotateConfig, available: dict[str, float]) -> None:
    """The engine stage fits the Ray cluster it runs on, or a ConfigError before any work starts.

    Ray would otherwise wait forever for actors that cannot be placed.
    """
    if cfg.engine == "vllm":
        need = vllm_stage_resources(cfg)
        layout = (f"{cfg.num_workers} replica(s) x {cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size}"
                  " bundle(s)")
    else:
        need = {"CPU": cfg.num_workers * cfg.cpus_per_worker, "GPU": cfg.num_workers * cfg.gpus_per_worker}
        layout = f"{cfg.num_workers} actor(s)"
    for resource, amount in need.items():
        if amount > available.get(resource, 0.0) + 1e-9:
            raise ConfigError(
                f"num_workers / cpus_per_worker / gpus_per_worker: the {cfg.engine} engine needs {amount:g} {resource} "
                f"({layout}), but the Ray cluster has {available.get(resource, 0.0):g}; lower num_workers or the "
                "per-worker resources, or use a larger cluster")


def rejection_summary(stats: dict[str, Any], out: Path) -> str:
    """One line: how many rows were kept out of how many, and why the others were not."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats["dropped_by_reason"].items(),
                                                                  key=lambda item: -item[1]))
    return (f"{stats['kept']} rows kept of {stats['rows_in']} planned from {stats['questions_in']} question rows "
            f"({stats['bad_questions']} unusable); not kept: {reasons or 'none'} "
            f"(every row with its reason: {out / 'rejected.jsonl'})")


def run_annotate(cfg: AnnotateConfig) -> dict[str, Any]:
    """Annotate `cfg.questions` into `cfg.output_dir`; returns the stats also written to stats.json.

    The output directory is locked while this runs (ray_cotd.dirlock: a second run into it is
    refused, naming the holder). A run that ends with nothing in the corpus raises NothingKept with
    the rejection summary, after writing stats.json and rejected.jsonl.
    """
    with dirlock.hold(cfg.output_dir, "annotate"):
        stats = _annotate(cfg)
    if stats["kept"] == 0:
        raise NothingKept("annotate kept nothing: " + rejection_summary(stats, Path(cfg.output_dir)), stats)
    return stats


def _annotate(cfg: AnnotateConfig) -> dict[str, Any]:
    started = time.perf_counter()
    check_choices(cfg.levels, cfg.formats)  # a bad level/format fails before any work starts
    if cfg.engine != "openai":  # a teacher path that is not a model: one ModelLoadError line, before Ray starts
        check_model(cfg.teacher)
    if cfg.logprobs_for is not None:  # token-level KD reads the teacher's ids as the student's: one vocabulary
        check_model(cfg.logprobs_for)
        difference = vocab_difference(load_tokenizer(cfg.teacher), load_tokenizer(cfg.logprobs_for))
        if difference is not None:
            raise ConfigError(f"logprobs_for: the teacher {cfg.teacher.source} and the student {cfg.logprobs_for.source} "
                              f"do not share a tokenizer ({difference}); token-level KD needs one vocabulary")
    out = Path(cfg.output_dir)
    save_resolved(cfg, out)

    read = read_questions(cfg.questions, cfg.mapping.field_mapping(), domain=cfg.domain, on_bad="collect")
    records = read.records
    held_out = 0
    if cfg.holdout == "train":  # the test side of the split train and evaluate use is never annotated
        records, test_side = holdout_split(records, test_fraction=cfg.holdout_fraction, seed=cfg.split_seed)
        held_out = len(test_side)
    records = records[: cfg.limit] if cfg.limit is not None else records
    bad_questions = [_bad_question(b) for b in read.bad]
    records, repeated = unique_questions(records)
    bad_questions += repeated
    answer_type = cfg.answer_type or infer_answer_type(r["gold"] for r in records)
    work = plan_work(records, cfg, teacher_name(cfg), answer_type)
    too_long = fit_prompts(work, cfg)
    if cfg.engine == "vllm":  # a vLLM engine that cannot start fails here, naming the setting
        from ray_cotd.lm.vllm import check_engine

        check_engine(resolve_source(cfg.teacher), cfg.vllm, dtype=cfg.teacher.dtype,
                     trust_remote_code=cfg.teacher.trust_remote_code)

    store = ShardStore(out)
    done = store.done
    too_long = [{**r, "prompt_tokens": len(r["prompt_ids"]), "completion_tokens": None, "generated_text": None}
                for r in too_long if r["id"] not in done]
    if too_long:  # rejected without reaching the engine, committed like any judged row
        store.commit(too_long, [Verdict("rejected", "prompt_too_long",
                                        f"prompt {r['prompt_tokens']} tokens + max_new_tokens {cfg.max_new_tokens}")
                                for r in too_long])
        done = store.done
    todo = [row for row in work if row["id"] not in done]
    if todo and cfg.engine == "openai":  # a wrong URL, model or key, or a server that is down: one line, before Ray
        OpenAITeacher(cfg.openai, chat_template_kwargs=cfg.chat_template_kwargs).check()
    generated = gen_tokens = kept = 0
    gen_started = time.perf_counter()
    if todo:
        import ray
        import ray.data

        connect()  # [ray] RAY_ADDRESS (ray job submit, a cluster) or a local cluster
        check_placement(cfg, ray.cluster_resources())  # [ray]
        context = ray.data.DataContext.get_current()
        previous_order = context.execution_options.preserve_order
        # Plan order on the driver is what makes dedup and resume deterministic (module doc).
        context.execution_options.preserve_order = True
        seen = store.seen
        progress = progress_bar(len(todo), "annotate", "row")
        with ray_data_bars_on_a_terminal_only():  # the bar above counts the rows
            try:
                # Only the request columns travel through Ray (an all-None column such as `domain`
                # would come back as float NaN from numpy batches); the driver joins the rest by id.
                by_id = {row["id"]: row for row in todo}
                shell = engine_rows(cfg)
                columns = REQUEST_COLUMNS + (("prompt_ids",) if cfg.engine == "vllm" else ())
                requests = [shell.request({k: row[k] for k in columns}) for row in todo]
                ds = generate_stage(ray.data.from_items(requests), cfg)
                for batch in ds.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow"):
                    rows = [{**by_id[result["id"]], **_outputs(shell.result(result))}
                            for result in batch.to_pylist()]
                    verdicts = [judge(row, answer_type, cfg.wrong, seen, rationale_source=cfg.rationale_source)
                                for row in rows]
                    store.commit(rows, verdicts)
                    generated += len(rows)
                    kept += sum(v.outcome == "kept" for v in verdicts)
                    gen_tokens += sum(r["completion_tokens"] or 0 for r in rows)
                    progress.update(len(rows))
                    progress.set_postfix(kept=kept,
                                         tok_s=round(gen_tokens / (time.perf_counter() - gen_started), 1))
            finally:
                progress.close()
                context.execution_options.preserve_order = previous_order
    gen_seconds = time.perf_counter() - gen_started if todo else 0.0

    store.write_rejected(out / "rejected.jsonl", bad_questions)
    stats = summarize(
        store, questions_in=len(read.records) + len(read.bad), bad_questions=bad_questions, planned=len(work),
        skipped=len(work) - len(todo) - len(too_long), generated=generated, gen_tokens=gen_tokens, gen_seconds=gen_seconds,
        wall=time.perf_counter() - started, answer_type=answer_type, orphans=store.recovered_orphans,
    )
    stats["held_out_questions"] = held_out  # the hold-out split's test side, not annotated (holdout: train)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def main(argv: list[str] | None = None) -> int:
    """`python -m ray_cotd.teacher.annotate CONFIG [key=value ...]` (the CLI calls run_annotate too)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(main.__doc__, file=sys.stderr)
        return 2
    stats = run_annotate(load_stage_config("annotate", args[0], args[1:]))
    print(json.dumps(stats, indent=2))
    return 0


__all__ = [
    "NothingKept",
    "RATIONALE_SOURCES",
    "REJECT_REASONS",
    "ShardStore",
    "TRANSIENT_REASONS",
    "Verdict",
    "arrow_schema",
    "check_placement",
    "fit_prompts",
    "judge",
    "plan_work",
    "rejection_summary",
    "run_annotate",
    "sampling_of",
    "summarize",
    "unique_questions",
]

if __name__ == "__main__":
    raise SystemExit(main())
