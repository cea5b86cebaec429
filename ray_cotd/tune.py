"""`ray-cotd tune`: search CasCoD α, PRADA λ and the granularity level for one student.

The key-factors paper's lesson as a tool: the best granularity depends on the student, so search it.
Each level is a pointer to an already annotated corpus (`level_corpora`): a trial never re-runs the
teacher. One trial = one real Ray Train run (the `ray-cotd train` code path) whose validation
reports carry `val_accuracy`: two-stage generation (ray_cotd.lm.generate) scored by
ray_cotd.scoring.score, the generation and scoring evaluation uses, on validation questions carved
from the training side of the fixed hold-out split, so no test question is ever trained on or
selected on, and the accuracy a sweep selects on is the one the evaluation report shows.

Search: Optuna TPE through Ray Tune's OptunaSearch, ASHA early stopping on the same metric, with
the optimizer step as ASHA's time axis. Results: trials.csv / trials.md (params, metric, steps
run, stopped early or not), plots (metric vs level, metric vs α, optimization history) and
best_train.yaml, which `ray-cotd train best_train.yaml` runs as is. A sweep whose directory already
exists resumes with `Tuner.restore` without repeating finished trials. With `mlflow: true`, each
trial is one MLflow run (its config as params, every report as metrics), by default in
`sqlite:///<output_dir>/mlflow.db`: a local file, since MLflow 3 refuses its old `./mlruns` file
store unless MLFLOW_ALLOW_FILE_STORE=true. `mlflow_uri` points anywhere else.

Ray calls are marked `# [ray]`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ray_cotd.config import ConfigError, TrainConfig, TuneConfig
from ray_cotd.configbase import from_dict, save_resolved, to_dict
from ray_cotd.names import LEVELS, OBJECTIVES, objectives_using
from ray_cotd.ray_session import connect, release_leaked_placement_groups
from ray_cotd.tracking import flatten, require_mlflow, tracking_uri

# Metrics every trial reports (the train loop's keys); `metric` must be one of them.
TRIAL_METRICS = ("val_accuracy", "val_loss", "loss", "task_loss")
SEARCHED = ("alpha", "lambda_", "level", "lr")
TIME_ATTR = "step"  # ASHA's clock: optimizer steps reported by the train loop
# The trial actor only waits on its Train run; a sliver of CPU keeps it schedulable without taking a
# core from the Train workers (Tune rejects 0 CPUs). It still counts when trials are packed.
TRIAL_CPU = 0.01


# ---------------------------------------------------------------------------------------------
# Checks and the search space (no Ray)
# ---------------------------------------------------------------------------------------------


def mlflow_tracking_uri(cfg: TuneConfig) -> str | None:
    """Where trials are logged: None (MLflow off), `mlflow_uri`, or the SQLite file in output_dir
    (ray_cotd.tracking.tracking_uri, the default of train, evaluate and the pipeline too)."""
    return tracking_uri(cfg.mlflow, cfg.mlflow_uri, cfg.output_dir)


def check_tune_config(cfg: TuneConfig, *, cluster_cpus: float | None = None,
                      cluster_gpus: float | None = None) -> None:
    """Everything that can be wrong before a trial starts, as one clear ConfigError each.

    Resources are checked (check_resources) when the caller knows the cluster's CPUs (and GPUs).
    """
    if not any((cfg.search_alpha, cfg.search_lambda, cfg.search_levels, cfg.search_lr)):
        raise ConfigError(
            "empty search space: set at least one of search_alpha, search_lambda, search_levels, search_lr"
        )
    for key in ("search_alpha", "search_lambda", "search_lr"):
        bounds = getattr(cfg, key)
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ConfigError(f"{key}: expected [low, high] with low < high, got {bounds}")
    if cfg.search_alpha and not (0.0 <= cfg.search_alpha[0] and cfg.search_alpha[1] <= 1.0):
        raise ConfigError(f"search_alpha: CasCoD α lives in [0, 1], got {cfg.search_alpha}")
    for key in ("search_lambda", "search_lr"):
        bounds = getattr(cfg, key)
        if bounds and bounds[0] <= 0:
            raise ConfigError(f"{key}: searched on a log scale, so low must be > 0, got {bounds}")
    if cfg.search_levels is not None:
        if not cfg.search_levels:
            raise ConfigError("search_levels: an empty list; give levels or null")
        unknown = [level for level in cfg.search_levels if level not in LEVELS]
        if unknown:
            raise ConfigError(f"search_levels: {unknown} are not granularity levels; choose from {list(LEVELS)}")
        for level in cfg.search_levels:
            if str(level) not in cfg.level_corpora:
                raise ConfigError(
                    f"search_levels: level {level} has no corpus in level_corpora "
                    f"(given for levels: {', '.join(sorted(cfg.level_corpora)) or 'none'})"
                )
    for level, path in cfg.level_corpora.items():
        if not Path(path).exists():
            raise ConfigError(f"level_corpora.{level}: corpus not found: {path}")
    if cfg.search_levels is None and not Path(cfg.train.corpus).exists():
        raise ConfigError(f"train.corpus: corpus not found: {cfg.train.corpus!r}")
    if cfg.metric not in TRIAL_METRICS:
        raise ConfigError(f"metric: no trial reports {cfg.metric!r}; trials report {', '.join(TRIAL_METRICS)}")
    if cfg.metric == "val_accuracy" and cfg.train.val_generate < 1:
        raise ConfigError("train.val_generate: metric val_accuracy needs validation questions scored (>= 1)")
    symbols = OBJECTIVES[cfg.train.objective].symbols  # the paper symbols the objective's loss reads
    if cfg.search_lambda and "lambda_" not in symbols:
        raise ConfigError(f"search_lambda: λ only acts in the prada objectives ({', '.join(objectives_using('lambda_'))}), "
                          f"not {cfg.train.objective!r}")
    if cfg.search_alpha and "alpha" not in symbols:
        raise ConfigError(f"search_alpha: α only acts in the cascod objectives ({', '.join(objectives_using('alpha'))}), "
                          f"not {cfg.train.objective!r}")
    if cfg.train.val_every < 1:
        raise ConfigError("train.val_every: ASHA needs validation reports during a trial (>= 1 step)")
    if cfg.mlflow_uri and not cfg.mlflow:
        raise ConfigError(f"mlflow_uri: set to {cfg.mlflow_uri!r} but mlflow is false; set mlflow=true to log to it")
    if cfg.train.mlflow:
        raise ConfigError("train.mlflow: a sweep logs its trials with tune's own `mlflow: true` (one run per "
                          "trial); set train.mlflow=false")
    if cfg.mlflow:
        require_mlflow()  # here, so that a missing package fails before any trial
    check_resources(cfg, cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus)


def check_resources(cfg: TuneConfig, *, cluster_cpus: float | None, cluster_gpus: float | None) -> None:
    """The concurrent trials fit the cluster's CPUs (and GPUs); None = not known, not checked."""
    if cluster_cpus is not None:
        per_trial = cfg.train.num_workers * cfg.train.cpus_per_worker + TRIAL_CPU
        if cfg.max_concurrent_trials * per_trial > cluster_cpus:
            raise ConfigError(
                f"max_concurrent_trials: {cfg.max_concurrent_trials} trials x {per_trial:g} CPUs "
                f"(train.num_workers x train.cpus_per_worker + {TRIAL_CPU} for the trial) exceed the "
                f"cluster's {cluster_cpus:g} CPUs"
            )
    if cluster_gpus is not None and cfg.train.use_gpu:
        # Ray Train's use_gpu reserves one GPU per worker.
        if cfg.max_concurrent_trials * cfg.train.num_workers > cluster_gpus:
            raise ConfigError(
                f"max_concurrent_trials: {cfg.max_concurrent_trials} trials x {cfg.train.num_workers} GPUs "
                f"(one per train worker with train.use_gpu) exceed the cluster's {cluster_gpus:g} GPUs"
            )


def search_space(cfg: TuneConfig) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    if cfg.search_alpha:
        space["alpha"] = tune.uniform(*cfg.search_alpha)
    if cfg.search_lambda:
        space["lambda_"] = tune.loguniform(*cfg.search_lambda)
    if cfg.search_levels:
        space["level"] = tune.choice(list(cfg.search_levels))
    if cfg.search_lr:
        space["lr"] = tune.loguniform(*cfg.search_lr)
    return space


def trial_train_config(cfg: TuneConfig, params: dict[str, Any], trial_dir: str | Path) -> TrainConfig:
    """The base train config with the trial's values in place (a level selects its corpus)."""
    changes: dict[str, Any] = {k: params[k] for k in ("alpha", "lambda_", "lr") if k in params}
    if "level" in params:
        changes["corpus"] = cfg.level_corpora[str(params["level"])]
    trial_dir = Path(trial_dir)
    changes.update(output_dir=str(trial_dir / "train"), storage_path=str(trial_dir / "ray"), name="train")
    return dataclasses.replace(cfg.train, **changes)


# ---------------------------------------------------------------------------------------------
# The trial (runs inside a Tune trial actor) and the driver
# ---------------------------------------------------------------------------------------------


def _trial(config: dict[str, Any]) -> None:
    """One trial: a Ray Train run whose rank-0 reports become this trial's Tune results."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ray_cotd.student.train import fit_student

    tune_cfg = from_dict(TuneConfig, config["tune"])
    params = {k: config[k] for k in SEARCHED if k in config}
    trial_dir = Path(tune_cfg.output_dir).resolve() / "trials" / tune.get_context().get_trial_id()  # [ray]
    train_cfg = trial_train_config(tune_cfg, params, trial_dir)

    class MetricReports(TuneReportCallback):
        """Forward only the reports that carry the sweep's metric: with train.val_every > 1 the
        steps between validations report no val_* metric, which Tune and OptunaSearch reject."""

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and tune_cfg.metric in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    # A stable run name per trial: a restored trial resumes its Train run from its last checkpoint.
    fit_student(train_cfg, callbacks=[MetricReports()])  # [ray]


def _experiment_path(cfg: TuneConfig) -> Path:
    return Path(cfg.output_dir).resolve() / "ray" / cfg.name


def _mlflow_callback(cfg: TuneConfig) -> Any:
    """A Tune logger callback writing one MLflow run per trial: the trial's config as params (the
    searched keys at the top level, the sweep's config under tune/), every report's numbers as
    metrics at its optimizer step. The experiment (named after the sweep) is opened here, so a bad
    store fails before any trial starts.

    Not Ray's MLflowLoggerCallback: it sends one request per key (~100 SQLite commits per report,
    1-4 s of Tune's event loop each on a busy 2-core machine; here one batch), and a trial resumed
    by `Tuner.restore` gets a second run there; here it continues its first (found by trial_id tag).
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH
    from ray.tune.logger import LoggerCallback

    uri = mlflow_tracking_uri(cfg)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(cfg.name)
        # Artifacts (none are logged today) stay beside the default store rather than in the cwd.
        artifacts = (Path(cfg.output_dir).resolve() / "mlartifacts").as_uri() if cfg.mlflow_uri is None else None
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.name, artifacts)
    except Exception as err:  # MLflow raises several types for an unusable store; all mean the same here
        raise ConfigError(f"mlflow_uri: cannot open the MLflow tracking store {uri!r}: {err}") from err

    class MLflowTrials(LoggerCallback):
        def __init__(self) -> None:
            self.client: Any = None  # opened in setup(), after Tune has pickled this callback
            self.runs: dict[str, str] = {}  # trial_id -> MLflow run id

        def setup(self, *args: Any, **kwargs: Any) -> None:
            self.client = MlflowClient(tracking_uri=uri)

        def log_trial_start(self, trial: Any) -> None:
            if trial.trial_id in self.runs:
                return
            earlier = self.client.search_runs([experiment_id], f"tags.trial_id = '{trial.trial_id}'", max_results=1)
            if earlier:
                self.runs[trial.trial_id] = earlier[0].info.run_id
                return
            run = self.client.create_run(experiment_id, run_name=str(trial),
                                         tags={"trial_id": trial.trial_id, "trial_name": str(trial)})
            params = [Param(k, str(v)) for k, v in flatten(trial.config).items()]
            for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(run.info.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])
            self.runs[trial.trial_id] = run.info.run_id

        def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
            step, now = int(result.get(TIME_ATTR, iteration)), int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)]
            self.client.log_batch(self.runs[trial.trial_id], metrics=metrics)

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            self.client.set_terminated(self.runs[trial.trial_id], "FAILED" if failed else "FINISHED")

    return MLflowTrials()


def run_tune(cfg: TuneConfig) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    check_tune_config(cfg)  # before a cluster starts
    connect()  # [ray]
    release_leaked_placement_groups()  # a sweep stopped at the wrong instant can leave one (ray_session)
    resources = ray.cluster_resources()  # [ray]
    check_resources(cfg, cluster_cpus=resources.get("CPU", 0.0), cluster_gpus=resources.get("GPU", 0.0))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)

    fixed = {"tune": to_dict(cfg)}
    trainable = tune.with_resources(_trial, {"CPU": TRIAL_CPU})  # [ray]
    experiment = _experiment_path(cfg)
    if tune.Tuner.can_restore(str(experiment)):  # [ray]
        print(f"[tune] resuming {experiment}", flush=True)
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
    else:
        callbacks = [_mlflow_callback(cfg)] if cfg.mlflow else []
        tuner = tune.Tuner(  # [ray]
            trainable,
            param_space={**fixed, **search_space(cfg)},
            tune_config=tune.TuneConfig(
                metric=cfg.metric,
                mode=cfg.mode,
                search_alg=OptunaSearch(seed=cfg.train.seed),
                scheduler=ASHAScheduler(
                    time_attr=TIME_ATTR, max_t=cfg.train.max_steps, grace_period=cfg.grace_period,
                    reduction_factor=cfg.reduction_factor,
                ),
                num_samples=cfg.num_samples,
                max_concurrent_trials=cfg.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=cfg.name, storage_path=str(experiment.parent), callbacks=callbacks),
        )
    grid = tuner.fit()  # [ray]
    return write_results(cfg, grid)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def trial_rows(cfg: TuneConfig, grid: Any) -> list[dict[str, Any]]:
    """One row per trial: params, best and last metric, steps run, stopped early or not."""
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        params = {k: result.config[k] for k in SEARCHED if k in result.config}
        scored = history[history[cfg.metric].notna()] if history is not None and cfg.metric in history else None
        steps = int(history[TIME_ATTR].max()) if history is not None and TIME_ATTR in history else 0
        rows.append({
            "trial_id": (result.metrics or {}).get("trial_id"),
            **params,
            f"last_{cfg.metric}": None if scored is None or scored.empty else float(scored[cfg.metric].iloc[-1]),
            "steps": steps,
            "stopped_early": steps < cfg.train.max_steps and result.error is None,
            "error": None if result.error is None else str(result.error).splitlines()[0],
        })
    return rows


def _plot(cfg: TuneConfig, rows: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"last_{cfg.metric}"
    scored = [r for r in rows if r[key] is not None]
    paths = []
    for param, label in (("level", "granularity level"), ("alpha", "CasCoD α"), ("lambda_", "PRADA λ")):
        points = [(r[param], r[key]) for r in scored if r.get(param) is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter(*zip(*points))
        ax.set_xlabel(label)
        ax.set_ylabel(cfg.metric)
        if param == "lambda_":
            ax.set_xscale("log")
        ax.set_title(f"{cfg.metric} vs {label}")
        fig.tight_layout()
        path = out / f"{cfg.metric}_vs_{param.rstrip('_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(str(path))
    if scored:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        values = [r[key] for r in scored]
        best = [max(values[: i + 1]) if cfg.mode == "max" else min(values[: i + 1]) for i in range(len(values))]
        ax.plot(range(1, len(values) + 1), values, "o", label="trial")
        ax.plot(range(1, len(values) + 1), best, "-", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(cfg.metric)
        ax.set_title("optimization history")
        ax.legend()
        fig.tight_layout()
        path = out / "optimization_history.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(str(path))
    return paths


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no trials\n"
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(cfg: TuneConfig, grid: Any) -> dict[str, Any]:
    import pandas as pd

    out = Path(cfg.output_dir)
    rows = trial_rows(cfg, grid)
    table = pd.DataFrame(rows)
    table.to_csv(out / "trials.csv", index=False)
    (out / "trials.md").write_text(_markdown(rows))
    # scope "last": each trial's final report, the value trials.md shows and what best_train.yaml,
    # which trains to max_steps, reproduces ("all" would pick one lucky intermediate report)
    best = grid.get_best_result(metric=cfg.metric, mode=cfg.mode, scope="last")  # [ray]
    best_params = {k: best.config[k] for k in SEARCHED if k in best.config}
    best_train = trial_train_config(cfg, best_params, out / "best")
    best_train = dataclasses.replace(best_train, output_dir=str(out / "best" / "train"), storage_path=None,
                                     name="best")
    best_yaml = save_resolved(best_train, out, "best_train.yaml")
    summary = {
        "trials": len(rows),
        "stopped_early": sum(1 for r in rows if r["stopped_early"]),
        "errors": sum(1 for r in rows if r["error"]),
        "best_params": best_params,
        f"best_{cfg.metric}": best.metrics.get(cfg.metric) if best.metrics else None,
        "best_train_yaml": str(best_yaml),
        "total_steps": int(sum(r["steps"] for r in rows)),
        "plots": _plot(cfg, rows, out),
        "table": str(out / "trials.csv"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"[tune] {summary['trials']} trials, {summary['stopped_early']} stopped early; best {best_params}",
          flush=True)
    return summary


__all__ = ["TRIAL_METRICS", "check_tune_config", "mlflow_tracking_uri", "run_tune", "search_space",
           "trial_train_config", "write_results"]
