"""prada: E = L_y − λ·(L_d(source) + L_d(target)) (PRADA, Yin et al., the paper's E(θ_f, θ_y, θ_d)).

L_y is the task loss on labeled source rows (here Std-CoT: rationale + answer). L_d is the domain
classifier's cross-entropy, averaged over the source examples (1/N_s Σ) and over the unlabeled
target-domain questions (1/N_t Σ) of the same step. E is a saddle point: the features θ_f minimize
E (they *confuse* the classifier), the classifier θ_d maximizes E (it minimizes L_d).

The gradient-reversal layer (ray_cotd/student/prada.py, R(q)=q, dR/dq=−I) sits between the pooled
hidden states and the classifier, so one backward pass of the scalar

    loss = L_y + λ·(L_d(source) + L_d(target))

gives θ_d the gradient of +λ·L_d (it learns to classify) and θ_f, through R, the gradient of
L_y − λ·L_d = ∂E/∂θ_f. The loss function returns that scalar and reports E itself as a metric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ray_cotd.student.objectives import std_cot
from ray_cotd.student.objectives.common import LossFn, LossInputs, LossParams, masked_mean

SOURCE, TARGET = 0, 1


def domain_losses(domain_logits: torch.Tensor, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_d(source), L_d(target)): domain CE averaged within each domain. logits (E, 2), domain (E,)."""
    per_example = F.cross_entropy(domain_logits.float(), domain, reduction="none")
    return masked_mean(per_example, domain == SOURCE), masked_mean(per_example, domain == TARGET)


def prada_loss(task_loss: torch.Tensor, domain_logits: torch.Tensor, domain: torch.Tensor, *,
               lambda_: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar to back-propagate through the GRL, and metrics (E, L_d parts, classifier accuracy).

    task_loss: scalar L_y. domain_logits: (E, 2) from the classifier behind the GRL. domain: (E,).
    """
    if lambda_ < 0:
        raise ValueError(f"lambda_: {lambda_} must be >= 0")
    source_ld, target_ld = domain_losses(domain_logits, domain)
    domain_loss = source_ld + target_ld
    accuracy = (domain_logits.argmax(-1) == domain).float().mean()
    return task_loss + lambda_ * domain_loss, {
        "task_loss": task_loss.detach(),
        "domain_loss_source": source_ld.detach(),
        "domain_loss_target": target_ld.detach(),
        "domain_accuracy": accuracy.detach(),
        "E": (task_loss - lambda_ * domain_loss).detach(),
    }


def adversarial(task_loss_fn: LossFn) -> LossFn:
    """The PRADA loss over any task loss from the table (std_cot here, cascod in cascod+prada)."""

    def loss(inputs: LossInputs, params: LossParams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if inputs.domain_logits is None or inputs.domain is None:
            raise ValueError("a domain-adversarial objective needs domain logits and labels")
        task, task_parts = task_loss_fn(inputs, params)
        value, parts = prada_loss(task, inputs.domain_logits, inputs.domain, lambda_=params.lambda_)
        return value, {**task_parts, **parts}

    return loss


layout = std_cot.layout
loss = adversarial(std_cot.loss)
