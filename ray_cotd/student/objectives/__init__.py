"""The training objectives, chosen by name from one table (docs/objectives.md maps each to its
paper equation). Each lives in its own file as a pure loss function plus its sequence layout."""

from __future__ import annotations

from ray_cotd.student.objectives import answer_only, cascod, cascod_prada, prada, std_cot, step_by_step
from ray_cotd.student.objectives.common import Laid, LossInputs, LossParams, Objective, Row, masked_mean

OBJECTIVES: dict[str, Objective] = {
    "answer_only": answer_only.OBJECTIVE,
    "std_cot": std_cot.OBJECTIVE,
    "step_by_step": step_by_step.OBJECTIVE,
    "cascod": cascod.OBJECTIVE,
    "prada": prada.OBJECTIVE,
    "cascod+prada": cascod_prada.OBJECTIVE,
}


def get_objective(name: str) -> Objective:
    """The table entry for `name`; a ValueError listing the valid names otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}") from None


__all__ = ["OBJECTIVES", "Laid", "LossInputs", "LossParams", "Objective", "Row", "get_objective", "masked_mean"]
