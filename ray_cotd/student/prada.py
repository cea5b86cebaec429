"""PRADA's parts in the student: gradient reversal, the domain classifier, the P-Tuning prompt
encoder, pooling and the λ schedule. The loss itself is objectives/prada.py.

Why our own prompt encoder: peft cannot hold LoRA and P-Tuning in one PeftModel ("Cannot combine
adapters with different peft types"), and peft's P-Tuning prepends its virtual tokens to a whole
row, which would break sequence packing. So the encoder here produces `num_virtual_tokens`
embeddings (peft's MLP reparameterization: embedding → Linear-ReLU-Linear-ReLU-Linear) that replace
the embeddings of placeholder positions at the start of every example (collate.Sequence.n_virtual),
under LoRA from peft or with the base frozen. It is saved beside the adapter
(prompt_encoder.safetensors + prompt_encoder.json) and inference prepends it with `embed_inputs`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

PROMPT_ENCODER_WEIGHTS = "prompt_encoder.safetensors"
PROMPT_ENCODER_CONFIG = "prompt_encoder.json"
DOMAIN_HEAD_WEIGHTS = "domain_head.safetensors"


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor) -> torch.Tensor:
        return q.view_as(q)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def grad_reverse(q: torch.Tensor) -> torch.Tensor:
    """R(q) = q in the forward pass, dR/dq = −I in the backward pass (Ganin & Lempitsky; PRADA)."""
    return _ReverseGrad.apply(q)


def lambda_at(lambda_: float, schedule: Literal["constant", "dann"], progress: float) -> float:
    """λ for training progress p in [0, 1]: constant, or λ·(2/(1+exp(−10p)) − 1), the DANN ramp
    that starts at 0 so the classifier learns before its reversed gradient reaches the features."""
    if lambda_ < 0:
        raise ValueError(f"lambda_: {lambda_} must be >= 0")
    if schedule == "constant":
        return lambda_
    if schedule == "dann":
        p = min(max(progress, 0.0), 1.0)
        return lambda_ * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
    raise ValueError(f"unknown lambda schedule {schedule!r}; valid: constant, dann")


def pool_examples(hidden: torch.Tensor, example_index: torch.Tensor, mask: torch.Tensor, n_examples: int) -> torch.Tensor:
    """Mean of hidden states per example over the masked positions.

    hidden: (R, T, D); example_index: (R, T) example of each position (-1 padding); mask: (R, T)
    positions to pool (the question tokens: virtual placeholders and the answer excluded, so the
    classifier compares source and target rows on what both have). Returns (E, D).
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


@dataclass(frozen=True)
class PromptEncoderConfig:
    num_virtual_tokens: int
    token_dim: int
    encoder_hidden_size: int = 128


class PromptEncoder(nn.Module):
    """P-Tuning's MLP prompt encoder (Liu et al., GPT Understands, Too), as peft builds it."""

    def __init__(self, config: PromptEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.num_virtual_tokens, config.token_dim)
        h = config.encoder_hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(config.token_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, config.token_dim)
        )

    def forward(self) -> torch.Tensor:
        """The virtual-token embeddings, (num_virtual_tokens, token_dim)."""
        return self.mlp(self.embedding.weight)

    def save(self, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Write the weights and config; `state` replaces the module's own weights (the full
        tensors gathered from FSDP shards, which the module itself does not hold)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        weights = self.state_dict() if state is None else state
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(out / PROMPT_ENCODER_WEIGHTS))
        (out / PROMPT_ENCODER_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> PromptEncoder:
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / PROMPT_ENCODER_CONFIG).is_file():
            raise FileNotFoundError(f"{d} has no {PROMPT_ENCODER_CONFIG}: not a P-Tuning student directory")
        encoder = cls(PromptEncoderConfig(**json.loads((d / PROMPT_ENCODER_CONFIG).read_text())))
        encoder.load_state_dict(load_file(str(d / PROMPT_ENCODER_WEIGHTS)))
        return encoder


def embed_inputs(embedding: nn.Module, input_ids: torch.Tensor, virtual_index: torch.Tensor,
                 prompt_encoder: PromptEncoder | None) -> torch.Tensor:
    """Token embeddings with the placeholders replaced by the prompt encoder's virtual tokens.

    input_ids, virtual_index: (R, T), virtual_index k >= 0 at the k-th placeholder of an example.
    Returns inputs_embeds (R, T, D) for the causal LM. Inference: put num_virtual_tokens
    placeholders before each prompt (virtual_index 0..V-1) and pass the result as inputs_embeds.
    """
    embeds = embedding(input_ids)
    if prompt_encoder is None:
        return embeds
    is_virtual = virtual_index >= 0
    virtual = prompt_encoder().to(embeds.dtype)
    return torch.where(is_virtual.unsqueeze(-1), virtual[virtual_index.clamp_min(0)], embeds)


__all__ = [
    "DOMAIN_HEAD_WEIGHTS",
    "PROMPT_ENCODER_CONFIG",
    "PROMPT_ENCODER_WEIGHTS",
    "DomainHead",
    "PromptEncoder",
    "PromptEncoderConfig",
    "embed_inputs",
    "grad_reverse",
    "lambda_at",
    "pool_examples",
]
