"""trainer_state.pt (the optimizer, scheduler, step and RNG state in every Ray Train checkpoint)
loads with torch.load(weights_only=True): a checkpoint cannot run code on resume (issue 23)."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

from ray_cotd.config import TrainConfig
from ray_cotd.student.train import TRAINER_STATE, load_trainer_state, make_scheduler, trainer_state


def _trained(steps: int):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = make_scheduler(optimizer, TrainConfig(max_steps=10, warmup_steps=2, lr_schedule="cosine"))
    for _ in range(steps):
        model(torch.randn(3, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_the_saved_state_loads_with_weights_only_and_restores_training(tmp_path):
    model, optimizer, scheduler = _trained(3)
    # the layout train.py checkpoints: the optimizer state keyed by parameter name (DDP and FSDP alike)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    torch.save(trainer_state(optimizer_state, scheduler, 3), tmp_path / TRAINER_STATE)
    state = load_trainer_state(tmp_path)
    assert state["step"] == 3 and torch.equal(state["rng"], torch.get_rng_state())
    assert state["scheduler"] == scheduler.state_dict()
    fresh_model, fresh_optimizer, fresh_scheduler = _trained(0)
    fresh_scheduler.load_state_dict(state["scheduler"])
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    steps = {k: v["step"] for k, v in state["optimizer"]["state"].items()}
    assert set(steps) == {n for n, _ in model.named_parameters()} and all(s == 3 for s in steps.values())


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran on resume",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """With weights_only=False (before issue 23) this file printed on resume; any callable would do."""
    (tmp_path / TRAINER_STATE).write_bytes(pickle.dumps({"step": 1, "x": _RunsCode()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_trainer_state(tmp_path)
