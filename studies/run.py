"""The distillation study (issues #9 and #21): objectives, granularity, teachers, tuned vs default,
answer-only vs CoT.

    python studies/run.py [--scale cpu|cpu-power|paper|smoke] [--only EXPERIMENT,...]
                          [--out runs/study] [--data ../shared/data]

Each experiment is a set of `ray-cotd train` / `evaluate` / `tune` runs, driven through the same
functions those commands call (`load_stage_config` + `run_train` / `run_evaluate` / `run_tune`) on
one local Ray cluster (studies/gpu_run.py drives the same runs in one process on a GPU, without Ray).
A run whose output exists (train/tune: summary.json, evaluate: report.json) is skipped, so an
interrupted study continues where it stopped; a train run stopped half-way resumes from its last Ray
Train checkpoint (same name and storage). Every run's equivalent `ray-cotd` command goes to
OUT/commands.sh and its wall time to OUT/timings.json; at the end the runner writes OUT/tables.md,
OUT/study.json and the PNG plots.

    answer_only_vs_cot  issue 21 item 3: answer_only vs std_cot on SVAMP chatgpt level 3, several seeds
                        per arm, lr and LoRA rank chosen on validation rows, the whole SVAMP hold-out
    1. objectives   answer_only, std_cot, step_by_step, cascod, da_lora, cascod+da_lora (domain-adversarial
                    LoRA) and prada (P-Tuning + LoRA, three teachers' CoTs, DANN ramp) on StrategyQA
                    chatgpt level 1; StrategyQA test (IND) and CommonsenseQA test (OOD) + untrained
    granularity_curve  issue 21: std_cot on SVAMP chatgpt levels 1-6 as arms, one epoch each, the whole
                    SVAMP hold-out; the level is chosen on validation rows (val_accuracy, design `choose`)
    granularity_seeds  issue 21 item 1: granularity_curve's primary comparison (L3 vs L6) over seeds 0-2,
                    seed 0 being granularity_curve's students (`reuse`)
    teacher_choice  issue 21: std_cot on SVAMP rationales of GPT-4o, Gemini-1.5-Flash, LLaMA-3-70B at
                    granularity_curve's chosen level (design `level_from`; its GPT-4o student is that
                    experiment's, `reuse`) and human-written equations, the whole SVAMP hold-out
    teacher_seeds   issue 21 item 1: teacher_choice's primary comparison (GPT-4o vs human) over seeds
                    0-2, seed 0 being teacher_choice's students (`reuse`)
    objectives_seeds  issue 21 item 1: objectives' cascod vs std_cot (OOD primary, IND exploratory) over
                    seeds 0-2, seed 0 being objectives' students (`reuse`)
    cascod_svamp    issue 21 item 3: cascod vs std_cot on SVAMP at granularity_curve's chosen level,
                    seeds 0-2, std_cot's students being granularity_curve's (`reuse`), the whole hold-out
    granularity_curve_cascod  issue 21 item 3: granularity_curve for cascod (levels 1-6, one seed each,
                    the level chosen on validation rows)
    granularity_l1_seeds  issue 21 items 1 and 3: the curve's low end (L3 vs L1) over seeds 0-2, the
                    students living in granularity_curve's arms (`reuse`)
    granularity_cascod_seeds  issue 21 item 1: cascod's curve's primary (L3 vs L6) over seeds 0-2, the
                    students living in granularity_curve_cascod's arms (`reuse`)
    2. granularity  std_cot and cascod on SVAMP chatgpt levels 1-6; the fixed SVAMP hold-out split
    3. teachers     cascod on the best level of item 2 from chatgpt, gemini, llama (llama: levels 1-4)
    4. tune         Ray Tune over α, λ and level for cascod+da_lora; best_train.yaml trained and
                    evaluated beside item 1's cascod+da_lora student

The experiments of ARM_EXPERIMENTS are *arm experiments* (studies/<experiment>/design.yaml): each arm
trains one student per seed of the scale (TrainConfig.seed; the hold-out split's split_seed stays
fixed), optionally after a learning-rate / LoRA-rank sweep on validation rows, or reuses another
experiment's arm (`reuse`), and is evaluated in its own run (so a stop loses at most one arm's
evaluation). The design's comparisons and their rule (`decide`: the exact paired
sign-flip test of ray_cotd.metrics.paired_sign_flip, two-sided at the stated alpha) are recorded in
OUT/<experiment>/design.json at the first start; a later start with another design, seeds, grid,
epochs or test limits is refused, so the rules are fixed before any result exists.

Nothing trains or selects on a test set: StrategyQA and CommonsenseQA test files are only read by
evaluate; PRADA's target questions are CommonsenseQA *train* questions; SVAMP questions on the test
side of the hold-out split are removed by training and are the only ones evaluate scores; sweeps
select on validation rows carved from the training side; item 3's level is chosen on hold-out rows
apart from item 2's test rows (granularity), or on validation rows (granularity_curve's `choose`,
which teacher_choice reads).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shlex
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from ray_cotd import names
from ray_cotd.metrics import accuracy, error_bars, mcnemar_exact, paired_mde, paired_sign_flip, seed_spread
from ray_cotd.ray_session import start_local_cluster
from ray_cotd.scoring import Prediction, read_predictions

STUDY_DIR = Path(__file__).resolve().parent
REPO = STUDY_DIR.parent
DATA_PREFIX = "../shared/data"  # how the YAML configs name the data dir (relative to the repo root)
# The fixed run order: teachers needs granularity's best level, tune item 1's cascod+da_lora student.
# teacher_choice and cascod_svamp need granularity_curve's chosen level; teacher_seeds, teacher_choice's students.
EXPERIMENTS = ("answer_only_vs_cot", "objectives", "objectives_seeds", "granularity_curve", "granularity_seeds",
               "teacher_choice", "teacher_seeds", "cascod_svamp", "granularity_curve_cascod", "granularity_l1_seeds",
               "granularity_cascod_seeds", "granularity", "teachers", "tune")
# driven by studies/<experiment>/design.yaml
ARM_EXPERIMENTS = ("answer_only_vs_cot", "objectives", "objectives_seeds", "granularity_curve", "granularity_seeds",
                   "teacher_choice", "teacher_seeds", "cascod_svamp", "granularity_curve_cascod", "granularity_l1_seeds",
                   "granularity_cascod_seeds")
SCORES = ("free", "constrained")  # what a comparison compares: free accuracy, or constrained to the listed choices
ARM_TITLES = {"answer_only_vs_cot": "Answer-only vs CoT (SVAMP, issue 21 item 3)",
              "objectives": "1. Objectives (IND vs OOD)",
              "objectives_seeds": "1b. Objectives: cascod vs std_cot (IND and OOD)",
              "granularity_curve": "2. Granularity curve (SVAMP, std_cot, levels 1-6)",
              "granularity_seeds": "2b. Granularity L3 vs L6 (SVAMP, std_cot)",
              "teacher_choice": "3. Teacher choice (SVAMP, std_cot, level from validation)",
              "teacher_seeds": "3b. Teacher choice: GPT-4o vs human (SVAMP, std_cot)",
              "cascod_svamp": "1c. Objectives on SVAMP: cascod vs std_cot (level from validation)",
              "granularity_curve_cascod": "2c. Granularity curve (SVAMP, cascod, levels 1-6)",
              "granularity_l1_seeds": "2d. Granularity L3 vs L1 (SVAMP, std_cot)",
              "granularity_cascod_seeds": "2e. Granularity L3 vs L6 (SVAMP, cascod)"}
GRANULARITY_OBJECTIVES = ("std_cot", "cascod")
LEVELS = names.LEVELS
# teacher -> SVAMP levels in the release (llama has only 1-4)
TEACHER_LEVELS = {"chatgpt": LEVELS, "gemini": LEVELS, "llama": (1, 2, 3, 4)}
UNTRAINED = "untrained"  # the baseline (ray_cotd.names.BASELINES) every experiment reports beside its students
SELECT_SET = "svamp_select"  # item 2's selection rows (granularity/select.yaml), never a reported test row


class StudyError(RuntimeError):
    """A problem with the study's inputs (missing data, a prerequisite experiment not run)."""


# ---------------------------------------------------------------------------------------------
# Pure helpers (no Ray, no model): paths, resume logic, choices, tables
# ---------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A directory name for a system name: "cascod+da_lora" -> "cascod_da_lora"."""
    return name.replace("+", "_")


def rebase(value: Any, data_dir: Path) -> Any:
    """`value` (a config dataclass, list, dict or str) with every path under ../shared/data moved
    to `data_dir` (absolute, so Tune trials, whose cwd is their trial directory, find it)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: rebase(getattr(value, f.name), data_dir) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    if isinstance(value, list):
        return [rebase(v, data_dir) for v in value]
    if isinstance(value, dict):
        return {k: rebase(v, data_dir) for k, v in value.items()}
    if isinstance(value, str) and (value == DATA_PREFIX or value.startswith(DATA_PREFIX + "/")):
        return str(data_dir) + value[len(DATA_PREFIX):]
    return value


def is_done(kind: str, output_dir: Path) -> bool:
    """A run is finished when it wrote its final file (written last by run_train/run_tune/run_evaluate)."""
    return (output_dir / ("report.json" if kind == "evaluate" else "summary.json")).is_file()


def load_scale(name: str, path: Path = STUDY_DIR / "scales.yaml") -> dict[str, Any]:
    """A preset of scales.yaml, checked: its experiments, levels, and the arm experiments' keys
    (seeds, epochs, sweep, arms: against each design) name things that exist."""
    scales = yaml.safe_load(path.read_text())
    if name not in scales:
        raise StudyError(f"--scale {name!r}: not in {path} (choose from {', '.join(scales)})")
    scale = scales[name]
    for key in ("train", "test_limits"):
        if key not in scale:
            raise StudyError(f"{path}: scale {name!r} lacks {key!r}")
    experiments = scale.setdefault("experiments", list(EXPERIMENTS))
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise StudyError(f"{path}: scale {name!r}: experiments {unknown} not valid; choose from {list(EXPERIMENTS)}")
    if "tune" in experiments and "tune" not in scale:
        raise StudyError(f"{path}: scale {name!r} runs tune but lacks 'tune'")
    unknown = [v for v in scale.get("levels", []) if v not in LEVELS]
    if unknown:
        raise StudyError(f"{path}: scale {name!r}: levels {unknown} not valid; choose from {list(LEVELS)}")
    for key in ("seeds", "epochs", "sweep", "arms"):
        wrong = [e for e in scale.get(key, {}) if e not in ARM_EXPERIMENTS]
        if wrong:
            raise StudyError(f"{path}: scale {name!r}: {key} for {wrong}; only the arm experiments "
                             f"{list(ARM_EXPERIMENTS)} take it")
    for experiment, arms in scale.get("arms", {}).items():
        valid = list(load_design(experiment)["arms"])
        if [a for a in arms if a not in valid]:
            raise StudyError(f"{path}: scale {name!r}: arms {arms} of {experiment}; choose from {valid}")
    for experiment, seeds in scale.get("seeds", {}).items():
        if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(x, int) or x < 0 for x in seeds):
            raise StudyError(f"{path}: scale {name!r}: seeds of {experiment} must be distinct integers >= 0: {seeds}")
    for experiment, grid in scale.get("sweep", {}).items():
        if not grid or [k for k in grid if k not in SWEEP_KEYS] or any(not v for v in grid.values()):
            raise StudyError(f"{path}: scale {name!r}: sweep of {experiment} must give non-empty lists for "
                             f"{list(SWEEP_KEYS)}: {grid}")
    return scale


# -- arm experiments: design, sweep, epochs, pre-registration -----------------------------------

SWEEP_KEYS = ("lr", "lora_r")  # what a sweep may vary; lora_alpha follows lora_r (alpha / r stays 2)
# How a sweep's runs (or a design's `choose` among arms) are ranked: summary key -> lower or higher is better.
# val_loss compares runs of one arm (the same targets); val_accuracy also compares arms whose targets differ
# (granularity levels), since every arm answers the same validation questions.
SELECT_BY = {"val_loss": "min", "val_accuracy": "max"}


def load_design(experiment: str, path: Path | None = None) -> dict[str, Any]:
    """studies/<experiment>/design.yaml, checked: arms with train overrides, comparisons between
    arms that exist, a score in SCORES, 0 < alpha < 1, a known select_by."""
    path = path or STUDY_DIR / experiment / "design.yaml"
    design = yaml.safe_load(path.read_text())
    for key in ("train", "evaluate", "arms", "comparisons", "select_by"):
        if key not in design:
            raise StudyError(f"{path}: lacks {key!r}")
    if design["select_by"] not in SELECT_BY:
        raise StudyError(f"{path}: select_by {design['select_by']!r}; choose from {list(SELECT_BY)}")
    if "choose" in design and (not isinstance(design["choose"], dict) or design["choose"].get("by") not in SELECT_BY):
        raise StudyError(f"{path}: choose needs `by` in {list(SELECT_BY)} (and optionally `what`): {design['choose']!r}")
    level_from = design.get("level_from")
    if level_from is not None:
        if level_from == experiment or level_from not in ARM_EXPERIMENTS:
            raise StudyError(f"{path}: level_from {level_from!r}: name another arm experiment "
                             f"({list(ARM_EXPERIMENTS)})")
        choose = load_design(level_from).get("choose", {})
        if choose.get("what") != "level":
            raise StudyError(f"{path}: level_from {level_from!r}: that design does not choose a level "
                             "(`choose: {by: ..., what: level}`)")
    for arm, spec in design["arms"].items():
        extra = [k for k in spec if k not in ("train", "corpora", "evaluate", "levels", "reuse")]
        if extra or not (isinstance(spec.get("train"), list) or "reuse" in spec):
            raise StudyError(f"{path}: arm {arm!r} needs a `train` list of overrides or `reuse` (optional: corpora, "
                             f"evaluate, levels); got keys {list(spec)}")
        if "reuse" in spec and not (isinstance(spec["reuse"], str) and spec["reuse"].count("/") == 1):
            raise StudyError(f"{path}: arm {arm!r}: reuse {spec['reuse']!r} must read EXPERIMENT/ARM "
                             "(ARM may hold {level})")
        if level_from is None and uses_level(spec):
            raise StudyError(f"{path}: arm {arm!r} uses the chosen level ({{level}}), but the design has no "
                             "`level_from`")
    names_seen = set()
    for c in design["comparisons"]:
        missing = [k for k in ("name", "a", "b", "test_set", "score", "alpha") if k not in c]
        if missing:
            raise StudyError(f"{path}: comparison {c.get('name')!r} lacks {missing}")
        if c["name"] in names_seen:
            raise StudyError(f"{path}: two comparisons named {c['name']!r}")
        names_seen.add(c["name"])
        for side in ("a", "b"):
            if c[side] not in design["arms"]:
                raise StudyError(f"{path}: comparison {c['name']!r}: {side} = {c[side]!r} is no arm "
                                 f"({list(design['arms'])})")
        if c["score"] not in SCORES:
            raise StudyError(f"{path}: comparison {c['name']!r}: score {c['score']!r}; choose from {list(SCORES)}")
        if not 0 < c["alpha"] < 1:
            raise StudyError(f"{path}: comparison {c['name']!r}: alpha {c['alpha']} not in (0, 1)")
    return design


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of a sweep grid, in the grid's order: {"lr": [a, b], "lora_r": [8]} ->
    [{"lr": a, "lora_r": 8}, {"lr": b, "lora_r": 8}]."""
    keys = [k for k in SWEEP_KEYS if k in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict[str, Any]) -> str:
    """A run directory name for a grid point: {"lr": 0.001, "lora_r": 8} -> "lr0.001_r8"."""
    return "_".join(f"lr{point['lr']:g}" if k == "lr" else f"r{point['lora_r']}" for k in point)


def point_overrides(point: dict[str, Any]) -> list[str]:
    """TrainConfig overrides of a grid point. A rank also sets lora_alpha = 2 r, so LoRA's scale
    alpha / r is the same at every rank and the rank alone changes."""
    out = [f"lr={point['lr']}"] if "lr" in point else []
    if "lora_r" in point:
        out += [f"lora_r={point['lora_r']}", f"lora_alpha={2 * point['lora_r']}"]
    return out


def choose_point(runs: list[tuple[dict[str, Any], dict]], select_by: str) -> dict[str, Any]:
    """The grid point whose run's summary is best by `select_by` (SELECT_BY: val_loss lowest,
    val_accuracy highest); a tie goes to the earlier point. runs: (point, summary.json) in grid order."""
    return runs[best_index([s for _, s in runs], select_by, [point_name(p) for p, _ in runs])][0]


def best_index(summaries: list[dict], select_by: str, names_: list[str]) -> int:
    """The index of the best summary by `select_by` (a tie goes to the earlier one); a summary
    without the value is a StudyError naming its run."""
    sign = 1 if SELECT_BY[select_by] == "min" else -1
    scored = []
    for i, summary in enumerate(summaries):
        value = summary.get(select_by)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            hint = "val_generate > 0" if select_by == "val_accuracy" else "val_fraction > 0"
            raise StudyError(f"run {names_[i]} has no {select_by} (set {hint})")
        scored.append((sign * value, i))
    return min(scored)[1]


def steps_for_epochs(rows: int, epochs: float, rows_per_step: int) -> int:
    """Optimizer steps that cover `epochs` passes over `rows` training rows (at least one step)."""
    return max(1, math.ceil(epochs * rows / rows_per_step))


def epochs_of(run_dir: Path) -> float | None:
    """Passes over its training rows a finished train run made: steps x batch_size x grad_accum x
    num_workers / the rows it encoded (summary.json and resolved_config.yaml); None if unfinished."""
    summary_path, config_path = run_dir / "summary.json", run_dir / "resolved_config.yaml"
    if not summary_path.is_file() or not config_path.is_file():
        return None
    summary, cfg = json.loads(summary_path.read_text()), yaml.safe_load(config_path.read_text())
    encode = summary.get("data", {}).get("encode", {})
    rows = encode.get("rows", 0) - encode.get("dropped_too_long", 0)
    if rows <= 0:
        return None
    return summary["steps"] * cfg["batch_size"] * cfg.get("grad_accum", 1) * cfg.get("num_workers", 1) / rows


def precision_note(training: dict[str, dict[int, dict[str, Any]]]) -> str | None:
    """The line under an arm table whose students trained in more than one precision (a study
    continued on a machine where `auto` resolves otherwise: bf16 where the CPU or GPU runs it
    natively, fp32 elsewhere), naming each arm's seeds per precision. None when they agree."""
    by_arm = {arm: {seed: info.get("precision") for seed, info in seeds.items() if info.get("precision")}
              for arm, seeds in training.items()}
    if len({p for seeds in by_arm.values() for p in seeds.values()}) <= 1:
        return None
    parts = []
    for arm, seeds in by_arm.items():
        groups: dict[str, list[int]] = {}
        for seed, precision in seeds.items():
            groups.setdefault(precision, []).append(seed)
        parts.extend(f"{arm} seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))} in {precision}"
                     for precision, ss in groups.items())
    return ("**Mixed precision**: these students did not all train in one precision (" + "; ".join(parts)
            + "), so a difference between them may be the precision's as much as the arm's.")


def combine_corpora(paths: list[Path], out: Path) -> Path:
    """One JSON array of the rows of several release files (JSON arrays), in order, written once
    to `out` (under the run directory, never the repository): several teachers' rationales of the
    same questions as one corpus, PRADA's diverse CoTs."""
    if out.is_file():
        return out
    rows: list[Any] = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise StudyError(f"{path}: not a JSON array of rows; cannot combine it into {out}")
        rows += data
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out)
    return out


def preregister(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write `record` (an arm experiment's design, seeds, sweep grid, epochs and test limits) to
    `path` with the time, unless it is there already; raise StudyError naming what changed when the
    recorded one differs: the comparisons' rules are fixed before the first run, not after results."""
    record = json.loads(json.dumps(record))  # as it reads back: tuples are lists
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(k for k in {*record, *recorded} - {"recorded"} if recorded.get(k) != record.get(k))
        if changed:
            raise StudyError(f"{path}: this study started with another {', '.join(changed)} (recorded "
                             f"{recorded.get('recorded')}); the rules are fixed once runs exist. Use a new --out, "
                             "or restore the recorded design")
        return recorded
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
    path.write_text(json.dumps(entry, indent=2))
    return entry


def accuracy_of(report: dict, system: str, test_set: str) -> dict | None:
    """The accuracy record {rate, ci_low, ci_high, k, n} of one system on one set, or None."""
    for r in report["results"]:
        if r["system"] == system and r["test_set"] == test_set:
            return r["accuracy"]
    return None


def best_level(report: dict, objective: str = "cascod", test_set: str = "svamp") -> int:
    """The granularity level whose `objective` student scored highest (ties: the lower level,
    i.e. the shorter rationales)."""
    scored = []
    for level in LEVELS:
        acc = accuracy_of(report, f"{objective}-L{level}", test_set)
        if acc is not None:
            scored.append((-acc["rate"], level))
    if not scored:
        raise StudyError(f"the granularity report has no {objective} students")
    return min(scored)[1]


def uses_level(spec: dict[str, Any]) -> bool:
    """Whether a design arm's train overrides or `reuse` name the chosen level ({level})."""
    return any("{level}" in str(o) for o in [*spec.get("train", []), spec.get("reuse", "")])


def nearest_level(levels: Any, level: int) -> int:
    """`level` if it is in `levels`, else the nearest of them (a tie goes to the lower)."""
    return min(levels, key=lambda lv: (abs(lv - level), lv))


def teacher_level(teacher: str, level: int) -> int:
    """`level` if the teacher has it for SVAMP, else its nearest level (llama stops at 4)."""
    return nearest_level(TEACHER_LEVELS[teacher], level)


def pct(acc: dict | None) -> str:
    if acc is None:
        return "–"
    return f"{100 * acc['rate']:.1f} [{100 * acc['ci_low']:.1f}, {100 * acc['ci_high']:.1f}] ({acc['k']}/{acc['n']})"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def predictions(report: dict, test_set: str, run_dir: Path, system: str | None = None) -> list[Prediction] | None:
    """The predictions of `system` (None: the first system that has them) on `test_set`, from the
    evaluate run's `run_dir`; None where there is no predictions file."""
    for r in report["results"]:
        path = run_dir / str(r.get("predictions") or "")
        if r["test_set"] == test_set and r.get("predictions") and system in (None, r["system"]) and path.is_file():
            return read_predictions(path)
    return None


def constant_answer(report: dict, test_set: str, run_dir: Path) -> tuple[str, dict] | None:
    """The most common gold answer of `test_set` and the accuracy of always giving it, read from
    any system's predictions file (relative to the evaluate run's `run_dir`): the floor a trained
    student must clear (~50% on StrategyQA's yes/no questions). None without predictions."""
    golds = [p.gold for p in predictions(report, test_set, run_dir) or []]
    if not golds:
        return None
    top = Counter(golds).most_common(1)[0][0]
    return top, accuracy([g == top for g in golds]).to_dict()


def best_levels(report: dict) -> dict[str, int]:
    """Each granularity objective's most accurate level on SVAMP (a tie goes to the shorter level)."""
    return {o: best_level(report, o) for o in GRANULARITY_OBJECTIVES
            if any(accuracy_of(report, f"{o}-L{lv}", "svamp") for lv in LEVELS)}


def paired_vs_best(report: dict, run_dir: Path, best_by_objective: dict[str, int]) -> dict[str, dict[int, dict]]:
    """Exact McNemar test of every level against its objective's best level (best_levels),
    question by question on the same SVAMP hold-out questions:
    {objective: {level: mcnemar_exact(best, level)}}."""
    tests: dict[str, dict[int, dict]] = {}
    for objective, best in best_by_objective.items():
        top = predictions(report, "svamp", run_dir, f"{objective}-L{best}")
        if top is None:
            continue
        top_by_id = {p.id: p.correct for p in top}
        for level in LEVELS:
            other = predictions(report, "svamp", run_dir, f"{objective}-L{level}")
            if level == best or other is None:
                continue
            by_id = {p.id: p.correct for p in other}
            ids = [i for i in top_by_id if i in by_id]
            tests.setdefault(objective, {})[level] = mcnemar_exact([top_by_id[i] for i in ids],
                                                                  [by_id[i] for i in ids])
    return tests


def paired_table(tests: dict[str, dict[int, dict]], best: dict[str, int]) -> str:
    """Item 2's paired tests: per level, questions only the best level got right, only this level
    got right, and the exact McNemar p."""
    objectives = [o for o in GRANULARITY_OBJECTIVES if o in tests]

    def cell(objective: str, level: int) -> str:
        if level == best[objective]:
            return "best"
        t = tests[objective].get(level)
        return "–" if t is None else f"{t['a_only']} / {t['b_only']}, p = {t['p']:.3g}"

    rows = [[str(level)] + [cell(o, level) for o in objectives] for level in LEVELS]
    return md_table(["level", *(f"{o}: best L{best[o]} only / this level only, exact McNemar p"
                                for o in objectives)], rows)


def system_name(arm: str, seed: int) -> str:
    """An arm's student of one seed as its evaluate runs name it: ("cascod+da_lora", 0) -> "cascod+da_lora-s0"."""
    return f"{arm}-s{seed}"


def merge_reports(run_dirs: list[Path]) -> dict | None:
    """The finished ones of several evaluate runs (their report.json) as one report: their systems,
    test sets (by name) and results, each result's predictions path made absolute (so `predictions`
    reads it whatever run_dir it is given). None when none has finished."""
    merged: dict[str, Any] = {"systems": [], "test_sets": [], "results": []}
    sets: dict[str, dict] = {}
    for run_dir in run_dirs:
        path = run_dir / "report.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        merged["systems"] += report["systems"]
        for ts in report["test_sets"]:
            sets.setdefault(ts["name"], ts)
        merged["results"] += [{**r, "predictions": str(run_dir / r["predictions"])} if r.get("predictions") else r
                              for r in report["results"]]
    merged["test_sets"] = list(sets.values())
    return merged if merged["results"] else None


def rate_of(report: dict, system: str, test_set: str, score: str = "free") -> dict | None:
    """A system's accuracy record on a set: free (`accuracy`) or constrained to the question's
    listed choices (`constrained_accuracy`, None for sets without choices)."""
    for r in report["results"]:
        if r["system"] == system and r["test_set"] == test_set:
            return r["accuracy"] if score == "free" else r.get("constrained_accuracy")
    return None


def score_columns(report: dict) -> list[tuple[str, str]]:
    """(test set, score) columns of an arm experiment's tables: every set's free accuracy, and its
    constrained accuracy beside it where its questions list their choices."""
    columns = []
    for ts in report["test_sets"]:
        columns.append((ts["name"], "free"))
        if any(r["test_set"] == ts["name"] and r.get("constrained_accuracy") for r in report["results"]):
            columns.append((ts["name"], "constrained"))
    return columns


def arm_rates(report: dict, arm: str, seeds: list[int], test_set: str, score: str) -> dict | None:
    """One arm on one (set, score): each scored seed's accuracy record and the mean, sd, min and
    max of their rates over seeds (ray_cotd.metrics.seed_spread). None when no seed is scored."""
    per_seed = {seed: acc for seed in seeds if (acc := rate_of(report, system_name(arm, seed), test_set, score))}
    if not per_seed:
        return None
    return {"per_seed": per_seed, **seed_spread([a["rate"] for a in per_seed.values()])}


def correctness(report: dict, system: str, test_set: str, score: str) -> tuple[list[bool | None], list[str]] | None:
    """Per question, in test-set order: whether `system` answered it right (free, or constrained:
    None where the question lists no choices), and the question ids. None without predictions."""
    rows = predictions(report, test_set, Path("."), system)
    if rows is None:
        return None
    rows = sorted(rows, key=lambda p: p.position)
    return [p.correct if score == "free" else p.constrained_correct for p in rows], [p.id for p in rows]


def decide(test: dict, alpha: float) -> str:
    """The rule every comparison of an arm experiment is held to, stated in its design.yaml before
    any run: "a" when the exact paired sign-flip p is below alpha and arm a's mean accuracy over its
    seeds is higher, "b" when p < alpha and b's is higher, else "unresolved"."""
    if test["p"] < alpha and test["diff"] != 0:
        return "a" if test["diff"] > 0 else "b"
    return "unresolved"


def compare(report: dict, comparison: dict, seeds: list[int]) -> dict | None:
    """One design comparison on the scored predictions: paired_sign_flip over every seed of both
    arms, question by question (questions without a constrained answer in some seed are left out and
    counted), `decide`'s verdict, the exact McNemar test of each seed pair as a check that no single
    seed carries the difference, and the smallest difference this n and the observed mean squared
    difference could detect (paired_mde, power 0.8). None until every seed of both arms is scored."""
    c = comparison
    sides: dict[str, list[tuple[list[bool | None], list[str]]]] = {}
    for side in ("a", "b"):
        got = [correctness(report, system_name(c[side], seed), c["test_set"], c["score"]) for seed in seeds]
        if any(g is None for g in got):
            return None
        sides[side] = got  # type: ignore[assignment]
    ids = sides["a"][0][1]
    if any(ids_ != ids for _, ids_ in (*sides["a"], *sides["b"])):
        raise StudyError(f"comparison {c['name']}: the arms' seeds were scored on different questions of "
                         f"{c['test_set']}")
    keep = [i for i in range(len(ids)) if all(flags[i] is not None for flags, _ in (*sides["a"], *sides["b"]))]
    if not keep:
        return None
    a = [[bool(flags[i]) for i in keep] for flags, _ in sides["a"]]
    b = [[bool(flags[i]) for i in keep] for flags, _ in sides["b"]]
    test = paired_sign_flip(a, b)
    try:
        mde = paired_mde(test["n"], test["mean_sq_diff"], alpha=c["alpha"]) if test["mean_sq_diff"] > 0 else None
    except ValueError:
        mde = None
    return {"name": c["name"], "a": c["a"], "b": c["b"], "test_set": c["test_set"], "score": c["score"],
            "alpha": c["alpha"], "primary": bool(c.get("primary")), "claim": c.get("claim"),
            "test": test, "left_out": len(ids) - len(keep), "decision": decide(test, c["alpha"]),
            "per_seed": {seed: mcnemar_exact(x, y) for seed, x, y in zip(seeds, a, b)}, "mde": mde}


def pct_points(rate: float) -> str:
    return f"{100 * rate:.1f}"


def spread_cell(summary: dict | None) -> str:
    """An arm's cell: with one seed its accuracy and Wilson CI (pct); with several the mean over
    seeds ± their sd [min, max]."""
    if summary is None:
        return "–"
    if summary["seeds"] == 1:
        return pct(next(iter(summary["per_seed"].values())))
    return (f"{pct_points(summary['mean'])} ± {pct_points(summary['sd'])} "
            f"[{pct_points(summary['min'])}, {pct_points(summary['max'])}]")


def column_name(report: dict, test_set: str, score: str) -> str:
    ts = next((t for t in report["test_sets"] if t["name"] == test_set), {"split": "?", "n": "?"})
    return f"{test_set} ({ts['split']}, n={ts['n']}{', constrained' if score == 'constrained' else ''})"


def arms_table(report: dict, arms: list[str], seeds: list[int], training: dict[str, dict[int, dict]],
               refs: dict[str, tuple[str, dict]] | None = None) -> str:
    """An arm experiment's first table: per arm its seeds, epochs and lr / rank, and per (set,
    score) column spread_cell; the untrained baseline and (refs: constant_answer per set) the score
    of always giving the set's most common gold answer below."""
    columns = score_columns(report)
    rows = []
    for arm in arms:
        cells = [arm_rates(report, arm, seeds, t, sc) for t, sc in columns]
        scored = max((c["seeds"] for c in cells if c), default=0)
        info = training.get(arm, {})
        epochs = [i["epochs"] for i in info.values() if i.get("epochs") is not None]
        configs = sorted({f"{i['lr']:g}, {i['lora_r']}" for i in info.values() if "lr" in i})
        rows.append([arm, f"{scored}" + (" (one seed)" if scored == 1 else ""),
                     f"{min(epochs):.2f}" + (f"-{max(epochs):.2f}" if max(epochs) > min(epochs) + 0.005 else "")
                     if epochs else "–", "; ".join(configs) or "–"] + [spread_cell(c) for c in cells])
    if any(r["system"] == UNTRAINED for r in report["results"]):
        rows.append([UNTRAINED, "–", "0", "–"] + [pct(rate_of(report, UNTRAINED, t, sc)) for t, sc in columns])
    if refs:
        rows.append(["*always the most common answer*", "–", "–", "–"]
                    + [f'{pct(refs[t][1])}: always "{refs[t][0]}"' if t in refs and sc == "free" else "–"
                       for t, sc in columns])
    header = ["arm", "seeds", "epochs", "lr, LoRA r", *(f"{column_name(report, t, sc)}, %" for t, sc in columns)]
    return md_table(header, rows)


def seeds_table(report: dict, arms: list[str], seeds: list[int], training: dict[str, dict[int, dict]]) -> str:
    """Every seed's accuracy with its Wilson CI (and its training: epochs, lr, rank, run)."""
    columns = score_columns(report)
    rows = []
    for arm in arms:
        for seed in seeds:
            info = training.get(arm, {}).get(seed, {})
            cells = [pct(rate_of(report, system_name(arm, seed), t, sc)) for t, sc in columns]
            if all(c == "–" for c in cells):
                continue
            rows.append([arm, str(seed), f"{info['epochs']:.2f}" if info.get("epochs") is not None else "–",
                         f"{info['lr']:g}, {info['lora_r']}" if "lr" in info else "–", *cells])
    return md_table(["arm", "seed", "epochs", "lr, LoRA r", *(f"{column_name(report, t, sc)}, % [95% CI]"
                                                              for t, sc in columns)], rows)


def comparisons_table(results: list[dict]) -> str:
    """Each design comparison: means, the paired test, its verdict under the stated rule, the
    per-seed McNemar check and the smallest difference the run could detect."""
    rows = []
    for r in results:
        t = r["test"]
        verdict = {"a": f"**{r['a']}**", "b": f"**{r['b']}**", "unresolved": "unresolved"}[r["decision"]]
        per_seed = ", ".join(f"s{seed}: {m['a_only']}/{m['b_only']} p={m['p']:.2g}"
                             for seed, m in r["per_seed"].items())
        rows.append([r["name"] + (" (primary)" if r["primary"] else ""), f"{r['a']} vs {r['b']}",
                     f"{r['test_set']}, {r['score']}" + (f" ({r['left_out']} left out)" if r["left_out"] else ""),
                     f"{t['n']}", pct_points(t["mean_a"]), pct_points(t["mean_b"]), f"{100 * t['diff']:+.1f}",
                     f"{t['a_better']} / {t['b_better']}", f"{t['p']:.3g}", f"{r['alpha']:g}", verdict, per_seed,
                     f"{100 * r['mde']:.1f}" if r["mde"] is not None else "–"])
    return md_table(["comparison", "a vs b", "set, score", "n", "a, %", "b, %", "a - b, points",
                     "questions a / b ahead", "exact sign-flip p", "α", "verdict (rule stated before the runs)",
                     "per seed: a only / b only, McNemar p", "detectable at power 0.8, points"], rows)


def granularity_table(report: dict, test_set: str = "svamp", rows_name: str = "") -> str:
    """Item 2's students per level on `test_set` (the test rows, or SELECT_SET, whose cascod
    column picks item 3's level); `rows_name` goes into the column headers."""
    rows = [[str(level)] + [pct(accuracy_of(report, f"{o}-L{level}", test_set)) for o in GRANULARITY_OBJECTIVES]
            for level in LEVELS]
    if accuracy_of(report, UNTRAINED, test_set) is not None:
        rows.append(["untrained"] + [pct(accuracy_of(report, UNTRAINED, test_set))] * len(GRANULARITY_OBJECTIVES))
    return md_table(["level", *(f"{o}{rows_name}, % [95% CI]" for o in GRANULARITY_OBJECTIVES)], rows)


def teachers_table(report: dict, levels: dict[str, int]) -> str:
    rows = [[t, str(levels[t]), pct(accuracy_of(report, f"{t}-L{levels[t]}", "svamp"))] for t in levels]
    return md_table(["teacher", "level", "SVAMP hold-out, % [95% CI]"], rows)


def tuned_table(report: dict, params: dict[str, Any], defaults: dict[str, Any]) -> str:
    def describe(p: dict[str, Any]) -> str:
        parts = []
        if "alpha" in p:
            parts.append(f"α={p['alpha']:.3g}")
        if "lambda_" in p:
            parts.append(f"λ={p['lambda_']:.3g}")
        if "level" in p:
            parts.append(f"level {p['level']}")
        return ", ".join(parts)

    rows = [[name, describe(p), pct(accuracy_of(report, name, "strategyqa")),
             pct(accuracy_of(report, name, "commonsenseqa"))]
            for name, p in (("default", defaults), ("tuned", params))]
    return md_table(["cascod+prada", "α, λ, level", "StrategyQA test (IND)", "CommonsenseQA test (OOD)"], rows)


# -- plots (matplotlib, Agg) ------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax: Any, labels: list[str], series: dict[str, list[dict | None]]) -> None:
    """Grouped bars: one group per label, one bar per series, Wilson CIs as error bars."""
    width = 0.8 / max(1, len(series))
    for i, (name, accs) in enumerate(series.items()):
        xs = [j - 0.4 + width * (i + 0.5) for j, a in enumerate(accs) if a is not None]
        got = [a for a in accs if a is not None]
        ys = [a["rate"] for a in got]
        bars = ax.bar(xs, ys, width, yerr=error_bars(got), capsize=3, label=name)
        ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.legend(fontsize=8, loc="upper right")


def _n(report: dict, test_set: str) -> int:
    return next((t["n"] for t in report["test_sets"] if t["name"] == test_set), 0)


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_arms(report: dict, arms: list[str], seeds: list[int], path: Path, title: str,
              refs: dict[str, tuple[str, dict]] | None = None) -> None:
    """An arm experiment's plot: per (set, score) column a group of bars, one per arm (and the
    untrained baseline): the mean over seeds, its whiskers the seeds' min and max (one seed: its
    Wilson CI), each seed a dot; the constant answer of a set as a dotted line."""
    plt = _pyplot()
    columns = score_columns(report)
    systems = [*arms, *([UNTRAINED] if any(r["system"] == UNTRAINED for r in report["results"]) else [])]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) * max(1, len(systems)) ** 0.6 + 2), 4.2))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        xs, ys, below, above, dots = [], [], [], [], []
        for j, (test_set, sc) in enumerate(columns):
            x = j - 0.4 + width * (i + 0.5)
            if system == UNTRAINED:
                acc = rate_of(report, UNTRAINED, test_set, sc)
                summary = {"seeds": 1, "mean": acc["rate"], "per_seed": {0: acc}} if acc else None
            else:
                summary = arm_rates(report, system, seeds, test_set, sc)
            if summary is None:
                continue
            rates = [a["rate"] for a in summary["per_seed"].values()]
            low, high = ((min(rates), max(rates)) if summary["seeds"] > 1 else
                         (next(iter(summary["per_seed"].values()))["ci_low"],
                          next(iter(summary["per_seed"].values()))["ci_high"]))
            xs.append(x)
            ys.append(summary["mean"])
            below.append(max(0.0, summary["mean"] - low))
            above.append(max(0.0, high - summary["mean"]))
            dots += [(x, r) for r in rates] if summary["seeds"] > 1 else []
        bars = ax.bar(xs, ys, width, yerr=[below, above], capsize=3, label=system)
        ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7, padding=2)
        if dots:
            ax.scatter([d[0] for d in dots], [d[1] for d in dots], s=8, color="black", zorder=3)
    for j, (test_set, sc) in enumerate(columns):
        if sc == "free" and (ref := (refs or {}).get(test_set)) is not None:
            ax.hlines(ref[1]["rate"], j - 0.45, j + 0.45, colors="grey", linestyles=":")
    ax.set_xticks(range(len(columns)), [column_name(report, t, sc).replace(" (", "\n(") for t, sc in columns],
                  fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy (mean over seeds; whiskers: seeds' range, or Wilson CI for one seed)", fontsize=7)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.set_title(title, fontsize=9)
    _save(plt, fig, path)


def plot_granularity(report: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for offset, objective in zip((-0.06, 0.06), GRANULARITY_OBJECTIVES):
        points = [(level, accuracy_of(report, f"{objective}-L{level}", "svamp")) for level in LEVELS]
        points = [(lv, a) for lv, a in points if a is not None]
        xs = [lv + offset for lv, _ in points]
        ys = [a["rate"] for _, a in points]
        ax.errorbar(xs, ys, yerr=error_bars([a for _, a in points]), marker="o", capsize=3, label=objective)
    base = accuracy_of(report, UNTRAINED, "svamp")
    if base is not None:
        ax.axhline(base["rate"], color="grey", linestyle="--", label=f"untrained ({base['rate']:.0%})")
    ax.set_xticks(LEVELS)
    ax.set_xlim(LEVELS[0] - 0.4, LEVELS[-1] + 0.4)
    ax.set_xlabel("granularity level of the chatgpt rationales (1 = tersest)")
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Item 2: granularity, SVAMP hold-out split (n={_n(report, 'svamp')})")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_teachers(report: dict, levels: dict[str, int], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels = [f"{t}\nlevel {lv}" for t, lv in levels.items()]
    _bars(ax, labels, {f"cascod, SVAMP hold-out (n={_n(report, 'svamp')})":
                       [accuracy_of(report, f"{t}-L{lv}", "svamp") for t, lv in levels.items()]})
    ax.set_title("Item 3: teacher choice")
    _save(plt, fig, path)


def plot_tuned(report: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    sets = [("strategyqa", "StrategyQA test (IND)"), ("commonsenseqa", "CommonsenseQA test (OOD)")]
    _bars(ax, [f"{label}\nn={_n(report, name)}" for name, label in sets],
          {system: [accuracy_of(report, system, name) for name, _ in sets] for system in ("default", "tuned")})
    ax.set_title("Item 4: cascod+prada, default vs tuned (α, λ, level)")
    _save(plt, fig, path)


# ---------------------------------------------------------------------------------------------
# The study: runs on one Ray cluster, skipped when done
# ---------------------------------------------------------------------------------------------


class Study:
    """The study's runs under one directory. runners: stage -> the function that runs a loaded
    config (default: the one `ray-cotd <stage>` calls, ray_cotd.cli.resolve_runner); studies/gpu_run.py
    passes in-process ones that need no Ray."""

    def __init__(self, out: Path, data: Path, scale_name: str, plots_dir: Path | None = None, *,
                 parallel: bool = False, runners: dict[str, Callable[[Any], Any]] | None = None,
                 evaluate_overrides: list[str] | None = None) -> None:
        self.out, self.data, self.scale_name, self.parallel = out, data, scale_name, parallel
        self.runners = runners or {}
        self.evaluate_overrides = evaluate_overrides or []  # after the scale's (gpu_run.py: larger batches)
        self.scale = load_scale(scale_name)
        self._rows: dict[tuple, int] = {}  # corpus and split -> training rows (epochs -> steps)
        self.plots_dir = plots_dir or (REPO / self.scale["plots_dir"] if self.scale.get("plots_dir") else out)
        self.timings_path = out / "timings.json"
        self.timings: dict[str, Any] = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}
        self.commands: dict[str, str] = {}  # output dir -> the equivalent ray-cotd command
        self.session_s: dict[str, float] = {}

    # -- one run ---------------------------------------------------------------------------------

    def record_timing(self, run_id: str, entry: dict[str, Any]) -> None:
        """Merge one run's wall time into timings.json (re-read first: two runners with different
        --only sets may share one --out directory)."""
        if self.timings_path.is_file():
            self.timings = {**json.loads(self.timings_path.read_text()), **self.timings}
        self.timings[run_id] = entry
        tmp = self.timings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.timings, indent=2))
        tmp.replace(self.timings_path)

    def _show(self, path: str | Path) -> str:
        """A path as the docs show it: relative to the repository root when inside it."""
        p = Path(path)
        try:
            return str(p.relative_to(REPO))
        except ValueError:
            return str(p)

    def _run(self, experiment: str, kind: str, yaml_path: Path | str, overrides: list[str], output_dir: Path,
             adjust: Callable[[Any], Any] | None = None) -> Any:
        """Load `kind`'s config like `ray-cotd KIND YAML OVERRIDES...`, run it unless its output
        exists, and record its command and wall time. -> the run's summary / report.

        A run is redone only when its final file is missing: an evaluate run stopped half-way reuses
        the answers it logged (OUTPUT_DIR/generated.jsonl), a train run stopped half-way resumes from
        its last checkpoint (Ray Train, same name and storage under output_dir)."""
        from ray_cotd.config import load_stage_config
        from ray_cotd.dirlock import DirectoryInUse

        overrides = [*overrides, f"output_dir={output_dir}"]
        shown = [self._show(yaml_path), *(o.replace(str(REPO) + "/", "") for o in overrides)]
        self.commands[self._show(output_dir)] = (f"# {experiment}\n.venv/bin/ray-cotd {kind} "
                                                 + " ".join(shlex.quote(s) for s in shown))
        final = output_dir / ("report.json" if kind == "evaluate" else "summary.json")
        run_id = self._show(output_dir)
        if is_done(kind, output_dir):
            print(f"[study] skip {kind} {run_id} (done)", flush=True)
            return json.loads(final.read_text())
        if self.parallel and kind == "train" and output_dir.exists():
            print(f"[study] skip train {run_id} (started by another runner)", flush=True)
            return None
        output_dir.mkdir(parents=True, exist_ok=True)  # claims the run for --parallel runners
        cfg = rebase(load_stage_config(kind, yaml_path, overrides), self.data)
        if adjust is not None:
            cfg = adjust(cfg)
        print(f"[study] {kind} {run_id}", flush=True)
        started = time.perf_counter()
        try:
            result = self.runner(kind)(cfg)
        except DirectoryInUse:  # a run another --parallel runner is doing now
            if not self.parallel:
                raise
            print(f"[study] skip {kind} {run_id} (another runner holds it)", flush=True)
            return None
        seconds = time.perf_counter() - started
        self.record_timing(run_id, {"experiment": experiment, "kind": kind, "seconds": round(seconds, 1),
                                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self.session_s[experiment] = self.session_s.get(experiment, 0.0) + seconds
        print(f"[study] {kind} {run_id}: {seconds:.0f} s", flush=True)
        return result

    def runner(self, kind: str) -> Callable[[Any], Any]:
        if kind in self.runners:
            return self.runners[kind]
        from ray_cotd.cli import resolve_runner

        return resolve_runner(kind)

    def train(self, experiment: str, yaml_name: str, run: str, overrides: list[str]) -> Path:
        """One train run OUT/<experiment>/<run> of studies/<yaml_name> with the scale's overrides,
        then `overrides`; with the scale's `epochs` for this experiment, max_steps is set to cover
        that many passes over the run's training rows. -> its student directory."""
        output_dir = self.out / experiment / run
        scale = [*self.scale["train"], *self.scale.get("train_by_experiment", {}).get(experiment, [])]
        overrides = [*scale, *overrides, "name=study"]
        epochs = self.scale.get("epochs", {}).get(experiment)
        if epochs is not None:
            overrides.append(f"max_steps={self.steps_for(STUDY_DIR / yaml_name, overrides, epochs)}")
        self._run(experiment, "train", STUDY_DIR / yaml_name, overrides, output_dir)
        return output_dir / "student"

    def steps_for(self, yaml_path: Path, overrides: list[str], epochs: float) -> int:
        """max_steps for `epochs` passes over the training rows of the config `yaml_path` +
        `overrides` resolves to: its corpus read and split as training reads and splits it."""
        from ray_cotd.config import load_stage_config
        from ray_cotd.student.corpus import load_corpus

        cfg = rebase(load_stage_config("train", yaml_path, overrides), self.data)
        needs_rationale = names.OBJECTIVES[cfg.objective].needs_rationale
        key = (cfg.corpus, needs_rationale, cfg.holdout_fraction, cfg.val_fraction, cfg.split_seed)
        if key not in self._rows:
            self._rows[key] = len(load_corpus(cfg.corpus, cfg.mapping, needs_rationale=needs_rationale,
                                              holdout_fraction=cfg.holdout_fraction, val_fraction=cfg.val_fraction,
                                              split_seed=cfg.split_seed).train)
        return steps_for_epochs(self._rows[key], epochs, cfg.batch_size * cfg.grad_accum * cfg.num_workers)

    def test_limits(self, experiment: str) -> dict[str, int | None]:
        """The scale's test-set limits for one experiment (test_limits_by_experiment over test_limits)."""
        return {**self.scale["test_limits"], **self.scale.get("test_limits_by_experiment", {}).get(experiment, {})}

    def evaluate(self, experiment: str, yaml_name: str, students: dict[str, Path], run: str = "evaluate",
                 extra: list[str] | None = None) -> dict | None:
        """One evaluate run OUT/<experiment>/<run> of `students` (name -> student dir) with the
        scale's overrides, then `extra`, and the experiment's test limits."""
        waiting = [name for name, path in students.items() if not is_done("train", path.parent)]
        if self.parallel and waiting:
            print(f"[study] skip evaluate {experiment}/{run}: another runner still trains {waiting}", flush=True)
            return None
        specs = [{"source": "default", "adapter": str(path), "dtype": "auto"} for path in students.values()]
        overrides = [*self.scale.get("evaluate", []), *self.evaluate_overrides, *(extra or []),
                     f"students={json.dumps(specs)}", f"student_names={json.dumps(list(students))}"]
        limits = self.test_limits(experiment)

        def limit_sets(cfg: Any) -> Any:
            sets = [dataclasses.replace(ts, limit=limits.get(ts.name, ts.limit)) for ts in cfg.test_sets]
            return dataclasses.replace(cfg, test_sets=sets)

        return self._run(experiment, "evaluate", STUDY_DIR / yaml_name, overrides, self.out / experiment / run,
                         adjust=limit_sets)

    # -- the arm experiments (design.yaml) ---------------------------------------------------------

    def seeds(self, experiment: str) -> list[int]:
        return list(self.scale.get("seeds", {}).get(experiment, [0]))

    def arms(self, experiment: str, design: dict[str, Any]) -> list[str]:
        return list(self.scale.get("arms", {}).get(experiment, design["arms"]))

    def design_record(self, experiment: str, design: dict[str, Any]) -> dict[str, Any]:
        """What is fixed before an arm experiment's first run: its design (arms, comparisons and
        their rule's alpha, select_by), the scale's arms, seeds, sweep grid, epochs, training
        overrides and test limits, and (with `level_from`) the level chosen there."""
        record = {"design": design, "arms": self.arms(experiment, design), "seeds": self.seeds(experiment),
                  **self.training_record(experiment), "test_limits": self.test_limits(experiment)}
        if design.get("level_from"):
            record["level"] = self.chosen_level(experiment, design)
        return record

    def training_record(self, experiment: str) -> dict[str, Any]:
        """How the scale trains an experiment's arms: its sweep grid, epochs and training overrides."""
        return {"sweep": self.scale.get("sweep", {}).get(experiment),
                "epochs": self.scale.get("epochs", {}).get(experiment),
                "train": [*self.scale["train"], *self.scale.get("train_by_experiment", {}).get(experiment, [])]}

    def chosen_level(self, experiment: str, design: dict[str, Any]) -> int:
        """The level a `level_from` design trains at: the one its source experiment chose on
        validation rows (that design's `choose`, arms named L<level>). StudyError before the source
        has chosen: a level is never guessed, and never picked on test rows."""
        source = design["level_from"]
        choice = self.chosen_arm(source, load_design(source))
        if choice is None:
            raise StudyError(f"{experiment} trains at the level {source} chooses on validation rows, and {source} "
                             f"has not chosen yet (its arms' first seeds are not all trained under {self.out}): "
                             f"run --only {source} first")
        chosen = choice["chosen"]
        if not (chosen.startswith("L") and chosen[1:].isdigit()):
            raise StudyError(f"{source} chose {chosen!r}; {experiment} needs a level arm named L<level>")
        return int(chosen[1:])

    def arm_spec(self, experiment: str, design: dict[str, Any], arm: str) -> dict[str, Any]:
        """An arm's design entry as it runs: where it uses the chosen level (`level_from`), {level} in
        its train overrides and `reuse` becomes that level, or the nearest of the arm's `levels` where it
        gives them (a teacher without the chosen level), and `level` is set; `reuse` becomes
        (experiment, arm)."""
        spec = dict(design["arms"][arm])
        if design.get("level_from") and uses_level(spec):
            level = self.chosen_level(experiment, design)
            if "levels" in spec:
                level = nearest_level(spec["levels"], level)
            spec["level"] = level
            spec["train"] = [str(o).replace("{level}", str(level)) for o in spec.get("train", [])]
            if "reuse" in spec:
                spec["reuse"] = spec["reuse"].replace("{level}", str(level))
        if "reuse" in spec:
            spec["reuse"] = tuple(spec["reuse"].split("/"))
        return spec

    def reused_students(self, experiment: str, design: dict[str, Any], arm: str, source: str, source_arm: str,
                        seeds: list[int]) -> dict[int, Path] | None:
        """An arm whose students are another experiment's arm (trained there if they are not yet):
        only when both train the same way (train YAML, sweep, epochs, training overrides), else a
        StudyError, since the arm would not be the recipe the design says."""
        source_design = load_design(source)
        if source_arm not in source_design["arms"]:
            raise StudyError(f"{experiment}: arm {arm!r} reuses {source}/{source_arm}, which is no arm of {source} "
                             f"({list(source_design['arms'])})")
        ours = {"train YAML": design["train"], **self.training_record(experiment)}
        theirs = {"train YAML": source_design["train"], **self.training_record(source)}
        changed = [k for k in ours if ours[k] != theirs[k]]
        if changed:
            raise StudyError(f"{experiment}: arm {arm!r} reuses {source}/{source_arm}'s students, but the two "
                             f"experiments train with another {', '.join(changed)} at scale {self.scale_name!r} "
                             f"({ours} vs {theirs}); make them equal in scales.yaml or give the arm its own `train`")
        return self.train_arm(source, source_design, source_arm, seeds)

    def arm_experiment(self, experiment: str) -> None:
        """Evaluate the untrained baseline; then, arm by arm, train its seeds (after its sweep, where
        the scale gives one) and evaluate them, in runs of their own, before the next arm trains: a
        study of many hours has each arm's score as soon as its students exist."""
        design = load_design(experiment)
        preregister(self.out / experiment / "design.json", self.design_record(experiment, design))
        if design.get("baseline"):
            self.evaluate(experiment, design["evaluate"], {}, run=f"{UNTRAINED}/evaluate",
                          extra=[f"baselines={json.dumps([UNTRAINED])}"])
        for arm in self.arms(experiment, design):
            by_seed = self.train_arm(experiment, design, arm, self.seeds(experiment))
            if by_seed is not None:
                self.evaluate(experiment, design["evaluate"], {system_name(arm, s): p for s, p in by_seed.items()},
                              run=f"{slug(arm)}/evaluate",
                              extra=["baselines=[]", *design["arms"][arm].get("evaluate", [])])
        if (choice := self.chosen_arm(experiment, design)) is not None:
            (self.out / experiment / "choice.json").write_text(json.dumps(choice, indent=2))

    def chosen_arm(self, experiment: str, design: dict[str, Any]) -> dict[str, Any] | None:
        """A design's `choose`: the arm whose first-seed student is best on its validation rows by
        `choose.by` (a tie goes to the earlier arm), with every arm's value (arm_experiment writes
        it to OUT/<experiment>/choice.json). Nothing here reads a test row. None without `choose` or
        before every arm's first seed has trained."""
        if "choose" not in design:
            return None
        arms, by = self.arms(experiment, design), design["choose"]["by"]
        first = self.seeds(experiment)[0]
        dirs = {arm: self.arm_train_dirs(experiment, design, arm, [first])[first] for arm in arms}
        if not all(is_done("train", d) for d in dirs.values()):
            return None
        summaries = [json.loads((dirs[a] / "summary.json").read_text()) for a in arms]
        return {"by": by, "what": design["choose"].get("what", "arm"), "seed": first,
                "chosen": arms[best_index(summaries, by, [self._show(dirs[a]) for a in arms])],
                "candidates": {a: s.get(by) for a, s in zip(arms, summaries)}}

    def train_arm(self, experiment: str, design: dict[str, Any], arm: str, seeds: list[int]) -> dict[int, Path] | None:
        """An arm's students by seed. With a sweep grid: one run per grid point at the first seed
        (OUT/<experiment>/<arm>/sweep/<point>), the point chosen by the design's select_by on their
        validation rows (choice.json), whose run is the first seed's student; the other seeds train
        with that choice (OUT/<experiment>/<arm>/seed<k>). None while a --parallel runner elsewhere
        is still sweeping."""
        spec = self.arm_spec(experiment, design, arm)
        if "reuse" in spec:
            return self.reused_students(experiment, design, arm, *spec["reuse"], seeds)
        overrides = list(spec["train"])
        if spec.get("corpora"):
            combined = combine_corpora([Path(rebase(p, self.data)) for p in spec["corpora"]],
                                       self.out / experiment / "corpora" / f"{slug(arm)}.json")
            overrides.append(f"corpus={combined}")
        first, rest = seeds[0], seeds[1:]
        arm_dir = self.out / experiment / slug(arm)
        grid = self.scale.get("sweep", {}).get(experiment)
        chosen: list[str] = []
        students: dict[int, Path] = {}
        if grid:
            runs = [(point, self.train(experiment, design["train"], f"{slug(arm)}/sweep/{point_name(point)}",
                                       [*overrides, *point_overrides(point), f"seed={first}"]).parent)
                    for point in grid_points(grid)]
            if not all(is_done("train", run_dir) for _, run_dir in runs):
                return None
            point = choose_point([(p, json.loads((d / "summary.json").read_text())) for p, d in runs],
                                 design["select_by"])
            (arm_dir / "choice.json").write_text(json.dumps(
                {"select_by": design["select_by"], "chosen": point, "run": point_name(point),
                 "candidates": {point_name(p): json.loads((d / "summary.json").read_text()).get(design["select_by"])
                                for p, d in runs}}, indent=2))
            chosen = point_overrides(point)
            students[first] = arm_dir / "sweep" / point_name(point) / "student"
        else:
            students[first] = self.train(experiment, design["train"], f"{slug(arm)}/seed{first}",
                                         [*overrides, f"seed={first}"])
        for seed in rest:
            students[seed] = self.train(experiment, design["train"], f"{slug(arm)}/seed{seed}",
                                        [*overrides, *chosen, f"seed={seed}"])
        return students

    def arm_train_dirs(self, experiment: str, design: dict[str, Any], arm: str, seeds: list[int]) -> dict[int, Path]:
        """Where each seed of an arm trained (the chosen sweep run for the first seed, when swept;
        the source experiment's runs for an arm that reuses another's students)."""
        if "reuse" in design["arms"][arm]:
            source, source_arm = self.arm_spec(experiment, design, arm)["reuse"]
            return self.arm_train_dirs(source, load_design(source), source_arm, seeds)
        arm_dir = self.out / experiment / slug(arm)
        choice = arm_dir / "choice.json"
        dirs = {seed: arm_dir / f"seed{seed}" for seed in seeds}
        if choice.is_file():
            dirs[seeds[0]] = arm_dir / "sweep" / json.loads(choice.read_text())["run"]
        return dirs

    def granularity(self) -> dict | None:
        students = {}
        for objective in GRANULARITY_OBJECTIVES:
            for level in self.scale.get("levels", LEVELS):
                students[f"{objective}-L{level}"] = self.train(
                    "granularity", "granularity/train.yaml", f"{objective}_level{level}",
                    [f"objective={objective}", f"corpus={DATA_PREFIX}/svamp/train_chatgpt_level{level}.json"])
        report = self.evaluate("granularity", "granularity/evaluate.yaml", students)
        # item 3's level is chosen on hold-out rows apart from the test rows (select.yaml), where
        # every student is scored again: the test rows' picture checked on questions it did not come from
        self.evaluate("granularity", "granularity/select.yaml", students, run="select")
        return report

    def teacher_levels(self) -> dict[str, int]:
        report = self.out / "granularity" / "select" / "report.json"
        if not report.is_file():
            raise StudyError(f"teachers needs the granularity study's best level: {report} is missing "
                             "(run --only granularity first)")
        best = best_level(json.loads(report.read_text()), test_set=SELECT_SET)
        return {t: teacher_level(t, best) for t in TEACHER_LEVELS}

    def teachers(self) -> dict | None:
        if self.parallel and not (self.out / "granularity" / "select" / "report.json").is_file():
            print("[study] skip teachers: the granularity report is another runner's to write", flush=True)
            return None
        students = {}
        for teacher, level in self.teacher_levels().items():
            if teacher == "chatgpt":  # the granularity study trained exactly this student already
                students[f"{teacher}-L{level}"] = self.out / "granularity" / f"cascod_level{level}" / "student"
                continue
            students[f"{teacher}-L{level}"] = self.train(
                "teachers", "teachers/train.yaml", f"{teacher}_level{level}",
                ["objective=cascod", f"corpus={DATA_PREFIX}/svamp/train_{teacher}_level{level}.json"])
        return self.evaluate("teachers", "teachers/evaluate.yaml", students)

    def tune(self) -> dict | None:
        tune_dir = self.out / "tune"
        summary = self._run("tune", "tune", STUDY_DIR / "tune" / "tune.yaml",
                            [*self.scale["tune"], f"train.output_dir={tune_dir / 'trials'}"], tune_dir)
        best_yaml = Path(summary["best_train_yaml"])
        best_dir = tune_dir / "best" / "train"
        self._run("tune", "train", best_yaml, self.scale.get("tune_best", []), best_dir)
        # the default: item 1's cascod+da_lora arm (the same objective, α and λ), its first seed
        defaults = self.train_arm("objectives", load_design("objectives"), "cascod+da_lora",
                                  self.seeds("objectives")[:1])
        if defaults is None:
            return None
        return self.evaluate("tune", "tune/evaluate.yaml",
                             {"default": next(iter(defaults.values())), "tuned": best_dir / "student"})

    # -- tables, plots, timings ----------------------------------------------------------------

    def training_info(self, run_dir: Path) -> dict[str, Any]:
        """A finished train run's epochs, lr, LoRA rank and the precision it trained in ({} when
        unfinished). The precision is the one student.json records (what `auto` resolved to on the
        machine that trained it), else the config's."""
        config = run_dir / "resolved_config.yaml"
        if not is_done("train", run_dir) or not config.is_file():
            return {}
        cfg = yaml.safe_load(config.read_text())
        meta = run_dir / "student" / "student.json"  # ray_cotd.lm.model.STUDENT_META (that module imports torch)
        precision = json.loads(meta.read_text()).get("precision") if meta.is_file() else None
        return {"epochs": epochs_of(run_dir), "lr": cfg["lr"], "lora_r": cfg["lora_r"],
                "precision": precision or cfg.get("precision"), "run": self._show(run_dir)}

    def training_rows(self) -> list[list[str]]:
        """The training table: every finished train run under OUT."""
        rows = []
        for summary_path in sorted(self.out.glob("**/summary.json")):
            run_dir = summary_path.parent
            config = run_dir / "resolved_config.yaml"
            if not config.is_file() or "ray" in run_dir.relative_to(self.out).parts:
                continue
            cfg, summary = yaml.safe_load(config.read_text()), json.loads(summary_path.read_text())
            if "objective" not in cfg or "steps" not in summary:
                continue  # a tune run's summary
            encode = summary.get("data", {}).get("encode", {})
            epochs = epochs_of(run_dir)
            loss = summary.get("final_loss")
            val = summary.get("val_loss")
            val_acc = summary.get("val_accuracy")
            kind = cfg["objective"] + (f" ({cfg['peft']})" if cfg.get("peft") != "lora" else "")
            rows.append([self._show(run_dir), kind,
                         str(summary["steps"]), str(encode.get("rows", "–")), f"{epochs:.2f}" if epochs else "–",
                         f"{cfg['lr']:g}", str(cfg["lora_r"]), f"{loss:.3f}" if loss is not None else "–",
                         f"{val:.3f}" if val is not None else "–",
                         f"{100 * val_acc:.0f}%" if val_acc is not None else "–"])
        return rows

    def arm_outputs(self, experiment: str) -> dict[str, Any] | None:
        """An arm experiment's tables (arms, every seed, the comparisons), plot and study.json
        entry from its finished evaluate runs; None before any has finished."""
        design = load_design(experiment)
        arms, seeds = self.arms(experiment, design), self.seeds(experiment)
        exp_dir = self.out / experiment
        report = merge_reports([exp_dir / UNTRAINED / "evaluate", *(exp_dir / slug(a) / "evaluate" for a in arms)])
        if report is None:
            return None
        training = {arm: {seed: self.training_info(d)
                          for seed, d in self.arm_train_dirs(experiment, design, arm, seeds).items()} for arm in arms}
        refs = {ts["name"]: ref for ts in report["test_sets"]
                if (ref := constant_answer(report, ts["name"], Path(".")))}
        comparisons = [r for c in design["comparisons"] if c["a"] in arms and c["b"] in arms
                       if (r := compare(report, c, seeds)) is not None]
        recorded = exp_dir / "design.json"
        when = json.loads(recorded.read_text())["recorded"] if recorded.is_file() else "–"
        plot_arms(report, arms, seeds, self.plots_dir / f"study_{experiment}.png", f"{ARM_TITLES[experiment]} "
                  f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''} per arm)", refs)
        markdown = ("Mean over seeds ± sd [min, max] in %; one seed: its accuracy with the Wilson 95% CI. "
                    f"Seeds {seeds}; the design and its rules were recorded {when}.\n\n"
                    + arms_table(report, arms, seeds, training, refs)
                    + "\n\nEvery seed:\n\n" + seeds_table(report, arms, seeds, training))
        if note := self.provenance_note(experiment, design, arms):
            markdown += "\n\n" + note
        if note := precision_note(training):
            markdown += "\n\n" + note
        choice = self.chosen_arm(experiment, design)
        if choice is not None:
            markdown += (f"\n\nThe {choice['what']} chosen on validation rows (seed {choice['seed']}'s "
                         f"{choice['by']}, no test row read): **{choice['chosen']}** ("
                         + ", ".join(f"{a} {v:.3f}" if v is not None else f"{a} –" for a, v in choice["candidates"].items())
                         + ")")
        if comparisons:
            markdown += ("\n\nComparisons (design.yaml), each decided by its stated rule: the exact paired "
                         "sign-flip test over every seed, question by question (ray_cotd.metrics.paired_sign_flip):\n\n"
                         + comparisons_table(comparisons))
        return {"markdown": markdown, "seeds": seeds, "arms": arms, "training": training,
                "rates": {arm: {f"{t}:{sc}": arm_rates(report, arm, seeds, t, sc) for t, sc in score_columns(report)}
                          for arm in arms},
                "untrained": {f"{t}:{sc}": rate_of(report, UNTRAINED, t, sc) for t, sc in score_columns(report)},
                "comparisons": comparisons, "choice": choice, "results": report["results"],
                **({"level": self.chosen_level(experiment, design)} if design.get("level_from") else {})}

    def provenance_note(self, experiment: str, design: dict[str, Any], arms: list[str]) -> str | None:
        """The line under an arm experiment's table that says where its arms come from: the level
        (`level_from`: chosen where, and the arms at another level, the nearest they have) and the arms
        whose students another experiment trained (`reuse`). None when there is nothing to say."""
        notes = []
        level = self.chosen_level(experiment, design) if design.get("level_from") else None
        if level is not None:
            notes.append(f"Level: **L{level}**, chosen by {design['level_from']} on validation rows (its "
                         "choice.json), no test row read")
        for arm in arms:
            spec = self.arm_spec(experiment, design, arm)
            if "reuse" in spec:
                notes.append(f"{arm}'s students are {'/'.join(spec['reuse'])}'s")
            elif spec.get("level", level) != level:
                notes.append(f"{arm} at L{spec['level']}, its nearest level")
        return "; ".join(notes) + "." if notes else None

    def write_outputs(self) -> dict[str, Any]:
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        sections, study = [], {"scale": self.scale_name, "data": str(self.data)}

        def report(experiment: str, run: str = "evaluate") -> dict | None:
            path = self.out / experiment / run / "report.json"
            return json.loads(path.read_text()) if path.is_file() else None

        for experiment, title in ARM_TITLES.items():
            if (result := self.arm_outputs(experiment)) is not None:
                sections.append(f"## {title}\n\n" + result.pop("markdown"))
                study[experiment] = result
        if (r := report("granularity")) is not None:
            plot_granularity(r, self.plots_dir / "study_granularity.png")
            best = best_levels(r)
            paired = paired_vs_best(r, self.out / "granularity" / "evaluate", best)
            sections.append("## 2. Granularity (SVAMP chatgpt levels)\n\n" + granularity_table(r)
                            + ("\n\nPaired, each level against its objective's best on these test rows (post hoc):"
                               "\n\n" + paired_table(paired, best) if paired else ""))
            study["granularity"] = r["results"]
            study["paired_vs_best"] = paired
            if (sel := report("granularity", "select")) is not None:
                chosen = best_level(sel, test_set=SELECT_SET)
                sections.append(f"Item 3's level, chosen on the selection rows (not the test rows): {chosen}\n\n"
                                + granularity_table(sel, SELECT_SET, " on the selection rows"))
                study["selection"] = sel["results"]
                study["best_level"] = chosen
        if (r := report("teachers")) is not None:
            levels = self.teacher_levels()
            plot_teachers(r, levels, self.plots_dir / "study_teachers.png")
            sections.append("## 3. Teacher choice\n\n" + teachers_table(r, levels))
            study["teachers"] = {"levels": levels, "results": r["results"]}
        if (r := report("tune")) is not None:
            tune_summary = json.loads((self.out / "tune" / "summary.json").read_text())
            base = yaml.safe_load((STUDY_DIR / "tune" / "tune.yaml").read_text())["train"]
            defaults = {"alpha": base["alpha"], "lambda_": base["lambda_"], "level": 1}
            plot_tuned(r, self.plots_dir / "study_tuned.png")
            trials = self.out / "tune" / "trials.md"
            sections.append("## 4. Tuned vs default\n\n" + tuned_table(r, tune_summary["best_params"], defaults)
                            + ("\n\nTrials:\n\n" + trials.read_text() if trials.is_file() else ""))
            study["tune"] = {"best_params": tune_summary["best_params"], "summary": tune_summary,
                             "results": r["results"]}
        if training := self.training_rows():
            sections.append("## Training runs\n\nEvery finished train run: its steps, epochs over its training rows, "
                            "learning rate, LoRA rank, last loss, validation loss and, where it scored validation "
                            "questions by generation (val_generate), its validation accuracy.\n\n"
                            + md_table(["run", "objective", "steps", "training rows", "epochs", "lr", "LoRA r",
                                        "final loss", "val loss", "val acc"], training))
        stage_s: dict[str, float] = {}
        for t in self.timings.values():
            stage_s[t["experiment"]] = stage_s.get(t["experiment"], 0.0) + t["seconds"]
        study["stage_seconds"] = stage_s
        timing_rows = [[e, f"{s / 60:.1f} min"] for e, s in stage_s.items()]
        sections.append("## Wall time per stage (sum of its runs)\n\n" + md_table(["stage", "wall"], timing_rows))
        (self.out / "tables.md").write_text("# Study tables\n\n" + "\n\n".join(sections) + "\n")
        (self.out / "study.json").write_text(json.dumps(study, indent=2))
        commands_json = self.out / "commands.json"
        if commands_json.is_file():
            self.commands = {**json.loads(commands_json.read_text()), **self.commands}
        commands_json.write_text(json.dumps(self.commands, indent=2))
        (self.out / "commands.sh").write_text("# The study's runs as ray-cotd commands (studies/run.py runs them "
                                              "in-process on one Ray cluster)\n" + "\n".join(self.commands.values())
                                              + "\n")
        return study


def init_ray() -> None:
    """One local Ray cluster for every run (dashboard on: Train and Tune need the State API), with
    its address in its processes' environment (ray_cotd.ray_session: otherwise Ray Train's
    placement-group cleanup fails when other Ray clusters run on the machine).

    Logical CPUs above the 2 physical cores: a Train worker takes 2 (its torch threads) and Tune's
    trial driver and Ray Data's small tasks need a slot beside it.
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # No OMP_WAIT_POLICY=PASSIVE here: on a LoRA step of the 135M student (many small ops) sleeping
    # OpenMP threads doubled the step inside a Ray Train worker (1.34 s -> 2.75 s, docs/benchmarks.md).
    start_local_cluster(num_cpus=12, include_dashboard=True, log_to_driver=True)


def parse_only(only: str | None, scale: dict[str, Any], scale_name: str) -> list[str]:
    """--only as a list, the scale's experiments when not given; an experiment the scale does not
    run is a StudyError naming those it does."""
    chosen = [e.strip() for e in only.split(",") if e.strip()] if only else list(scale["experiments"])
    unknown = [e for e in chosen if e not in EXPERIMENTS]
    if unknown:
        raise StudyError(f"--only: {unknown} not valid; choose from {', '.join(EXPERIMENTS)}")
    outside = [e for e in chosen if e not in scale["experiments"]]
    if outside:
        raise StudyError(f"--only: scale {scale_name!r} does not run {outside} (it runs "
                         f"{', '.join(scale['experiments'])}; scales.yaml says why)")
    return chosen


def run_study(study: Study, only: list[str], *, tables_only: bool = False) -> dict[str, Any]:
    """Run `only`'s experiments in the fixed order (skipping finished runs), then write the tables."""
    started = time.perf_counter()
    if not tables_only:
        for experiment in EXPERIMENTS:  # the fixed order: teachers needs granularity's best level
            if experiment in only:
                print(f"[study] === {experiment} ===", flush=True)
                if experiment in ARM_EXPERIMENTS:
                    study.arm_experiment(experiment)
                else:
                    getattr(study, experiment)()
    result = study.write_outputs()
    print(f"[study] tables: {study.out / 'tables.md'}; plots: {study.plots_dir}/study_*.png", flush=True)
    for experiment, seconds in study.session_s.items():
        print(f"[study] {experiment}: {seconds / 60:.1f} min this session", flush=True)
    print(f"[study] total wall: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return result


def check_data(data: Path) -> str | None:
    """Why the study cannot run on `data` (the third-party data is not shipped), or None."""
    if not (data / "strategyqa" / "test.json").is_file() or not (data / "svamp").is_dir():
        return (f"the study needs the third-party reasoning data (SVAMP, StrategyQA, CommonsenseQA with teacher "
                f"rationales), which this repository does not ship: not found at {data}. Point --data at it.")
    return None


def check_library(repo: Path = REPO) -> str | None:
    """Why the study must not run with the ray_cotd this Python imports, or None. The runs are
    recorded as this checkout's code; a .venv copied from another checkout keeps that checkout's
    editable install (an absolute path) and would silently train and score with its library."""
    import ray_cotd

    imported = Path(ray_cotd.__file__).resolve().parent
    if imported != (repo / "ray_cotd").resolve():
        return (f"this Python imports ray_cotd from {imported}, not from this checkout ({repo / 'ray_cotd'}): "
                f"the runs would use another checkout's library. Run scripts/setup.sh here (it reinstalls the "
                f"package editable from this checkout) or use this checkout's own .venv.")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="cpu",
                        help="a preset of studies/scales.yaml: cpu | cpu-power | paper | smoke")
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(EXPERIMENTS)
                        + " (default: the scale's experiments)")
    parser.add_argument("--out", default="runs/study", help="run directory (relative to the repository root)")
    parser.add_argument("--data", default=DATA_PREFIX, help="the shared data dir (relative to the repository root)")
    parser.add_argument("--plots", default=None, help="where the PNGs go (default: the scale's plots_dir)")
    parser.add_argument("--parallel", action="store_true",
                        help="share the work with other runners on the same --out: skip train runs another "
                             "runner has started; evaluate only when every student is trained")
    parser.add_argument("--tables-only", action="store_true", help="only rewrite tables and plots from finished runs")
    args = parser.parse_args(argv)

    os.chdir(REPO)
    data = Path(args.data).resolve()
    for problem in (check_library(), check_data(data)):
        if problem is not None:
            print(f"studies/run.py: {problem}", file=sys.stderr)
            return 2
    out = Path(args.out).resolve()
    try:
        study = Study(out, data, args.scale, Path(args.plots).resolve() if args.plots else None, parallel=args.parallel)
        only = parse_only(args.only, study.scale, args.scale)
    except StudyError as err:
        parser.error(str(err))
    out.mkdir(parents=True, exist_ok=True)
    if not args.tables_only:
        init_ray()
    try:
        run_study(study, only, tables_only=args.tables_only)
    except StudyError as err:
        print(f"studies/run.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
