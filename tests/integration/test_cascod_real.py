"""CasCoD's one-pass loss equals the CasCoD release's two-sequence computation on the real model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ray_cotd.config import ModelSpec
from ray_cotd.data.splits import holdout_split
from ray_cotd.student.collate import IGNORE, ROLE_RATIONALE, collate, segments
from ray_cotd.student.corpus import read_training_rows
from ray_cotd.lm.model import load_model, load_tokenizer
from ray_cotd.student.objectives import OBJECTIVES, LossParams
from ray_cotd.student.objectives.cascod import cascod_loss
from ray_cotd.student.train import Student, compute_loss, encode_rows

pytestmark = pytest.mark.real_model
ALPHA = 0.3


@pytest.fixture(scope="module")
def rows(shared_data):
    rows, _, _ = read_training_rows(shared_data / "svamp" / "train_chatgpt_level3.json")
    train, _ = holdout_split(rows, test_fraction=0.2, seed=0)
    return train[:4]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model(ModelSpec()).eval(), load_tokenizer(ModelSpec())


def _mean_nll(model, seqs, pad_id):
    """Token-mean CE over the labeled tokens of right-padded sequences (input_ids, labels)."""
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in seqs])
    labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in seqs])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in seqs])
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)


@pytest.fixture(scope="module")
def reference(rows, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    return reference_two_pass(model, tokenizer, rows)


def reference_two_pass(model, tokenizer, rows):
    """The release's construction: question→rationale ending in EOS, and question+rationale→answer,
    each loss a token mean over its own half of the batch."""
    rationale_seqs, answer_seqs = [], []
    for r in rows:
        seg = segments(tokenizer, r["question"], r["rationale"], r["answer"])
        p = len(seg.prompt)
        ids = seg.prompt + seg.rationale + [seg.eos]
        rationale_seqs.append((ids, [IGNORE] * p + seg.rationale + [seg.eos]))
        ids = seg.prompt + seg.rationale + seg.marker + seg.value + [seg.eos]
        answer_seqs.append((ids, [IGNORE] * (len(ids) - len(seg.value) - 1) + seg.value + [seg.eos]))
    with torch.no_grad():
        return _mean_nll(model, rationale_seqs, tokenizer.pad_token_id), _mean_nll(model, answer_seqs, tokenizer.pad_token_id)


@pytest.mark.parametrize("pack", [True, False])
def test_one_pass_equals_two_pass_on_real_rows(rows, model_and_tokenizer, reference, pack):
    model, tokenizer = model_and_tokenizer
    l_rationale, l_answer = reference
    expected = (1 - ALPHA) * l_rationale + ALPHA * l_answer

    examples, stats = encode_rows(tokenizer, rows, OBJECTIVES["cascod"], max_seq_len=1024)
    assert stats.truncated_rationale == 0 and len(examples) == len(rows)
    batch = collate([s for seqs in examples for s in seqs], pad_id=tokenizer.pad_token_id, pack=pack, capacity=1024)
    student = Student(model, None, None)
    with torch.no_grad():
        loss, parts = compute_loss(student, batch, OBJECTIVES["cascod"], LossParams(alpha=ALPHA))
    torch.testing.assert_close(parts["rationale_loss"], l_rationale, rtol=1e-5, atol=0)
    torch.testing.assert_close(parts["answer_loss"], l_answer, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)


def test_dropping_the_end_of_rationale_eos_term_is_far_off(rows, model_and_tokenizer, reference):
    """Why the layout keeps the EOS target at the last rationale position (notes §3: 13-16%)."""
    model, tokenizer = model_and_tokenizer
    l_rationale, _ = reference
    examples, _ = encode_rows(tokenizer, rows, OBJECTIVES["cascod"], max_seq_len=1024)
    batch = collate([s for seqs in examples for s in seqs], pad_id=tokenizer.pad_token_id, pack=True, capacity=1024)
    eos_slots = (batch.targets == tokenizer.eos_token_id) & (batch.roles == ROLE_RATIONALE)
    assert int(eos_slots.sum()) == len(rows)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    logp = -F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE,
                            reduction="none").view(batch.targets.shape)
    without_eos = cascod_loss(logp, (batch.roles == ROLE_RATIONALE) & ~eos_slots, batch.roles == 99, alpha=0.0)
    assert abs(without_eos.item() - l_rationale.item()) / l_rationale.item() > 0.05

