"""How the pipeline wires one stage's config into the next, checked before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_cotd.config import ConfigError, ModelSpec, load_stage_config
from ray_cotd.pipeline import annotate_config

STUDENT = ["train.student={source: /models/student, adapter: null}"]


def test_annotate_runs_under_run_dir_on_trains_holdout_split():
    cfg = load_stage_config("pipeline", None, ["train.holdout_fraction=0.3", "train.split_seed=7"])
    annotate = annotate_config(cfg, Path("/runs/x"))
    assert (annotate.output_dir, annotate.holdout_fraction, annotate.split_seed) == ("/runs/x/annotate", 0.3, 7)
    assert annotate.logprobs_for is None  # no log-probabilities recorded: nothing to check them against


def test_log_probabilities_for_token_level_kd_are_checked_against_trains_student():
    cfg = load_stage_config("pipeline", None, ["annotate.engine=vllm", "annotate.logprobs=5", "train.kd_weight=0.5",
                                               *STUDENT])
    assert annotate_config(cfg, Path("/runs/x")).logprobs_for == ModelSpec(source="/models/student")


def test_a_logprobs_for_the_user_named_is_kept():
    cfg = load_stage_config("pipeline", None, ["annotate.engine=vllm", "annotate.logprobs=5", "train.kd_weight=0.5",
                                               "annotate.logprobs_for={source: /models/other}", *STUDENT])
    assert annotate_config(cfg, Path("/runs/x")).logprobs_for == ModelSpec(source="/models/other")


def test_log_probabilities_recorded_without_kd_name_no_student():
    cfg = load_stage_config("pipeline", None, ["annotate.engine=vllm", "annotate.logprobs=5", *STUDENT])
    assert annotate_config(cfg, Path("/runs/x")).logprobs_for is None


def test_kd_without_recorded_log_probabilities_fails_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"train.kd_weight: .* set annotate.logprobs: k"):
        load_stage_config("pipeline", None, ["train.kd_weight=0.5"])
