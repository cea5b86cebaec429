"""One table per name: every config Literal, CLI choice and implementing table agrees with its
name table, and the checks that depend on an objective read its table entry."""

from __future__ import annotations

import re
from typing import Literal, Optional, Union, get_args, get_origin, get_type_hints

import pytest

from ray_cotd import names
from ray_cotd.config import AnnotateConfig, ConfigError, MappingSpec, TrainConfig, load_stage_config
from ray_cotd.config import TestSetSpec as SetSpec  # not Test*: pytest would try to collect it
from ray_cotd.data.answers import ANSWER_TYPES
from ray_cotd.data.readers import MAPPING_PRESETS


def literal_values(cls: type, field: str) -> tuple:
    """The values a config field's Literal allows (under Optional, if any)."""
    tp = get_type_hints(cls)[field]
    if get_origin(tp) in (Union, Optional):
        (tp,) = [a for a in get_args(tp) if a is not type(None)]
    assert get_origin(tp) is Literal, f"{cls.__name__}.{field} is not a Literal"
    return get_args(tp)


def test_config_literals_equal_their_tables():
    from ray_cotd.evaluate import SPLITS
    from ray_cotd.student.collate import BATCHINGS
    from ray_cotd.student.prada import LAMBDA_SCHEDULES
    from ray_cotd.teacher.engines import ENGINES

    assert literal_values(TrainConfig, "objective") == tuple(names.OBJECTIVES)
    assert literal_values(TrainConfig, "batching") == BATCHINGS
    assert literal_values(TrainConfig, "lambda_schedule") == tuple(LAMBDA_SCHEDULES)
    assert literal_values(MappingSpec, "preset") == tuple(MAPPING_PRESETS)
    assert literal_values(AnnotateConfig, "answer_type") == ANSWER_TYPES
    assert set(literal_values(AnnotateConfig, "engine")) == set(ENGINES)  # engines.py orders its own table
    assert literal_values(SetSpec, "answer_type") == ANSWER_TYPES
    assert literal_values(SetSpec, "split") == SPLITS


def test_implementing_tables_are_keyed_by_the_names():
    from ray_cotd.student.objectives import OBJECTIVES
    from ray_cotd.teacher import prompts

    assert list(OBJECTIVES) == list(names.OBJECTIVES)
    assert all(OBJECTIVES[n].info is names.OBJECTIVES[n] for n in names.OBJECTIVES)
    assert tuple(prompts.LEVELS) == names.LEVELS and tuple(prompts.FORMATS) == names.FORMATS
    assert set(prompts.TEMPLATES) == {(lv, f) for lv in names.LEVELS for f in names.FORMATS}


def test_a_table_that_drifts_fails_naming_both_key_lists():
    with pytest.raises(TypeError, match=r"x: keys \['a'\] differ from the names \['a', 'b'\]"):
        names.require_keys("x", {"a": 1}, ("a", "b"))


def test_objective_entries_declare_their_paper_symbols():
    assert names.objectives_using("alpha") == ("cascod", "cascod+prada")
    assert names.objectives_using("lambda_") == ("prada", "cascod+prada")
    assert [n for n, o in names.OBJECTIVES.items() if o.domain_adversarial] == ["prada", "cascod+prada"]
    assert [n for n, o in names.OBJECTIVES.items() if not o.needs_rationale] == ["answer_only"]
    with pytest.raises(ValueError, match="unknown paper symbol 'beta'"):
        names.objectives_using("beta")
    with pytest.raises(ValueError, match="exactly when it is domain-adversarial"):
        names.ObjectiveInfo(frozenset({"lambda_"}), needs_rationale=True, domain_adversarial=False, summary="")


def test_train_config_reads_domain_adversarial_from_the_table():
    for name, info in names.OBJECTIVES.items():
        if info.domain_adversarial:
            with pytest.raises(ConfigError, match="target_questions"):
                TrainConfig(objective=name)
        else:
            assert TrainConfig(objective=name).objective == name


def test_names_read_by_configs_come_from_the_tables():
    with pytest.raises(ConfigError, match=r"formats: \['cod'\] not valid; choose from \['cot', 'least_to_most'"):
        load_stage_config("annotate", None, ["formats=[cod]"])
    with pytest.raises(ConfigError, match="baselines: \\['zero_shot'\\] not valid; choose from \\['untrained', 'few_shot'\\]"):
        load_stage_config("evaluate", None, ["baselines=[zero_shot]"])
    with pytest.raises(ConfigError, match=re.escape("mapping.preset: expected 'alpaca' | 'testset' | 'arc' | 'plain' | 'mcq' | "
                                                    "'answer_only' or NoneType, got 'alpaka'")):
        load_stage_config("train", None, ["mapping.preset=alpaka"])
    with pytest.raises(ConfigError, match=re.escape("answer_type: expected 'numeric' | 'boolean' | 'multiple_choice' | "
                                                    "'text' or NoneType, got 'integer'")):
        load_stage_config("annotate", None, ["answer_type=integer"])
    assert load_stage_config("train", None, ["mapping.preset=answer_only"]).mapping.field_mapping() \
        == MAPPING_PRESETS["answer_only"]


def test_tune_reads_the_symbols_of_the_objective(tmp_path):
    from ray_cotd.tune import check_tune_config

    corpus = tmp_path / "c.json"
    corpus.write_text('[{"instruction": "1+1?", "output": "One plus one. The answer is 2"}]')
    base = [f"train.corpus={corpus}", "metric=val_loss", "train.val_every=1", "train.target_questions=t.json"]
    for objective in names.OBJECTIVES:
        for key, symbol in (("search_alpha=[0.1,0.9]", "alpha"), ("search_lambda=[0.01,1.0]", "lambda_")):
            cfg = load_stage_config("tune", None, [*base, f"train.objective={objective}", key])
            if symbol in names.OBJECTIVES[objective].symbols:
                check_tune_config(cfg, cluster_cpus=2)
            else:
                with pytest.raises(ConfigError, match=f"only acts in the .*not '{objective}'"):
                    check_tune_config(cfg, cluster_cpus=2)


def test_tune_refuses_a_level_that_is_not_a_granularity_level(tmp_path):
    from ray_cotd.tune import check_tune_config

    corpus = tmp_path / "c.json"
    corpus.write_text("[]")
    cfg = load_stage_config("tune", None, [f"level_corpora={{'7': '{corpus}'}}", "search_levels=[7]",
                                           "metric=val_loss", "train.val_every=1"])
    with pytest.raises(ConfigError, match=r"search_levels: \[7\] are not granularity levels; choose from \[1, 2"):
        check_tune_config(cfg, cluster_cpus=2)
