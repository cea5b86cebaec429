"""cascod: L = (1-α)·L_rationale + α·L_answer (CasCoD, Dai et al. 2024, Eq. for L_CasCoD).

L_rationale: CE on the rationale given the question only, ending in EOS (the answer is never a
target). L_answer: CE on the answer given question + rationale (+ the marker, which two-stage
inference appends itself, so it is input, not target).

One forward pass per example: the sequence prompt | rationale | marker | value | EOS contains the
rationale-stage sequence prompt | rationale as a causal prefix, so its per-token log-probs give both
terms. The reference (the CasCoD release) runs two sequences, prompt+R+EOS and prompt+R+marker+A+EOS;
its rationale loss includes p(EOS | prompt, R). The logits at the last rationale position are the
same in both (causal attention), and there the one-pass sequence's real next token is the marker's
first token, which no loss uses, so the layout puts an EOS target at that position instead: the
one-pass loss then equals the two-pass one exactly (tests/integration/test_cascod_real.py). Dropping
that term is 13-16% off on real rows, and the stage-1 EOS stop at inference depends on it.

A rationale cut to fit max_seq_len (collate.fit_rationale) gets no EOS target: its last token is not
the end of the rationale, and an EOS there would teach stage 1 to stop mid-sentence. Its last
position then has no target at all (the marker after it is input only).
"""

from __future__ import annotations

from typing import Any

import torch

from ray_cotd.student.collate import ROLE_ANSWER, ROLE_NONE, ROLE_RATIONALE, build_sequence, fit_rationale, segments
from ray_cotd.student.objectives.common import Laid, LossInputs, LossParams, Row, masked_mean


def cascod_loss(token_logp: torch.Tensor, rationale_mask: torch.Tensor, answer_mask: torch.Tensor, *,
                alpha: float) -> torch.Tensor:
    """(1-α)·(−mean log p over rationale targets) + α·(−mean log p over answer targets).

    token_logp, rationale_mask, answer_mask: (R, T). Each mean is over all its tokens in the batch.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: {alpha} is outside [0, 1]")
    return (1.0 - alpha) * -masked_mean(token_logp, rationale_mask) + alpha * -masked_mean(token_logp, answer_mask)


def layout(tokenizer: Any, row: Row, budget: int, n_virtual: int) -> Laid | None:
    fitted = fit_rationale(segments(tokenizer, row.question, row.rationale, row.answer), budget - n_virtual,
                           min_rationale=1)
    if fitted is None:
        return None
    seg, cut = fitted
    parts = [(seg.rationale, ROLE_RATIONALE), (seg.marker, ROLE_NONE), (seg.value + [seg.eos], ROLE_ANSWER)]
    return Laid([build_sequence(parts, prompt=seg.prompt, question_start=seg.question_start, n_virtual=n_virtual,
                                pad_id=tokenizer.pad_token_id, eos_at_end_of=None if cut else 0, eos=seg.eos)], cut)


def loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    value = cascod_loss(inputs.token_logp, inputs.rationale_mask, inputs.answer_mask, alpha=params.alpha)
    return value, {
        "rationale_loss": -masked_mean(inputs.token_logp, inputs.rationale_mask).detach(),
        "answer_loss": -masked_mean(inputs.token_logp, inputs.answer_mask).detach(),
    }

