"""Token-level KD data: the teacher's top-k log-probabilities at the student's training targets.

Annotation with `logprobs: k` stores, per corpus row, the tokens the teacher generated and its top-k
at each (ray_cotd.data.logprobs). The student trains on other ids: the corpus rationale is parsed
text (the trace split off, the answer line cut, edge tags stripped), re-tokenized by segments
(collate.segments: rationale | marker | value | EOS). A teacher step's distribution is a KD target
for a student target only where both are the same token at the same place in the text, so the two
are aligned by token ids:

1. `align_segment` matches a segment's ids against the teacher's (difflib's matching blocks,
   autojunk off). The longest run of equal ids is the anchor; runs on either side of it are kept,
   outward, while the stretch skipped between two runs has about the same number of tokens on both
   sides (GAP_SLACK): a re-tokenized boundary (".\\n" as one teacher token, "." + "\\n" in two
   student segments) or a non-canonical token the teacher sampled is skipped, and a stray equal
   token elsewhere in the reply (the trace, a restatement) never is. An anchor shorter than
   MIN_ANCHOR tokens (or the whole segment) aligns nothing.
2. `align_row` aligns the rationale, then marker + value + EOS in the teacher's tokens after the
   rationale's last aligned one (the answer line the answer was read from, not an earlier
   "the answer is" in the trace).
3. `attach_teacher_targets` gives each layout sequence a TeacherTopK at its target positions whose
   target is a segment token aligned with a teacher token. Not aligned, counted (EncodeStats
   kd_unaligned_tokens) and trained without KD: segment tokens the teacher's ids do not reproduce,
   and targets that are not the next input token (CasCoD's end-of-rationale EOS, where the teacher
   went on to the answer line).

`load_teacher_topk` reads the records for training: a record that disagrees with itself is a
counted `logprobs_mismatch` rejection; no record at all under kd_weight > 0, or a record made with
another vocabulary than the student's, is a clear error before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from ray_cotd.config import ConfigError
from ray_cotd.data.errors import DataError
from ray_cotd.data.logprobs import MISMATCH, LogprobFailure, TopK, read_topk, vocab_fingerprint
from ray_cotd.student.collate import IGNORE, ROLE_NONE, Segments, Sequence, TeacherTopK

MIN_ANCHOR = 3  # tokens of the longest equal run, at least (or the whole segment when shorter)
GAP_SLACK = 4  # how many more tokens one side of a skipped stretch may have than the other


def align_segment(segment: list[int], teacher: list[int], start: int = 0) -> dict[int, int]:
    """Index in `segment` -> index in `teacher` for the segment's tokens the teacher generated at the
    same place in the text, searched in teacher[start:] (see the module docstring)."""
    if not segment or start >= len(teacher):
        return {}
    matcher = SequenceMatcher(None, segment, teacher[start:], autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if not blocks:
        return {}
    anchor = max(range(len(blocks)), key=lambda i: blocks[i].size)
    if blocks[anchor].size < min(MIN_ANCHOR, len(segment)):
        return {}
    kept = [blocks[anchor]]
    for step in (1, -1):  # outward from the anchor, right then left, while the skipped stretches agree
        near, i = blocks[anchor], anchor + step
        while 0 <= i < len(blocks):
            left, right = (near, blocks[i]) if step == 1 else (blocks[i], near)
            skipped_segment = right.a - (left.a + left.size)
            skipped_teacher = right.b - (left.b + left.size)
            if abs(skipped_segment - skipped_teacher) > GAP_SLACK:
                break
            kept.append(blocks[i])
            near, i = blocks[i], i + step
    return {b.a + d: start + b.b + d for b in kept for d in range(b.size)}


@dataclass(frozen=True)
class RowAlignment:
    """A row's segments against the teacher's tokens. rationale: rationale index -> teacher index;
    answer: index in marker + value + [EOS] -> teacher index."""

    rationale: dict[int, int]
    answer: dict[int, int]


def align_row(seg: Segments, teacher: list[int]) -> RowAlignment:
    rationale = align_segment(seg.rationale, teacher)
    start = max(rationale.values()) + 1 if rationale else 0
    return RowAlignment(rationale, align_segment(seg.marker + seg.value + [seg.eos], teacher, start))


def _teacher_steps(continuation: list[int], seg: Segments, alignment: RowAlignment) -> list[int | None]:
    """The teacher index of every token after a sequence's prompt, or None. Every layout continues
    its prompt with a prefix of the rationale and then marker + value + EOS (cascod, std_cot, prada,
    answer_only, step_by_step's label task), or with a prefix of the rationale alone, possibly
    ended by an EOS (step_by_step's rationale task); anything else is not aligned."""
    answer = seg.marker + seg.value + [seg.eos]
    head = len(continuation) - len(answer)
    if head >= 0 and continuation[head:] == answer and continuation[:head] == seg.rationale[:head]:
        return [alignment.rationale.get(i) for i in range(head)] + [alignment.answer.get(i) for i in range(len(answer))]
    n = len(continuation)
    if continuation == seg.rationale[:n]:
        return [alignment.rationale.get(i) for i in range(n)]
    if n and continuation[:-1] == seg.rationale[: n - 1]:  # the rationale, then its own end (EOS)
        return [alignment.rationale.get(i) for i in range(n - 1)] + [None]
    return [None] * n


def attach_teacher_targets(sequences: list[Sequence], seg: Segments, record: TopK) -> tuple[int, int]:
    """Set `kd` on each of one row's sequences: the teacher's top-k at its target positions that line
    up with a teacher token. Returns (aligned, unaligned) target positions."""
    teacher = record.tokens.tolist()
    alignment = align_row(seg, teacher)
    aligned = unaligned = 0
    for s in sequences:
        steps = _teacher_steps(s.input_ids[s.question_len:], seg, alignment)
        positions, rows = [], []
        for t in range(s.question_len - 1, len(s) - 1):
            if s.targets[t] == IGNORE or s.roles[t] == ROLE_NONE:
                continue
            j = steps[t + 1 - s.question_len] if s.targets[t] == s.input_ids[t + 1] else None
            if j is None:
                unaligned += 1
            else:
                positions.append(t)
                rows.append(j)
        aligned += len(positions)
        s.kd = TeacherTopK(positions, record.ids[rows], record.logprobs[rows]) if positions else None
    return aligned, unaligned


def load_teacher_topk(rows: list[dict[str, Any]], tokenizer: Any, *, corpus: str,
                      student: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(rows with a usable record in row["topk"] and rows without one, the rejected rows as bad rows,
    a report) for training with kd_weight > 0.

    A record whose arrays disagree (read_topk) is rejected as logprobs_mismatch. Every record is cut
    to the smallest k among them (entries are stored best first). Raises DataError when no row has
    a record, ConfigError when a record was made with another vocabulary than the student's.
    """
    kept, bad = [], []
    with_record = without = 0
    ks: set[int] = set()
    vocabs: set[str] = set()
    for r in rows:
        record = read_topk(r)
        if isinstance(record, LogprobFailure):
            bad.append({"path": r.get("source"), "row": r.get("row"), "field": "topk_logprobs", "reason": MISMATCH,
                        "detail": record.detail})
            continue
        if record is None:
            without += 1
        else:
            with_record += 1
            ks.add(record.k)
            vocabs.add(record.vocab)
        kept.append({**r, "topk": record})
    if not with_record:
        raise DataError(f"kd_weight: the corpus has no teacher log-probabilities ({without} rows without, "
                        f"{len(bad)} unreadable); annotate with engine: vllm and logprobs: k to record them",
                        path=corpus, field="kd_weight")
    student_vocab = vocab_fingerprint(tokenizer)
    other = sorted(vocabs - {student_vocab})
    if other:
        raise ConfigError(f"kd_weight: the teacher log-probabilities in {corpus} were recorded with another "
                          f"vocabulary than the student {student}'s (teacher {', '.join(other) or 'unknown'}, "
                          f"student {student_vocab}; <tokens>:<sha256>): token-level KD needs the teacher's tokenizer")
    k = min(ks)
    for r in kept:
        if r["topk"] is not None and r["topk"].k > k:
            r["topk"] = r["topk"].first(k)
    report = {"k": k, "rows_with_logprobs": with_record, "rows_without_logprobs": without,
              MISMATCH: len(bad), "vocab": student_vocab}
    return kept, bad, report


__all__ = [
    "GAP_SLACK",
    "MIN_ANCHOR",
    "RowAlignment",
    "align_row",
    "align_segment",
    "attach_teacher_targets",
    "load_teacher_topk",
]
