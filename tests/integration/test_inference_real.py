"""Two-stage generation on the real default student (SmolLM2-135M-Instruct): the cache-reusing
stage 2 gives token-for-token the ids of the naive one, at batch 1 and at batch > 1."""

from __future__ import annotations

import pytest
import torch

from ray_cotd.evaluate import load_few_shot
from ray_cotd.lm.generate import GenerationLimits, Generator
from ray_cotd.lm.model import load_model_and_tokenizer

pytestmark = pytest.mark.real_model

# Our own invented questions (never shared-data rows).
QUESTIONS = [
    "A shop sells pencils in packs of 6. Lena buys 4 packs and gives away 5 pencils. How many pencils does she have left?",
    "Is a whale a fish?",
    "Sam reads 15 pages a day. How many pages does he read in a week?",
    "Could a cat fit inside a teacup?",
]
LIMITS = GenerationLimits(max_rationale_tokens=40, max_answer_tokens=8)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model_and_tokenizer()


@pytest.fixture(scope="module")
def zero_shot(model_and_tokenizer):
    return Generator(*model_and_tokenizer)


@pytest.fixture(scope="module")
def few_shot(model_and_tokenizer):
    # few-shot prompting makes the untrained model write "\nThe answer is", so stage 1 stops at the marker
    return Generator(*model_and_tokenizer, few_shot=load_few_shot()["numeric"][:2])


def _same(cached, naive):
    for c, n in zip(cached, naive, strict=True):
        assert (c.rationale, c.answer_text, c.answer, c.rationale_stop) == (
            n.rationale, n.answer_text, n.answer, n.rationale_stop)
        assert (c.prompt_tokens, c.rationale_tokens, c.answer_tokens) == (
            n.prompt_tokens, n.rationale_tokens, n.answer_tokens)


def test_cache_reuse_equals_naive_batch_1(zero_shot):
    cached = zero_shot.two_stage(QUESTIONS[:1], LIMITS)
    naive = zero_shot.two_stage_naive(QUESTIONS[:1], LIMITS)
    _same(cached, naive)
    assert cached[0].rationale and cached[0].answer_tokens >= 1


def test_cache_reuse_equals_naive_batch_4_with_mixed_stops(few_shot):
    """Rows stop at different steps (marker, EOS, length), so their rationale ends differ: the
    realigned cache must still give every row its naive ids."""
    cached = few_shot.two_stage(QUESTIONS, LIMITS)
    naive = few_shot.two_stage_naive(QUESTIONS, LIMITS)
    _same(cached, naive)
    assert len({r.rationale_tokens for r in cached}) > 1
    assert "marker" in {r.rationale_stop for r in cached}


def test_batched_rows_equal_single_rows(few_shot):
    """Left padding does not change a row's result (greedy)."""
    batched = few_shot.two_stage(QUESTIONS[:2], LIMITS)
    single = [few_shot.two_stage([q], LIMITS)[0] for q in QUESTIONS[:2]]
    _same(batched, single)


def test_stage1_loop_matches_hf_generate(zero_shot):
    """Our decoding loop is greedy decoding: same ids as model.generate for the same number of steps."""
    ids = zero_shot.prompt_ids(QUESTIONS[2])
    with torch.inference_mode():
        ref = zero_shot.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       max_new_tokens=12, min_new_tokens=12, do_sample=False)
    ref_ids = ref[0, len(ids):].tolist()
    stage1 = zero_shot._stage1([QUESTIONS[2]], GenerationLimits(max_rationale_tokens=12), torch.Generator())
    with torch.inference_mode():
        stage1.run()
    assert stage1.rows[0].generated == ref_ids[: len(stage1.rows[0].generated)]


def test_stream_then_finish_equals_two_stage(few_shot):
    stream = few_shot.stream_rationale(QUESTIONS[0], LIMITS)
    chunks = list(stream)
    result = stream.finish()
    reference = few_shot.two_stage([QUESTIONS[0]], LIMITS)[0]
    assert len(chunks) > 1
    assert "".join(chunks) == result.rationale == reference.rationale
    assert "The answer is" not in result.rationale
    assert result.answer_text == reference.answer_text


def test_one_stage_parses_the_answer_after_the_marker(few_shot):
    (result,) = few_shot.one_stage(QUESTIONS[2:3], LIMITS)
    if result.rationale_stop == "marker":
        assert result.answer is not None and result.answer_tokens >= 1
    else:
        assert result.answer is None
    assert result.rationale_tokens + result.answer_tokens <= LIMITS.max_rationale_tokens + LIMITS.max_answer_tokens
