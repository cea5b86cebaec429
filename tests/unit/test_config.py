"""Typed stage configs: YAML + overrides, unknown keys, type and range checks, resolved copy."""

from __future__ import annotations

import pytest
import yaml

from ray_cotd.config import (
    STAGE_CONFIGS,
    AnnotateConfig,
    ConfigError,
    TrainConfig,
    load_stage_config,
    save_resolved,
)
from ray_cotd.configbase import parse_overrides


def test_yaml_plus_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"corpus": "c.parquet", "alpha": 0.3, "student": {"dtype": "bfloat16"}}))
    cfg = load_stage_config("train", path, ["alpha=0.7", "lora_targets=[q_proj,v_proj]", "student.source=/m"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.alpha == 0.7
    assert cfg.lora_targets == ["q_proj", "v_proj"]
    assert cfg.student.source == "/m" and cfg.student.dtype == "bfloat16"


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML parses "1e-3" as a string; users write learning rates that way.
    assert load_stage_config("train", None, ["lr=1e-3"]).lr == 1e-3
    path = tmp_path / "t.yaml"
    path.write_text("lr: 5e-5\n")
    assert load_stage_config("train", path).lr == 5e-5
    with pytest.raises(ConfigError, match="lr: expected a number, got 'fast'"):
        load_stage_config("train", None, ["lr=fast"])


def test_int_is_accepted_for_float_and_kept_as_float():
    cfg = load_stage_config("train", None, ["alpha=1"])
    assert cfg.alpha == 1.0 and isinstance(cfg.alpha, float)


def test_unknown_key_lists_valid_keys_and_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("alfa: 0.3\n")
    with pytest.raises(ConfigError) as err:
        load_stage_config("train", path)
    msg = str(err.value)
    assert str(path) in msg and "alfa" in msg and "alpha" in msg and "lambda_" in msg


def test_unknown_nested_key_names_its_section():
    with pytest.raises(ConfigError, match=r"student\.dtyp.*valid keys under student: source"):
        load_stage_config("train", None, ["student.dtyp=bfloat16"])


@pytest.mark.parametrize(
    ("stage", "override", "fragment"),
    [
        ("train", "alpha=1.5", "alpha: 1.5 is outside [0, 1]"),
        ("train", "lambda_=-0.1", "lambda_: -0.1 must be >= 0"),
        ("train", "objective=prada", "target_questions"),
        ("train", "peft=qlora", "'qlora' is not one of 'lora', 'ptuning', 'lora+ptuning', 'full'"),
        ("train", "max_steps=ten", "max_steps: expected an integer, got 'ten'"),
        ("train", "use_gpu=1", "use_gpu: expected true or false"),
        ("annotate", "levels=[0,3]", "levels: [0] not valid; choose from [1, 2, 3, 4, 5, 6]"),
        ("annotate", "engine=llamacpp", "'llamacpp' is not one of 'transformers', 'vllm', 'openai'"),
        ("annotate", "n_samples=4", "n_samples > 1 needs temperature > 0"),
        ("serve", "max_batch_size=64", "max_ongoing_requests: must be >= max_batch_size"),
    ],
)
def test_invalid_values_name_the_key(stage, override, fragment):
    with pytest.raises(ConfigError) as err:
        load_stage_config(stage, None, [override])
    assert fragment in str(err.value)


def test_missing_file_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_stage_config("train", tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_stage_config("train", path)


def test_unknown_stage_lists_stages():
    with pytest.raises(ConfigError, match="valid stages: annotate, train, evaluate, tune, serve, pipeline"):
        load_stage_config("distill")


def test_overrides_parse_nested_and_reject_malformed():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["alpha"])


def test_nested_list_of_sections_is_typed():
    cfg = load_stage_config("evaluate", None, ["test_sets=[{path: t.json, split: OOD, answer_type: boolean}]"])
    assert cfg.test_sets[0].split == "OOD"
    with pytest.raises(ConfigError, match=r"test_sets\[0\]"):
        load_stage_config("evaluate", None, ["test_sets=[{path: t.json, split: XYZ}]"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_stage_config("annotate", None, ["levels=[1,6]", "questions=q.jsonl"])
    path = save_resolved(cfg, tmp_path)
    again = load_stage_config("annotate", path)
    assert again == cfg and isinstance(again, AnnotateConfig)


def test_every_stage_builds_from_defaults_and_round_trips(tmp_path):
    for stage in STAGE_CONFIGS:
        cfg = load_stage_config(stage)
        path = save_resolved(cfg, tmp_path / stage)
        assert load_stage_config(stage, path) == cfg
