"""Generation without the real model: stop rules as pure functions, and the KV-cache hand-over on a
tiny random-init Llama with a character-level tokenizer (built in memory, no files)."""

from __future__ import annotations


import pytest
import torch

from ray_cotd.lm.generate import (
    STAGE2_PREFIX,
    GenerationLimits,
    Generator,
    _choose,
    answer_end,
    rationale_cut,
)
from ray_cotd.lm.format import answer_text, encode
from tiny_llama import tiny_llama


def _offsets(pieces: list[str]) -> tuple[str, list[int]]:
    offsets, text = [], ""
    for p in pieces:
        offsets.append(len(text))
        text += p
    return text, offsets


@pytest.mark.parametrize(
    "text,end",
    [
        ("True.", 5),
        (" B.", 3),
        (" 145.", None),  # may still become 145.5
        (" 145.5", None),
        (" 145.\n", 5),
        (" 3.5.<", 5),
        (" 3.5 apples. More", 12),
        (" 12\nQ:", 3),
        (" 12", None),
    ],
)
def test_answer_end(text, end):
    assert answer_end(text) == end


def test_rationale_cut_at_marker_token_with_its_newline():
    text, offsets = _offsets(["So", " 8", ".", "\n", "The", " answer", " is"])
    assert rationale_cut(text, offsets, length_stop=False) == 3  # "So 8." - the "\n" belongs to the marker


def test_rationale_cut_marker_without_newline():
    text, offsets = _offsets(["So", " 8", ".", " The", " answer", " is"])
    assert rationale_cut(text, offsets, length_stop=False) == 3


def test_rationale_cut_goes_on_without_marker_and_cuts_partial_marker_at_length():
    text, offsets = _offsets(["So", " 8", ".", "\n", "The", " ans"])
    assert rationale_cut(text, offsets, length_stop=False) is None
    assert rationale_cut(text, offsets, length_stop=True) == 3
    text, offsets = _offsets(["So", " 8", " apples"])
    assert rationale_cut(text, offsets, length_stop=True) == 3


def test_generation_limits_are_checked():
    with pytest.raises(ValueError):
        GenerationLimits(max_rationale_tokens=0)
    with pytest.raises(ValueError):
        GenerationLimits(top_p=0.0)


def test_top_p_keeps_only_the_head():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    rng = torch.Generator().manual_seed(0)
    picks = {int(_choose(logits, GenerationLimits(do_sample=True, top_p=0.8), rng)) for _ in range(200)}
    assert picks == {0, 1}
    assert int(_choose(logits, GenerationLimits(), rng)) == 0  # greedy


# -- a tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return Generator(*tiny_llama())


QUESTIONS = ["What is 2+3?", "Is ice cold?", "A much longer question about apples, pears and plums?"]


def test_stage2_prefix_is_a_token_prefix_of_every_training_answer(tiny):
    prefix = encode(tiny.tokenizer, STAGE2_PREFIX)
    for answer in ["145", "True", "B", "-2", "3.5"]:
        assert encode(tiny.tokenizer, answer_text(answer))[: len(prefix)] == prefix


@pytest.mark.parametrize("keeps", [(20, 20, 20), (20, 3, 11), (0, 7, 20)])
def test_realigned_cache_matches_fresh_prefill(tiny, keeps):
    """Rows keep different rationale lengths (as marker/EOS stops would give): stage 2 on the
    realigned stage-1 cache gives the logits and ids of stage 2 prefilled from scratch."""
    limits = GenerationLimits(max_rationale_tokens=20, max_answer_tokens=5, do_sample=True, seed=3)

    def run(reuse: bool):
        rng = torch.Generator().manual_seed(limits.seed)
        with torch.inference_mode():
            s1 = tiny._stage1(QUESTIONS, limits, rng)
            s1.run()
            for row, keep in zip(s1.rows, keeps):
                row.keep = min(keep, len(row.generated) - 1 if row.stop == "eos" else len(row.generated))
            s2 = tiny._stage2(s1, limits, rng, reuse=reuse)
            s2.advance()
            first = s2.last_logits.clone()
            s2.run()
        return first, [r.generated for r in s2.rows], [len(r.prefix) for r in s2.rows]

    cached_logits, cached_ids, cached_len = run(True)
    naive_logits, naive_ids, naive_len = run(False)
    assert cached_len == naive_len and len(set(naive_len)) > 1  # rows really are padded differently
    torch.testing.assert_close(cached_logits, naive_logits, atol=1e-5, rtol=1e-5)
    assert cached_ids == naive_ids


def test_two_stage_equals_naive_and_counts_tokens(tiny):
    limits = GenerationLimits(max_rationale_tokens=12, max_answer_tokens=4, do_sample=True, seed=1)
    cached = tiny.two_stage(QUESTIONS, limits)
    naive = tiny.two_stage_naive(QUESTIONS, limits)
    for c, n, q in zip(cached, naive, QUESTIONS):
        assert (c.rationale, c.answer_text, c.rationale_tokens, c.answer_tokens) == (
            n.rationale, n.answer_text, n.rationale_tokens, n.answer_tokens)
        assert c.prompt_tokens == len(tiny.prompt_ids(q))
        assert c.rationale_tokens <= 12 and 1 <= c.answer_tokens <= 4
        assert c.stage1_s > 0 and c.stage2_s > 0


def test_stream_yields_the_rationale_then_the_same_answer(tiny):
    limits = GenerationLimits(max_rationale_tokens=15, max_answer_tokens=4)
    stream = tiny.stream_rationale(QUESTIONS[2], limits)
    chunks = list(stream)
    result = stream.finish()
    reference = tiny.two_stage([QUESTIONS[2]], limits)[0]
    assert "".join(chunks) == result.rationale == reference.rationale
    assert (result.answer_text, result.answer_tokens) == (reference.answer_text, reference.answer_tokens)


def test_one_stage_without_marker_has_no_answer(tiny):
    limits = GenerationLimits(max_rationale_tokens=6, max_answer_tokens=2)
    (result,) = tiny.one_stage([QUESTIONS[0]], limits)
    if "The answer is" not in result.rationale:
        assert result.answer is None and result.answer_text == ""
    assert result.rationale_tokens + result.answer_tokens <= 8


def test_answer_from_given_rationales_runs_stage_two_only(tiny):
    limits = GenerationLimits(max_answer_tokens=3)
    results = tiny.answer_from_rationales(QUESTIONS[:2], ["Two and three make five.", "Ice is frozen."], limits)
    assert [r.rationale for r in results] == ["Two and three make five.", "Ice is frozen."]
    assert all(1 <= r.answer_tokens <= 3 for r in results)
    with pytest.raises(ValueError, match="2 questions but 1 rationales"):
        tiny.answer_from_rationales(QUESTIONS[:2], ["x"], limits)


@pytest.fixture(scope="module")
def tiny_ptuning(tiny):
    from ray_cotd.lm.prompt_encoder import PromptEncoder, PromptEncoderConfig

    torch.manual_seed(1)
    encoder = PromptEncoder(PromptEncoderConfig(num_virtual_tokens=3, token_dim=32, encoder_hidden_size=16))
    return Generator(tiny.model, tiny.tokenizer, prompt_encoder=encoder)


def test_ptuning_prefill_matches_the_training_forward(tiny_ptuning):
    """The first generated token's logits equal the train-time Student forward on the same layout."""
    from ray_cotd.student.collate import prompt_sequence
    from ray_cotd.lm.prompt_encoder import embed_inputs

    gen = tiny_ptuning
    question = QUESTIONS[0]
    seq = prompt_sequence(gen.tokenizer, question, n_virtual=3)
    assert seq.input_ids[3:] == gen.prompt_ids(question)[3:]
    ids = torch.tensor([seq.input_ids])
    virtual_index = torch.tensor([[0, 1, 2] + [-1] * (len(seq.input_ids) - 3)])
    with torch.no_grad():
        expected = gen.model(inputs_embeds=embed_inputs(gen.model.get_input_embeddings(), ids, virtual_index,
                                                        gen.prompt_encoder)).logits[0, -1]
        stage1 = gen._stage1([question], GenerationLimits(max_rationale_tokens=1), None)
        stage1.advance()
    torch.testing.assert_close(stage1.last_logits[0], expected, rtol=1e-5, atol=1e-5)


def test_ptuning_two_stage_cache_reuse_equals_naive(tiny_ptuning):
    limits = GenerationLimits(max_rationale_tokens=12, max_answer_tokens=4)
    reused = tiny_ptuning.two_stage(QUESTIONS, limits)
    naive = tiny_ptuning.two_stage_naive(QUESTIONS, limits)
    assert [(r.rationale, r.answer_text) for r in reused] == [(r.rationale, r.answer_text) for r in naive]
    plain = Generator(tiny_ptuning.model, tiny_ptuning.tokenizer).two_stage(QUESTIONS, limits)
    assert [r.prompt_tokens for r in reused] == [r.prompt_tokens + 3 for r in plain]


# -------------------------------------------------------------------------------- step_by_step students


def test_a_label_task_student_is_prompted_with_the_ids_of_its_training_label_task(tiny):
    """step_by_step trains "[label] Q" -> marker + answer; generation feeds exactly those prompt ids,
    then the marker ids, and answers in one stage (no rationale)."""
    from ray_cotd.student.objectives import step_by_step
    from ray_cotd.student.objectives.common import Row

    gen = Generator(tiny.model, tiny.tokenizer, label_task=True)
    for question in QUESTIONS:
        laid = step_by_step.layout(tiny.tokenizer, Row(question, "Two and three make five.", "5"), 512, 0)
        label_sequence = laid.sequences[0]  # the label task: prompt | marker | value | EOS
        prompt = label_sequence.input_ids[: label_sequence.question_len]
        assert gen.prompt_ids(question) == prompt
        marker = encode(tiny.tokenizer, STAGE2_PREFIX)
        assert label_sequence.input_ids[len(prompt): len(prompt) + len(marker)] == marker
    results = gen.two_stage(QUESTIONS, GenerationLimits(max_rationale_tokens=8, max_answer_tokens=3))
    assert all(r.rationale == "" and r.rationale_tokens == 0 and r.rationale_stop == "label_task" for r in results)
    assert all(1 <= r.answer_tokens <= 3 for r in results)
    stream = gen.stream_rationale(QUESTIONS[0], GenerationLimits(max_answer_tokens=3))
    assert list(stream) == [] and stream.finish().answer_text == results[0].answer_text
    assert Generator(tiny.model, tiny.tokenizer).prompt_ids(QUESTIONS[0]) != gen.prompt_ids(QUESTIONS[0])


# -------------------------------------------------------------------------------- constrained choices


def test_the_constrained_answer_is_the_best_scored_option_at_the_answer_position(tiny):
    """Of the question's choices, the one whose deciding answer token has the highest logit where
    the choices part ways, read from the free decoding's logits when it took their common prefix,
    else from one more step. (The character tokenizer spells " A." with a bare space first, shared
    by every option: the pick is the letter scored after prompt + rationale + marker + " ".)"""
    gen = Generator(tiny.model, tiny.tokenizer)
    space = encode(tiny.tokenizer, " ")
    assert gen.rules.option_plan(["A", "B"]) == (space, [encode(tiny.tokenizer, c)[0] for c in "AB"])
    assert gen.rules.option_plan(["12", "13"]) == (space + encode(tiny.tokenizer, "1"), encode(tiny.tokenizer, "23"))
    assert gen.rules.option_plan(["1", "1"]) is None and gen.rules.option_plan(None) is None
    limits = GenerationLimits(max_rationale_tokens=6, max_answer_tokens=3)
    choices = [["A", "B", "C", "D"], None, ["1", "2", "3"]]
    results = gen.two_stage(QUESTIONS, limits, choices)
    free = gen.two_stage(QUESTIONS, limits)
    assert [r.answer_text for r in results] == [r.answer_text for r in free]  # the free answer is unchanged
    assert results[1].constrained_answer is None
    for i in (0, 2):
        prompt = gen.prompt_ids(QUESTIONS[i]) + encode(tiny.tokenizer, free[i].rationale) + gen.stage2_ids + space
        with torch.inference_mode():
            logits = tiny.model(torch.tensor([prompt])).logits[0, -1]
        tokens = [encode(tiny.tokenizer, c)[0] for c in choices[i]]
        assert results[i].constrained_answer == choices[i][int(logits[tokens].argmax())]
