"""step_by_step: the multi-task baseline of Distilling step-by-step (Hsieh et al., 2023).

Two tasks per row, told apart by a prefix on the question: "[label] Q" → the answer, and
"[rationale] Q" → the rationale. L = L_label + L_rationale (their λ = 1), each a token mean over
its own task's targets. At inference the "[label]" task answers directly (lm.generate reads the
objective from student.json and prompts with the same ids); the rationale task only shapes the
representation.
"""

from __future__ import annotations

from typing import Any

import torch

from ray_cotd.lm.format import TASK_PREFIXES
from ray_cotd.student.collate import ROLE_ANSWER, ROLE_RATIONALE, build_sequence, fit_rationale, segments
from ray_cotd.student.objectives.common import Laid, LossInputs, LossParams, Row, masked_mean

LABEL_PREFIX = TASK_PREFIXES["label"]
RATIONALE_PREFIX = TASK_PREFIXES["rationale"]


def step_by_step_loss(token_logp: torch.Tensor, rationale_mask: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """L_label + L_rationale; token_logp and masks (R, T), the two tasks on separate rows/examples."""
    return -masked_mean(token_logp, answer_mask) - masked_mean(token_logp, rationale_mask)


def layout(tokenizer: Any, row: Row, budget: int, n_virtual: int) -> Laid | None:
    label = segments(tokenizer, row.question, "", row.answer, task_prefix=LABEL_PREFIX)
    if n_virtual + len(label.prompt) + len(label.marker) + len(label.value) + 1 > budget:
        return None
    fitted = fit_rationale(segments(tokenizer, row.question, row.rationale, row.answer, task_prefix=RATIONALE_PREFIX),
                           budget - n_virtual, with_answer=False, min_rationale=1)
    if fitted is None:
        return None
    rat, cut = fitted
    rationale = rat.rationale if cut else rat.rationale + [rat.eos]  # a cut rationale has no end: no EOS
    pad = tokenizer.pad_token_id
    return Laid([
        build_sequence([(label.marker + label.value + [label.eos], ROLE_ANSWER)], prompt=label.prompt,
                       question_start=label.question_start, n_virtual=n_virtual, pad_id=pad),
        build_sequence([(rationale, ROLE_RATIONALE)], prompt=rat.prompt, question_start=rat.question_start,
                       n_virtual=n_virtual, pad_id=pad),
    ], cut)


def loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    value = step_by_step_loss(inputs.token_logp, inputs.rationale_mask, inputs.answer_mask)
    return value, {
        "rationale_loss": -masked_mean(inputs.token_logp, inputs.rationale_mask).detach(),
        "answer_loss": -masked_mean(inputs.token_logp, inputs.answer_mask).detach(),
    }

