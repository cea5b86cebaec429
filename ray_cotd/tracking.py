"""MLflow tracking for train, evaluate and the pipeline: one run per stage, nested under the pipeline's.

    with stage_run(cfg.mlflow, cfg.mlflow_uri, cfg.output_dir, "train", params=to_dict(cfg),
                   parent_run_id=cfg.mlflow_parent_run_id) as run:    # NoRun when mlflow is off
        run.log_metrics({...}, step=3); run.log_artifact(path)
    attach(run.ref)     # a Ray Train worker's handle on the run its driver opened

Where: `mlflow_uri`, else `sqlite:///<output_dir>/mlflow.db` (tracking_uri), the default the tune
integration uses too: a local file, since MLflow 3 refuses its old `./mlruns` file store unless
MLFLOW_ALLOW_FILE_STORE=true. Artifacts of that default store go to `<output_dir>/mlartifacts`.
Runs of train, evaluate and the pipeline go to the experiment "ray-cotd". A child run carries
MLflow's own `mlflow.parentRunId` tag, so the MLflow UI shows the pipeline's stages under it.

Rank 0 only: in training the driver opens the run and logs params and outputs; rank 0's loop logs
every step's metrics to it (student/train.py); no other rank touches MLflow. A run ends FINISHED,
or FAILED when its `with` block raises.

MLflow is imported only when tracking is on (the `mlflow` extra; mlflow-skinny is enough).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_cotd.configbase import ConfigError

EXPERIMENT = "ray-cotd"
MLFLOW_DB = "mlflow.db"  # the default store, inside the stage's output dir (or the pipeline's run dir)
ARTIFACTS = "mlartifacts"  # the default store's artifact root, beside it


def tracking_uri(enabled: bool, uri: str | None, output_dir: str | Path) -> str | None:
    """None (tracking off), `uri`, or the SQLite file in `output_dir`."""
    if not enabled:
        return None
    return uri or f"sqlite:///{Path(output_dir).resolve() / MLFLOW_DB}"


def require_mlflow() -> None:
    """ConfigError naming the extra when mlflow cannot be imported (checked before any work starts)."""
    try:
        importlib.import_module("mlflow")
    except ImportError as err:
        raise ConfigError(f"mlflow: true needs the mlflow package, which cannot be imported ({err}); "
                          "install the extra: pip install 'ray-cotd[mlflow]'") from err


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train/lr": 1e-3}: nested config keys as MLflow param names."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite int / float entries of `values` (not bools): what MLflow takes as metrics."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


@dataclass(frozen=True)
class RunRef:
    """What a Ray Train worker needs to log into a run its driver opened (picklable)."""

    uri: str
    run_id: str


class Run:
    """One open MLflow run, written through MlflowClient in batches (one request per call)."""

    def __init__(self, ref: RunRef) -> None:
        from mlflow.tracking import MlflowClient

        self.ref = ref
        self.client = MlflowClient(tracking_uri=ref.uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten(params).items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.ref.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The numeric entries of `metrics` (others are skipped) at `step` (0 when None)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step or 0) for k, v in numbers(metrics).items()]
        if items:
            self.client.log_batch(self.ref.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or a directory's files, when it exists (an optional output that was not written is skipped)."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.ref.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.ref.run_id, str(path), artifact_path)

    def end(self, *, failed: bool = False) -> None:
        self.client.set_terminated(self.ref.run_id, "FAILED" if failed else "FINISHED")


class NoRun:
    """Tracking off: every call does nothing, so stages log without asking whether MLflow is on."""

    ref: RunRef | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def end(self, *, failed: bool = False) -> None:
        pass


def start_run(uri: str, name: str, *, output_dir: str | Path, parent_run_id: str | None = None,
              params: Mapping[str, Any] | None = None) -> Run:
    """A new run named `name` in the "ray-cotd" experiment of store `uri` (created if new; its
    artifacts beside a default SQLite store), nested under `parent_run_id` when given."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        default_store = uri == tracking_uri(True, None, output_dir)
        artifacts = (Path(output_dir).resolve() / ARTIFACTS).as_uri() if default_store else None
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT, artifacts)
    except Exception as err:  # MLflow raises several types for an unusable store; all mean the same here
        raise ConfigError(f"mlflow_uri: cannot open the MLflow tracking store {uri!r}: {err}") from err
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    created = client.create_run(experiment_id, run_name=name, tags=tags)
    run = Run(RunRef(uri, created.info.run_id))
    if params:
        run.log_params(params)
    return run


@contextlib.contextmanager
def stage_run(enabled: bool, uri: str | None, output_dir: str | Path, name: str, *,
              parent_run_id: str | None = None, params: Mapping[str, Any] | None = None) -> Iterator[Run | NoRun]:
    """A run for the `with` block (NoRun when `enabled` is false): FINISHED at its end, FAILED if it raises."""
    if not enabled:
        yield NoRun()
        return
    require_mlflow()
    run = start_run(tracking_uri(True, uri, output_dir), name, output_dir=output_dir,
                    parent_run_id=parent_run_id, params=params)
    try:
        yield run
    except BaseException:
        run.end(failed=True)
        raise
    run.end()


def attach(ref: RunRef | None) -> Run | NoRun:
    """The run `ref` names (a Train worker's handle on its driver's run), or NoRun for None."""
    return NoRun() if ref is None else Run(ref)


__all__ = ["ARTIFACTS", "EXPERIMENT", "MLFLOW_DB", "NoRun", "Run", "RunRef", "attach", "flatten", "numbers",
           "require_mlflow", "start_run", "stage_run", "tracking_uri"]
