"""Collation: segment layout, targets and roles, truncation, packing without cross-contamination."""

from __future__ import annotations

import pytest
import torch

from ray_cotd.student.collate import (
    IGNORE,
    ROLE_ANSWER,
    ROLE_NONE,
    ROLE_RATIONALE,
    build_sequence,
    collate,
    fit_rationale,
    pack_rows,
    plan_batches,
    prompt_sequence,
    segments,
)
from ray_cotd.lm.format import STAGE2_PREFIX
from ray_cotd.student.objectives import OBJECTIVES
from ray_cotd.student.train import encode_rows

from char_tokenizer import TOK


def ids(text):
    return [ord(c) for c in text]


def test_build_sequence_puts_each_target_one_position_before_its_token():
    seq = build_sequence([([5, 6], ROLE_RATIONALE), ([7], ROLE_NONE), ([8, 1], ROLE_ANSWER)], prompt=[2, 3],
                         eos_at_end_of=0, eos=1)
    assert seq.input_ids == [2, 3, 5, 6, 7, 8, 1]
    # position 3 (token 6, the last rationale token) predicts EOS instead of the marker token 7
    assert seq.targets == [IGNORE, 5, 6, 1, 8, 1, IGNORE]
    assert seq.roles == [0, ROLE_RATIONALE, ROLE_RATIONALE, ROLE_RATIONALE, ROLE_ANSWER, ROLE_ANSWER, ROLE_NONE]
    assert seq.question_len == 2


def test_cascod_layout_on_text():
    laid = OBJECTIVES["cascod"].layout(TOK, _row("Q?", "r1", "7"), 1000, 0)
    (seq,) = laid.sequences
    prompt = segments(TOK, "Q?", "r1", "7").prompt
    p = len(prompt)
    assert seq.input_ids == prompt + ids("r1") + ids(STAGE2_PREFIX) + ids(" 7.") + [1]
    rationale_targets = [t for t, r in zip(seq.targets, seq.roles) if r == ROLE_RATIONALE]
    answer_targets = [t for t, r in zip(seq.targets, seq.roles) if r == ROLE_ANSWER]
    assert rationale_targets == ids("r1") + [1]  # R + the end-of-rationale EOS
    assert answer_targets == ids(" 7.") + [1]  # the value and EOS; the marker is input only
    assert seq.targets[p + 1] == 1 and seq.input_ids[p + 2] == ord("\n")  # EOS where the marker follows


def test_answer_only_and_std_cot_roles():
    (ao,) = OBJECTIVES["answer_only"].layout(TOK, _row("Q", "ignored", "5"), 1000, 0).sequences
    assert ROLE_RATIONALE not in ao.roles
    assert [t for t, r in zip(ao.targets, ao.roles) if r == ROLE_ANSWER] == ids(STAGE2_PREFIX + " 5.") + [1]
    (sc,) = OBJECTIVES["std_cot"].layout(TOK, _row("Q", "ab", "5"), 1000, 0).sequences
    assert [t for t, r in zip(sc.targets, sc.roles) if r != ROLE_NONE] == ids("ab" + STAGE2_PREFIX + " 5.") + [1]


def test_step_by_step_makes_two_prefixed_tasks():
    label, rationale = OBJECTIVES["step_by_step"].layout(TOK, _row("Q", "ab", "5"), 1000, 0).sequences
    assert "[label] Q" in "".join(map(chr, label.input_ids[: label.question_len]))
    assert "[rationale] Q" in "".join(map(chr, rationale.input_ids[: rationale.question_len]))
    assert set(label.roles) == {ROLE_NONE, ROLE_ANSWER}
    assert [t for t, r in zip(rationale.targets, rationale.roles) if r == ROLE_RATIONALE] == ids("ab") + [1]


def test_truncation_cuts_the_rationale_never_the_answer():
    seg = segments(TOK, "Q", "abcdefgh", "42")
    fixed = len(seg.prompt) + len(seg.marker) + len(seg.value) + 1
    fitted, cut = fit_rationale(seg, fixed + 3)
    assert fitted.rationale == ids("abc") and cut == 5 and fitted.value == seg.value
    assert fit_rationale(seg, fixed - 1) is None
    assert fit_rationale(seg, fixed, min_rationale=1) is None


@pytest.mark.parametrize("name", ["cascod", "std_cot", "step_by_step", "prada", "cascod+prada"])
def test_a_cut_rationale_trains_no_end_at_the_cut(name):
    """Issue 19: a rationale cut to fit max_seq_len trains nothing at its last position (no EOS,
    no marker: that is not where the rationale ends); a whole rationale ends in EOS (cascod,
    step_by_step) or the marker (std_cot, prada)."""
    row = _row("Q", "abcdefgh" * 4, "42")
    whole = OBJECTIVES[name].layout(TOK, row, 1000, 0).sequences[-1]  # step_by_step: its rationale task
    cut = OBJECTIVES[name].layout(TOK, row, len(whole) - 5, 0)
    assert cut.truncated_tokens == 5
    for seq, rationale in ((whole, row.rationale), (cut.sequences[-1], row.rationale[:-5])):
        end = seq.question_len + len(rationale) - 1  # the position of the rationale's last token
        assert seq.input_ids[end] == ord(rationale[-1])
        rationale_targets = [t for t, r in zip(seq.targets, seq.roles) if r == ROLE_RATIONALE]
        if seq is whole:
            assert seq.targets[end] in (1, ord("\n")) and seq.roles[end] != ROLE_NONE
        else:
            assert (seq.targets[end], seq.roles[end]) == (IGNORE, ROLE_NONE)
            assert rationale_targets == ids(rationale)


def test_encode_rows_counts_truncated_and_dropped_rows():
    rows = [_row_dict("Q", "x" * 50, "1"), _row_dict("Q", "y", "2"), _row_dict("Q" * 200, "z", "3")]
    budget = len(segments(TOK, "Q", "", "1").prompt) + len(ids(STAGE2_PREFIX)) + 3 + 1 + 10
    examples, stats = encode_rows(TOK, rows, OBJECTIVES["cascod"], max_seq_len=budget)
    assert len(examples) == 2
    assert stats.truncated_rationale == 1 and stats.truncated_tokens == 40
    assert stats.dropped_too_long == 1 and stats.dropped_examples == ["3"]
    assert all(len(s) <= budget for seqs in examples for s in seqs)


def test_pack_rows_balances_rows_to_the_smallest_rectangle():
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 3], [2, 1]]  # two rows of 7, not 8 + 6
    # first-fit into rows of 512 would give widths 500 + 500 + 40 -> 3 x 500; balanced: 2 rows
    # can't hold 1040 tokens in 512, so 3 balanced rows of at most 380 (first fit: 3 x 500)
    lengths = [300, 200, 200, 180, 100, 60]
    rows = pack_rows(lengths, 512)
    width = max(sum(lengths[i] for i in r) for r in rows)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert len(rows) * width <= 3 * 380
    # greedy alone: 3+2+2 | 3+2 -> 2 x 7; the swap of a 3 for a 2 balances it to 2 x 6
    rows = pack_rows([3, 3, 2, 2, 2], 7)
    assert sorted(sum([3, 3, 2, 2, 2][i] for i in r) for r in rows) == [6, 6]
    # one sequence per row is never worse than padding
    assert pack_rows([10, 10, 10], 10) == [[0], [1], [2]]
    assert pack_rows([], 8) == []
    with pytest.raises(ValueError, match="capacity"):
        pack_rows([9], 8)


def test_collate_packed_resets_positions_and_marks_examples():
    a = build_sequence([([5, 6], ROLE_ANSWER)], prompt=[2, 3, 4])  # 5 tokens
    b = build_sequence([([7], ROLE_ANSWER)], prompt=[2])  # 2 tokens
    c = build_sequence([([8], ROLE_ANSWER)], prompt=[2, 3])  # 3 tokens
    batch = collate([a, b, c], pad_id=0, pack=True, capacity=8)
    assert batch.input_ids.shape == (2, 5)  # a alone, then c + b: two full rows of 5, no padding
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert batch.example_index.tolist() == [[0, 0, 0, 0, 0], [2, 2, 2, 1, 1]]
    uneven = collate([a, b], pad_id=0, pack=True, capacity=8)  # one row of 7: nothing to balance
    assert uneven.input_ids.shape == (1, 7)
    assert batch.real_tokens == 10 and batch.n_examples == 3
    padded = collate([a, b, c], pad_id=0, pack=False, capacity=8)
    assert padded.input_ids.shape == (3, 5) and padded.real_tokens == 10
    assert (padded.targets[padded.example_index < 0] == IGNORE).all()


def test_packed_rows_do_not_attend_across_examples():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    a = build_sequence([([5, 6, 7], ROLE_ANSWER)], prompt=[2, 3])
    b = build_sequence([([9, 10], ROLE_ANSWER)], prompt=[4])
    packed = collate([a, b], pad_id=0, pack=True, capacity=16)
    assert packed.input_ids.shape[0] == 1
    with torch.no_grad():
        together = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits[0]
        alone_a = model(input_ids=torch.tensor([a.input_ids])).logits[0]
        alone_b = model(input_ids=torch.tensor([b.input_ids])).logits[0]
    torch.testing.assert_close(together[: len(a)], alone_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[len(a) : len(a) + len(b)], alone_b, rtol=1e-5, atol=1e-5)


def test_plan_batches_cover_every_row_once_and_grouped_sorts_lengths():
    lengths = [(i * 37) % 101 for i in range(200)]
    for batching in ("packed", "grouped", "padded"):
        plan = plan_batches(lengths, 8, batching=batching, seed=3)
        assert sorted(i for b in plan for i in b) == list(range(200))
        assert plan == plan_batches(lengths, 8, batching=batching, seed=3)
    grouped = plan_batches(lengths, 8, batching="grouped", seed=3)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped)
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                        for b in plan_batches(lengths, 8, batching="padded", seed=3))
    assert spread < random_spread / 4
    with pytest.raises(ValueError, match="valid: packed, grouped, padded"):
        plan_batches(lengths, 8, batching="sorted", seed=0)


def _row(q, r, a):
    from ray_cotd.student.objectives import Row

    return Row(q, r, a)


def _row_dict(q, r, a):
    return {"id": a, "question": q, "rationale": r, "answer": a}


@pytest.mark.parametrize("name", ["answer_only", "std_cot", "cascod", "prada", "cascod+prada"])
def test_prada_pools_from_the_question_s_first_token_template_less(name):
    """Issue 19: the pooled positions start at the question's first token, after the prompt's
    constant opening ("Question: " for a template-less tokenizer), and after the P-Tuning
    placeholders; packed rows pool each example's own span."""
    seqs = [OBJECTIVES[name].layout(TOK, _row(q, "r", "1"), 1000, 4).sequences[0] for q in ("How many?", "Why so?")]
    seqs.append(prompt_sequence(TOK, "Is it?", n_virtual=4))  # a PRADA target-domain row
    for seq, question in zip(seqs, ("How many?", "Why so?", "Is it?")):
        assert "".join(map(chr, seq.input_ids[4 : seq.question_start])) == "Question: "
        assert "".join(map(chr, seq.input_ids[seq.question_start : seq.question_len])).startswith(question)
    batch = collate(seqs, pad_id=0, pack=True, capacity=200)
    for i, seq in enumerate(seqs):
        pooled = batch.input_ids[batch.question_mask & (batch.example_index == i)].tolist()
        assert pooled == seq.input_ids[seq.question_start : seq.question_len]
