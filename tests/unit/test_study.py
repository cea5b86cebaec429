"""studies/run.py without Ray or a model: configs load, resume-skip, choices, tables and plots."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUN_PY = REPO / "studies" / "run.py"
if not RUN_PY.is_file():
    pytest.skip("studies/run.py is not in this checkout", allow_module_level=True)


def _load_run():
    spec = importlib.util.spec_from_file_location("study_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_run()


def _acc(k: int, n: int) -> dict:
    from ray_cotd.metrics import accuracy

    return accuracy([True] * k + [False] * (n - k)).to_dict()


def _report(cells: dict[tuple[str, str], tuple[int, int]], sets: dict[str, int]) -> dict:
    """A fake report.json: (system, test set) -> (k, n)."""
    return {
        "systems": [{"name": s} for s in dict.fromkeys(s for s, _ in cells)],
        "test_sets": [{"name": name, "split": "IND", "n": n} for name, n in sets.items()],
        "results": [{"system": s, "test_set": t, "accuracy": _acc(k, n)} for (s, t), (k, n) in cells.items()],
    }


def _prediction_row(**fields) -> str:
    """One predictions-file line: a ray_cotd.scoring.Prediction with `fields` over filler values."""
    from ray_cotd.scoring import Prediction

    base = dict(system="s", test_set="t", split="IND", position=0, row=0, id="q", question="Q?", gold="1",
                rationale="", answer_text=" 1.", predicted="1", correct=True, parse_error=None, rationale_stop="eos",
                prompt_tokens=5, rationale_tokens=0, answer_tokens=2, stage1_s=0.0, stage2_s=0.0)
    return json.dumps(Prediction(**{**base, **fields}).to_dict()) + "\n"


SCALES = ["cpu", "cpu-power", "paper", "smoke"]


@pytest.mark.parametrize("scale", SCALES)
def test_every_experiment_config_loads(scale: str, tmp_path: Path) -> None:
    from ray_cotd.config import load_stage_config
    from ray_cotd.tune import check_tune_config

    s = run.load_scale(scale)
    data = tmp_path / "data"
    for name in ("objectives", "granularity", "teachers", "answer_only_vs_cot"):
        cfg = run.rebase(load_stage_config("train", run.STUDY_DIR / name / "train.yaml", s["train"]), data)
        assert cfg.corpus.startswith(str(data))
        if any(o.startswith("max_steps=") for o in s["train"]):
            assert cfg.max_steps == int(next(o for o in s["train"] if o.startswith("max_steps=")).split("=")[1])
        ev = run.rebase(load_stage_config("evaluate", run.STUDY_DIR / name / "evaluate.yaml",
                                          [*s.get("evaluate", []), 'students=[{"source": "default", "adapter": "x"}]',
                                           'student_names=["a"]']), data)
        assert all(ts.path.startswith(str(data)) for ts in ev.test_sets)
    for name in run.ARM_EXPERIMENTS:  # every arm's overrides load on its train YAML (a reused arm has none)
        design = run.load_design(name)
        for arm, spec in design["arms"].items():
            overrides = [o.replace("{level}", "2") for o in spec.get("train", [])]
            cfg = load_stage_config("train", run.STUDY_DIR / design["train"], [*s["train"], *overrides])
            assert cfg.objective in ("answer_only", "std_cot", "step_by_step", "cascod", "prada", "cascod+prada")
            load_stage_config("evaluate", run.STUDY_DIR / design["evaluate"], [*s.get("evaluate", []),
                                                                                *spec.get("evaluate", [])])
    if "tune" in s["experiments"]:
        tune = run.rebase(load_stage_config("tune", run.STUDY_DIR / "tune" / "tune.yaml", s["tune"]), data)
        assert all(p.startswith(str(data)) for p in tune.level_corpora.values())
        assert tune.train.objective == "cascod+prada" and tune.metric == "val_accuracy"
        with pytest.raises(Exception, match="corpus not found"):  # the fake data dir is empty
            check_tune_config(tune, cluster_cpus=3)


def test_no_training_config_reads_a_test_file() -> None:
    from ray_cotd.config import load_stage_config

    tune = load_stage_config("tune", run.STUDY_DIR / "tune" / "tune.yaml")
    trains = [tune.train] + [load_stage_config("train", run.STUDY_DIR / n / "train.yaml")
                             for n in ("objectives", "granularity", "teachers", "answer_only_vs_cot")]
    paths = [*tune.level_corpora.values()] + [p for t in trains for p in (t.corpus, t.target_questions) if p]
    for name in run.ARM_EXPERIMENTS:
        for spec in run.load_design(name)["arms"].values():
            paths += spec.get("corpora", []) + [o.split("=", 1)[1] for o in spec.get("train", [])
                                                 if o.split("=")[0] in ("corpus", "target_questions")]
    assert paths and not [p for p in paths if p.endswith("test.json")]
    assert all(t.target_questions is None or t.target_questions.endswith("commonsenseqa/train_answer_only.json")
               for t in trains)


def test_item3_level_is_selected_on_rows_no_scale_reports() -> None:
    """Item 3's level comes from SVAMP hold-out rows after item 2's test rows at every scale that
    runs item 2: nothing is selected on a reported test question. A scale that scores the whole
    hold-out (cpu-power) does not run items 2-3."""
    from ray_cotd.config import load_stage_config

    select = load_stage_config("evaluate", run.STUDY_DIR / "granularity" / "select.yaml")
    test = load_stage_config("evaluate", run.STUDY_DIR / "granularity" / "evaluate.yaml")
    (sel,), (tst,) = select.test_sets, test.test_sets
    assert sel.name == run.SELECT_SET and (sel.path, sel.holdout, sel.mapping) == (tst.path, tst.holdout, tst.mapping)
    assert (select.holdout_fraction, select.split_seed) == (test.holdout_fraction, test.split_seed)
    for name in SCALES:
        scale = run.load_scale(name)
        study = run.Study(Path("/nonexistent"), Path("/nonexistent"), name)
        limit = study.test_limits("granularity").get("svamp")
        if "granularity" in scale["experiments"] or "teachers" in scale["experiments"]:
            assert limit is not None and limit <= sel.offset, f"scale {name}: svamp test rows reach the selection rows"
        else:
            assert limit is None  # the whole hold-out: items 2-3 cannot run here
    with pytest.raises(run.StudyError, match="does not run"):
        run.parse_only("granularity", run.load_scale("cpu-power"), "cpu-power")


def test_rebase_only_moves_data_paths(tmp_path: Path) -> None:
    assert run.rebase("../shared/data/svamp/x.json", tmp_path) == f"{tmp_path}/svamp/x.json"
    assert run.rebase({"1": "../shared/data/a", "2": "runs/b"}, tmp_path) == {"1": f"{tmp_path}/a", "2": "runs/b"}
    assert run.rebase("../shared/database", tmp_path) == "../shared/database"


def test_is_done_needs_the_final_file(tmp_path: Path) -> None:
    assert not run.is_done("train", tmp_path)
    (tmp_path / "report.json").write_text("{}")
    assert run.is_done("evaluate", tmp_path) and not run.is_done("tune", tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    assert run.is_done("train", tmp_path) and run.is_done("tune", tmp_path)


def test_finished_runs_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = run.Study(tmp_path / "out", tmp_path / "data", "smoke")
    done = tmp_path / "out" / "objectives" / "cascod"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"steps": 5}))
    called = []
    monkeypatch.setattr("ray_cotd.cli.resolve_runner", lambda kind: called.append(kind))
    student = study.train("objectives", "objectives/train.yaml", "cascod", ["objective=cascod"])
    assert student == done / "student" and called == []
    assert "ray-cotd train studies/objectives/train.yaml" in study.commands[str(done)]


def test_best_level_and_teacher_levels() -> None:
    report = _report({("cascod-L1", "svamp"): (30, 80), ("cascod-L3", "svamp"): (40, 80),
                      ("cascod-L5", "svamp"): (40, 80), ("std_cot-L6", "svamp"): (70, 80)}, {"svamp": 80})
    assert run.best_level(report) == 3  # a tie goes to the shorter level; std_cot is not asked
    assert run.teacher_level("llama", 5) == 4 and run.teacher_level("llama", 6) == 4
    assert run.teacher_level("gemini", 6) == 6 and run.teacher_level("llama", 2) == 2


def test_tables_and_plots_from_fake_reports(tmp_path: Path) -> None:
    granularity = _report({(f"{o}-L{lv}", "svamp"): (10 * lv, 80) for o in run.GRANULARITY_OBJECTIVES
                           for lv in run.LEVELS} | {("untrained", "svamp"): (5, 80)}, {"svamp": 80})
    assert "60/80" in run.granularity_table(granularity)
    levels = {"chatgpt": 6, "gemini": 6, "llama": 4}
    teachers = _report({("chatgpt-L6", "svamp"): (50, 80), ("gemini-L6", "svamp"): (45, 80),
                        ("llama-L4", "svamp"): (40, 80)}, {"svamp": 80})
    assert "| llama | 4 |" in run.teachers_table(teachers, levels)
    sets = {"strategyqa": 100, "commonsenseqa": 100}
    tuned = _report({(s, t): (50, 100) for s in ("default", "tuned") for t in sets}, sets)
    assert "α=0.5" in run.tuned_table(tuned, {"alpha": 0.5, "lambda_": 0.02, "level": 2},
                                      {"alpha": 0.3, "lambda_": 0.1, "level": 1})
    pytest.importorskip("matplotlib")
    run.plot_granularity(granularity, tmp_path / "g.png")
    run.plot_teachers(teachers, levels, tmp_path / "t.png")
    run.plot_tuned(tuned, tmp_path / "u.png")
    for name in ("g", "t", "u"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def _write_eval_run(run_dir: Path, correct: dict[str, dict[str, list]],
                    golds: dict[str, list[str]] | None = None) -> None:
    """A finished evaluate run: report.json and one predictions file per (system, set); correct:
    system -> set -> per-question free correctness, or (free, constrained) pairs."""
    from ray_cotd.metrics import accuracy

    results, sets = [], {}
    for system, by_set in correct.items():
        for test_set, flags in by_set.items():
            pairs = [f if isinstance(f, tuple) else (f, None) for f in flags]
            gold = (golds or {}).get(test_set) or ["1"] * len(pairs)
            path = run_dir / "predictions" / system / f"{test_set}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(_prediction_row(system=system, test_set=test_set, position=i, id=f"q{i}",
                                                    gold=gold[i], correct=c, constrained_correct=cc)
                                    for i, (c, cc) in enumerate(pairs)))
            constrained = [cc for _, cc in pairs if cc is not None]
            results.append({"system": system, "test_set": test_set,
                            "accuracy": accuracy([c for c, _ in pairs]).to_dict(),
                            "constrained_accuracy": accuracy(constrained).to_dict() if constrained else None,
                            "predictions": f"predictions/{system}/{test_set}.jsonl"})
            sets[test_set] = len(pairs)
    report = {"systems": [{"name": s} for s in correct], "results": results,
              "test_sets": [{"name": t, "split": "OOD" if t == "commonsenseqa" else "IND", "n": n}
                            for t, n in sets.items()]}
    (run_dir / "report.json").write_text(json.dumps(report))


def test_write_outputs_from_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write_eval_run(out / "objectives" / "untrained" / "evaluate",
                    {"untrained": {"strategyqa": [True, False] * 5, "commonsenseqa": [(False, True)] * 10}})
    # smoke's arms: answer_only, cascod+da_lora, prada
    _write_eval_run(out / "objectives" / "cascod_da_lora" / "evaluate",
                    {"cascod+da_lora-s0": {"strategyqa": [True] * 5 + [False] * 5,
                                           "commonsenseqa": [(False, False)] * 10}})
    (out / "timings.json").write_text(json.dumps({"x": {"experiment": "objectives", "kind": "train", "seconds": 60}}))
    study = run.Study(out, tmp_path, "smoke", plots_dir=tmp_path / "plots")
    result = study.write_outputs()
    assert result["stage_seconds"] == {"objectives": 60}
    assert (tmp_path / "plots" / "study_objectives.png").is_file()
    tables = (out / "tables.md").read_text()
    assert "## 1. Objectives" in tables
    # constrained-choice accuracy beside free accuracy for the multiple-choice set
    assert "commonsenseqa (OOD, n=10, constrained), %" in tables
    assert "| untrained | – | 0 | – | 50.0 [23.7, 76.3] (5/10) | 0.0 [0.0, 27.8] (0/10) | 100.0" in tables
    assert "| cascod+da_lora | 1 (one seed) |" in tables and "| answer_only | 0 |" in tables
    assert result["objectives"]["rates"]["cascod+da_lora"]["strategyqa:free"]["mean"] == 0.5


def test_missing_data_exits_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "does not ship" in capsys.readouterr().err


def test_parallel_runners_skip_started_runs_and_wait_to_evaluate(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    study = run.Study(tmp_path / "out", tmp_path / "data", "smoke", parallel=True)
    started = tmp_path / "out" / "granularity" / "cascod_level6"
    started.mkdir(parents=True)  # another runner is training it
    called = []
    monkeypatch.setattr("ray_cotd.cli.resolve_runner", lambda kind: called.append(kind))
    study.train("granularity", "granularity/train.yaml", "cascod_level6", ["objective=cascod"])
    assert study.evaluate("granularity", "granularity/evaluate.yaml", {"cascod-L6": started / "student"}) is None
    assert study.teachers() is None and called == []


def test_constant_answer_reference_row(tmp_path: Path) -> None:
    """The arm table and plot show what always giving the most common gold answer scores (the
    floor on yes/no StrategyQA), read from a system's predictions file."""
    run_dir = tmp_path / "run"
    golds = {"strategyqa": ["True"] * 6 + ["False"] * 4, "commonsenseqa": list("AABCDEEEBC")}
    _write_eval_run(run_dir, {"cascod-s0": {t: [False] * 10 for t in golds}}, golds)
    report = run.merge_reports([run_dir, tmp_path / "unfinished"])
    assert run.constant_answer(report, "strategyqa", Path("."))[0] == "True"
    assert run.constant_answer(report, "strategyqa", Path("."))[1]["k"] == 6
    assert run.constant_answer(report, "commonsenseqa", Path("."))[:1] == ("E",)
    refs = {t: run.constant_answer(report, t, Path(".")) for t in golds}
    table = run.arms_table(report, ["cascod"], [0], {}, refs)
    row = table.splitlines()[-1]
    assert row.startswith("| *always the most common answer* |")
    assert '(6/10): always "True"' in row and '(3/10): always "E"' in row
    assert "always" not in run.arms_table(report, ["cascod"], [0], {})  # no references: no reference row
    assert run.merge_reports([tmp_path / "unfinished"]) is None
    pytest.importorskip("matplotlib")
    run.plot_arms(report, ["cascod"], [0], tmp_path / "o.png", "t", refs)
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"


def test_paired_tests_against_each_objectives_best_level(tmp_path: Path) -> None:
    """Item 2's paired table: every level against its objective's best level on the same
    questions (matched by id), read from the predictions files."""
    correct = {"std_cot-L2": [True] * 8 + [False] * 2, "std_cot-L1": [True] + [False] * 9,
               "cascod-L1": [True] * 3 + [False] * 7, "cascod-L2": [False, True, True] + [False] * 7}
    report = _report({(s, "svamp"): (sum(c), 10) for s, c in correct.items()}, {"svamp": 10})
    for r in report["results"]:
        r["predictions"] = f"predictions/{r['system']}/svamp.jsonl"
        path = tmp_path / r["predictions"]
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [_prediction_row(id=f"q{i}", correct=c) for i, c in enumerate(correct[r["system"]])]
        path.write_text("".join(reversed(rows)))  # order must not matter
    assert run.best_levels(report) == {"std_cot": 2, "cascod": 1}
    tests = run.paired_vs_best(report, tmp_path, run.best_levels(report))
    assert tests == {"std_cot": {1: {"a_only": 7, "b_only": 0, "p": 2 / 2**7}},
                     "cascod": {2: {"a_only": 1, "b_only": 0, "p": 1.0}}}
    table = run.paired_table(tests, run.best_levels(report))
    assert "| 1 | 7 / 0, p = 0.0156 | best |" in table and "| 2 | best | 1 / 0, p = 1 |" in table
    assert "| 3 | – | – |" in table


def test_selection_table_shows_both_objectives() -> None:
    report = _report({(f"{o}-L{lv}", run.SELECT_SET): (lv, 57) for o in run.GRANULARITY_OBJECTIVES
                      for lv in run.LEVELS}, {run.SELECT_SET: 57})
    table = run.granularity_table(report, run.SELECT_SET, " on the selection rows")
    assert "| 6 | 10.5" in table and table.count("(6/57)") == 2
    assert run.best_level(report, test_set=run.SELECT_SET) == 6


def _fake_runners(calls: list, correct: Callable[[str, int], bool], n: int = 10) -> dict:
    """In-process stand-ins for run_train / run_evaluate that write what the real ones write last
    (summary.json with the data report, resolved_config.yaml, student.json with the precision `auto`
    resolves to on a CPU without bf16; report.json and predictions), so the runner's arm machinery
    runs without Ray or a model. The fake val_loss grows with LoRA rank."""
    from ray_cotd.configbase import save_resolved

    def train(cfg) -> dict:
        calls.append(("train", cfg))
        out = Path(cfg.output_dir)
        (out / "student").mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out)
        precision = "float32" if cfg.precision == "auto" else cfg.precision
        (out / "student" / "student.json").write_text(json.dumps({"precision": precision}))
        summary = {"steps": cfg.max_steps, "final_loss": 0.5, "val_loss": 1.0 + cfg.lora_r / 100,
                   "val_accuracy": 0.5 if "level6" in cfg.corpus else 0.25,
                   "data": {"encode": {"rows": 2 * cfg.max_steps * cfg.batch_size, "dropped_too_long": 0}}}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    def evaluate(cfg) -> dict:
        calls.append(("evaluate", cfg))
        systems = [*cfg.student_names, *cfg.baselines]
        _write_eval_run(Path(cfg.output_dir), {s: {ts.name: [correct(s, i) for i in range(n)] for ts in cfg.test_sets}
                                               for s in systems})
        return json.loads((Path(cfg.output_dir) / "report.json").read_text())

    return {"train": train, "evaluate": evaluate}


def _smoke_study(tmp_path: Path, correct: Callable[[str, int], bool]) -> tuple[run.Study, list, Path]:
    """A smoke-scale Study on stand-in runners (_fake_runners) writing to tmp_path/out, with no
    `epochs` (there is no corpus to count rows in here; steps_for has a shared-data test):
    (study, the runners' calls, out)."""
    calls: list = []
    out = tmp_path / "out"
    study = run.Study(out, tmp_path / "data", "smoke", runners=_fake_runners(calls, correct))
    study.scale = {**study.scale, "epochs": {}}
    return study, calls, out


def test_arm_experiment_sweeps_seeds_evaluates_and_resumes(tmp_path: Path) -> None:
    """answer_only_vs_cot at the smoke scale with stand-in runners: per arm a sweep over LoRA rank at
    seed 0 (the lower val_loss, r 8, wins and is seed 0's student), seed 1 trained with the choice,
    one evaluate run per arm and one for the untrained baseline; a second start runs nothing; an
    evaluate run stopped before its report.json is redone; the comparison is decided by its rule."""
    # std_cot right on questions 0-7 in both seeds, answer_only on 0-1: six questions with d_i = 1,
    # so T* = +-2 x 6 (L = 2) reaches |T| = 12 only with all signs alike: p = 2 / 2^6
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (8 if s.startswith("std_cot") else 2))
    runners = study.runners
    study.arm_experiment("answer_only_vs_cot")
    trains = [c for kind, c in calls if kind == "train"]
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert len(trains) == 6 and len(evaluates) == 3  # 2 arms x (2 sweep points + seed 1); baseline + 2 arms
    # the baseline first, then each arm scored before the next arm trains
    order = [(kind, Path(c.output_dir).relative_to(out / "answer_only_vs_cot").parts[0]) for kind, c in calls]
    assert [step for i, step in enumerate(order) if i == 0 or step != order[i - 1]] == [
        ("evaluate", "untrained"), ("train", "answer_only"), ("evaluate", "answer_only"),
        ("train", "std_cot"), ("evaluate", "std_cot")]
    arm_dir = out / "answer_only_vs_cot" / "std_cot"
    choice = json.loads((arm_dir / "choice.json").read_text())
    assert choice["chosen"] == {"lr": 0.001, "lora_r": 8} and choice["run"] == "lr0.001_r8"
    seed1 = next(c for c in trains if c.output_dir == str(arm_dir / "seed1"))
    assert (seed1.seed, seed1.lora_r, seed1.lora_alpha, seed1.split_seed) == (1, 8, 16, 0)
    std_eval = next(c for c in evaluates if c.output_dir == str(arm_dir / "evaluate"))
    assert std_eval.student_names == ["std_cot-s0", "std_cot-s1"] and std_eval.baselines == []
    assert [s.adapter for s in std_eval.students] == [str(arm_dir / "sweep" / "lr0.001_r8" / "student"),
                                                      str(arm_dir / "seed1" / "student")]
    baseline = next(c for c in evaluates if c.output_dir.endswith("untrained/evaluate"))
    assert baseline.students == [] and baseline.baselines == ["untrained"]
    recorded = json.loads((out / "answer_only_vs_cot" / "design.json").read_text())
    assert recorded["seeds"] == [0, 1] and recorded["design"]["comparisons"][0]["alpha"] == 0.05

    calls.clear()
    again = run.Study(out, tmp_path / "data", "smoke", runners=runners)
    again.scale = study.scale
    again.arm_experiment("answer_only_vs_cot")
    assert calls == []  # every run finished: nothing is redone
    (arm_dir / "evaluate" / "report.json").unlink()  # stopped before its report: the run is redone
    again.arm_experiment("answer_only_vs_cot")
    assert [(k, c.output_dir) for k, c in calls] == [("evaluate", str(arm_dir / "evaluate"))]

    result = again.write_outputs()["answer_only_vs_cot"]
    (comparison,) = result["comparisons"]
    assert comparison["decision"] == "a" and comparison["test"]["p"] == pytest.approx(2 / 2**6)
    assert (comparison["test"]["a_better"], comparison["test"]["b_better"]) == (6, 0)
    assert comparison["per_seed"][0] == {"a_only": 6, "b_only": 0, "p": pytest.approx(2 / 2**6)}
    assert result["training"]["std_cot"][0]["lora_r"] == 8 and result["training"]["std_cot"][1]["epochs"] == 0.5
    tables = (out / "tables.md").read_text()
    assert "| std_cot | 2 | 0.50 | 0.001, 8 | 80.0 ± 0.0 [80.0, 80.0] |" in tables
    assert ("| cot_vs_answer_only (primary) | std_cot vs answer_only | svamp, free | 10 | 80.0 | 20.0 | +60.0 |"
            in tables)
    assert "**std_cot**" in tables and "## Training runs" in tables

    again.scale = {**again.scale, "seeds": {"answer_only_vs_cot": [0, 1, 2]}}
    with pytest.raises(run.StudyError, match="another seeds"):  # the rules are fixed once runs exist
        again.arm_experiment("answer_only_vs_cot")


def test_granularity_curve_chooses_the_level_on_validation_rows(tmp_path: Path) -> None:
    """granularity_curve at the smoke scale (levels 3 and 6) with stand-in runners: one std_cot
    student per level on that level's corpus, scoring validation questions by generation; the level
    with the higher val_accuracy (6) is chosen from the training summaries alone (choice.json), before
    and whatever the test rows say; the tables show it, the val accuracy column and the primary
    comparison."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (6 if s.startswith("L3") else 3))
    study.arm_experiment("granularity_curve")
    trains = {Path(c.output_dir).parent.name: c for kind, c in calls if kind == "train"}
    assert sorted(trains) == ["L3", "L6"]
    assert [(c.objective, c.corpus.endswith(f"train_chatgpt_level{arm[1]}.json"), c.val_generate, c.lora_r)
            for arm, c in sorted(trains.items())] == [("std_cot", True, 2, 32)] * 2
    choice = json.loads((out / "granularity_curve" / "choice.json").read_text())
    assert choice == {"by": "val_accuracy", "what": "level", "seed": 0, "chosen": "L6",
                      "candidates": {"L3": 0.25, "L6": 0.5}}
    result = study.write_outputs()["granularity_curve"]
    assert result["choice"]["chosen"] == "L6"
    (primary,) = [c for c in result["comparisons"] if c["name"] == "medium_vs_finest"]
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (3, 0)
    tables = (out / "tables.md").read_text()
    assert "no test row read): **L6** (L3 0.250, L6 0.500)" in tables
    assert "| val acc |" in tables and "| 50% |" in tables
    with pytest.raises(run.StudyError, match="has no val_accuracy"):
        run.best_index([{"val_accuracy": 0.1}, {}], "val_accuracy", ["a", "b"])


def test_teacher_choice_trains_at_the_level_chosen_on_validation_rows(tmp_path: Path) -> None:
    """teacher_choice at the smoke scale (chatgpt, llama, human) with stand-in runners: it refuses to
    start before granularity_curve has chosen; then it records the chosen level (6) in design.json,
    reuses granularity_curve's level-6 student for chatgpt (no new train run), trains llama at its
    nearest level (4) and human on the equations, scores each arm in its own run, and says so in the
    tables; an arm that would reuse a student trained another way is refused."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (6 if s.startswith("human") else 3))
    with pytest.raises(run.StudyError, match="run --only granularity_curve first"):
        study.arm_experiment("teacher_choice")
    assert not (out / "teacher_choice" / "design.json").exists()
    study.arm_experiment("granularity_curve")
    calls.clear()
    study.arm_experiment("teacher_choice")
    trains = {Path(c.output_dir).relative_to(out).parts[1]: c for kind, c in calls if kind == "train"}
    assert sorted(trains) == ["human", "llama"]  # chatgpt: granularity_curve's L6 student
    assert trains["llama"].corpus.endswith("svamp/train_llama_level4.json")
    assert trains["human"].corpus.endswith("svamp/train_human.json")
    assert {(c.objective, c.lora_r, c.val_generate) for c in trains.values()} == {("std_cot", 32, 2)}
    evaluates = {Path(c.output_dir).relative_to(out / "teacher_choice").parts[0]: c
                 for kind, c in calls if kind == "evaluate"}
    assert sorted(evaluates) == ["chatgpt", "human", "llama", "untrained"]
    assert [s.adapter for s in evaluates["chatgpt"].students] == [str(out / "granularity_curve" / "L6" / "seed0"
                                                                      / "student")]
    recorded = json.loads((out / "teacher_choice" / "design.json").read_text())
    assert recorded["level"] == 6 and recorded["arms"] == ["chatgpt", "llama", "human"]

    result = study.write_outputs()["teacher_choice"]
    assert result["level"] == 6 and result["training"]["chatgpt"][0]["run"].endswith("granularity_curve/L6/seed0")
    (primary,) = [c for c in result["comparisons"] if c["primary"]]
    assert primary["name"] == "llm_vs_human" and (primary["test"]["a_better"], primary["test"]["b_better"]) == (0, 3)
    tables = (out / "tables.md").read_text()
    assert ("Level: **L6**, chosen by granularity_curve on validation rows (its choice.json), no test row read; "
            "chatgpt's students are granularity_curve/L6's; llama at L4, its nearest level.") in tables

    study.scale = {**study.scale, "train_by_experiment": {"granularity_curve": ["val_generate=2"]}}
    with pytest.raises(run.StudyError, match="train with another train"):
        study.train_arm("teacher_choice", run.load_design("teacher_choice"), "chatgpt", [0])


def test_granularity_seeds_adds_seeds_to_the_curves_students(tmp_path: Path) -> None:
    """granularity_seeds at the smoke scale (seeds 0, 1) with stand-in runners: seed 0 of L3 and L6 is
    granularity_curve's student (not retrained), seed 1 trains beside it with the same recipe, each
    arm is scored over both seeds without a baseline run, and the primary comparison is tested over
    both seeds; granularity_curve's own tables still read seed 0 only."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (6 if s.startswith("L3") else 3))
    study.arm_experiment("granularity_curve")
    calls.clear()
    study.arm_experiment("granularity_seeds")
    trained = sorted(str(Path(c.output_dir).relative_to(out)) for kind, c in calls if kind == "train")
    assert trained == ["granularity_curve/L3/seed1", "granularity_curve/L6/seed1"]
    assert {(c.seed, c.objective, c.lora_r) for kind, c in calls if kind == "train"} == {(1, "std_cot", 32)}
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(Path(c.output_dir).parent.name, c.student_names, c.baselines) for c in evaluates] == [
        ("L3", ["L3-s0", "L3-s1"], []), ("L6", ["L6-s0", "L6-s1"], [])]
    results = study.write_outputs()
    (primary,) = results["granularity_seeds"]["comparisons"]
    assert primary["name"] == "medium_vs_finest" and sorted(primary["per_seed"]) == [0, 1]
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (3, 0)
    assert results["granularity_curve"]["seeds"] == [0]
    tables = (out / "tables.md").read_text()
    assert "L3's students are granularity_curve/L3's; L6's students are granularity_curve/L6's." in tables


def test_granularity_l1_seeds_reuses_the_curves_students_and_trains_the_missing_ones(tmp_path: Path) -> None:
    """granularity_l1_seeds at the smoke scale (seeds 0, 1) with stand-in runners, after a smoke
    granularity_curve (arms L3 and L6): L3's seed 0 is the curve's student, L3's seed 1 and both of
    L1's seeds (L1 is not a smoke arm of the curve) train into granularity_curve's arm directories
    with its recipe; each arm is scored over both seeds without a baseline, and the primary
    comparison (L3 vs L1) is tested over both seeds."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (5 if s.startswith("L3") else 1))
    study.arm_experiment("granularity_curve")
    study.write_outputs()
    assert "Mixed precision" not in (out / "tables.md").read_text()  # one machine, one precision
    # the curve ran on a machine with native bf16, the rest of the study on one without: said under the table
    curve_l3 = out / "granularity_curve" / "L3" / "seed0" / "student" / "student.json"
    curve_l3.write_text(json.dumps({"precision": "bfloat16"}))
    calls.clear()
    study.arm_experiment("granularity_l1_seeds")
    trained = {str(Path(c.output_dir).relative_to(out)): c for kind, c in calls if kind == "train"}
    assert sorted(trained) == ["granularity_curve/L1/seed0", "granularity_curve/L1/seed1",
                               "granularity_curve/L3/seed1"]
    assert {(c.seed, c.objective, c.lora_r, c.val_generate) for c in trained.values()} == {
        (0, "std_cot", 32, 2), (1, "std_cot", 32, 2)}
    assert trained["granularity_curve/L1/seed0"].corpus.endswith("svamp/train_chatgpt_level1.json")
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(str(Path(c.output_dir).relative_to(out)), c.student_names, c.baselines) for c in evaluates] == [
        ("granularity_l1_seeds/L3/evaluate", ["L3-s0", "L3-s1"], []),
        ("granularity_l1_seeds/L1/evaluate", ["L1-s0", "L1-s1"], [])]
    assert evaluates[0].students[0].adapter == str(out / "granularity_curve" / "L3" / "seed0" / "student")
    results = study.write_outputs()
    (primary,) = results["granularity_l1_seeds"]["comparisons"]
    assert (primary["name"], primary["primary"], sorted(primary["per_seed"])) == ("medium_vs_tersest", True, [0, 1])
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (4, 0)
    assert primary["decision"] == "unresolved"  # 4 questions over 2 seeds: p = 2 / 2^4
    tables = (out / "tables.md").read_text()
    assert "L3's students are granularity_curve/L3's; L1's students are granularity_curve/L1's." in tables
    assert ("**Mixed precision**: these students did not all train in one precision (L3 seed 0 in bfloat16; "
            "L3 seed 1 in float32; L1 seeds 0, 1 in float32)") in tables
    assert results["granularity_l1_seeds"]["training"]["L3"][0]["precision"] == "bfloat16"


def test_granularity_cascod_seeds_adds_seeds_to_the_cascod_curves_students(tmp_path: Path) -> None:
    """granularity_cascod_seeds at the smoke scale (seeds 0, 1) with stand-in runners, after a smoke
    granularity_curve_cascod (arms L3 and L6): each level's seed 0 is the cascod curve's student and
    seed 1 trains into that curve's arm directory with its recipe (cascod, not granularity_curve's
    std_cot); each arm is scored over both seeds, and the primary comparison (L3 vs L6) is tested."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (3 if s.startswith("L3") else 1))
    study.arm_experiment("granularity_curve_cascod")
    calls.clear()
    study.arm_experiment("granularity_cascod_seeds")
    trained = {str(Path(c.output_dir).relative_to(out)): c for kind, c in calls if kind == "train"}
    assert sorted(trained) == ["granularity_curve_cascod/L3/seed1", "granularity_curve_cascod/L6/seed1"]
    assert {(c.seed, c.objective, c.lora_r, c.val_generate) for c in trained.values()} == {(1, "cascod", 32, 2)}
    assert trained["granularity_curve_cascod/L6/seed1"].corpus.endswith("svamp/train_chatgpt_level6.json")
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(str(Path(c.output_dir).relative_to(out)), c.student_names, c.baselines) for c in evaluates] == [
        ("granularity_cascod_seeds/L3/evaluate", ["L3-s0", "L3-s1"], []),
        ("granularity_cascod_seeds/L6/evaluate", ["L6-s0", "L6-s1"], [])]
    assert evaluates[1].students[0].adapter == str(out / "granularity_curve_cascod" / "L6" / "seed0" / "student")
    results = study.write_outputs()
    (primary,) = results["granularity_cascod_seeds"]["comparisons"]
    assert (primary["name"], primary["primary"], sorted(primary["per_seed"])) == ("medium_vs_finest", True, [0, 1])
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (2, 0)
    assert primary["decision"] == "unresolved"
    assert ("L3's students are granularity_curve_cascod/L3's; L6's students are granularity_curve_cascod/L6's."
            in (out / "tables.md").read_text())


def test_teacher_seeds_adds_seeds_to_teacher_choices_students_through_a_chain_of_reuses(tmp_path: Path) -> None:
    """teacher_seeds at the smoke scale (seeds 0, 1) with stand-in runners: chatgpt reuses
    teacher_choice/chatgpt, itself granularity_curve's student at the chosen level, so its seed 0 is
    that student and seed 1 trains beside it (granularity_curve/L6/seed1); human's seed 0 is
    teacher_choice's human student and seed 1 trains beside it on the equations; each arm is scored
    over both seeds without a baseline, and the primary comparison is tested over both seeds."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (6 if s.startswith("human") else 3))
    study.arm_experiment("granularity_curve")
    study.arm_experiment("teacher_choice")
    calls.clear()
    study.arm_experiment("teacher_seeds")
    trained = {str(Path(c.output_dir).relative_to(out)): c for kind, c in calls if kind == "train"}
    assert sorted(trained) == ["granularity_curve/L6/seed1", "teacher_choice/human/seed1"]
    assert trained["teacher_choice/human/seed1"].corpus.endswith("svamp/train_human.json")
    assert trained["granularity_curve/L6/seed1"].corpus.endswith("train_chatgpt_level6.json")
    assert {(c.seed, c.objective, c.lora_r) for c in trained.values()} == {(1, "std_cot", 32)}
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(Path(c.output_dir).parent.name, c.student_names, c.baselines) for c in evaluates] == [
        ("chatgpt", ["chatgpt-s0", "chatgpt-s1"], []), ("human", ["human-s0", "human-s1"], [])]
    assert [s.adapter for s in evaluates[0].students][0] == str(out / "granularity_curve" / "L6" / "seed0" / "student")
    results = study.write_outputs()
    (primary,) = results["teacher_seeds"]["comparisons"]
    assert primary["name"] == "llm_vs_human" and sorted(primary["per_seed"]) == [0, 1]
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (0, 3)
    assert results["teacher_choice"]["seeds"] == [0]


def test_objectives_seeds_trains_objectives_students_at_each_seed_and_tests_both_comparisons(tmp_path: Path) -> None:
    """objectives_seeds at the smoke scale (seeds 0, 1) with stand-in runners, objectives not run first:
    its arms reuse objectives/std_cot and objectives/cascod, so every seed trains into objectives' arm
    directories with objectives' recipe; each arm is scored over both seeds on both test sets without
    a baseline, and the OOD primary is tested on constrained-choice correctness, the IND comparison
    on free correctness."""
    # (free, constrained): free right on questions 0-2 for both arms; constrained: cascod on 0-5, std_cot on 0-2
    study, calls, out = _smoke_study(tmp_path, lambda s, i: (i < 3, i < (6 if s.startswith("cascod") else 3)))
    study.arm_experiment("objectives_seeds")
    trained = {str(Path(c.output_dir).relative_to(out)): c for kind, c in calls if kind == "train"}
    assert sorted(trained) == ["objectives/cascod/seed0", "objectives/cascod/seed1",
                               "objectives/std_cot/seed0", "objectives/std_cot/seed1"]
    assert {(str(Path(k).parent), c.seed, c.objective, c.lora_r) for k, c in trained.items()} == {
        ("objectives/std_cot", 0, "std_cot", 16), ("objectives/std_cot", 1, "std_cot", 16),
        ("objectives/cascod", 0, "cascod", 16), ("objectives/cascod", 1, "cascod", 16)}
    assert all(c.corpus.endswith("strategyqa/train_chatgpt_level1.json") for c in trained.values())
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(str(Path(c.output_dir).relative_to(out)), c.student_names, c.baselines) for c in evaluates] == [
        ("objectives_seeds/std_cot/evaluate", ["std_cot-s0", "std_cot-s1"], []),
        ("objectives_seeds/cascod/evaluate", ["cascod-s0", "cascod-s1"], [])]
    assert [ts.name for ts in evaluates[0].test_sets] == ["strategyqa", "commonsenseqa"]
    results = study.write_outputs()
    ood, ind = results["objectives_seeds"]["comparisons"]
    assert (ood["name"], ood["primary"], sorted(ood["per_seed"])) == ("cascod_vs_std_cot_ood", True, [0, 1])
    assert (ood["test"]["a_better"], ood["test"]["b_better"]) == (3, 0)
    assert ind["name"] == "cascod_vs_std_cot_ind" and (ind["test"]["a_better"], ind["test"]["b_better"]) == (0, 0)
    assert ood["decision"] == ind["decision"] == "unresolved"  # 3 questions over 2 seeds: p = 2 / 2^3


def test_cascod_svamp_reuses_the_chosen_levels_std_cot_students_and_trains_cascod_beside_them(tmp_path: Path) -> None:
    """cascod_svamp at the smoke scale (seeds 0, 1) with stand-in runners, after granularity_curve:
    its std_cot arm is granularity_curve's student at the chosen level (seed 0 reused, seed 1 trained
    beside it with std_cot); its cascod arm trains the same recipe at that level with objective cascod
    in its own directories; each arm is scored over both seeds without a baseline and the primary is
    tested on free correctness over both seeds."""
    # cascod right on questions 0-5 of the stand-in's 10, std_cot on 0-2: questions 3-5 in both seeds
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (6 if s.startswith("cascod") else 3))
    study.arm_experiment("granularity_curve")
    level = json.loads((out / "granularity_curve" / "choice.json").read_text())["chosen"]
    calls.clear()
    study.arm_experiment("cascod_svamp")
    trained = {str(Path(c.output_dir).relative_to(out)): c for kind, c in calls if kind == "train"}
    assert sorted(trained) == ["cascod_svamp/cascod/seed0", "cascod_svamp/cascod/seed1",
                               f"granularity_curve/{level}/seed1"]
    assert {(k.split("/")[0], c.seed, c.objective, c.alpha, c.lora_r) for k, c in trained.items()} == {
        ("cascod_svamp", 0, "cascod", 0.3, 32), ("cascod_svamp", 1, "cascod", 0.3, 32),
        ("granularity_curve", 1, "std_cot", 0.3, 32)}
    assert all(c.corpus.endswith(f"svamp/train_chatgpt_level{level[1:]}.json") for c in trained.values())
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(str(Path(c.output_dir).relative_to(out)), c.student_names, c.baselines) for c in evaluates] == [
        ("cascod_svamp/std_cot/evaluate", ["std_cot-s0", "std_cot-s1"], []),
        ("cascod_svamp/cascod/evaluate", ["cascod-s0", "cascod-s1"], [])]
    assert evaluates[0].students[0].adapter == str(out / "granularity_curve" / level / "seed0" / "student")
    assert [ts.name for ts in evaluates[0].test_sets] == ["svamp"]
    results = study.write_outputs()
    (primary,) = results["cascod_svamp"]["comparisons"]
    assert primary["name"] == "cascod_vs_std_cot_svamp" and primary["primary"] and sorted(primary["per_seed"]) == [0, 1]
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (3, 0)
    assert primary["decision"] == "unresolved"  # 3 questions over 2 seeds: p = 2 / 2^3


def test_granularity_curve_cascod_trains_each_level_with_cascod_and_chooses_on_validation_rows(tmp_path: Path) -> None:
    """granularity_curve_cascod at the smoke scale (levels 3 and 6, seed 0) with stand-in runners:
    every level trains granularity_curve's recipe with objective cascod in its own directories, is
    scored without a baseline, the level is chosen by validation accuracy (the stand-in's level 6),
    and the primary compares L3 with L6."""
    study, calls, out = _smoke_study(tmp_path, lambda s, i: i < (5 if s.startswith("L3") else 2))
    study.arm_experiment("granularity_curve_cascod")
    trained = {str(Path(c.output_dir).relative_to(out)): c for kind, c in calls if kind == "train"}
    assert sorted(trained) == ["granularity_curve_cascod/L3/seed0", "granularity_curve_cascod/L6/seed0"]
    assert {(c.seed, c.objective, c.alpha, c.lora_r) for c in trained.values()} == {(0, "cascod", 0.3, 32)}
    assert trained["granularity_curve_cascod/L3/seed0"].corpus.endswith("svamp/train_chatgpt_level3.json")
    evaluates = [c for kind, c in calls if kind == "evaluate"]
    assert [(Path(c.output_dir).parent.name, c.student_names, c.baselines) for c in evaluates] == [
        ("L3", ["L3-s0"], []), ("L6", ["L6-s0"], [])]
    choice = json.loads((out / "granularity_curve_cascod" / "choice.json").read_text())
    assert (choice["chosen"], choice["what"], choice["candidates"]) == ("L6", "level", {"L3": 0.25, "L6": 0.5})
    results = study.write_outputs()
    (primary,) = results["granularity_curve_cascod"]["comparisons"]  # L3 vs L1: L1 is not a smoke arm
    assert (primary["name"], primary["a"], primary["b"], primary["primary"]) == ("medium_vs_finest", "L3", "L6", True)
    assert (primary["test"]["a_better"], primary["test"]["b_better"]) == (3, 0)


def test_the_runner_refuses_a_library_from_another_checkout(tmp_path: Path) -> None:
    """A .venv copied from another checkout imports that checkout's ray_cotd (its editable install
    is an absolute path); the study would record this checkout's code and run the other's."""
    assert run.check_library() is None  # the test session imports this checkout's ray_cotd
    problem = run.check_library(tmp_path)
    assert problem is not None and f"not from this checkout ({tmp_path / 'ray_cotd'})" in problem
    assert "scripts/setup.sh" in problem


def test_level_from_and_reuse_are_checked(tmp_path: Path) -> None:
    base = yaml.safe_load((run.STUDY_DIR / "teacher_choice" / "design.yaml").read_text())
    cases = [({"level_from": "objectives"}, "does not choose a level"),
             ({"level_from": "teacher_choice"}, "name another arm experiment"),
             ({"level_from": None}, "has no `level_from`"),
             ({"arms": {**base["arms"], "chatgpt": {"reuse": "L{level}"}}}, "must read EXPERIMENT/ARM")]
    for change, message in cases:
        path = tmp_path / "design.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(run.StudyError, match=message):
            run.load_design("teacher_choice", path)


def test_sweep_and_epoch_helpers(tmp_path: Path) -> None:
    grid = {"lora_r": [8, 32], "lr": [3e-4, 1e-3]}
    points = run.grid_points(grid)
    assert points == [{"lr": 3e-4, "lora_r": 8}, {"lr": 3e-4, "lora_r": 32}, {"lr": 1e-3, "lora_r": 8},
                      {"lr": 1e-3, "lora_r": 32}]
    assert run.point_name(points[1]) == "lr0.0003_r32"
    assert run.point_overrides(points[1]) == ["lr=0.0003", "lora_r=32", "lora_alpha=64"]
    summaries = [{"val_loss": 1.2}, {"val_loss": 1.1}, {"val_loss": 1.1}, {"val_loss": 1.3}]
    assert run.choose_point(list(zip(points, summaries)), "val_loss") == points[1]  # a tie: the earlier point
    with pytest.raises(run.StudyError, match="no val_loss"):
        run.choose_point([(points[0], {"val_loss": None})], "val_loss")
    assert run.steps_for_epochs(507, 1, 4) == 127 and run.steps_for_epochs(507, 0.001, 4) == 1
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    assert run.epochs_of(run_dir) is None
    (run_dir / "summary.json").write_text(json.dumps({"steps": 127, "data": {"encode": {"rows": 510,
                                                                                         "dropped_too_long": 3}}}))
    (run_dir / "resolved_config.yaml").write_text("batch_size: 4\ngrad_accum: 1\nnum_workers: 1\n")
    assert run.epochs_of(run_dir) == pytest.approx(127 * 4 / 507)


def test_combined_corpus_and_preregistration(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([{"instruction": "q1", "output": "r The answer is 1"}]))
    b.write_text(json.dumps([{"instruction": "q1", "output": "s The answer is 1"}]))
    out = run.combine_corpora([a, b], tmp_path / "out" / "c.json")
    assert [r["output"][0] for r in json.loads(out.read_text())] == ["r", "s"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(run.StudyError, match="not a JSON array"):
        run.combine_corpora([tmp_path / "bad.json"], tmp_path / "out" / "d.json")
    record = tmp_path / "design.json"
    first = run.preregister(record, {"seeds": (0, 1), "design": {"alpha": 0.05}})
    assert run.preregister(record, {"seeds": [0, 1], "design": {"alpha": 0.05}})["recorded"] == first["recorded"]
    with pytest.raises(run.StudyError, match="another design"):
        run.preregister(record, {"seeds": [0, 1], "design": {"alpha": 0.1}})


@pytest.mark.parametrize("experiment", run.ARM_EXPERIMENTS)
def test_designs_state_their_rules_and_power(experiment: str) -> None:
    """Every comparison names two arms, a score, alpha and, where it states one, the smallest
    difference its n detects: the numbers in the YAML are paired_mde's."""
    from ray_cotd.metrics import paired_mde

    design = run.load_design(experiment)
    assert sum(1 for c in design["comparisons"] if c.get("primary")) == 1
    for c in design["comparisons"]:
        if "power" in c:
            p = c["power"]
            assert p["mde_points"] == [round(100 * paired_mde(p["n"], q, alpha=c["alpha"]), 1)
                                       for q in p["mean_sq_diff"]]
    if experiment == "objectives":  # issue 19 item 7: the domain-adversarial LoRA rows are not called PRADA
        arms = design["arms"]
        assert arms["da_lora"]["train"] == ["objective=prada"]
        assert {"peft=lora+ptuning", "lambda_schedule=dann"} <= set(arms["prada"]["train"])
        assert len(arms["prada"]["corpora"]) == 3 and arms["prada"]["evaluate"] == ["backend=hf"]


def test_bad_designs_and_scales_fail_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "design.yaml"
    bad.write_text(yaml.safe_dump({"train": "t", "evaluate": "e", "select_by": "val_loss", "arms": {"x": {"train": []}},
                                   "comparisons": [{"name": "c", "a": "x", "b": "y", "test_set": "s", "score": "free",
                                                    "alpha": 0.05}]}))
    with pytest.raises(run.StudyError, match="is no arm"):
        run.load_design("x", bad)
    scales = tmp_path / "scales.yaml"
    base = {"train": [], "test_limits": {}, "experiments": ["objectives"]}
    scales.write_text(yaml.safe_dump({"s": {**base, "seeds": {"granularity": [0]}}}))
    with pytest.raises(run.StudyError, match="only the arm experiments"):
        run.load_scale("s", scales)
    scales.write_text(yaml.safe_dump({"s": {**base, "seeds": {"objectives": [0, 0]}}}))
    with pytest.raises(run.StudyError, match="distinct"):
        run.load_scale("s", scales)


def test_steps_cover_the_epochs_of_the_real_training_rows(shared_data: Path, tmp_path: Path) -> None:
    """cpu-power trains each answer_only_vs_cot run for one epoch of its rows: 507 SVAMP level-3
    rows with a rationale (std_cot), 512 with or without (answer_only), after the hold-out and
    validation splits; 4 rows a step."""
    study = run.Study(tmp_path / "out", shared_data, "cpu-power")
    train = run.STUDY_DIR / "answer_only_vs_cot" / "train.yaml"
    assert study.steps_for(train, [*study.scale["train"], "objective=std_cot"], 1) == 127
    assert study.steps_for(train, [*study.scale["train"], "objective=answer_only"], 1) == 128
