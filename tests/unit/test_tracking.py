"""MLflow tracking against a real SQLite store in tmp_path: nesting, params, per-step metrics,
artifacts, FAILED on an exception, nothing at all when off."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from ray_cotd.configbase import ConfigError  # noqa: E402
from ray_cotd.tracking import (  # noqa: E402
    EXPERIMENT,
    NoRun,
    attach,
    flatten,
    numbers,
    stage_run,
    start_run,
    tracking_uri,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, tracking_uri(True, None, out)


def test_default_uri_is_a_sqlite_file_in_the_output_dir(tmp_path):
    assert tracking_uri(False, "http://x", tmp_path) is None
    assert tracking_uri(True, None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking_uri(True, "http://mlflow:5000", tmp_path) == "http://mlflow:5000"


def test_flatten_and_numbers():
    assert flatten({"train": {"lr": 1e-3, "lora": {"r": 8}}, "empty": {}, "x": 1}) == {
        "train/lr": 1e-3, "train/lora/r": 8, "empty": {}, "x": 1}
    assert numbers({"a": 1, "b": 0.5, "c": True, "d": "x", "e": None, "f": float("nan")}) == {"a": 1.0, "b": 0.5}


def test_a_pipeline_run_with_a_child_per_stage(store, tmp_path):
    out, uri = store
    parent = start_run(uri, "pipeline", output_dir=out, params={"run_dir": str(out)})
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    with stage_run(True, uri, out, "train", parent_run_id=parent.ref.run_id,
                   params={"lr": 1e-3, "lora": {"r": 8}}) as run:
        worker = attach(run.ref)  # what rank 0 does with the ref its driver passed
        for step, loss in enumerate([0.9, 0.5, 0.25], start=1):
            worker.log_metrics({"loss": loss, "step": step, "note": "not a number"}, step=step)
        run.log_artifact(report)
        run.log_artifact(tmp_path / "not-written.png")  # an optional output that is absent: skipped
    parent.end()

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == (out.resolve() / "mlartifacts").as_uri()
    (child,) = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.ref.run_id}'")
    assert child.info.run_name == "train" and child.info.status == "FINISHED"
    assert child.data.params == {"lr": "0.001", "lora/r": "8"}
    history = client.get_metric_history(child.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.9), (2, 0.5), (3, 0.25)]
    assert "note" not in child.data.metrics
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["report.md"]
    assert client.get_run(parent.ref.run_id).info.status == "FINISHED"


def test_a_stage_that_raises_is_failed(store):
    out, uri = store
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run(True, uri, out, "evaluate") as run:
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=uri).get_run(run.ref.run_id).info.status == "FAILED"


def test_off_means_no_store_at_all(tmp_path):
    with stage_run(False, None, tmp_path, "train") as run:
        assert isinstance(run, NoRun) and run.ref is None
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_artifact(tmp_path)
    assert isinstance(attach(None), NoRun)
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unusable_store_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the MLflow tracking store"):
        start_run("nosuchscheme://x", "train", output_dir=tmp_path)
