"""cascod+prada: PRADA's domain-adversarial objective with CasCoD as the task loss L_y.

E = [(1-α)·L_rationale + α·L_answer] − λ·(L_d(source) + L_d(target)); no paper has it. The layout
is CasCoD's (one forward pass per labeled row), plus PRADA's target-domain questions each step.
"""

from __future__ import annotations

from ray_cotd.student.objectives import cascod
from ray_cotd.student.objectives.prada import adversarial

layout = cascod.layout
loss = adversarial(cascod.loss)
