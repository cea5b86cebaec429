"""The project's names, each from one table: objectives, granularity levels, rationale formats,
evaluation baselines and the stages of the `ray-cotd` command.

Configs (ray_cotd.config), the CLI, tune and the study read the valid names here. The modules that
implement a name key their own tables by the same names and check at import that the keys agree
(`require_keys`): student/objectives (each objective's layout and loss), teacher/prompts (the
instruction text of each level and format), config.STAGE_CONFIGS and the CLI's stage runners. A
config field that is a `Literal` over these names uses the Literal defined here, which is checked
against its table below. No torch and no Ray here: config.py imports this module.

Two name tables live beside the data they name and are read from there: answer types
(ray_cotd.data.answers.ANSWER_TYPES) and field-mapping presets (ray_cotd.data.readers.MAPPING_PRESETS).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ray_cotd.configbase import ConfigError

# The paper symbols an objective may read. Each keeps one meaning everywhere (docs/objectives.md):
PAPER_SYMBOLS: dict[str, str] = {
    "alpha": "CasCoD's answer-loss weight: L = (1-α)·L_rationale + α·L_answer",
    "lambda_": "PRADA's domain-loss weight λ in E = L_y − λ·(L_d(source) + L_d(target))",
}


@dataclass(frozen=True)
class ObjectiveInfo:
    """What the project outside the loss needs to know about one training objective.

    symbols: the paper symbols (PAPER_SYMBOLS) its loss reads; TrainConfig values of the others
        are unused under it, so searching them is refused (tune).
    needs_rationale: rows without a rationale are an error under it.
    domain_adversarial: every step mixes in unlabeled target-domain questions and trains a domain
        classifier behind gradient reversal (PRADA); it needs TrainConfig.target_questions.
    summary: one line, the equation by name (docs/objectives.md gives it in full).
    label_task: the student answers through its task-prefixed label prompt, directly, with no
        rationale stage (step_by_step's "[label] Q" task); generation reads it from student.json.
    """

    symbols: frozenset[str]
    needs_rationale: bool
    domain_adversarial: bool
    summary: str
    label_task: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(self.symbols - set(PAPER_SYMBOLS))
        if unknown:
            raise ValueError(f"unknown paper symbols {unknown}; valid: {', '.join(PAPER_SYMBOLS)}")
        if ("lambda_" in self.symbols) != self.domain_adversarial:
            raise ValueError("λ weights the domain loss: an objective reads lambda_ exactly when it is domain-adversarial")


OBJECTIVES: dict[str, ObjectiveInfo] = {
    "answer_only": ObjectiveInfo(frozenset(), needs_rationale=False, domain_adversarial=False,
                                 summary="cross-entropy on the answer given the question"),
    "std_cot": ObjectiveInfo(frozenset(), needs_rationale=True, domain_adversarial=False,
                             summary="cross-entropy on rationale + answer given the question (Std-CoT)"),
    "step_by_step": ObjectiveInfo(frozenset(), needs_rationale=True, domain_adversarial=False,
                                  summary="L_label + L_rationale, two prefixed tasks (Hsieh et al. 2023)",
                                  label_task=True),
    "cascod": ObjectiveInfo(frozenset({"alpha"}), needs_rationale=True, domain_adversarial=False,
                            summary="(1-α)·L_rationale + α·L_answer (CasCoD, Dai et al. 2024)"),
    "prada": ObjectiveInfo(frozenset({"lambda_"}), needs_rationale=True, domain_adversarial=True,
                           summary="L_y − λ·(L_d(src) + L_d(tgt)) with Std-CoT as L_y (PRADA, Yin et al.)"),
    "cascod+prada": ObjectiveInfo(frozenset({"alpha", "lambda_"}), needs_rationale=True, domain_adversarial=True,
                                  summary="PRADA's E with CasCoD as L_y (no paper has it)"),
}
ObjectiveName = Literal["answer_only", "std_cot", "step_by_step", "cascod", "prada", "cascod+prada"]


def objectives_using(symbol: str) -> tuple[str, ...]:
    """The objectives whose loss reads paper symbol `symbol` ("alpha" or "lambda_")."""
    if symbol not in PAPER_SYMBOLS:
        raise ValueError(f"unknown paper symbol {symbol!r}; valid: {', '.join(PAPER_SYMBOLS)}")
    return tuple(name for name, info in OBJECTIVES.items() if symbol in info.symbols)


# Granularity levels of teacher rationales, 1 = tersest, 6 = most detailed (the key-factors
# paper's axis); teacher/prompts.py holds each level's instruction and exemplars.
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

# Rationale formats: plain CoT, least-to-most sub-questions, rephrase-and-respond, symbolic;
# teacher/prompts.py holds each format's instruction and exemplars.
FORMATS: tuple[str, ...] = ("cot", "least_to_most", "rar", "symbolic")

# Evaluation baselines, run on EvaluateConfig.baseline_model: name -> whether its prompt carries
# few-shot demonstrations (untrained: zero-shot with the students' prompt).
BASELINES: dict[str, bool] = {"untrained": False, "few_shot": True}

# Student generation backends, one `backend` key in the evaluate, train (validation) and serve
# configs: name -> what runs the two stages. Both keep lm/generate.py's contract and stop rules.
GENERATION_BACKENDS: dict[str, str] = {
    "hf": "transformers forward passes in ray-cotd's own decoding loop (lm/generate.py); every student",
    "vllm": "vLLM's engine (lm/vllm.py): base, full-weight and LoRA students; not P-Tuning",
}
GenerationBackend = Literal["hf", "vllm"]

# The stages of `ray-cotd STAGE CONFIG`, each with one typed config (config.STAGE_CONFIGS) and one
# runner (cli.STAGE_RUNNERS): stage -> its line in `ray-cotd --help`.
STAGES: dict[str, str] = {
    "annotate": "annotate questions with teacher rationales (Ray Data)",
    "train": "fine-tune a student with a distillation objective (Ray Train)",
    "evaluate": "score students on IND/OOD test sets and write a report",
    "tune": "search alpha, lambda and granularity level (Ray Tune + Optuna + ASHA)",
    "serve": "serve a student's two-stage answers over HTTP (Ray Serve)",
    "pipeline": "annotate -> train -> evaluate (-> tune, serve) under one run directory",
}


def require_keys(what: str, keys: Iterable[Any], names: Iterable[Any]) -> None:
    """Raise TypeError unless `keys` (a table keyed by names, or a Literal's values) are exactly
    `names`, in order. Called at import by every table keyed by a name table here."""
    keys, names = tuple(keys), tuple(names)
    if keys != names:
        raise TypeError(f"{what}: keys {list(keys)} differ from the names {list(names)}")


def check_choices(levels: Iterable[int], formats: Iterable[str]) -> None:
    """Raise ConfigError listing the valid choices for any unknown granularity level or format."""
    bad_levels = [lv for lv in levels if lv not in LEVELS]
    if bad_levels:
        raise ConfigError(f"levels: {bad_levels} not valid; choose from {list(LEVELS)}")
    bad_formats = [f for f in formats if f not in FORMATS]
    if bad_formats:
        raise ConfigError(f"formats: {bad_formats} not valid; choose from {list(FORMATS)}")


require_keys("ObjectiveName", get_args(ObjectiveName), OBJECTIVES)
require_keys("GenerationBackend", get_args(GenerationBackend), GENERATION_BACKENDS)

__all__ = [
    "BASELINES",
    "FORMATS",
    "GENERATION_BACKENDS",
    "LEVELS",
    "OBJECTIVES",
    "PAPER_SYMBOLS",
    "STAGES",
    "GenerationBackend",
    "ObjectiveInfo",
    "ObjectiveName",
    "check_choices",
    "objectives_using",
    "require_keys",
]
