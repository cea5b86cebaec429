"""From (question, rationale, answer) rows to token ids, per-token targets and roles, and batches.

One student example is the segments of `ray_cotd.lm.format`, each tokenized on its own and
concatenated as ids (so any shorter sequence is an exact causal prefix of a longer one):

    [virtual tokens] prompt | rationale | marker | value | EOS

`marker` is the ids of STAGE2_PREFIX ("\\nThe answer is") and `value` the ids of " 145." — two
segments, because two-stage inference appends exactly the marker ids and lets the student continue.
The value keeps its leading space, so word answers tokenize naturally (" True" -> "ĠTrue").

A `Sequence` carries, for every position t, the token to predict there (`targets[t]`, IGNORE for
none) and that target's role (ROLE_RATIONALE, ROLE_ANSWER or ROLE_NONE). Objectives read masks
built from the roles; the layout of each objective (which sequences, which targets) lives in its
own file under `objectives/` and uses the builders here.

Batches are rows of ids with position ids that restart at 0 for every example. With no attention
mask, transformers (masking_utils.find_packed_sequence_indices) turns those restarts into a
block-diagonal causal mask, so packed examples never attend to each other; padding is a block of its
own at the end of a row, with no targets.

Token-level KD (TrainConfig.kd_weight): a Sequence may carry the teacher's top-k at some of its
target positions (`TeacherTopK`, set by ray_cotd/student/kd.py); collate gathers them into the
batch's kd_* tensors.
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

from ray_cotd.data.errors import DataError
from ray_cotd.lm.format import STAGE2_PREFIX, answer_value_text, encode, prompt_text

IGNORE = -100  # target of positions with no loss (torch cross_entropy's ignore_index)
ROLE_NONE, ROLE_RATIONALE, ROLE_ANSWER = 0, 1, 2

Batching = Literal["packed", "grouped", "padded"]
BATCHINGS: tuple[str, ...] = ("packed", "grouped", "padded")
# "grouped" sorts by length within windows of this many batches, then shuffles the batches.
GROUP_WINDOW_BATCHES = 32


@dataclass(frozen=True)
class Segments:
    """The token segments of one example (see module docstring); `rationale` may be empty.

    question_start: the index in `prompt` of the first token that depends on the question (see
    `question_start`); the prompt before it is the same for every question.
    """

    prompt: list[int]
    rationale: list[int]
    marker: list[int]
    value: list[int]
    eos: int
    question_start: int


@dataclass
class TeacherTopK:
    """The teacher's top-k at some target positions of one Sequence (token-level KD).

    positions: (n,) positions t whose target is the token the teacher generated there; ids: (n, k)
    int32 token ids, best first; logprobs: (n, k) float16 log-probabilities, as the corpus stores
    them (ray_cotd.data.logprobs). JSON form: base64 of the arrays (through Ray Data)."""

    positions: list[int]
    ids: np.ndarray
    logprobs: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {"positions": self.positions, "k": int(self.ids.shape[1]),
                "ids": base64.b64encode(self.ids.astype("<i4").tobytes()).decode("ascii"),
                "logprobs": base64.b64encode(self.logprobs.astype("<f2").tobytes()).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeacherTopK:
        shape = (len(data["positions"]), data["k"])
        return cls(list(data["positions"]),
                   np.frombuffer(base64.b64decode(data["ids"]), dtype="<i4").reshape(shape),
                   np.frombuffer(base64.b64decode(data["logprobs"]), dtype="<f2").reshape(shape))


@dataclass
class Sequence:
    """One training sequence.

    input_ids[t] is the token at position t; targets[t] the token the model is trained to predict
    at t (IGNORE: none); roles[t] the ROLE_* of that target. question_start, question_len:
    positions [question_start, question_len) hold the question and the rest of the prompt after it,
    what PRADA's domain classifier pools; the positions before question_start (the P-Tuning
    placeholders, the chat template's system turn and the user turn's opening) are the same in
    every row, and so, under causal attention, are their hidden states. n_virtual: leading
    P-Tuning placeholder positions whose embeddings the prompt encoder supplies. kd: the teacher's
    top-k at aligned target positions (token-level KD), or None.
    """

    input_ids: list[int]
    targets: list[int]
    roles: list[int]
    question_start: int
    question_len: int
    n_virtual: int = 0
    domain: int = 0  # 0 = labeled source row, 1 = unlabeled target-domain question (PRADA)
    kd: TeacherTopK | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodeStats:
    """What encoding did to the corpus: rows in, sequences out, and the counted actions."""

    rows: int = 0
    sequences: int = 0
    truncated_rationale: int = 0  # rows whose rationale was cut to fit max_seq_len
    truncated_tokens: int = 0  # rationale tokens removed in total
    dropped_too_long: int = 0  # rows whose prompt + answer alone exceed max_seq_len
    dropped_examples: list[str] = field(default_factory=list)  # ids of dropped rows (first 20)
    # token-level KD (student/kd.py): rows with a teacher record, target positions with the teacher's
    # top-k, and target positions whose token the teacher's ids do not reproduce (no KD there)
    kd_rows: int = 0
    kd_tokens: int = 0
    kd_unaligned_tokens: int = 0
    kd_rows_unaligned: int = 0  # rows with a record but no aligned target at all

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@lru_cache(maxsize=8)
def _marker_ids(tokenizer: Any) -> tuple[int, ...]:
    return tuple(encode(tokenizer, STAGE2_PREFIX))


@lru_cache(maxsize=32)
def _prompt_without_question(tokenizer: Any, task_prefix: str) -> tuple[int, ...]:
    return tuple(encode(tokenizer, prompt_text(tokenizer, task_prefix)))


def question_start(tokenizer: Any, prompt: list[int], *, task_prefix: str = "") -> int:
    """The index in `prompt` (the ids of prompt_text(tokenizer, task_prefix + question)) of the
    first token that depends on the question: where it first differs from the same prompt with no
    question. Every token before it is the chat template's (a system turn, the user turn's opening)
    or the task prefix's, identical for all questions; for a template-less tokenizer it is the
    question's first token ("Question: " before it)."""
    without = _prompt_without_question(tokenizer, task_prefix)
    return next((i for i, (a, b) in enumerate(zip(prompt, without)) if a != b), min(len(prompt), len(without)))


def segments(tokenizer: Any, question: str, rationale: str, answer: str, *, task_prefix: str = "") -> Segments:
    """Tokenize one row's segments. task_prefix is prepended to the question (step_by_step's tasks)."""
    if not answer.strip():
        raise DataError("empty answer", field="answer")
    prompt = encode(tokenizer, prompt_text(tokenizer, task_prefix + question))
    return Segments(
        prompt=prompt,
        rationale=encode(tokenizer, rationale.strip()) if rationale.strip() else [],
        marker=list(_marker_ids(tokenizer)),
        value=encode(tokenizer, answer_value_text(answer)),
        eos=tokenizer.eos_token_id,
        question_start=question_start(tokenizer, prompt, task_prefix=task_prefix),
    )


def build_sequence(parts: list[tuple[list[int], int]], *, prompt: list[int], question_start: int = 0,
                   n_virtual: int = 0, pad_id: int = 0, eos_at_end_of: int | None = None,
                   eos: int | None = None) -> Sequence:
    """A Sequence from the prompt and (ids, role) parts that follow it.

    question_start: where in `prompt` the question begins (Segments.question_start); 0 = all of it.

    Each part's tokens are targets of the position before them with the part's role (ROLE_NONE:
    input only). eos_at_end_of=k: the last position of part k is trained to predict `eos` (role of
    part k) instead of the real next token, which must then be an input-only part: CasCoD's
    end-of-rationale term, read from the same forward pass as the answer (see objectives/cascod.py).
    """
    ids = [pad_id] * n_virtual + list(prompt)
    targets = [IGNORE] * len(ids)
    roles = [ROLE_NONE] * len(ids)
    question_len = len(ids)
    eos_position = None
    for index, (part, role) in enumerate(parts):
        for token in part:
            targets[-1] = token if role != ROLE_NONE else IGNORE
            roles[-1] = role
            ids.append(token)
            targets.append(IGNORE)
            roles.append(ROLE_NONE)
        if index == eos_at_end_of:
            following = parts[index + 1][1] if index + 1 < len(parts) else ROLE_NONE
            if following != ROLE_NONE:
                raise ValueError("the end-of-part EOS target needs an input-only part after it")
            eos_position, eos_role = len(ids) - 1, role
    if eos_position is not None:  # set last: the input-only part after it wrote IGNORE there
        targets[eos_position], roles[eos_position] = eos, eos_role
    return Sequence(ids, targets, roles, n_virtual + question_start, question_len, n_virtual)


def fit_rationale(seg: Segments, budget: int, *, with_answer: bool = True, min_rationale: int = 0) -> tuple[Segments, int] | None:
    """Cut the rationale from its end so that prompt + rationale (+ marker + value) + EOS fits in
    `budget` tokens. Returns (segments, rationale tokens removed), or None when fewer than
    `min_rationale` rationale tokens would be left: the question and the answer are never cut.

    A cut rationale has no end: the layouts train nothing at its last position (no end-of-rationale
    EOS, no marker), which would teach the student to stop mid-sentence. The EOS slot stays counted
    in the budget either way.
    """
    fixed = len(seg.prompt) + 1 + (len(seg.marker) + len(seg.value) if with_answer else 0)
    room = budget - fixed
    if room < min_rationale:
        return None
    if len(seg.rationale) <= room:
        return seg, 0
    return replace(seg, rationale=seg.rationale[:room]), len(seg.rationale) - room


def prompt_sequence(tokenizer: Any, question: str, *, n_virtual: int = 0, domain: int = 1) -> Sequence:
    """A question-only sequence with no targets: PRADA's unlabeled target-domain rows."""
    ids = encode(tokenizer, prompt_text(tokenizer, question))
    seq = build_sequence([], prompt=ids, question_start=question_start(tokenizer, ids), n_virtual=n_virtual,
                         pad_id=tokenizer.pad_token_id)
    seq.domain = domain
    return seq


@dataclass
class Batch:
    """Collated tensors; R rows of T positions, E examples packed or padded into them.

    input_ids, position_ids, targets, roles, example_index, virtual_index, question_mask: (R, T).
    example_index[r, t]: which example (0..E-1) position t belongs to, -1 for padding.
    virtual_index[r, t]: k for the k-th P-Tuning placeholder of an example, -1 elsewhere.
    question_mask: the positions PRADA pools over: each example's [question_start, question_len).
    domain: (E,) 0 = source, 1 = target.
    kd_index: (N,) positions with the teacher's top-k, as flat indices into the R*T positions;
    kd_ids: (N, k) their teacher token ids; kd_logprobs: (N, k) the teacher's log-probabilities
    (float32). N = 0 without token-level KD.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    roles: torch.Tensor
    example_index: torch.Tensor
    virtual_index: torch.Tensor
    question_mask: torch.Tensor
    domain: torch.Tensor
    kd_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    kd_ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    kd_logprobs: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))

    @property
    def n_examples(self) -> int:
        return int(self.domain.numel())

    @property
    def real_tokens(self) -> int:
        return int((self.example_index >= 0).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})


def pack_rows(lengths: Seq[int], capacity: int) -> list[list[int]]:
    """Indices of sequences grouped into rows of at most `capacity` tokens, with the fewest
    computed tokens (rows x the widest row) that balanced packing finds.

    A batch is a rectangle, so what costs is rows x width, not the row count: packing 8 examples
    first-fit into rows of `capacity` leaves a short last row that the others' width pads. For each
    row count from the least that can hold every token, the longest-first greedy (each sequence to
    the least-filled row) balances the rows and `_narrow_widest_row` then moves or swaps sequences
    out of the widest row while that narrows it; the count with the smallest rectangle wins, and a
    tie goes to more, narrower rows (attention costs grow with width). On SVAMP batches of 8 the
    swaps find the exhaustive-search optimum, 3% fewer computed tokens than the greedy alone.
    """
    for index, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"sequence {index} has {n} tokens, more than the row capacity {capacity}")
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best: tuple[int, list[list[int]]] | None = None
    for n_rows in range(max(1, math.ceil(sum(lengths) / capacity)), len(lengths) + 1):
        rows: list[list[int]] = [[] for _ in range(n_rows)]
        load = [0] * n_rows
        for index in order:
            row = min(range(n_rows), key=load.__getitem__)
            rows[row].append(index)
            load[row] += lengths[index]
        _narrow_widest_row(rows, load, lengths)
        width = max(load)
        if width > capacity:
            continue
        if best is None or n_rows * width <= best[0]:
            best = (n_rows * width, rows)
        if width == lengths[order[0]]:  # one sequence per widest row: more rows cannot narrow it
            break
    assert best is not None  # n_rows = len(lengths) always fits
    return [row for row in best[1] if row]


def _narrow_widest_row(rows: list[list[int]], load: list[int], lengths: Seq[int]) -> None:
    """Local search on a row assignment, in place: while moving one sequence out of the widest row,
    or swapping one of its sequences for a shorter one of another row, leaves both rows narrower
    than the widest was, make the move that narrows most. Every move lowers the sum of squared row
    loads, so it ends."""
    while True:
        wide = max(range(len(rows)), key=load.__getitem__)
        best: tuple[int, int, int | None, int, int] | None = None  # (new max of the two rows, out, in, row, delta)
        for other in range(len(rows)):
            if other == wide:
                continue
            for out in rows[wide]:
                for into, delta in [(None, lengths[out])] + [(b, lengths[out] - lengths[b]) for b in rows[other]]:
                    if delta > 0 and load[other] + delta < load[wide]:
                        move = (max(load[other] + delta, load[wide] - delta), out, into, other, delta)
                        if best is None or move[0] < best[0]:
                            best = move
        if best is None:
            return
        _, out, into, other, delta = best
        rows[wide].remove(out)
        rows[other].append(out)
        if into is not None:
            rows[other].remove(into)
            rows[wide].append(into)
        load[wide] -= delta
        load[other] += delta


def collate(seqs: list[Sequence], *, pad_id: int, pack: bool, capacity: int) -> Batch:
    """Rows of sequences: packed (balanced into rows of at most `capacity`, see pack_rows) or one
    per row, padded to the longest row. Positions restart at 0 per example and per padding block
    (see module docstring)."""
    rows = pack_rows([len(s) for s in seqs], capacity) if pack else [[i] for i in range(len(seqs))]
    width = max(sum(len(seqs[i]) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    targets = torch.full(shape, IGNORE, dtype=torch.long)
    roles = torch.zeros(shape, dtype=torch.long)
    example_index = torch.full(shape, -1, dtype=torch.long)
    virtual_index = torch.full(shape, -1, dtype=torch.long)
    question_mask = torch.zeros(shape, dtype=torch.bool)
    kd_index: list[int] = []
    kd_ids: list[np.ndarray] = []
    kd_logprobs: list[np.ndarray] = []
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            s = seqs[i]
            end = start + len(s)
            if s.kd is not None:
                kd_index.extend(r * width + start + t for t in s.kd.positions)
                kd_ids.append(s.kd.ids)
                kd_logprobs.append(s.kd.logprobs)
            input_ids[r, start:end] = torch.tensor(s.input_ids)
            position_ids[r, start:end] = torch.arange(len(s))
            targets[r, start:end] = torch.tensor(s.targets)
            roles[r, start:end] = torch.tensor(s.roles)
            example_index[r, start:end] = i
            virtual_index[r, start : start + s.n_virtual] = torch.arange(s.n_virtual)
            question_mask[r, start + s.question_start : start + s.question_len] = True
            start = end
        position_ids[r, start:] = torch.arange(width - start)
    domain = torch.tensor([s.domain for s in seqs], dtype=torch.long)
    batch = Batch(input_ids, position_ids, targets, roles, example_index, virtual_index, question_mask, domain)
    if kd_index:  # every record of a run is cut to one k (student/kd.py), so the rows stack
        batch.kd_index = torch.tensor(kd_index, dtype=torch.long)
        batch.kd_ids = torch.from_numpy(np.concatenate(kd_ids).astype(np.int64))
        batch.kd_logprobs = torch.from_numpy(np.concatenate(kd_logprobs).astype(np.float32))
    return batch


def plan_batches(lengths: Seq[int], batch_size: int, *, batching: str, seed: int) -> list[list[int]]:
    """Indices of the examples of each batch, for one pass over the data.

    padded / packed: a seeded random order cut into batches (packing then removes the padding).
    grouped: the random order sorted by length within windows of GROUP_WINDOW_BATCHES batches, cut
    into batches, and the batches shuffled, so each batch holds similar lengths.
    """
    if batching not in BATCHINGS:
        raise ValueError(f"unknown batching {batching!r}; valid: {', '.join(BATCHINGS)}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if batching != "grouped":
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * GROUP_WINDOW_BATCHES
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


__all__ = [
    "BATCHINGS",
    "IGNORE",
    "ROLE_ANSWER",
    "ROLE_NONE",
    "ROLE_RATIONALE",
    "Batch",
    "EncodeStats",
    "Segments",
    "Sequence",
    "TeacherTopK",
    "build_sequence",
    "collate",
    "fit_rationale",
    "pack_rows",
    "plan_batches",
    "prompt_sequence",
    "question_start",
    "segments",
]
