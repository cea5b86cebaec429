"""P-Tuning's prompt encoder: virtual-token embeddings placed at the start of every prompt.

Why our own encoder: peft cannot hold LoRA and P-Tuning in one PeftModel ("Cannot combine adapters
with different peft types"), and peft's P-Tuning prepends its virtual tokens to a whole row, which
would break sequence packing. So the encoder here produces `num_virtual_tokens` embeddings (peft's
MLP reparameterization: embedding → Linear-ReLU-Linear-ReLU-Linear) that replace the embeddings of
placeholder positions at the start of every example, under LoRA from peft or with the base frozen.
Training (student/) learns it; generation (lm/generate.py) embeds the same placeholders at prefill.
It is saved beside the adapter (prompt_encoder.safetensors + prompt_encoder.json).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PROMPT_ENCODER_WEIGHTS = "prompt_encoder.safetensors"
PROMPT_ENCODER_CONFIG = "prompt_encoder.json"


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
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        weights = self.state_dict() if state is None else state
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(out / PROMPT_ENCODER_WEIGHTS))
        (out / PROMPT_ENCODER_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> PromptEncoder:
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
    "PROMPT_ENCODER_CONFIG",
    "PROMPT_ENCODER_WEIGHTS",
    "PromptEncoder",
    "PromptEncoderConfig",
    "embed_inputs",
]
