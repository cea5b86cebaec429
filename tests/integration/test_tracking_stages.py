"""MLflow tracking of real train and evaluate runs, nested under one parent as the pipeline nests
them, into a SQLite store in tmp_path: params, every step's metrics logged once (rank 0 of 2
workers), the accuracies, the report and its plots."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from ray_cotd.config import EvaluateConfig, MappingSpec, ModelSpec, TrainConfig  # noqa: E402
from ray_cotd.config import TestSetSpec as SetSpec  # noqa: E402  not collected as a test class
from ray_cotd.evaluate import run_evaluate  # noqa: E402
from ray_cotd.student.train import run_train  # noqa: E402
from ray_cotd.tracking import EXPERIMENT, start_run, tracking_uri  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.real_model]


def test_train_and_evaluate_log_child_runs(ray_cluster, shared_data, tmp_path):
    uri = tracking_uri(True, None, tmp_path)
    parent = start_run(uri, "pipeline", output_dir=tmp_path)
    tracked = {"mlflow": True, "mlflow_uri": uri, "mlflow_parent_run_id": parent.ref.run_id}
    train = TrainConfig(
        corpus=str(shared_data / "svamp" / "train_chatgpt_level1.json"), objective="cascod", peft="lora", lora_r=4,
        num_workers=2, batch_size=2, max_seq_len=128, lr=2e-3, lr_schedule="constant", max_steps=3,
        checkpoint_every=3, val_fraction=0.0, output_dir=str(tmp_path / "train"), name=f"t-{uuid.uuid4().hex[:8]}",
        **tracked)
    trained = run_train(train)
    evaluate = EvaluateConfig(
        students=[ModelSpec(adapter=trained["student_dir"])], student_names=["student"], baselines=["untrained"],
        test_sets=[SetSpec(path=str(shared_data / "svamp" / "train_answer_only.json"), name="svamp",
                           mapping=MappingSpec(preset="answer_only"), answer_type="numeric", holdout="test", limit=2)],
        batch_size=4, max_rationale_tokens=8, max_answer_tokens=4, faithfulness=False,
        output_dir=str(tmp_path / "evaluate"), **tracked)
    report = run_evaluate(evaluate)
    parent.end()

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    children = {r.info.run_name: r for r in client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.ref.run_id}'")}
    assert set(children) == {"train", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in children.values())

    train_run = children["train"]
    assert train_run.data.params["objective"] == "cascod" and train_run.data.params["num_workers"] == "2"
    history = client.get_metric_history(train_run.info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]  # once per step: rank 0 logs, rank 1 does not
    assert train_run.data.metrics["final_loss"] == pytest.approx(trained["final_loss"])
    assert {"summary.json", "metrics.jsonl", "resolved_config.yaml"} <= {
        a.path for a in client.list_artifacts(train_run.info.run_id)}

    eval_run = children["evaluate"]
    student = next(r for r in report["results"] if r["system"] == "student")
    assert eval_run.data.metrics["accuracy/student/svamp"] == student["accuracy"]["rate"]
    assert "accuracy/untrained/all_IND" in eval_run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(eval_run.info.run_id)}
    assert {"report.md", "report.json", "accuracy.png", "predictions"} <= artifacts
