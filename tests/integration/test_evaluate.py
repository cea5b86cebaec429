"""`run_evaluate` end to end on the real default student over a handful of shared-data test rows,
`run_report` over saved runs, and the bad-input errors raised before anything generates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ray_cotd.config import ConfigError, EvaluateConfig, MappingSpec, ModelSpec
from ray_cotd.config import TestSetSpec as SetSpec  # not Test*: pytest would try to collect it
from ray_cotd.data.errors import DataError
from ray_cotd.data.splits import split_name
from ray_cotd.evaluate import load_predictions, markdown_table, run_evaluate, run_report
from ray_cotd.metrics import accuracy, answer_change_rate
from ray_cotd.lm.model import ModelLoadError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text(json.dumps(rows))
    return str(path)


# -- bad input: clear errors before evaluation starts (no Ray, no model) ------------------------


def test_rows_missing_the_mapped_field_name_file_row_and_field(tmp_path):
    path = _write(tmp_path / "qs.json", [{"instruction": "Is snow white?", "label": "True"},
                                         {"instruction": "Is coal white?"}])
    cfg = EvaluateConfig(test_sets=[SetSpec(path=path, mapping=MappingSpec(preset="testset"))],
                         output_dir=str(tmp_path / "out"), on_bad_row="raise")
    with pytest.raises(DataError) as err:
        run_evaluate(cfg)
    assert err.value.path == path and err.value.row == 1 and err.value.field == "label"
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_answer_type_that_does_not_match_the_golds(tmp_path):
    path = _write(tmp_path / "qs.json", [{"instruction": "How many legs has a spider?", "label": "8"},
                                         {"instruction": "Is a spider an insect?", "label": "False"}])
    cfg = EvaluateConfig(test_sets=[SetSpec(path=path, answer_type="numeric")], output_dir=str(tmp_path / "o"),
                         on_bad_row="raise")
    with pytest.raises(DataError, match="is not a numeric answer") as err:
        run_evaluate(cfg)
    assert (err.value.row, err.value.field) == (1, "label")


def test_a_set_with_no_good_row_fails_naming_the_first_bad_one(tmp_path):
    path = _write(tmp_path / "qs.json", [{"instruction": "Is coal white?"}])
    cfg = EvaluateConfig(test_sets=[SetSpec(path=path, mapping=MappingSpec(preset="testset"))],
                         output_dir=str(tmp_path / "o"))
    with pytest.raises(DataError, match=r"no rows to evaluate .*1 bad rows left out, the first: row 0, field 'label'"):
        run_evaluate(cfg)


def test_checkpoint_directory_that_is_not_a_model(tmp_path):
    path = _write(tmp_path / "qs.json", [{"instruction": "Is snow white?", "label": "True"}])
    not_a_model = tmp_path / "ckpt"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("no weights here")
    cfg = EvaluateConfig(students=[ModelSpec(source=str(not_a_model))], test_sets=[SetSpec(path=path)],
                         output_dir=str(tmp_path / "o"))
    with pytest.raises(ModelLoadError, match="not a model directory"):
        run_evaluate(cfg)


def test_adapter_directory_that_is_not_an_adapter(tmp_path):
    path = _write(tmp_path / "qs.json", [{"instruction": "Is snow white?", "label": "True"}])
    cfg = EvaluateConfig(students=[ModelSpec(adapter=str(tmp_path))], test_sets=[SetSpec(path=path)],
                         output_dir=str(tmp_path / "o"))
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        run_evaluate(cfg)


def test_holdout_test_refuses_a_student_trained_beside_another_split(tmp_path):
    """Issue 19: student.json records the split; holdout: test under another one is refused before
    anything generates, naming the student directory and both splits."""
    path = _write(tmp_path / "qs.json", [{"instruction": f"What is {i} + 1?", "label": str(i + 1)} for i in range(20)])
    student = tmp_path / "student"
    student.mkdir()
    (student / "student.json").write_text(json.dumps({"base": "default", "peft": "ptuning", "objective": "cascod",
                                                      "holdout_split": {"split_seed": 1, "holdout_fraction": 0.2}}))
    cfg = EvaluateConfig(students=[ModelSpec(adapter=str(student))], test_sets=[SetSpec(path=path, holdout="test")],
                         split_seed=0, output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=r"split_seed=1, holdout_fraction=0.2\) but holdout: test would score it "
                                          r"on the test side of another \(split_seed=0, holdout_fraction=0.2\)") as err:
        run_evaluate(cfg)
    assert str(student) in str(err.value)
    assert not (tmp_path / "o").exists()


def test_run_report_needs_run_directories(tmp_path):
    with pytest.raises(DataError, match="no report.json"):
        run_report([tmp_path], tmp_path / "cmp")


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.real_model
def test_evaluate_end_to_end_on_shared_data(shared_data, ray_cluster, tmp_path):
    cfg = EvaluateConfig(
        students=[ModelSpec()],
        student_names=["student"],
        baselines=["few_shot"],
        test_sets=[
            SetSpec(path=str(shared_data / "svamp" / "train_answer_only.json"), name="svamp", split="IND",
                        mapping=MappingSpec(preset="answer_only"), answer_type="numeric", holdout="test", limit=3),
            SetSpec(path=str(shared_data / "strategyqa" / "test.json"), name="strategyqa", split="OOD",
                        answer_type="boolean", limit=2),
        ],
        batch_size=4,
        max_rationale_tokens=12,
        max_answer_tokens=5,
        output_dir=str(tmp_path / "run"),
    )
    report = run_evaluate(cfg)
    run = Path(cfg.output_dir)
    for name in ("report.json", "report.md", "accuracy.png", "faithfulness.png", "resolved_config.yaml"):
        assert (run / name).is_file(), name
    assert (run / "accuracy.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((run / "report.json").read_text()) == report

    predictions = load_predictions(run)
    assert len(predictions) == 2 * (3 + 2)  # 2 systems x (3 + 2) rows, none dropped
    svamp = [p for p in predictions if p.test_set == "svamp"]
    assert all(split_name(p.question, 0, 0.2) == "test" for p in svamp)  # the fixed hold-out side

    # the report agrees with the saved predictions
    assert len(report["results"]) == 4
    for result in report["results"]:
        rows = [p for p in predictions if (p.system, p.test_set) == (result["system"], result["test_set"])]
        assert result["accuracy"] == accuracy([p.correct for p in rows]).to_dict()
        assert result["unparseable"] == sum(p.parse_error is not None for p in rows)
        assert all(p.correct is False for p in rows if p.parse_error is not None)
        assert result["faithfulness"] == answer_change_rate(
            [p.predicted for p in rows], [p.swapped_predicted for p in rows]).to_dict()
        # answered again from the next question's rationale, the last from the first's (one batch per set here)
        assert [p.swapped_from for p in rows] == [(p.position + 1) % len(rows) for p in rows]
    unparseable = [json.loads(line) for line in (run / "unparseable.jsonl").read_text().splitlines()]
    assert len(unparseable) == sum(r["unparseable"] for r in report["results"])
    table = (run / "report.md").read_text()
    assert table == markdown_table(report)
    for result in report["results"]:
        acc = result["accuracy"]
        assert f"({acc['k']}/{acc['n']})" in table

    # compare two saved runs without generating
    shutil.copytree(run, tmp_path / "run2")
    compared = run_report([run, tmp_path / "run2"], tmp_path / "cmp")
    assert {s["name"] for s in compared["systems"]} == {"run/student", "run/few_shot", "run2/student", "run2/few_shot"}
    assert (tmp_path / "cmp" / "accuracy.png").read_bytes()[:8] == PNG_MAGIC
    by_key = {(r["system"], r["test_set"]): r["accuracy"] for r in compared["results"]}
    for result in report["results"]:
        assert by_key[("run2/" + result["system"], result["test_set"])] == result["accuracy"]


@pytest.mark.real_model
def test_fit_prompts_counts_the_prompt_the_student_is_fed_against_the_context():
    """The budget is exact: stage-1 prompt (few-shot demonstrations included) + max_rationale_tokens +
    the answer marker + max_answer_tokens against the context (vllm.max_model_len here)."""
    from ray_cotd.evaluate import EvalSet, System, fit_prompts, load_few_shot
    from ray_cotd.lm.format import STAGE2_PREFIX, encode, prompt_text
    from ray_cotd.lm.model import load_tokenizer

    tokenizer = load_tokenizer(ModelSpec())
    record = {"question": "Kim has 3 apples and eats one. How many apples are left?", "gold": "2", "row": 0, "id": "q"}
    ts = EvalSet("s", "IND", "s.json", "numeric", "all", [record])
    systems = [System("untrained", "baseline", ModelSpec(), False), System("few_shot", "baseline", ModelSpec(), True)]
    questions = [(system, ts, 0, record) for system in systems]
    need = (len(encode(tokenizer, prompt_text(tokenizer, record["question"]))) + 8
            + len(encode(tokenizer, STAGE2_PREFIX)) + 4)
    demos = load_few_shot()

    def fit(max_model_len):
        cfg = EvaluateConfig(backend="vllm", vllm={"max_model_len": max_model_len}, max_rationale_tokens=8,
                             max_answer_tokens=4)
        return fit_prompts(questions, cfg, demos)

    assert list(fit(need)) == [1]  # fits exactly; the few-shot prompt holds demonstrations too
    assert list(fit(need - 1)) == [0, 1]
    assert fit(need - 1)[0] == need - 8 - len(encode(tokenizer, STAGE2_PREFIX)) - 4
    assert fit(8192) == {}


ONE_MB_QUESTION = "How many apples are left? " + "An apple is red and round. " * 38_000  # 1.0 MB


@pytest.mark.ray
@pytest.mark.real_model
def test_a_1mb_question_is_scored_wrong_as_prompt_too_long_and_the_others_are_evaluated(ray_cluster, tmp_path):
    """Issue 23: one 1 MB question made evaluation allocate 32 GB and die after 49 s with no report.
    Its prompt does not fit the student's context (in tokens, few-shot demonstrations included): it
    is not generated, it is scored wrong as prompt_too_long and listed in unparseable.jsonl, and the
    run goes on (faithfulness swaps only among the questions that were generated)."""
    assert len(ONE_MB_QUESTION.encode()) > 1_000_000
    path = _write(tmp_path / "big.json", [
        {"question": "Kim has 3 apples and eats one. How many apples are left?", "answer": "2"},
        {"question": ONE_MB_QUESTION, "answer": "3"},
        {"question": "Tom has 5 pens and buys 2 more. How many pens does he have?", "answer": "7"},
    ])
    cfg = EvaluateConfig(students=[], baselines=["untrained", "few_shot"], max_rationale_tokens=8, max_answer_tokens=4,
                         test_sets=[SetSpec(path=path, name="big", answer_type="numeric")], batch_size=4,
                         output_dir=str(tmp_path / "run"))
    report = run_evaluate(cfg)
    predictions = load_predictions(cfg.output_dir)
    assert len(predictions) == 6 and [p.position for p in predictions] == [0, 1, 2, 0, 1, 2]
    too_long = [p for p in predictions if p.position == 1]
    for p in too_long:
        assert (p.parse_error, p.correct, p.predicted, p.rationale, p.answer_text) == ("prompt_too_long", False, None,
                                                                                      "", "")
        assert p.prompt_tokens > 200_000 and p.swapped_from is None
    generated = [p for p in predictions if p.position != 1]
    assert all(p.rationale_stop in ("eos", "marker", "length") and p.answer_tokens > 0 for p in generated)
    assert all(p.swapped_from in (0, 2) for p in generated)  # swapped with each other, not with the 1 MB one
    assert [r["unparseable"] >= 1 for r in report["results"]] == [True, True]
    unparseable = [json.loads(line) for line in (Path(cfg.output_dir) / "unparseable.jsonl").read_text().splitlines()]
    assert sum(u["parse_error"] == "prompt_too_long" for u in unparseable) == 2


def test_report_files_from_saved_results_without_generating(tmp_path):
    """write_report + run_report on a hand-built report: table cells, PNGs, prefixed names."""
    from ray_cotd.evaluate import EvalSet, split_summary, summarize, write_report
    from ray_cotd.scoring import Prediction, score

    sets = [EvalSet("math", "IND", "m.json", "numeric", "all", []), EvalSet("yesno", "OOD", "y.json", "boolean", "all", [])]
    preds = []
    for system, texts in {"a": [" 4.", " 5.", " True."], "b": [" 4.", " 4.", " no."]}.items():
        for (set_name, split, kind, gold), text in zip(
                [("math", "IND", "numeric", "4"), ("math", "IND", "numeric", "4"), ("yesno", "OOD", "boolean", "True")], texts):
            preds.append(Prediction(system=system, test_set=set_name, split=split, position=0, row=0, id="q",
                                    question="Q?", gold=gold, rationale="", answer_text=text, **score(text, gold, kind),
                                    rationale_stop="eos", prompt_tokens=5, rationale_tokens=3, answer_tokens=2,
                                    stage1_s=0.0, stage2_s=0.0))
    report = {"mode": "two_stage", "systems": [{"name": "a"}, {"name": "b"}],
              "test_sets": [{"name": s.name, "split": s.split, "answer_type": s.answer_type, "n": 2 if s.name == "math" else 1}
                            for s in sets],
              "results": summarize(preds, ["a", "b"], sets), "splits": split_summary(preds, ["a", "b"])}
    write_report(report, tmp_path / "r1")
    table = (tmp_path / "r1" / "report.md").read_text()
    assert "| math | IND | numeric | 50.0% [9.5, 90.5] (1/2) | 100.0% [34.2, 100.0] (2/2) |" in table
    assert "| yesno | OOD | boolean | 100.0% [20.7, 100.0] (1/1) | 0.0% [0.0, 79.3] (0/1) |" in table
    assert (tmp_path / "r1" / "accuracy.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "r1" / "faithfulness.png").exists()  # no swap results, no plot
    shutil.copytree(tmp_path / "r1", tmp_path / "r2")
    merged = run_report([tmp_path / "r1", tmp_path / "r2"], tmp_path / "cmp")
    assert [s["name"] for s in merged["systems"]] == ["r1/a", "r1/b", "r2/a", "r2/b"]
    assert "r2/b" in (tmp_path / "cmp" / "report.md").read_text()
    assert (tmp_path / "cmp" / "accuracy.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.ray
@pytest.mark.real_model
def test_choice_questions_are_scored_free_and_constrained_to_their_options(ray_cluster, tmp_path):
    """An invented multiple-choice set in the arc preset's format: every question lists its options,
    so besides the free answer the report scores the option the student ranks first at the answer
    position, in a table of its own."""
    rows = [
        {"input": "Where do you keep milk cold? (A) the fridge (B) the oven (C) a shoe (D) the roof", "target": "(A)"},
        {"input": "Which animal says moo? (A) cat (B) cow (C) fish", "target": "(B)"},
        {"input": "What do bees make? (1) honey (2) bricks (3) paper (4) glass", "target": "(1)"},
        {"input": "What falls from clouds? (A) rain (B) chairs (C) rocks (D) cars", "target": "(A)"},
    ]
    path = _write(tmp_path / "arc.json", rows)
    # the same in other datasets' shapes: options in a column and a position as the gold (MMLU), and a
    # worked solution as the gold (GSM8K), read with detected mappings
    mmlu = _write(tmp_path / "mmlu.json", [
        {"question": "Which animal says moo?", "choices": ["cat", "cow", "fish"], "answer": 1},
        {"question": "What do bees make?", "choices": ["bricks", "paper", "honey"], "answer": 2}])
    gsm8k = _write(tmp_path / "gsm8k.json", [
        {"question": "Sam has 2 bags of 3 apples. How many apples has he?", "answer": "2 * 3 = 6 apples.\n#### 6"}])
    cfg = EvaluateConfig(students=[], baselines=["untrained"], faithfulness=False, max_rationale_tokens=24,
                         max_answer_tokens=6, test_sets=[SetSpec(path=path, name="arc", mapping=MappingSpec(preset="arc")),
                                                         SetSpec(path=mmlu, name="mmlu"), SetSpec(path=gsm8k, name="gsm8k")],
                         output_dir=str(tmp_path / "out"))
    report = run_evaluate(cfg)
    result, mmlu_result, gsm8k_result = report["results"]
    assert result["answer_type"] == mmlu_result["answer_type"] == "multiple_choice"
    assert result["constrained_accuracy"]["n"] == 4 and mmlu_result["constrained_accuracy"]["n"] == 2
    assert gsm8k_result["answer_type"] == "numeric" and gsm8k_result["constrained_accuracy"] is None
    predictions = load_predictions(tmp_path / "out")
    labels = [["A", "B", "C", "D"], ["A", "B", "C"], ["1", "2", "3", "4"], ["A", "B", "C", "D"]]
    arc = [p for p in predictions if p.test_set == "arc"]
    assert [p.constrained_predicted in options for p, options in zip(arc, labels)] == [True] * 4
    assert [(p.gold, p.constrained_predicted in ("A", "B", "C")) for p in predictions if p.test_set == "mmlu"] == [
        ("B", True), ("C", True)]
    assert [p.gold for p in predictions if p.test_set == "gsm8k"] == ["6"]
    assert "Constrained to the question's choices" in (tmp_path / "out" / "report.md").read_text()


# -- resume: a stopped run reuses the answers it logged -----------------------------------------


class _Echo:
    """A stand-in generator: rationale "why <question>", answer "5"; a swapped answer names its rationale."""

    def two_stage(self, questions, limits, choices=None):
        return [self._result(q, f"why {q}", " 5.") for q in questions]

    def answer_from_rationales(self, questions, rationales, limits):
        return [self._result(q, r, f" from {r}") for q, r in zip(questions, rationales)]

    @staticmethod
    def _result(question, rationale, answer_text):
        from ray_cotd.lm.generate import TwoStageResult

        return TwoStageResult(question=question, rationale=rationale, answer_text=answer_text, answer=None,
                              prompt_tokens=3, rationale_tokens=2, answer_tokens=1, stage1_s=0.0, stage2_s=0.0)


def _stopping_generate(calls: list[int], stop_after: int | None = None):
    """generate(...) as the actor pool runs it (GenerateActor on batches_by_set batches, results handed
    on as they come back), with stand-in generators; raises after `stop_after` results, as a killed run."""
    import pandas as pd

    from ray_cotd.evaluate import GenerateActor, actor_kwargs, batches_by_set

    def generate(rows, cfg, systems, demos, desc, on_result):
        calls.append(len(rows))
        actor = GenerateActor(**actor_kwargs(cfg, systems, demos))
        actor.generators = {(s.name, None): _Echo() for s in systems}
        out, handed = [], 0
        for batch in batches_by_set(rows, cfg.batch_size):
            for result in actor(pd.DataFrame(batch)).to_dict("records"):
                if stop_after is not None and handed == stop_after:
                    raise RuntimeError("the run was killed")
                on_result(result)
                handed += 1
                out.append(result)
        by_index = {r["index"]: r for r in out}
        return [by_index[row["index"]] for row in rows]

    return generate


@pytest.mark.real_model
def test_a_stopped_evaluation_resumes_from_its_logged_answers(tmp_path):
    """Issue: a stopped evaluate run lost every answer it had generated. Each answer is logged as it
    comes back; the next start generates only the rest and writes the report a clean run writes."""
    from ray_cotd.evaluate import GENERATED_LOG, evaluate_systems

    path = _write(tmp_path / "q.json", [{"question": f"What is {n} plus {5 - n}?", "answer": "5"} for n in range(5)])

    def cfg(out, **overrides):
        values = dict(students=[], baselines=["untrained"], batch_size=2, max_rationale_tokens=8, max_answer_tokens=4,
                      test_sets=[SetSpec(path=path, name="q", answer_type="numeric")], output_dir=str(tmp_path / out))
        return EvaluateConfig(**{**values, **overrides})

    calls: list[int] = []
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_systems(cfg("run"), _stopping_generate(calls, stop_after=2))
    log = tmp_path / "run" / GENERATED_LOG
    assert len(log.read_text().splitlines()) == 1 + 2 and not (tmp_path / "run" / "report.json").exists()
    with log.open("a") as f:
        f.write('{"key": "cut sho')  # killed while writing a line
    resumed = evaluate_systems(cfg("run"), _stopping_generate(calls))
    clean = evaluate_systems(cfg("clean"), _stopping_generate(calls))
    assert calls == [5, 3, 5]  # the second start generated only what the first had not logged
    assert resumed["throughput"]["reused"] == 2 and resumed["throughput"]["generated"] == 3
    assert resumed["results"] == clean["results"] and resumed["results"][0]["faithfulness"]["n"] == 5

    def answers(run):
        return [(p.position, p.rationale, p.answer_text, p.predicted, p.swapped_from, p.swapped_predicted)
                for p in load_predictions(tmp_path / run)]

    assert answers("run") == answers("clean") and not log.exists()  # the report holds them all now

    # answers logged under other generation settings are not reused
    with pytest.raises(RuntimeError):
        evaluate_systems(cfg("run"), _stopping_generate(calls, stop_after=2))
    evaluate_systems(cfg("run", max_rationale_tokens=9), _stopping_generate(calls))
    assert calls[-1] == 5


@pytest.mark.real_model
def test_a_second_evaluation_into_a_held_output_directory_is_refused(tmp_path):
    from ray_cotd import dirlock
    from ray_cotd.evaluate import evaluate_systems

    path = _write(tmp_path / "q.json", [{"question": "What is 2 plus 3?", "answer": "5"}])
    cfg = EvaluateConfig(students=[], baselines=["untrained"], test_sets=[SetSpec(path=path, name="q")],
                         output_dir=str(tmp_path / "out"))
    with dirlock.hold(tmp_path / "out", "evaluate"):
        with pytest.raises(dirlock.DirectoryInUse, match="is in use by evaluate run pid"):
            evaluate_systems(cfg, _stopping_generate([]))


@pytest.mark.real_model
def test_bad_test_rows_are_left_out_counted_and_written_aside(tmp_path):
    """A long evaluation does not die on one bad row (the default on_bad_row: skip): it is not scored,
    the report says how many per set, and bad_rows.jsonl names file, row, field and reason."""
    from ray_cotd.evaluate import BAD_ROWS, evaluate_systems

    path = _write(tmp_path / "qs.json", [
        {"instruction": "How many legs has a spider?", "label": "8"},
        {"instruction": "How many legs has a cat?"},                          # no gold column
        {"instruction": "Is a spider an insect?", "label": "False"},          # not numeric
        {"instruction": "How many wings has a bee?", "label": "4"}])
    cfg = EvaluateConfig(students=[], baselines=["untrained"], max_rationale_tokens=8, max_answer_tokens=4,
                         test_sets=[SetSpec(path=path, name="legs", mapping=MappingSpec(preset="testset"),
                                            answer_type="numeric")], output_dir=str(tmp_path / "out"))
    with pytest.warns(UserWarning, match=r"2 bad rows left out \(first: row 1, field 'label': missing_field\)"):
        report = evaluate_systems(cfg, _stopping_generate([]))
    assert report["test_sets"][0]["bad_rows"] == 2 and report["results"][0]["accuracy"]["n"] == 2
    bad = [json.loads(line) for line in (tmp_path / "out" / BAD_ROWS).read_text().splitlines()]
    assert [(b["path"], b["row"], b["field"], b["reason"]) for b in bad] == [
        (path, 1, "label", "missing_field"), (path, 2, "label", "gold_not_numeric")]
    assert "bad_rows.jsonl): legs 2 rows." in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.ray
@pytest.mark.real_model
def test_a_run_stopped_in_its_ray_data_pass_resumes_on_the_real_model(ray_cluster, tmp_path):
    """The actor pool's answers reach the log as they come back: a run stopped after two answers
    (its driver raising, as a killed job's would stop) leaves them, and the next start generates the
    other two with the real student and scores all four."""
    from ray_cotd.evaluate import GENERATED_LOG, _run_actor_pool, evaluate_systems

    path = _write(tmp_path / "q.json", [{"question": f"What is {n} plus 2?", "answer": str(n + 2)} for n in range(4)])
    cfg = EvaluateConfig(students=[], baselines=["untrained"], batch_size=2, max_rationale_tokens=8,
                         max_answer_tokens=4, test_sets=[SetSpec(path=path, name="q", answer_type="numeric")],
                         output_dir=str(tmp_path / "out"))

    def stopped(rows, cfg, systems, demos, desc, on_result):
        def two_then_stop(result):
            on_result(result)
            if len(Path(cfg.output_dir, GENERATED_LOG).read_text().splitlines()) == 1 + 2:
                raise KeyboardInterrupt("stopped")
        return _run_actor_pool(rows, cfg, systems, demos, desc, two_then_stop)

    with pytest.raises(KeyboardInterrupt):
        evaluate_systems(cfg, stopped)
    report = evaluate_systems(cfg)
    assert (report["throughput"]["reused"], report["throughput"]["generated"]) == (2, 2)
    predictions = load_predictions(tmp_path / "out")
    assert len(predictions) == 4 and all(p.rationale_stop in ("eos", "marker", "length") for p in predictions)
    assert not (tmp_path / "out" / GENERATED_LOG).exists()
