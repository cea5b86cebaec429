"""Issue 19, item 4: PRADA's domain classifier pools what differs between questions. With the real
default tokenizer the prompt opens with the chat template's system turn and "<|im_start|>user\\n",
the same tokens for every question, whose hidden states are then the same too (causal attention);
pooling starts at the question's first token instead. Checked for the real chat template and for the
same tokenizer without one (the plain "Question: ..." layout). Questions invented here."""

from __future__ import annotations

import copy

import pytest
import torch

from ray_cotd.config import ModelSpec
from ray_cotd.lm.model import load_model, load_tokenizer
from ray_cotd.student.collate import collate, prompt_sequence
from ray_cotd.student.objectives import OBJECTIVES, Row

QUESTIONS = ("Could a pelican carry a bowling ball across a lake?", "Is the Eiffel Tower taller than a giraffe?")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelSpec())


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None  # render_chat's template-less layout: "Question: ...\n\nAnswer: "
    return plain


def _sequences(tok):
    """A cascod source row and a PRADA target row per question, with 4 P-Tuning placeholders."""
    rows = [OBJECTIVES["cascod+prada"].layout(tok, Row(q, "Pelicans are birds.", "False"), 512, 4).sequences[0]
            for q in QUESTIONS]
    return rows + [prompt_sequence(tok, q, n_virtual=4) for q in QUESTIONS]


@pytest.mark.real_model
@pytest.mark.parametrize(("which", "opening", "first"), [
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\n", ""),
    ("plain", "Question:", " "),  # the BPE token " Could" carries the space before the question
])
def test_pooling_starts_at_the_question_s_first_token(tokenizer, plain_tokenizer, which, opening, first):
    tok = tokenizer if which == "chat" else plain_tokenizer
    seqs = _sequences(tok)
    for seq, question in zip(seqs, QUESTIONS * 2):
        assert tok.decode(seq.input_ids[4 : seq.question_start]) == opening
        assert tok.decode(seq.input_ids[seq.question_start]) == first + question.split()[0]
    batch = collate(seqs, pad_id=tok.pad_token_id, pack=True, capacity=512)
    for i, seq in enumerate(seqs):
        pooled = batch.input_ids[batch.question_mask & (batch.example_index == i)].tolist()
        assert pooled == seq.input_ids[seq.question_start : seq.question_len]


@pytest.mark.real_model
def test_what_pooling_leaves_out_is_the_same_for_every_question(tokenizer):
    """The last hidden states (what PRADA pools) before question_start are equal for two questions,
    and differ from its first pooled position on: the left-out positions carried no question."""
    model = load_model(ModelSpec()).eval()
    a, b = (prompt_sequence(tokenizer, q) for q in QUESTIONS)
    start = a.question_start
    assert b.question_start == start and a.input_ids[:start] == b.input_ids[:start]
    with torch.no_grad():
        ha, hb = (model(input_ids=torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states[-1][0]
                  for s in (a, b))
    torch.testing.assert_close(ha[:start], hb[:start], rtol=0, atol=0)
    assert (ha[start] - hb[start]).abs().max() > 0.1
