"""answer_only: cross-entropy on the answer given the question (no rationale at all).

Sequence: prompt → marker + value + EOS, every answer token a target. The student learns to write
"\\nThe answer is X." straight after the question (one-stage inference).
"""

from __future__ import annotations

from typing import Any

import torch

from ray_cotd.student.collate import ROLE_ANSWER, build_sequence, segments
from ray_cotd.student.objectives.common import Laid, LossInputs, LossParams, Row, masked_mean


def answer_only_loss(token_logp: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """−mean log p over the answer targets. token_logp, answer_mask: (R, T)."""
    return -masked_mean(token_logp, answer_mask)


def layout(tokenizer: Any, row: Row, budget: int, n_virtual: int) -> Laid | None:
    seg = segments(tokenizer, row.question, "", row.answer)
    if n_virtual + len(seg.prompt) + len(seg.marker) + len(seg.value) + 1 > budget:
        return None
    answer = seg.marker + seg.value + [seg.eos]
    return Laid([build_sequence([(answer, ROLE_ANSWER)], prompt=seg.prompt, question_start=seg.question_start,
                                n_virtual=n_virtual, pad_id=tokenizer.pad_token_id)])


def loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    value = answer_only_loss(inputs.token_logp, inputs.answer_mask)
    return value, {"answer_loss": value.detach()}

