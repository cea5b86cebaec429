"""Objectives against hand-computed values on tiny tensors, their limits, and bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from ray_cotd.config import ConfigError, TrainConfig
from ray_cotd.student.objectives import OBJECTIVES, LossInputs, LossParams, get_objective
from ray_cotd.student.objectives.answer_only import answer_only_loss
from ray_cotd.student.objectives.cascod import cascod_loss
from ray_cotd.student.objectives.prada import domain_losses, prada_loss
from ray_cotd.student.objectives.std_cot import std_cot_loss
from ray_cotd.student.objectives.step_by_step import step_by_step_loss

# Two rows; roles: 1 = rationale target, 2 = answer target, 0 = none.
LOGP = torch.tensor([[-1.0, -2.0, -3.0, 0.0], [-0.5, -1.5, -9.0, 0.0]])
ROLES = torch.tensor([[1, 1, 2, 0], [1, 2, 0, 0]])
R_MASK, A_MASK = ROLES == 1, ROLES == 2
L_RATIONALE = (1.0 + 2.0 + 0.5) / 3  # 1.1666...: a token mean over the batch's rationale targets
L_ANSWER = (3.0 + 1.5) / 2  # 2.25; the -9.0 has no role and counts nowhere


def test_answer_only_is_the_mean_answer_nll():
    assert answer_only_loss(LOGP, A_MASK).item() == pytest.approx(2.25)


def test_std_cot_is_one_mean_over_rationale_and_answer():
    assert std_cot_loss(LOGP, R_MASK | A_MASK).item() == pytest.approx((1 + 2 + 3 + 0.5 + 1.5) / 5)


def test_step_by_step_adds_the_two_task_means():
    assert step_by_step_loss(LOGP, R_MASK, A_MASK).item() == pytest.approx(L_RATIONALE + L_ANSWER)


def test_cascod_hand_computed():
    assert cascod_loss(LOGP, R_MASK, A_MASK, alpha=0.3).item() == pytest.approx(0.7 * L_RATIONALE + 0.3 * L_ANSWER)
    assert cascod_loss(LOGP, R_MASK, A_MASK, alpha=0.3).item() == pytest.approx(1.4916666, abs=1e-6)


def test_cascod_limits_alpha_0_and_1():
    assert cascod_loss(LOGP, R_MASK, A_MASK, alpha=0.0).item() == pytest.approx(L_RATIONALE)
    assert cascod_loss(LOGP, R_MASK, A_MASK, alpha=1.0).item() == pytest.approx(L_ANSWER)
    # at the limits the other term gets no gradient at all
    logp = LOGP.clone().requires_grad_(True)
    cascod_loss(logp, R_MASK, A_MASK, alpha=0.0).backward()
    assert (logp.grad[A_MASK] == 0).all() and (logp.grad[R_MASK] != 0).all()
    logp.grad = None
    cascod_loss(logp, R_MASK, A_MASK, alpha=1.0).backward()
    assert (logp.grad[R_MASK] == 0).all() and (logp.grad[A_MASK] != 0).all()


def test_cascod_rejects_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match="alpha: 1.5 is outside"):
        cascod_loss(LOGP, R_MASK, A_MASK, alpha=1.5)


def test_empty_role_gives_zero_not_nan():
    none = torch.zeros_like(R_MASK)
    assert cascod_loss(LOGP, none, A_MASK, alpha=0.5).item() == pytest.approx(0.5 * L_ANSWER)


def test_table_losses_match_the_pure_functions():
    inputs = LossInputs(token_logp=LOGP, roles=ROLES)
    params = LossParams(alpha=0.3)
    assert OBJECTIVES["cascod"].loss(inputs, params)[0].item() == pytest.approx(1.4916666, abs=1e-6)
    value, parts = OBJECTIVES["std_cot"].loss(inputs, params)
    assert value.item() == pytest.approx(1.6) and parts["answer_loss"].item() == pytest.approx(L_ANSWER)
    assert OBJECTIVES["answer_only"].loss(inputs, params)[0].item() == pytest.approx(L_ANSWER)


DOMAIN_LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
DOMAIN = torch.tensor([0, 0, 1, 1])


def test_prada_hand_computed():
    source_ld = (math.log(1 + math.exp(-2)) + math.log(1 + math.e)) / 2  # 0.720095
    target_ld = (math.log(2) + math.log(1 + math.exp(-3))) / 2  # 0.370867
    s, t = domain_losses(DOMAIN_LOGITS, DOMAIN)
    assert (s.item(), t.item()) == (pytest.approx(source_ld, abs=1e-6), pytest.approx(target_ld, abs=1e-6))
    loss, parts = prada_loss(torch.tensor(2.0), DOMAIN_LOGITS, DOMAIN, lambda_=0.5)
    assert loss.item() == pytest.approx(2.0 + 0.5 * (source_ld + target_ld), abs=1e-6)  # 2.545481
    assert parts["E"].item() == pytest.approx(2.0 - 0.5 * (source_ld + target_ld), abs=1e-6)  # 1.454519
    assert parts["domain_accuracy"].item() == pytest.approx(0.5)  # rows 0 and 3 right


def test_prada_table_entry_uses_std_cot_and_cascod_plus_prada_uses_cascod():
    inputs = LossInputs(token_logp=LOGP, roles=ROLES, domain_logits=DOMAIN_LOGITS, domain=DOMAIN)
    params = LossParams(alpha=0.3, lambda_=0.0)
    assert OBJECTIVES["prada"].loss(inputs, params)[0].item() == pytest.approx(1.6)
    assert OBJECTIVES["cascod+prada"].loss(inputs, params)[0].item() == pytest.approx(1.4916666, abs=1e-6)
    with pytest.raises(ValueError, match="domain logits"):
        OBJECTIVES["prada"].loss(LossInputs(token_logp=LOGP, roles=ROLES), params)


def test_prada_rejects_negative_lambda():
    with pytest.raises(ValueError, match="lambda_"):
        prada_loss(torch.tensor(1.0), DOMAIN_LOGITS, DOMAIN, lambda_=-0.1)


def test_unknown_objective_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid objectives: answer_only, std_cot, step_by_step, cascod, prada"):
        get_objective("cascade")


def test_train_config_rejects_bad_symbols_before_any_step():
    with pytest.raises(ConfigError, match="alpha"):
        TrainConfig(alpha=1.2)
    with pytest.raises(ConfigError, match="lambda_"):
        TrainConfig(lambda_=-1.0)
    with pytest.raises(ConfigError, match="target_questions"):
        TrainConfig(objective="prada")
    with pytest.raises(ConfigError, match="objective"):
        TrainConfig(objective="cascade")
