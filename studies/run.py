"""The distillation study (issue #9): objectives, granularity, teachers, tuned vs default.

    python studies/run.py [--scale cpu|paper|smoke] [--only objectives,granularity,teachers,tune]
                          [--out runs/study] [--data ../shared/data]

Each experiment is a set of `ray-cotd train` / `evaluate` / `tune` runs, driven through the same
functions those commands call (`load_stage_config` + `run_train` / `run_evaluate` / `run_tune`) on
one local Ray cluster. A run whose output exists (train/tune: summary.json, evaluate: report.json)
is skipped, so an interrupted study continues where it stopped. Every run's equivalent `ray-cotd`
command goes to OUT/commands.sh and its wall time to OUT/timings.json; at the end the runner writes
OUT/tables.md, OUT/study.json and the PNG plots (docs/study_*.png for the cpu and paper scales).

    1. objectives   answer_only, std_cot, step_by_step, cascod, prada, cascod+prada on StrategyQA
                    chatgpt level 1; StrategyQA test (IND) and CommonsenseQA test (OOD) + untrained
    2. granularity  std_cot and cascod on SVAMP chatgpt levels 1-6; the fixed SVAMP hold-out split
    3. teachers     cascod on the best level of item 2 from chatgpt, gemini, llama (llama: levels 1-4)
    4. tune         Ray Tune over α, λ and level for cascod+prada; best_train.yaml trained and
                    evaluated beside item 1's cascod+prada student

Nothing trains or selects on a test set: StrategyQA and CommonsenseQA test files are only read by
evaluate; PRADA's target questions are CommonsenseQA *train* questions; SVAMP questions on the test
side of the hold-out split are removed by training and are the only ones evaluate scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from ray_cotd import names
from ray_cotd.metrics import accuracy, error_bars, mcnemar_exact
from ray_cotd.ray_session import start_local_cluster
from ray_cotd.scoring import Prediction, read_predictions

STUDY_DIR = Path(__file__).resolve().parent
REPO = STUDY_DIR.parent
DATA_PREFIX = "../shared/data"  # how the YAML configs name the data dir (relative to the repo root)
EXPERIMENTS = ("objectives", "granularity", "teachers", "tune")
OBJECTIVES = tuple(names.OBJECTIVES)  # item 1 trains one student per objective
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
    """A directory name for a system name: "cascod+prada" -> "cascod_prada"."""
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
    scales = yaml.safe_load(path.read_text())
    if name not in scales:
        raise StudyError(f"--scale {name!r}: not in {path} (choose from {', '.join(scales)})")
    scale = scales[name]
    for key in ("train", "tune", "test_limits"):
        if key not in scale:
            raise StudyError(f"{path}: scale {name!r} lacks {key!r}")
    for key, valid in (("objectives", OBJECTIVES), ("levels", LEVELS)):
        unknown = [v for v in scale.get(key, []) if v not in valid]
        if unknown:
            raise StudyError(f"{path}: scale {name!r}: {key} {unknown} not valid; choose from {list(valid)}")
    return scale


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


def teacher_level(teacher: str, level: int) -> int:
    """`level` if the teacher has it for SVAMP, else its nearest level (llama stops at 4)."""
    levels = TEACHER_LEVELS[teacher]
    return min(levels, key=lambda lv: (abs(lv - level), lv))


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
    from collections import Counter

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


def constant_answers(report: dict, run_dir: Path) -> dict[str, tuple[str, dict]]:
    """constant_answer of item 1's two test sets, those that have one."""
    return {t: ref for t in ("strategyqa", "commonsenseqa") if (ref := constant_answer(report, t, run_dir))}


def objectives_table(report: dict, refs: dict[str, tuple[str, dict]] | None = None) -> str:
    """Item 1's table; `refs` (constant_answers) adds the constant-answer row."""
    systems = [UNTRAINED, *OBJECTIVES]
    rows = [[s, pct(accuracy_of(report, s, "strategyqa")), pct(accuracy_of(report, s, "commonsenseqa"))]
            for s in systems if any(r["system"] == s for r in report["results"])]
    if refs:
        rows.append(["*always the most common answer*"]
                    + [f'{pct(ref[1])}: always "{ref[0]}"' if (ref := refs.get(t)) else "–"
                       for t in ("strategyqa", "commonsenseqa")])
    return md_table(["system", "StrategyQA test (IND), % [95% CI]", "CommonsenseQA test (OOD), % [95% CI]"], rows)


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


def plot_objectives(report: dict, path: Path, refs: dict[str, tuple[str, dict]] | None = None) -> None:
    plt = _pyplot()
    systems = [s for s in (UNTRAINED, *OBJECTIVES) if any(r["system"] == s for r in report["results"])]
    fig, ax = plt.subplots(figsize=(9, 4))
    _bars(ax, systems, {
        f"StrategyQA test (IND, n={_n(report, 'strategyqa')})": [accuracy_of(report, s, "strategyqa") for s in systems],
        f"CommonsenseQA test (OOD, n={_n(report, 'commonsenseqa')})":
            [accuracy_of(report, s, "commonsenseqa") for s in systems],
    })
    if (ref := (refs or {}).get("strategyqa")) is not None:
        ax.axhline(ref[1]["rate"], color="grey", linestyle=":", label=f"IND: always '{ref[0]}' ({ref[1]['rate']:.0%})")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Item 1: objectives, SmolLM2-135M LoRA on StrategyQA chatgpt level-1 rationales")
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
    def __init__(self, out: Path, data: Path, scale_name: str, plots_dir: Path | None = None, *,
                 parallel: bool = False) -> None:
        self.out, self.data, self.scale_name, self.parallel = out, data, scale_name, parallel
        self.scale = load_scale(scale_name)
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
        exists, and record its command and wall time. -> the run's summary / report."""
        from ray_cotd.cli import resolve_runner
        from ray_cotd.config import load_stage_config

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
        result = resolve_runner(kind)(cfg)
        seconds = time.perf_counter() - started
        self.record_timing(run_id, {"experiment": experiment, "kind": kind, "seconds": round(seconds, 1),
                                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self.session_s[experiment] = self.session_s.get(experiment, 0.0) + seconds
        print(f"[study] {kind} {run_id}: {seconds:.0f} s", flush=True)
        return result

    def train(self, experiment: str, yaml_name: str, run: str, overrides: list[str]) -> Path:
        output_dir = self.out / experiment / run
        scale = [*self.scale["train"], *self.scale.get("train_by_experiment", {}).get(experiment, [])]
        self._run(experiment, "train", STUDY_DIR / yaml_name, [*scale, *overrides, "name=study"], output_dir)
        return output_dir / "student"

    def _limit_sets(self, cfg: Any) -> Any:
        limits = self.scale["test_limits"]
        sets = [dataclasses.replace(ts, limit=limits.get(ts.name, ts.limit)) for ts in cfg.test_sets]
        return dataclasses.replace(cfg, test_sets=sets)

    def evaluate(self, experiment: str, yaml_name: str, students: dict[str, Path], run: str = "evaluate") -> dict | None:
        waiting = [name for name, path in students.items() if not is_done("train", path.parent)]
        if self.parallel and waiting:
            print(f"[study] skip evaluate {experiment}: another runner still trains {waiting}", flush=True)
            return None
        specs = [{"source": "default", "adapter": str(path), "dtype": "bfloat16"} for path in students.values()]
        overrides = [*self.scale.get("evaluate", []), f"students={json.dumps(specs)}",
                     f"student_names={json.dumps(list(students))}"]
        return self._run(experiment, "evaluate", STUDY_DIR / yaml_name, overrides, self.out / experiment / run,
                         adjust=self._limit_sets)

    # -- the four experiments ----------------------------------------------------------------

    def objectives(self) -> dict:
        students = {o: self.train("objectives", "objectives/train.yaml", slug(o), [f"objective={o}"])
                    for o in self.scale.get("objectives", OBJECTIVES)}
        return self.evaluate("objectives", "objectives/evaluate.yaml", students)

    def granularity(self) -> dict:
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

    def tune(self) -> dict:
        tune_dir = self.out / "tune"
        summary = self._run("tune", "tune", STUDY_DIR / "tune" / "tune.yaml",
                            [*self.scale["tune"], f"train.output_dir={tune_dir / 'trials'}"], tune_dir)
        best_yaml = Path(summary["best_train_yaml"])
        best_dir = tune_dir / "best" / "train"
        self._run("tune", "train", best_yaml, self.scale.get("tune_best", []), best_dir)
        default = self.train("objectives", "objectives/train.yaml", "cascod_prada", ["objective=cascod+prada"])
        return self.evaluate("tune", "tune/evaluate.yaml", {"default": default, "tuned": best_dir / "student"})

    # -- tables, plots, timings ----------------------------------------------------------------

    def write_outputs(self) -> dict[str, Any]:
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        sections, study = [], {"scale": self.scale_name, "data": str(self.data)}

        def report(experiment: str, run: str = "evaluate") -> dict | None:
            path = self.out / experiment / run / "report.json"
            return json.loads(path.read_text()) if path.is_file() else None

        if (r := report("objectives")) is not None:
            refs = constant_answers(r, self.out / "objectives" / "evaluate")  # read once, shown twice
            plot_objectives(r, self.plots_dir / "study_objectives.png", refs)
            sections.append("## 1. Objectives (IND vs OOD)\n\n" + objectives_table(r, refs))
            study["objectives"] = r["results"]
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
    # Workers inherit this from the raylet: OpenMP threads sleep instead of spinning while they wait,
    # which matters on a shared 2-core box (spinning threads steal the cores the others need).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start_local_cluster(num_cpus=12, include_dashboard=True, log_to_driver=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="cpu", help="a preset of studies/scales.yaml: cpu | paper | smoke")
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated subset of " + ",".join(EXPERIMENTS))
    parser.add_argument("--out", default="runs/study", help="run directory (relative to the repository root)")
    parser.add_argument("--data", default=DATA_PREFIX, help="the shared data dir (relative to the repository root)")
    parser.add_argument("--plots", default=None, help="where the PNGs go (default: the scale's plots_dir)")
    parser.add_argument("--parallel", action="store_true",
                        help="share the work with other runners on the same --out: skip train runs another "
                             "runner has started; evaluate only when every student is trained")
    parser.add_argument("--tables-only", action="store_true", help="only rewrite tables and plots from finished runs")
    args = parser.parse_args(argv)

    os.chdir(REPO)
    only = [e.strip() for e in args.only.split(",") if e.strip()]
    unknown = [e for e in only if e not in EXPERIMENTS]
    if unknown:
        parser.error(f"--only: {unknown} not valid; choose from {', '.join(EXPERIMENTS)}")
    data = Path(args.data).resolve()
    if not (data / "strategyqa" / "test.json").is_file() or not (data / "svamp").is_dir():
        print(f"studies/run.py: the study needs the third-party reasoning data (SVAMP, StrategyQA, CommonsenseQA "
              f"with teacher rationales), which this repository does not ship: "
              f"not found at {data}. Point --data at it.", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    study = Study(out, data, args.scale, Path(args.plots).resolve() if args.plots else None, parallel=args.parallel)

    started = time.perf_counter()
    if not args.tables_only:
        init_ray()
        for experiment in EXPERIMENTS:  # the fixed order: teachers needs granularity's best level
            if experiment in only:
                print(f"[study] === {experiment} ===", flush=True)
                getattr(study, experiment)()
    study.write_outputs()
    print(f"[study] tables: {out / 'tables.md'}; plots: {study.plots_dir}/study_*.png", flush=True)
    for experiment, seconds in study.session_s.items():
        print(f"[study] {experiment}: {seconds / 60:.1f} min this session", flush=True)
    print(f"[study] total wall: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
