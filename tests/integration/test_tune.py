"""A small real sweep on CPU: the default student, two SVAMP granularity levels and CasCoD α,
Optuna + ASHA, logged to MLflow, interrupted with Ctrl-C after its first trial and resumed; the
MLflow store holds one run per trial; the best config trains."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ray_cotd.config import ConfigError, load_stage_config
from ray_cotd.student.train import run_train
from ray_cotd.tune import mlflow_tracking_uri, run_tune

pytestmark = [pytest.mark.ray, pytest.mark.real_model]


def _sweep_config(shared_data: Path, out: Path) -> Path:
    cfg = {
        "level_corpora": {
            "1": str(shared_data / "svamp" / "train_chatgpt_level1.json"),
            "6": str(shared_data / "svamp" / "train_chatgpt_level6.json"),
        },
        "search_levels": [1, 6],
        "search_alpha": [0.1, 0.9],
        "num_samples": 3,  # with two, ASHA stopped none: the second, interrupted and restarted, ran all its steps
        "max_concurrent_trials": 1,
        "metric": "val_loss",
        "mode": "min",
        "grace_period": 1,
        "reduction_factor": 2,
        "output_dir": str(out),
        "name": "sweep",
        "mlflow": True,  # the default store: sqlite:///<output_dir>/mlflow.db
        "train": {
            "objective": "cascod", "peft": "lora", "lora_r": 4, "lora_alpha": 8,
            "batch_size": 2, "max_steps": 3, "max_seq_len": 192, "lr": 1.0e-3, "lr_schedule": "constant",
            # val_loss at every step (ASHA's rungs); no validation questions generated at each report, which is
            # most of a trial's time here (step 5 below scores them once; val_backend vllm: test_vllm.py)
            "val_every": 1, "val_fraction": 0.02, "val_generate": 0,
            "checkpoint_every": 3, "num_workers": 1, "cpus_per_worker": 1.0, "seed": 0,
        },
    }
    path = out.parent / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _trial_dirs(out: Path) -> list[Path]:
    return sorted((out / "trials").glob("*")) if (out / "trials").is_dir() else []


def test_sweep_interrupt_resume_and_best_config(ray_cluster, shared_data, tmp_path):
    out = tmp_path / "tune"
    cfg_path = _sweep_config(shared_data, out)

    # 1. Start the sweep as a user would, and press Ctrl-C once the second trial has started
    #    (max_concurrent_trials=1, so the first one has finished by then).
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_cotd.cli", "tune", str(cfg_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 600
    while len(_trial_dirs(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(2)
    assert proc.poll() is None, proc.stdout.read()[-4000:]
    assert len(_trial_dirs(out)) >= 2, "the second trial never started"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    experiment = out / "ray" / "sweep"
    results_before = {p.parent.name: p.read_text().count("\n") for p in experiment.glob("*/result.json")}
    assert results_before, "no trial reported before the interrupt"

    # 2. Resume: the same config continues the sweep without repeating finished trials.
    summary = run_tune(load_stage_config("tune", cfg_path))
    assert summary["trials"] == 3 and summary["errors"] == 0
    results_after = {p.parent.name: p.read_text().count("\n") for p in experiment.glob("*/result.json")}
    finished = [name for name, n in results_before.items() if n == results_after[name]]
    assert finished, f"every trial reported again after the resume: {results_before} -> {results_after}"

    # 3. Results: the table, the plots, ASHA stopped at least one trial early.
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 3 and set(table["level"]) <= {1, 6}
    assert table["alpha"].between(0.1, 0.9).all()
    assert summary["stopped_early"] >= 1, table.to_string()
    assert summary["total_steps"] < 3 * 3
    for plot in summary["plots"]:
        assert Path(plot).stat().st_size > 0
    assert any("optimization_history" in p for p in summary["plots"])

    # 4. MLflow: one run per trial (the resumed trial kept its run), with the searched params and
    #    the last reported metric, read back from the store with the MLflow client.
    from mlflow.tracking import MlflowClient

    uri = mlflow_tracking_uri(load_stage_config("tune", cfg_path))
    assert uri == f"sqlite:///{out.resolve() / 'mlflow.db'}" and (out / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert len(runs) == 3, [run.data.tags for run in runs]
    for row in table.itertuples():
        (run,) = [r for r in runs if r.data.tags["trial_id"] == str(row.trial_id)]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["alpha"]) == pytest.approx(row.alpha)
        assert int(run.data.params["level"]) == row.level
        assert run.data.metrics["val_loss"] == pytest.approx(row.last_val_loss)
        history = client.get_metric_history(run.info.run_id, "step")
        assert max(m.value for m in history) == row.steps

    # 5. The best trial's config trains as is; here it also scores two validation questions by two-stage
    #    generation once, at the end (HF val_accuracy in a Ray Train worker, which the sweep leaves off).
    best = load_stage_config("train", summary["best_train_yaml"])
    assert best.alpha == pytest.approx(summary["best_params"]["alpha"])
    assert best.corpus.endswith(f"level{summary['best_params']['level']}.json")
    trained = run_train(dataclasses.replace(best, max_steps=2, checkpoint_every=2, val_every=0, val_generate=2,
                                            val_max_rationale_tokens=16))
    assert trained["steps"] == 2 and Path(trained["student_dir"], "adapter_config.json").is_file()
    assert trained["val_loss"] > 0
    assert trained["val_accuracy"] is not None and 0.0 <= trained["val_accuracy"] <= 1.0


def test_sweep_larger_than_the_cluster_fails_before_any_trial(ray_cluster, shared_data, tmp_path):
    out = tmp_path / "tune"
    cfg = load_stage_config("tune", _sweep_config(shared_data, out), ["max_concurrent_trials=2", "mlflow=false"])
    with pytest.raises(ConfigError, match="2 trials x 1.01 CPUs .* exceed the cluster's 2 CPUs"):
        run_tune(cfg)
    assert not out.exists()
