"""Token-level KD: the loss against hand-computed values (objectives/kd.py), the alignment of the
teacher's tokens with the student's targets and the records' checks (student/kd.py), and the term in
compute_loss and prepare_data. No Ray, no model (a character tokenizer)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ray_cotd.config import ConfigError, TrainConfig
from ray_cotd.data.errors import DataError
from ray_cotd.data.logprobs import TopK, vocab_fingerprint
from ray_cotd.data.schema import AnnotatedRecord
from ray_cotd.lm.format import STAGE2_PREFIX, answer_value_text
from ray_cotd.student.collate import (IGNORE, ROLE_ANSWER, ROLE_NONE, ROLE_RATIONALE, Segments, TeacherTopK,
                                      build_sequence, collate)
from ray_cotd.student.kd import align_row, align_segment, attach_teacher_targets, load_teacher_topk
from ray_cotd.student.objectives import LossParams, get_objective
from ray_cotd.student.objectives.kd import kd_loss
from ray_cotd.student.train import compute_loss, from_item, prepare_data, to_items
from ray_cotd.teacher.annotate import arrow_schema

from char_tokenizer import CharTokenizer

# --------------------------------------------------------------------------- the loss


def test_kd_loss_hand_computed():
    """Position 1: student logits z = (2, 1, 0, -1), so log Σ exp z = log(e² + e + 1 + e⁻¹) = 2.440190
    and log p_S = z - 2.440190 = (-0.440190, -1.440190, -2.440190, -3.440190). The teacher's top-2 is
    ids (1, 0) with stored log-probabilities (-0.5, -1.5); renormalized over the two,
    p_T = (e^-0.5, e^-1.5) / (e^-0.5 + e^-1.5) = (0.731059, 0.268941), log p_T = (-0.313262, -1.313262).
    KL = 0.731059·(-0.313262 + 1.440190) + 0.268941·(-1.313262 + 0.440190)
       = 0.731059·1.126928 - 0.268941·0.873072 = 0.823851 - 0.234805 = 0.589045.
    Position 2: uniform student logits over 4 (log p_S = -log 4), teacher top-2 (3, 2) at equal
    log-probabilities -> p_T = (1/2, 1/2): KL = 2·½·(log ½ + log 4) = log 2 = 0.693147.
    L_KD is the mean over the positions: (0.589045 + 0.693147) / 2 = 0.641096."""
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0]]])  # (1, 3, 4)
    ids = torch.tensor([[1, 0], [3, 2]])
    teacher = torch.tensor([[-0.5, -1.5], [-1.0, -1.0]])
    assert kd_loss(logits, torch.tensor([0]), ids[:1], teacher[:1]).item() == pytest.approx(0.589045, abs=1e-6)
    assert kd_loss(logits, torch.tensor([2]), ids[1:], teacher[1:]).item() == pytest.approx(math.log(2), abs=1e-6)
    assert kd_loss(logits, torch.tensor([0, 2]), ids, teacher).item() == pytest.approx(0.641096, abs=1e-6)


def test_kd_loss_gradient_is_student_minus_renormalized_teacher():
    """∂KL/∂z_v = p_S(v)·Σ_i p_T(i) - p_T(v) = p_S(v) - p_T(v) (p_T zero outside the top-k)."""
    z = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]], requires_grad=True)
    kd_loss(z, torch.tensor([0]), torch.tensor([[1, 0]]), torch.tensor([[-0.5, -1.5]])).backward()
    p_s = torch.softmax(torch.tensor([2.0, 1.0, 0.0, -1.0]), 0)
    p_t = torch.tensor([0.268941, 0.731059, 0.0, 0.0])
    assert torch.allclose(z.grad[0, 0], p_s - p_t, atol=1e-6)


def test_kd_loss_is_zero_where_the_student_is_the_teacher_and_without_positions():
    z = torch.tensor([[[math.log(0.6), math.log(0.4), -1e4]]])
    assert kd_loss(z, torch.tensor([0]), torch.tensor([[0, 1]]), torch.tensor([[-7.0, -7.405465]])).item() == \
        pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2)).item() == 0


# --------------------------------------------------------------------------- aligning the teacher's tokens

# A made-up teacher reply in ids: <think>=100 trace(5 6 7 8) </think>=101, then the final text
# "Kim has 2 left" (9 10 11 12), ".\n" merged into one token (13), "The answer is" (20 21 22), " 2." (30 31 32), EOS 2.
# The student's segments: rationale ends in "." (14) alone; marker "\nThe answer is" = 15 20 21 22.
TRACE_TAIL = [20, 21, 22, 30, 31, 32]  # the trace already said "The answer is 2."
TEACHER = [100, 5, 6, *TRACE_TAIL, 7, 8, 101, 9, 10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 2]
SEG = Segments(prompt=[50, 51, 52], rationale=[9, 10, 11, 12, 14], marker=[15, 20, 21, 22], value=[30, 31, 32], eos=2,
               question_start=1)


def test_segments_align_where_the_ids_reproduce_the_teachers_and_nowhere_else():
    alignment = align_row(SEG, TEACHER)
    start = TEACHER.index(9)
    assert alignment.rationale == {0: start, 1: start + 1, 2: start + 2, 3: start + 3}  # "." vs ".\n": not aligned
    # the answer line after the rationale, not the "The answer is 2." inside the trace
    answer_at = len(TEACHER) - 7
    assert alignment.answer == {1: answer_at, 2: answer_at + 1, 3: answer_at + 2, 4: answer_at + 3, 5: answer_at + 4,
                                6: answer_at + 5, 7: answer_at + 6}


def test_a_stray_equal_token_far_away_is_not_aligned():
    # the rationale's last token (14) also occurs deep in the trace: the gap rule keeps it unaligned
    teacher = [14, 70, 71, 72, 73, 74, 75, 76, 77, 9, 10, 11, 12, 13, 2]
    assert align_segment([9, 10, 11, 12, 14], teacher) == {0: 9, 1: 10, 2: 11, 3: 12}
    # a re-tokenized stretch of about the same length is skipped, and the runs after it kept
    assert align_segment([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 44, 6, 7, 8]) == {0: 0, 1: 1, 2: 2, 3: 3, 5: 5, 6: 6,
                                                                                  7: 7}
    assert align_segment([1, 2], [7, 8, 9]) == {} and align_segment([1, 2, 3, 4], [1, 2, 9, 9]) == {}  # anchor < 3


def _topk(tokens, k=2):
    n = len(tokens)
    ids = np.stack([np.asarray(tokens), np.asarray(tokens) + 1000], 1).astype("<i4")[:, :k]
    values = np.tile(np.array([-0.25, -1.5], dtype="<f2")[:k], (n, 1))
    return TopK(np.asarray(tokens, dtype="<i4"), ids, values, "v")


def test_cascod_sequences_get_teacher_targets_only_at_aligned_trained_positions():
    parts = [(SEG.rationale, ROLE_RATIONALE), (SEG.marker, ROLE_NONE), (SEG.value + [SEG.eos], ROLE_ANSWER)]
    seq = build_sequence(parts, prompt=SEG.prompt, eos_at_end_of=0, eos=SEG.eos)
    aligned, unaligned = attach_teacher_targets([seq], SEG, _topk(TEACHER))
    # targets: 5 rationale tokens (the first 4 aligned; "." is not the teacher's ".\n"), the
    # end-of-rationale EOS (the teacher went on to the answer line: not aligned), " 2." and EOS (aligned)
    assert (aligned, unaligned) == (4 + 4, 1 + 1)
    p = len(SEG.prompt)
    assert seq.kd.positions == [p - 1, p, p + 1, p + 2, *range(p + 8, p + 12)]
    for t, row in zip(seq.kd.positions, seq.kd.ids):
        assert seq.roles[t] != ROLE_NONE and row[0] == seq.targets[t]  # the teacher's own token, best first here
    assert seq.targets[p + 4] == SEG.eos and p + 4 not in seq.kd.positions  # the end-of-rationale EOS
    assert all(seq.roles[t] == ROLE_NONE for t in range(p + 5, p + 8))  # the rest of the marker: input only, no KD


def test_other_layouts_and_rows_that_do_not_fit():
    label = build_sequence([(SEG.marker + SEG.value + [SEG.eos], ROLE_ANSWER)], prompt=SEG.prompt)
    rationale = build_sequence([(SEG.rationale + [SEG.eos], ROLE_RATIONALE)], prompt=SEG.prompt)
    aligned, unaligned = attach_teacher_targets([label, rationale], SEG, _topk(TEACHER))
    assert len(label.kd.positions) == 7 and len(rationale.kd.positions) == 4  # rationale: "." and its EOS unaligned
    assert (aligned, unaligned) == (11, 1 + 2)
    other = build_sequence([([77, 78, 79], ROLE_RATIONALE)], prompt=SEG.prompt)
    assert attach_teacher_targets([other], SEG, _topk(TEACHER)) == (0, 3) and other.kd is None


def test_teacher_targets_survive_ray_datas_json_and_collate_into_flat_indices():
    parts = [(SEG.rationale, ROLE_RATIONALE), (SEG.marker, ROLE_NONE), (SEG.value + [SEG.eos], ROLE_ANSWER)]
    a = build_sequence(parts, prompt=SEG.prompt, eos_at_end_of=0, eos=SEG.eos)
    b = build_sequence(parts, prompt=SEG.prompt, eos_at_end_of=0, eos=SEG.eos)
    attach_teacher_targets([a], SEG, _topk(TEACHER))
    (a2,) = from_item(to_items([[a]])[0])
    assert a2.kd.positions == a.kd.positions and np.array_equal(a2.kd.ids, a.kd.ids)
    batch = collate([b, a2], pad_id=0, pack=True, capacity=64)  # packed into one row: a2 starts after b
    assert batch.kd_index.tolist() == [len(b) + t for t in a.kd.positions]
    assert batch.kd_ids.shape == (8, 2) and batch.kd_logprobs.dtype == torch.float32
    flat_targets = batch.targets.flatten()[batch.kd_index]
    assert torch.equal(flat_targets, batch.kd_ids[:, 0])


# --------------------------------------------------------------------------- the term in compute_loss


class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, batch):
        return self.logits, None


def test_compute_loss_adds_the_weighted_term_to_every_objective():
    parts = [(SEG.rationale, ROLE_RATIONALE), (SEG.marker, ROLE_NONE), (SEG.value + [SEG.eos], ROLE_ANSWER)]
    seq = build_sequence(parts, prompt=SEG.prompt, eos_at_end_of=0, eos=SEG.eos)
    attach_teacher_targets([seq], SEG, _topk(TEACHER))
    batch = collate([seq], pad_id=0, pack=False, capacity=64)
    torch.manual_seed(0)
    model = _Fixed(torch.randn(1, len(seq), 1100))
    term = kd_loss(model.logits, batch.kd_index, batch.kd_ids, batch.kd_logprobs)
    for name in ("cascod", "std_cot", "answer_only"):
        objective = get_objective(name)
        plain, plain_parts = compute_loss(model, batch, objective, LossParams(alpha=0.3))
        assert "kd_loss" not in plain_parts
        with_kd, kd_parts = compute_loss(model, batch, objective, LossParams(alpha=0.3, kd_weight=0.5))
        assert with_kd.item() == pytest.approx(plain.item() + 0.5 * term.item(), rel=1e-6)
        assert kd_parts["kd_loss"].item() == pytest.approx(term.item())


# --------------------------------------------------------------------------- the records in prepare_data


class VocabCharTokenizer(CharTokenizer):
    def get_vocab(self):
        return {chr(i): i for i in range(32, 0x250)} | {"\n": 10, "<eos>": 1, "<pad>": 0}


TOK = VocabCharTokenizer()
ROWS = [(f"How many apples are in basket {i}?", f"Basket {i} holds {i} apples.", str(i)) for i in range(6)]


def _reply_ids(rationale, answer):
    return [ord(c) for c in rationale + STAGE2_PREFIX + answer_value_text(answer)] + [TOK.eos_token_id]


def _write(tmp_path, rows, records):
    path = tmp_path / "corpus"
    path.mkdir()
    out = []
    for i, ((q, r, a), record) in enumerate(zip(rows, records)):
        columns = record.columns() if record is not None else {}
        out.append(AnnotatedRecord(id=f"r{i}", question_id=f"q{i}", question=q, rationale=r, answer=a, gold=a,
                                   correct=True, domain=None, teacher="t", level=1, format="cot",
                                   template_version="v1", sample_index=0,
                                   completion_tokens=len(record) if record is not None else None, **columns).to_dict())
    pq.write_table(pa.Table.from_pylist(out, schema=arrow_schema()), path / "part-000001-x.parquet")
    return str(path)


def _record(ids, vocab=None, k=2):
    return TopK(np.asarray(ids, "<i4"), np.stack([np.asarray(ids), np.asarray(ids) + 1], 1).astype("<i4")[:, :k],
                np.tile(np.array([-0.1, -2.4], "<f2")[:k], (len(ids), 1)), vocab or vocab_fingerprint(TOK))


def _cfg(corpus, **kw):
    return TrainConfig(**{**dict(corpus=corpus, objective="cascod", holdout_fraction=0.0, val_fraction=0.0,
                                 max_seq_len=512, num_workers=1, kd_weight=0.5), **kw})


def test_prepare_data_aligns_every_target_but_cascods_end_of_rationale_eos(tmp_path):
    records = [_record(_reply_ids(r, a)) for _, r, a in ROWS]
    records[5] = TopK(records[5].tokens, records[5].ids[:-1], records[5].logprobs[:-1], records[5].vocab)  # one short
    data = prepare_data(_cfg(_write(tmp_path, ROWS, records)), TOK)
    stats = data["stats"]
    assert data["corpus"].dropped["logprobs_mismatch"] == 1 and len(data["train"]) == 5
    assert [b["reason"] for b in data["corpus"].bad] == ["logprobs_mismatch"]
    # per row: every rationale character, " 1." and EOS line up; the end-of-rationale EOS does not
    assert stats.kd_rows == 5 and stats.kd_unaligned_tokens == 5 and stats.kd_rows_unaligned == 0
    assert stats.kd_tokens == sum(len(r) + 4 for _, r, _ in ROWS[:5])
    assert data["kd"] == {"k": 2, "rows_with_logprobs": 5, "rows_without_logprobs": 0, "logprobs_mismatch": 1,
                          "vocab": vocab_fingerprint(TOK)}
    # the same corpus trains without KD when kd_weight is 0: no record is read
    plain = prepare_data(_cfg(data["corpus"].source, kd_weight=0.0), TOK)
    assert plain["kd"] is None and all(s.kd is None for seqs in plain["train"] for s in seqs)


def test_kd_weight_without_recorded_logits_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"kd_weight: the corpus has no teacher log-probabilities \(6 rows without"):
        prepare_data(_cfg(_write(tmp_path, ROWS, [None] * 6)), TOK)


def test_logits_of_another_vocabulary_are_a_clear_error(tmp_path):
    records = [_record(_reply_ids(r, a), vocab="151669:0123456789abcdef") for _, r, a in ROWS]
    with pytest.raises(ConfigError, match=r"kd_weight: .* another vocabulary than the student .*151669:0123456789abcdef"):
        prepare_data(_cfg(_write(tmp_path, ROWS, records)), TOK)


def test_records_that_line_up_with_nothing_are_a_clear_error_and_mixed_k_is_cut_to_the_smallest(tmp_path):
    records = [_record([7] * 30) for _ in ROWS]
    with pytest.raises(DataError, match=r"kd_weight: none of the .* training targets .* lines up"):
        prepare_data(_cfg(_write(tmp_path, ROWS, records)), TOK)
    rows, bad, report = load_teacher_topk(
        [{"topk_ids": None}, {**_record([1, 2]).columns(), "completion_tokens": 2},
         {**_record([1, 2], k=1).columns(), "completion_tokens": 2}], TOK, corpus="c", student="s")
    assert report["k"] == 1 and report["rows_without_logprobs"] == 1 and not bad
    assert [r["topk"].k for r in rows if r["topk"] is not None] == [1, 1]


def test_teacher_topk_json_keeps_dtypes():
    t = TeacherTopK([3, 4], np.array([[1, 2], [3, 4]], "<i4"), np.array([[-0.5, -1], [-2, -3]], "<f2"))
    back = TeacherTopK.from_json(t.to_json())
    assert back.positions == [3, 4] and back.ids.dtype == np.dtype("<i4") and back.logprobs.dtype == np.dtype("<f2")
    assert IGNORE == -100  # kd positions never carry the ignore target (checked above through flat_targets)
