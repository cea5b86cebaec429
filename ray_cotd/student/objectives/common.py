"""What every objective shares: the table entry type, the loss inputs, and the masked token mean.

An objective is two pure pieces: a `layout` that turns one row into training sequences (which
tokens are targets, with which role) and a `loss` that turns per-token log-probs into a scalar. It
never sees the model, the config object or the rank, so each piece is testable on hand-made
tensors, and the train loop, validation and the benchmarks call the same two functions. What the
rest of the project needs to know about an objective (its paper symbols, whether it needs
rationales or target-domain questions) is its `ray_cotd.names.OBJECTIVES` entry, importable
without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ray_cotd.names import ObjectiveInfo
from ray_cotd.student.collate import ROLE_ANSWER, ROLE_RATIONALE, Sequence


@dataclass(frozen=True)
class Row:
    """One labeled training row as the layouts see it."""

    question: str
    rationale: str
    answer: str


@dataclass
class LossInputs:
    """What a loss reads.

    token_logp: (R, T) log p(targets[r, t]) at every position, 0 where there is no target.
    roles: (R, T) ROLE_* of each position's target.
    domain_logits: (E, 2) domain-classifier logits per example (behind the gradient-reversal
        layer), only for the domain-adversarial objectives; domain: (E,) 0 = source, 1 = target.
    """

    token_logp: torch.Tensor
    roles: torch.Tensor
    domain_logits: torch.Tensor | None = None
    domain: torch.Tensor | None = None

    @property
    def rationale_mask(self) -> torch.Tensor:
        return self.roles == ROLE_RATIONALE

    @property
    def answer_mask(self) -> torch.Tensor:
        return self.roles == ROLE_ANSWER


@dataclass(frozen=True)
class LossParams:
    """The paper symbols a loss may use: CasCoD's alpha, PRADA's lambda_ (already scheduled), and the
    weight of the token-level KD term any objective takes (objectives/kd.py; 0 = off)."""

    alpha: float = 0.3
    lambda_: float = 0.0
    kd_weight: float = 0.0


# loss(inputs, params) -> (scalar loss to minimize, {metric name: scalar tensor})
LossFn = Callable[[LossInputs, LossParams], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Laid:
    """A layout's result: the sequences of one row and how many rationale tokens were cut."""

    sequences: list[Sequence]
    truncated_tokens: int = 0


@dataclass(frozen=True)
class Objective:
    """One row of the OBJECTIVES table.

    layout(tokenizer, row, budget, n_virtual) -> Laid | None (None: prompt + answer exceed budget).
    loss(inputs, params) -> (scalar loss to minimize, {metric name: scalar tensor}).
    info: the objective's ray_cotd.names.OBJECTIVES entry (paper symbols, needs_rationale,
        domain_adversarial); docs/objectives.md explains each under its name.
    """

    layout: Callable[[Any, Row, int, int], Laid | None]
    loss: LossFn
    info: ObjectiveInfo

    @property
    def needs_rationale(self) -> bool:
        """Rows without a rationale are an error under this objective."""
        return self.info.needs_rationale

    @property
    def domain_adversarial(self) -> bool:
        """Each step mixes in unlabeled target-domain questions and trains a domain classifier (PRADA)."""
        return self.info.domain_adversarial


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is true, over the whole batch (a token mean, as the CasCoD
    release averages each loss over all target tokens of its half). An empty mask gives 0 with a
    gradient path, never NaN: a batch may hold no token of some role (e.g. PRADA target rows)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
