"""std_cot: cross-entropy on "rationale + The answer is X" given the question (Std-CoT).

Sequence: prompt → rationale + marker + value + EOS, every token after the prompt a target; the
loss is one token mean over all of them (rationale and answer tokens weigh the same). When the
rationale was cut to fit max_seq_len, the marker's first token is input only: predicting the end of
the rationale at the cut would teach the student to conclude mid-sentence.
"""

from __future__ import annotations

from typing import Any

import torch

from ray_cotd.student.collate import ROLE_ANSWER, ROLE_NONE, ROLE_RATIONALE, build_sequence, fit_rationale, segments
from ray_cotd.student.objectives.common import Laid, LossInputs, LossParams, Row, masked_mean


def std_cot_loss(token_logp: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """−mean log p over every target token (rationale and answer alike). Shapes (R, T)."""
    return -masked_mean(token_logp, target_mask)


def layout(tokenizer: Any, row: Row, budget: int, n_virtual: int) -> Laid | None:
    fitted = fit_rationale(segments(tokenizer, row.question, row.rationale, row.answer), budget - n_virtual,
                           min_rationale=1)
    if fitted is None:
        return None
    seg, cut = fitted
    answer = seg.marker + seg.value + [seg.eos]
    head = 1 if cut else 0  # a cut rationale has no end: the marker's first token is input only
    parts = [(seg.rationale, ROLE_RATIONALE), (answer[:head], ROLE_NONE), (answer[head:], ROLE_ANSWER)]
    return Laid([build_sequence(parts, prompt=seg.prompt, question_start=seg.question_start, n_virtual=n_virtual,
                                pad_id=tokenizer.pad_token_id)], cut)


def loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    value = std_cot_loss(inputs.token_logp, inputs.rationale_mask | inputs.answer_mask)
    return value, {
        "rationale_loss": -masked_mean(inputs.token_logp, inputs.rationale_mask).detach(),
        "answer_loss": -masked_mean(inputs.token_logp, inputs.answer_mask).detach(),
    }

