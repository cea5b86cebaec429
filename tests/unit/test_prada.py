"""PRADA's parts: gradient reversal, λ schedule, pooling, domain head, prompt encoder."""

from __future__ import annotations

import math

import pytest
import torch

from ray_cotd.lm.prompt_encoder import PromptEncoder, PromptEncoderConfig, embed_inputs
from ray_cotd.student.prada import DomainHead, grad_reverse, lambda_at, pool_examples


def test_grl_is_identity_forward_and_negates_the_gradient():
    q = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    out = grad_reverse(q)
    assert torch.equal(out, q)
    (out * torch.tensor([2.0, 3.0, 4.0])).sum().backward()
    assert q.grad.tolist() == [-2.0, -3.0, -4.0]  # dR/dq = -I


def test_domain_head_trains_itself_to_classify_but_pushes_features_the_other_way():
    torch.manual_seed(0)
    head = DomainHead(4, width=8)
    pooled = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.nn.functional.cross_entropy(head(pooled), labels).backward()
    reversed_grad = pooled.grad.clone()
    pooled.grad = None
    torch.nn.functional.cross_entropy(head.net(pooled), labels).backward()  # the same head without R
    torch.testing.assert_close(reversed_grad, -pooled.grad)
    assert all(p.grad is not None for p in head.parameters())


def test_lambda_schedules():
    assert lambda_at(0.3, "constant", 0.7) == 0.3
    assert lambda_at(0.5, "dann", 0.0) == 0.0
    assert lambda_at(0.5, "dann", 1.0) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert lambda_at(1.0, "dann", 0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.462117
    ramp = [lambda_at(1.0, "dann", p / 10) for p in range(11)]
    assert ramp == sorted(ramp)
    with pytest.raises(ValueError, match="lambda_"):
        lambda_at(-0.1, "constant", 0.0)
    with pytest.raises(ValueError, match="valid: constant, dann"):
        lambda_at(0.1, "linear", 0.0)


def test_pool_examples_averages_masked_positions_per_example():
    hidden = torch.arange(12, dtype=torch.float32).view(1, 6, 2)  # positions t hold [2t, 2t+1]
    example = torch.tensor([[0, 0, 0, 1, 1, -1]])
    mask = torch.tensor([[False, True, True, True, False, True]])
    pooled = pool_examples(hidden, example, mask, 2)
    assert pooled.tolist() == [[3.0, 4.0], [6.0, 7.0]]  # mean of t=1,2; then t=3 only; padding ignored


def test_prompt_encoder_replaces_placeholders_and_round_trips(tmp_path):
    torch.manual_seed(0)
    encoder = PromptEncoder(PromptEncoderConfig(num_virtual_tokens=2, token_dim=4, encoder_hidden_size=8))
    embedding = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[0, 0, 5, 6, 0, 0, 7]])
    virtual = torch.tensor([[0, 1, -1, -1, 0, 1, -1]])  # two packed examples, each with 2 placeholders
    out = embed_inputs(embedding, ids, virtual, encoder)
    prompts = encoder()
    torch.testing.assert_close(out[0, [0, 1, 4, 5]], torch.cat([prompts, prompts]))
    torch.testing.assert_close(out[0, [2, 3, 6]], embedding(torch.tensor([5, 6, 7])))
    out.sum().backward()
    assert encoder.embedding.weight.grad is not None
    encoder.save(tmp_path)
    torch.testing.assert_close(PromptEncoder.load(tmp_path)(), prompts)
    with pytest.raises(FileNotFoundError, match="prompt_encoder.json"):
        PromptEncoder.load(tmp_path / "nothing")


def test_domain_head_gets_its_own_learning_rate_under_any_wrapper():
    """domain_head_lr puts PRADA's classifier in a second AdamW group (found by name, also under a
    DDP-style `module.` prefix); the schedule scales both groups; frozen tensors stay out."""
    from ray_cotd.config import ConfigError, TrainConfig
    from ray_cotd.student.train import make_scheduler, param_groups

    inner = torch.nn.Module()
    inner.lm = torch.nn.Linear(4, 4)
    inner.lm.bias.requires_grad_(False)
    inner.domain_head = DomainHead(4, width=8)
    wrapped = torch.nn.Module()
    wrapped.module = inner  # what DDP's named_parameters() prefixes
    head = list(inner.domain_head.parameters())

    same = param_groups(wrapped, TrainConfig(lr=1e-3, warmup_steps=0, max_steps=10))
    assert len(same) == 1 and same[0]["lr"] == 1e-3 and len(same[0]["params"]) == 1 + len(head)

    cfg = TrainConfig(lr=1e-3, domain_head_lr=1e-2, warmup_steps=2, max_steps=10, lr_schedule="cosine")
    groups = param_groups(wrapped, cfg)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert groups[0]["params"] == [inner.lm.weight]  # the frozen bias is not optimized
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in head}
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    main, classifier = scheduler.get_last_lr()
    assert 0 < main < 1e-3 and classifier == pytest.approx(10 * main)  # one schedule, two peaks

    with pytest.raises(ConfigError, match="domain_head_lr"):
        TrainConfig(domain_head_lr=0.0).validate()
