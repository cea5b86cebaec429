"""Tune's pre-flight checks: every bad sweep fails before a trial starts, naming the key."""

from __future__ import annotations

import sys

import pytest

from ray_cotd.config import ConfigError, load_stage_config
from ray_cotd.tune import check_tune_config, mlflow_tracking_uri, trial_train_config


@pytest.fixture
def corpora(tmp_path):
    paths = {}
    for level in (1, 6):
        path = tmp_path / f"level{level}.json"
        path.write_text('[{"instruction": "1+1?", "output": "One plus one. The answer is 2"}]')
        paths[str(level)] = str(path)
    return paths


def tune_cfg(corpora, *overrides):
    level_corpora = "{" + ", ".join(f"'{k}': '{v}'" for k, v in corpora.items()) + "}"
    return load_stage_config(
        "tune", None,
        [f"level_corpora={level_corpora}", "search_levels=[1,6]", "search_alpha=[0.1,0.9]", "metric=val_loss",
         "train.val_every=1", *overrides],
    )


def test_a_valid_sweep_passes(corpora):
    check_tune_config(tune_cfg(corpora), cluster_cpus=2)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["search_levels=null", "search_alpha=null"], "empty search space"),
        (["search_levels=[1,3]"], "level 3 has no corpus in level_corpora (given for levels: 1, 6)"),
        (["metric=accuracy"], "no trial reports 'accuracy'"),
        (["metric=val_accuracy"], "train.val_generate"),
        (["search_alpha=[0.5,1.5]"], "search_alpha: CasCoD α lives in [0, 1]"),
        (["search_alpha=[0.9,0.1]"], "low < high"),
        (["search_lambda=[0.0,1.0]", "train.objective=prada", "train.target_questions=t.json"], "low must be > 0"),
        (["search_lambda=[0.01,1.0]"], "λ only acts in the prada objectives"),
        (["train.val_every=0"], "ASHA needs validation reports"),
        (["search_levels=null", "train.corpus=/nonexistent/corpus.json"],
         "train.corpus: corpus not found: '/nonexistent/corpus.json'"),
        (["mlflow_uri=sqlite:///x.db"], "mlflow_uri: set to 'sqlite:///x.db' but mlflow is false"),
    ],
)
def test_bad_sweeps_fail_before_trials(corpora, overrides, fragment):
    with pytest.raises(ConfigError) as err:
        check_tune_config(tune_cfg(corpora, *overrides), cluster_cpus=2)
    assert fragment in str(err.value)


def test_missing_corpus_names_the_level_and_path(corpora, tmp_path):
    corpora["6"] = str(tmp_path / "gone.json")
    with pytest.raises(ConfigError, match=r"level_corpora.6: corpus not found: .*gone.json"):
        check_tune_config(tune_cfg(corpora), cluster_cpus=2)


def test_more_concurrent_trials_than_cpus(corpora):
    cfg = tune_cfg(corpora, "max_concurrent_trials=3", "train.num_workers=1", "train.cpus_per_worker=1")
    with pytest.raises(ConfigError, match="3 trials x 1.01 CPUs .* exceed the cluster's 2 CPUs"):
        check_tune_config(cfg, cluster_cpus=2)
    # one trial whose workers take every CPU leaves no room for the trial actor itself
    cfg = tune_cfg(corpora, "train.num_workers=1", "train.cpus_per_worker=2")
    with pytest.raises(ConfigError, match="1 trials x 2.01 CPUs"):
        check_tune_config(cfg, cluster_cpus=2)


def test_more_concurrent_trials_than_gpus(corpora):
    cfg = tune_cfg(corpora, "max_concurrent_trials=2", "train.num_workers=2", "train.use_gpu=true")
    with pytest.raises(ConfigError, match="2 trials x 2 GPUs .* exceed the cluster's 2 GPUs"):
        check_tune_config(cfg, cluster_cpus=8, cluster_gpus=2)
    check_tune_config(tune_cfg(corpora, "train.use_gpu=true"), cluster_cpus=8, cluster_gpus=1)


def test_mlflow_without_the_package_names_the_extra(corpora, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ray-cotd\[mlflow\]'"):
        check_tune_config(tune_cfg(corpora, "mlflow=true"), cluster_cpus=2)


def test_a_sweep_logs_its_trials_with_its_own_mlflow_not_the_train_configs(corpora):
    with pytest.raises(ConfigError, match="train.mlflow: a sweep logs its trials with tune's own"):
        check_tune_config(tune_cfg(corpora, "train.mlflow=true"), cluster_cpus=2)


def test_mlflow_store_defaults_to_a_sqlite_file_in_the_output_dir(corpora, tmp_path):
    assert mlflow_tracking_uri(tune_cfg(corpora)) is None
    cfg = tune_cfg(corpora, "mlflow=true", f"output_dir={tmp_path / 'sweep'}")
    assert mlflow_tracking_uri(cfg) == f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}"
    cfg = tune_cfg(corpora, "mlflow=true", "mlflow_uri=http://mlflow.internal:5000")
    assert mlflow_tracking_uri(cfg) == "http://mlflow.internal:5000"


def test_trial_config_points_the_level_at_its_corpus(corpora, tmp_path):
    cfg = tune_cfg(corpora)
    train = trial_train_config(cfg, {"level": 6, "alpha": 0.25}, tmp_path / "trial")
    assert train.corpus == corpora["6"] and train.alpha == 0.25
    assert train.output_dir == str(tmp_path / "trial" / "train")
