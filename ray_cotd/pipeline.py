"""The whole pipeline under one run directory: annotate -> train -> evaluate (-> tune) (-> serve).

    run_dir/
      resolved_config.yaml        the PipelineConfig that ran
      annotate/  shards, rejected.jsonl, stats.json, manifest.json
      train/     student/, metrics.jsonl, manifest.json (inputs -> annotate/manifest.json)
      evaluate/  report.json, report.md, plots, predictions, manifest.json (inputs -> train/)
      tune/      (optional) trials, best_train.yaml
      serve/     (optional) the question asked through the endpoint and its answer

Each stage's config is the pipeline's section with its paths pointed into the run directory, so a
stage can also be re-run alone with `ray-cotd <stage> run_dir/<stage>/resolved_config.yaml`.
Inputs are checked before any stage starts, so a bad path fails in seconds, not after annotation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from ray_cotd.config import ConfigError, ModelSpec, PipelineConfig
from ray_cotd.configbase import save_resolved
from ray_cotd.manifest import write_manifest


def _banner(step: int, total: int, text: str) -> None:
    print(f"\n=== [{step}/{total}] {text} ===", flush=True)


def _preflight(cfg: PipelineConfig) -> None:
    """Fail fast on missing inputs (a job's log then names the path within seconds)."""
    from ray_cotd.data.readers import read_rows

    if not cfg.annotate.questions:
        raise ConfigError("annotate.questions: the pipeline needs a question file")
    path = Path(cfg.annotate.questions)
    if not path.exists():
        raise ConfigError(f"annotate.questions: file not found: {path}")
    for i, test_set in enumerate(cfg.evaluate.test_sets):
        if not Path(test_set.path).exists():
            raise ConfigError(f"evaluate.test_sets[{i}].path: file not found: {test_set.path}")
    read_rows(path)  # a file that is not readable data fails here, naming the file and line
    if cfg.train.target_questions and not Path(cfg.train.target_questions).exists():
        raise ConfigError(f"train.target_questions: file not found: {cfg.train.target_questions}")


def _ask_endpoint(cfg: PipelineConfig, student: ModelSpec, out_dir: Path) -> dict:
    """Start the serve app on the student, ask the first demo question over HTTP, shut it down."""
    import requests
    from ray import serve

    from ray_cotd.data.readers import read_questions
    from ray_cotd.serve import run_serve

    assert cfg.serve is not None
    serve_cfg = dataclasses.replace(cfg.serve, student=student)
    question = read_questions(cfg.annotate.questions, cfg.annotate.mapping.preset).records[0]["question"]
    url = run_serve(serve_cfg, blocking=False)
    try:
        reply = requests.post(f"{url}/v1/reason", json={"question": question}, timeout=serve_cfg.request_timeout_s)
        reply.raise_for_status()
        answer = reply.json()
    finally:
        serve.shutdown()
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"url": url, "question": question, "response": answer}
    (out_dir / "answer.json").write_text(json.dumps(record, indent=2))
    return record


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    from ray_cotd.evaluate import run_evaluate
    from ray_cotd.lm.model import spec_for_student_dir
    from ray_cotd.student.train import run_train
    from ray_cotd.teacher.annotate import run_annotate

    _preflight(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir)
    total = 3 + (cfg.tune is not None) + (cfg.serve is not None)
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"run_dir": str(run_dir)}

    _banner(1, total, f"annotate {cfg.annotate.questions} with the {cfg.annotate.engine} teacher")
    started = dt.datetime.now(dt.timezone.utc)
    annotate_cfg = dataclasses.replace(cfg.annotate, output_dir=str(run_dir / "annotate"))
    stats = run_annotate(annotate_cfg)
    write_manifest(
        annotate_cfg.output_dir, stage="annotate", config=annotate_cfg, inputs=[annotate_cfg.questions],
        outputs=[annotate_cfg.output_dir], summary=stats, started=started,
    )
    summary["annotate"] = stats

    _banner(2, total, f"train a {cfg.train.objective} student ({cfg.train.peft}, {cfg.train.max_steps} steps)")
    started = dt.datetime.now(dt.timezone.utc)
    corpus = str(Path(annotate_cfg.output_dir) / "corpus")  # annotate's kept rows (Parquet parts)
    train_cfg = dataclasses.replace(cfg.train, corpus=corpus, output_dir=str(run_dir / "train"))
    trained = run_train(train_cfg)
    write_manifest(
        train_cfg.output_dir, stage="train", config=train_cfg, inputs=[train_cfg.corpus],
        outputs=[trained["student_dir"]], summary=trained, started=started,
    )
    summary["train"] = trained
    student = spec_for_student_dir(trained["student_dir"])

    _banner(3, total, "evaluate the student against its untrained self")
    started = dt.datetime.now(dt.timezone.utc)
    eval_cfg = dataclasses.replace(cfg.evaluate, students=[student], output_dir=str(run_dir / "evaluate"))
    report = run_evaluate(eval_cfg)
    write_manifest(
        eval_cfg.output_dir, stage="evaluate", config=eval_cfg,
        inputs=[trained["student_dir"], *[t.path for t in eval_cfg.test_sets]],
        outputs=[eval_cfg.output_dir], summary=report, started=started,
    )
    summary["evaluate"] = report
    step = 3

    if cfg.tune is not None:
        from ray_cotd.tune import run_tune

        step += 1
        _banner(step, total, "tune alpha / lambda / granularity level")
        started = dt.datetime.now(dt.timezone.utc)
        tune_cfg = dataclasses.replace(cfg.tune, output_dir=str(run_dir / "tune"))
        tuned = run_tune(tune_cfg)
        write_manifest(
            tune_cfg.output_dir, stage="tune", config=tune_cfg, inputs=list(tune_cfg.level_corpora.values()),
            outputs=[tune_cfg.output_dir], summary=tuned, started=started,
        )
        summary["tune"] = tuned

    if cfg.serve is not None:
        step += 1
        _banner(step, total, "answer a question through the two-stage endpoint")
        started = dt.datetime.now(dt.timezone.utc)
        answered = _ask_endpoint(cfg, student, run_dir / "serve")
        write_manifest(
            run_dir / "serve", stage="serve", config=dataclasses.replace(cfg.serve, student=student),
            inputs=[trained["student_dir"]], outputs=[str(run_dir / "serve" / "answer.json")],
            summary=answered, started=started,
        )
        summary["serve"] = answered

    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\npipeline finished in {summary['wall_s']} s; outputs under {run_dir}", flush=True)
    return summary


__all__ = ["run_pipeline"]
