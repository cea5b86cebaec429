"""A tiny random-init Llama and a one-id-per-character tokenizer, for unit tests that need a real
transformers model without the embedded one (seeded: the same weights every call)."""

from __future__ import annotations

import string

import torch


def tiny_llama() -> tuple:
    """(LlamaForCausalLM, PreTrainedTokenizerFast): 2 layers, hidden 32, every printable character a token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    vocab["<unk>"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=1, pad_token_id=0, bos_token_id=1)
    return LlamaForCausalLM(config), tok
