"""Issue 19, item 3: the hold-out split cannot leak. The split has its own seed (TrainConfig.split_seed,
apart from the init and data-order seed), training records it in student.json, and evaluate refuses
`holdout: test` on a student recorded with another split; a student directory made before the split
(or the objective) was recorded is read with a warning naming what is assumed. No Ray, no model."""

from __future__ import annotations

import json
import warnings

import pytest

from ray_cotd.config import ConfigError, ModelSpec, TrainConfig
from ray_cotd.data.splits import SPLIT_KEY, HoldoutSplit
from ray_cotd.evaluate import StudentRecordWarning, student_record
from ray_cotd.student.train import prepare_data, student_meta

from char_tokenizer import TOK

SPLIT = HoldoutSplit(split_seed=0, holdout_fraction=0.2)


def _student_dir(tmp_path, meta):
    directory = tmp_path / "student"
    directory.mkdir()
    if meta is not None:
        (directory / "student.json").write_text(json.dumps(meta))
    return ModelSpec(adapter=str(directory)), directory


def test_student_json_records_the_split_apart_from_the_seed():
    meta = student_meta(TrainConfig(corpus="x", seed=7, split_seed=3, holdout_fraction=0.25))
    assert meta[SPLIT_KEY] == {"split_seed": 3, "holdout_fraction": 0.25}
    assert meta["objective"] == "cascod"
    assert student_meta(TrainConfig(corpus="x"))[SPLIT_KEY] == {"split_seed": 0, "holdout_fraction": 0.2}


def test_the_init_seed_no_longer_moves_the_held_out_questions(tmp_path):
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps([{"instruction": f"How many apples are in basket {i}?",
                                   "output": f"Basket {i} holds {i} apples. The answer is {i}"} for i in range(60)]))

    def held_out(**kw):
        cfg = TrainConfig(corpus=str(corpus), holdout_fraction=0.2, val_fraction=0.0, num_workers=1, **kw)
        trained = {r["question"] for r in prepare_data(cfg, TOK)["corpus"].train}
        return {f"How many apples are in basket {i}?" for i in range(60)} - trained

    assert held_out(seed=0) == held_out(seed=5)  # before issue 19 the seed drew the split too
    assert held_out(seed=0) != held_out(split_seed=1)


def test_the_same_split_is_scored(tmp_path):
    spec, directory = _student_dir(tmp_path, {"base": "default", "objective": "cascod", SPLIT_KEY: SPLIT.as_dict()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = student_record(spec, SPLIT, test_side=True)
    assert record == {"student_dir": str(directory), "objective": "cascod", SPLIT_KEY: SPLIT.as_dict()}


@pytest.mark.parametrize("other", [HoldoutSplit(1, 0.2), HoldoutSplit(0, 0.3)])
def test_holdout_test_refuses_a_student_trained_beside_another_split(tmp_path, other):
    spec, directory = _student_dir(tmp_path, {"base": "default", "objective": "cascod", SPLIT_KEY: SPLIT.as_dict()})
    with pytest.raises(ConfigError) as err:
        student_record(spec, other, test_side=True)
    message = str(err.value)
    assert str(directory) in message and str(SPLIT) in message and str(other) in message
    assert student_record(spec, other, test_side=False)[SPLIT_KEY] == SPLIT.as_dict()  # other sides: no leak


def test_a_student_trained_on_every_question_is_refused(tmp_path):
    spec, _ = _student_dir(tmp_path, {"base": "default", "objective": "cascod",
                                      SPLIT_KEY: {"split_seed": 0, "holdout_fraction": 0.0}})
    with pytest.raises(ConfigError, match="holdout_fraction=0.0"):
        student_record(spec, SPLIT, test_side=True)


def test_a_student_made_before_the_split_was_recorded_is_read_with_a_warning(tmp_path):
    spec, directory = _student_dir(tmp_path, {"base": "default", "peft": "lora"})
    with pytest.warns(StudentRecordWarning) as caught:
        record = student_record(spec, SPLIT, test_side=True)
    messages = [str(w.message) for w in caught]
    assert any(str(directory) in m and "records no hold-out split" in m and f"assumed trained beside this "
               f"evaluation's ({SPLIT})" in m for m in messages)
    assert any("records no objective" in m and "assumed a student that answers in two stages" in m for m in messages)
    assert record[SPLIT_KEY] is None


def test_a_malformed_recorded_split_names_the_file(tmp_path):
    from ray_cotd.data.errors import DataError

    spec, directory = _student_dir(tmp_path, {"objective": "cascod", SPLIT_KEY: {"split_seed": "zero"}})
    with pytest.raises(DataError, match=SPLIT_KEY) as err:
        student_record(spec, SPLIT, test_side=True)
    assert err.value.path == str(directory / "student.json")


def test_models_without_a_local_directory_are_not_students_of_a_split():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert student_record(ModelSpec(), SPLIT, test_side=True) is None
        assert student_record(ModelSpec(source="HuggingFaceTB/SmolLM2-135M-Instruct"), SPLIT, test_side=True) is None


@pytest.mark.parametrize("meta, what", [
    ({"base": "default", "peft": "lora"}, "records no objective"),
    (None, "records no objective"),  # an adapter directory with no student.json at all
    ({"base": "default", "objective": "rationale_first"}, "an objective this version does not know ('rationale_first')"),
])
def test_serving_a_student_with_no_known_objective_warns_what_is_assumed(tmp_path, meta, what):
    from ray_cotd.lm.model import warn_if_objective_unrecorded

    spec, directory = _student_dir(tmp_path, meta)
    with pytest.warns(StudentRecordWarning) as caught:
        warn_if_objective_unrecorded(spec)
    (message,) = [str(w.message) for w in caught]
    assert str(directory) in message and what in message and "answers in two stages" in message


def test_a_recorded_objective_or_a_local_base_model_is_served_without_a_warning(tmp_path):
    from ray_cotd.lm.model import warn_if_objective_unrecorded

    spec, _ = _student_dir(tmp_path, {"base": "default", "objective": "step_by_step"})
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text("{}")  # a local base model: no student.json, not a student
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_objective_unrecorded(spec)
        warn_if_objective_unrecorded(ModelSpec(source=str(base)))
        warn_if_objective_unrecorded(ModelSpec())  # the embedded default


def test_evaluate_names_an_unknown_recorded_objective(tmp_path):
    spec, directory = _student_dir(tmp_path, {"base": "default", "objective": "rationale_first",
                                              SPLIT_KEY: SPLIT.as_dict()})
    with pytest.warns(StudentRecordWarning, match="does not know \\('rationale_first'\\)"):
        student_record(spec, SPLIT, test_side=True)
