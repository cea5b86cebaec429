"""PRADA's training parts in the student: gradient reversal, the domain classifier, pooling and the
λ schedule. The loss itself is objectives/prada.py; the P-Tuning prompt encoder, which generation
needs too, is ray_cotd/lm/prompt_encoder.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.function import FunctionCtx

DOMAIN_HEAD_WEIGHTS = "domain_head.safetensors"


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, q: torch.Tensor) -> torch.Tensor:
        return q.view_as(q)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def grad_reverse(q: torch.Tensor) -> torch.Tensor:
    """R(q) = q in the forward pass, dR/dq = −I in the backward pass (Ganin & Lempitsky; PRADA)."""
    return _ReverseGrad.apply(q)


# TrainConfig.lambda_schedule -> the factor on λ at training progress p in [0, 1]. DANN's ramp
# 2/(1+exp(−10p)) − 1 starts at 0, so the classifier learns before its reversed gradient reaches
# the features.
LAMBDA_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "dann": lambda p: 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0,
}


def lambda_at(lambda_: float, schedule: str, progress: float) -> float:
    """λ at training progress `progress` (clamped to [0, 1]) under a LAMBDA_SCHEDULES schedule."""
    if lambda_ < 0:
        raise ValueError(f"lambda_: {lambda_} must be >= 0")
    if schedule not in LAMBDA_SCHEDULES:
        raise ValueError(f"unknown lambda schedule {schedule!r}; valid: {', '.join(LAMBDA_SCHEDULES)}")
    return lambda_ * LAMBDA_SCHEDULES[schedule](min(max(progress, 0.0), 1.0))


def pool_examples(hidden: torch.Tensor, example_index: torch.Tensor, mask: torch.Tensor, n_examples: int) -> torch.Tensor:
    """Mean of hidden states per example over the masked positions.

    hidden: (R, T, D); example_index: (R, T) example of each position (-1 padding); mask: (R, T)
    positions to pool: Batch.question_mask, each example's question and the prompt after it. Left
    out: the P-Tuning placeholders and the chat template's opening (the same tokens, hence the same
    hidden states, in every row), and the rationale and answer, so the classifier compares source
    and target rows on what both have and what differs between them. Returns (E, D).
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    keep = mask.reshape(-1) & (example_index.reshape(-1) >= 0)
    index = example_index.reshape(-1)[keep]
    sums = torch.zeros(n_examples, flat.shape[-1], dtype=flat.dtype, device=flat.device)
    sums = sums.index_add(0, index, flat[keep])
    counts = torch.zeros(n_examples, dtype=flat.dtype, device=flat.device).index_add(
        0, index, torch.ones_like(index, dtype=flat.dtype))
    return sums / counts.clamp_min(1.0).unsqueeze(-1)


class DomainHead(nn.Module):
    """Two-way domain classifier on pooled hidden states, behind the gradient-reversal layer."""

    def __init__(self, hidden_size: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: (E, D) -> logits (E, 2). The input goes through R first."""
        return self.net(grad_reverse(pooled).float())


__all__ = [
    "DOMAIN_HEAD_WEIGHTS",
    "DomainHead",
    "LAMBDA_SCHEDULES",
    "grad_reverse",
    "lambda_at",
    "pool_examples",
]
