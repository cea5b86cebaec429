"""Token-level KD: forward KL from the teacher's renormalized top-k distribution to the student.

Not an objective of the table but a term any of them can take (TrainConfig.kd_weight):

    L = L_objective + kd_weight · L_KD

    L_KD = (1/|K|) Σ_{t∈K} Σ_{i∈top-k(t)} p_T(i|t) · (log p_T(i|t) − log p_S(i|t))

    p_T(i|t)     = exp(l_i) / Σ_{j∈top-k(t)} exp(l_j)     l: the teacher's stored log-probabilities
    log p_S(i|t) = z_i − log Σ_{v∈V} exp(z_v)             z: the student's logits, full vocabulary

K: the positions whose target the objective trains (a rationale or answer role; a target the
objective masks, such as CasCoD's marker, has none) and whose token the teacher generated at the
same place in the text (ray_cotd/student/kd.py aligns them). It is KL(p_T || p_S) at temperature 1
(Hinton et al. 2015) restricted to the teacher's top-k: the teacher's mass outside its top-k is
dropped and the rest renormalized, as in axolotl's and DistillKit's top-k KD. The student keeps its
full-vocabulary normalization, so mass it puts outside the teacher's top-k raises the loss through
log p_S. A token mean over the batch, as every objective's terms are.

Memory: the (N, V) fp32 rows of the student's logits at the N KD positions are kept for the
backward pass (N·V·4 bytes; bench/train.py --kd measures the step-time and memory cost).
"""

from __future__ import annotations

import torch


def kd_loss(logits: torch.Tensor, kd_index: torch.Tensor, teacher_ids: torch.Tensor,
            teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """L_KD above. logits: (R, T, V) student logits; kd_index: (N,) flat indices into the R*T
    positions; teacher_ids: (N, k) long; teacher_logprobs: (N, k) the teacher's log-probabilities
    of those ids (any normalization: they are renormalized over the k). N = 0 gives 0."""
    if kd_index.numel() == 0:
        return logits.new_zeros(())
    rows = logits.flatten(0, 1).index_select(0, kd_index).float()  # (N, V)
    student_logp = rows.gather(1, teacher_ids) - torch.logsumexp(rows, dim=-1, keepdim=True)  # (N, k)
    teacher_logp = torch.log_softmax(teacher_logprobs.float(), dim=-1)  # renormalized over the top-k
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(dim=-1)  # (N,)
    return kl.mean()


__all__ = ["kd_loss"]
