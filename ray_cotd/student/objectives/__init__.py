"""The training objectives, chosen by name from one table (docs/objectives.md maps each to its
paper equation). Each lives in its own file as a pure loss function plus its sequence layout; its
metadata (paper symbols, needs rationales, domain-adversarial) is its ray_cotd.names.OBJECTIVES
entry, which configs, tune and the study read without importing torch."""

from __future__ import annotations

from ray_cotd import names
from ray_cotd.student.objectives import answer_only, cascod, cascod_prada, prada, std_cot, step_by_step
from ray_cotd.student.objectives.common import Laid, LossInputs, LossParams, Objective, Row, masked_mean

# name -> the module defining its `layout` and `loss`
_MODULES = {
    "answer_only": answer_only,
    "std_cot": std_cot,
    "step_by_step": step_by_step,
    "cascod": cascod,
    "prada": prada,
    "cascod+prada": cascod_prada,
}
names.require_keys("student/objectives OBJECTIVES", _MODULES, names.OBJECTIVES)

OBJECTIVES: dict[str, Objective] = {
    name: Objective(layout=module.layout, loss=module.loss, info=names.OBJECTIVES[name])
    for name, module in _MODULES.items()
}


def get_objective(name: str) -> Objective:
    """The table entry for `name`; a ValueError listing the valid names otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}") from None


__all__ = ["OBJECTIVES", "Laid", "LossInputs", "LossParams", "Objective", "Row", "get_objective", "masked_mean"]
