"""studies/run.py without Ray or a model: configs load, resume-skip, choices, tables and plots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("scale", ["cpu", "paper", "smoke"])
def test_every_experiment_config_loads(scale: str, tmp_path: Path) -> None:
    from ray_cotd.config import load_stage_config
    from ray_cotd.tune import check_tune_config

    s = run.load_scale(scale)
    data = tmp_path / "data"
    for name in ("objectives", "granularity", "teachers"):
        cfg = run.rebase(load_stage_config("train", run.STUDY_DIR / name / "train.yaml", s["train"]), data)
        assert cfg.corpus.startswith(str(data))
        assert cfg.max_steps == int(next(o for o in s["train"] if o.startswith("max_steps=")).split("=")[1])
        ev = run.rebase(load_stage_config("evaluate", run.STUDY_DIR / name / "evaluate.yaml",
                                          ['students=[{"source": "default", "adapter": "x"}]', 'student_names=["a"]']),
                        data)
        assert all(ts.path.startswith(str(data)) for ts in ev.test_sets)
    tune = run.rebase(load_stage_config("tune", run.STUDY_DIR / "tune" / "tune.yaml", s["tune"]), data)
    assert all(p.startswith(str(data)) for p in tune.level_corpora.values())
    assert tune.train.objective == "cascod+prada" and tune.metric == "val_accuracy"
    with pytest.raises(Exception, match="corpus not found"):  # the fake data dir is empty
        check_tune_config(tune, cluster_cpus=3)


def test_no_training_config_reads_a_test_file() -> None:
    from ray_cotd.config import load_stage_config

    tune = load_stage_config("tune", run.STUDY_DIR / "tune" / "tune.yaml")
    trains = [tune.train] + [load_stage_config("train", run.STUDY_DIR / n / "train.yaml")
                             for n in ("objectives", "granularity", "teachers")]
    paths = [*tune.level_corpora.values()] + [p for t in trains for p in (t.corpus, t.target_questions) if p]
    assert paths and not [p for p in paths if p.endswith("test.json")]
    assert all(t.target_questions is None or t.target_questions.endswith("commonsenseqa/train_answer_only.json")
               for t in trains)


def test_item3_level_is_selected_on_rows_no_scale_reports() -> None:
    """Item 3's level comes from SVAMP hold-out rows after every scale's test rows: nothing is
    selected on a reported test question."""
    from ray_cotd.config import load_stage_config

    select = load_stage_config("evaluate", run.STUDY_DIR / "granularity" / "select.yaml")
    test = load_stage_config("evaluate", run.STUDY_DIR / "granularity" / "evaluate.yaml")
    (sel,), (tst,) = select.test_sets, test.test_sets
    assert sel.name == run.SELECT_SET and (sel.path, sel.holdout, sel.mapping) == (tst.path, tst.holdout, tst.mapping)
    assert (select.holdout_fraction, select.split_seed) == (test.holdout_fraction, test.split_seed)
    for name in ("cpu", "paper", "smoke"):
        limit = run.load_scale(name)["test_limits"].get("svamp")
        assert limit is not None and limit <= sel.offset, f"scale {name}: svamp test rows reach the selection rows"


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
    sets = {"strategyqa": 100, "commonsenseqa": 100}
    objectives = _report({(s, t): (40 + i, 100) for i, s in enumerate(["untrained", *run.OBJECTIVES]) for t in sets},
                         sets)
    table = run.objectives_table(objectives)
    assert table.count("\n") == 1 + 7 and "cascod+prada" in table and "(40/100)" in table
    granularity = _report({(f"{o}-L{lv}", "svamp"): (10 * lv, 80) for o in run.GRANULARITY_OBJECTIVES
                           for lv in run.LEVELS} | {("untrained", "svamp"): (5, 80)}, {"svamp": 80})
    assert "60/80" in run.granularity_table(granularity)
    levels = {"chatgpt": 6, "gemini": 6, "llama": 4}
    teachers = _report({("chatgpt-L6", "svamp"): (50, 80), ("gemini-L6", "svamp"): (45, 80),
                        ("llama-L4", "svamp"): (40, 80)}, {"svamp": 80})
    assert "| llama | 4 |" in run.teachers_table(teachers, levels)
    tuned = _report({(s, t): (50, 100) for s in ("default", "tuned") for t in sets}, sets)
    assert "α=0.5" in run.tuned_table(tuned, {"alpha": 0.5, "lambda_": 0.02, "level": 2},
                                      {"alpha": 0.3, "lambda_": 0.1, "level": 1})
    pytest.importorskip("matplotlib")
    run.plot_objectives(objectives, tmp_path / "o.png")
    run.plot_granularity(granularity, tmp_path / "g.png")
    run.plot_teachers(teachers, levels, tmp_path / "t.png")
    run.plot_tuned(tuned, tmp_path / "u.png")
    for name in ("o", "g", "t", "u"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_write_outputs_from_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sets = {"strategyqa": 10, "commonsenseqa": 10}
    report = _report({(s, t): (5, 10) for s in ("untrained", "cascod") for t in sets}, sets)
    (out / "objectives" / "evaluate").mkdir(parents=True)
    (out / "objectives" / "evaluate" / "report.json").write_text(json.dumps(report))
    (out / "timings.json").write_text(json.dumps({"x": {"experiment": "objectives", "kind": "train", "seconds": 60}}))
    study = run.Study(out, tmp_path, "smoke", plots_dir=tmp_path / "plots")
    result = study.write_outputs()
    assert result["stage_seconds"] == {"objectives": 60}
    assert (tmp_path / "plots" / "study_objectives.png").is_file()
    assert "## 1. Objectives" in (out / "tables.md").read_text()


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
    """The objectives table and plot show what always giving the most common gold answer scores
    (the floor on yes/no StrategyQA), read from a system's predictions file."""
    sets = {"strategyqa": 10, "commonsenseqa": 10}
    report = _report({(s, t): (5, 10) for s in ("untrained", "cascod") for t in sets}, sets)
    golds = {"strategyqa": ["True"] * 6 + ["False"] * 4, "commonsenseqa": list("AABCDEEEBC")}
    for r in report["results"]:
        r["predictions"] = f"predictions/{r['system']}/{r['test_set']}.jsonl"
    for name, values in golds.items():
        path = tmp_path / "predictions" / "cascod" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(_prediction_row(gold=g, predicted="x") for g in values))
    assert run.constant_answer(report, "strategyqa", tmp_path)[0] == "True"
    assert run.constant_answer(report, "strategyqa", tmp_path)[1]["k"] == 6
    assert run.constant_answer(report, "commonsenseqa", tmp_path)[:1] == ("E",)
    refs = run.constant_answers(report, tmp_path)
    assert set(refs) == {"strategyqa", "commonsenseqa"}
    table = run.objectives_table(report, refs)
    row = table.splitlines()[-1]
    assert row.startswith("| *always the most common answer* |")
    assert '(6/10): always "True"' in row and '(3/10): always "E"' in row
    assert "always" not in run.objectives_table(report)  # no references: no reference row
    assert run.constant_answer(report, "strategyqa", tmp_path / "elsewhere") is None
    pytest.importorskip("matplotlib")
    run.plot_objectives(report, tmp_path / "o.png", refs)
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
