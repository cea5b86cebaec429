"""The whole pipeline under one run directory: annotate -> train -> evaluate (-> tune) (-> serve).

    run_dir/
      report.md                   the headline (trained student vs its untrained self), its plot, the table
      headline.png                both accuracies with Wilson CIs, n and the exact McNemar p
      summary.json                "headline" first, then every stage's summary
      framework.log               Ray / Ray Data / Train / Serve, transformers, vLLM logs, warnings
      resolved_config.yaml        the PipelineConfig that ran
      annotate/  shards, rejected.jsonl, stats.json, manifest.json
      train/     student/, metrics.jsonl, manifest.json (inputs -> annotate/manifest.json)
      evaluate/  report.json, report.md, plots, predictions, manifest.json (inputs -> train/)
      tune/      (optional) trials, best_train.yaml
      serve/     (optional) the question asked through the endpoint and its answer
      mlflow.db  (with mlflow: true) one parent run, a child run per stage

Each stage's config is the pipeline's section with its paths pointed into the run directory, so a
stage can also be re-run alone with `ray-cotd <stage> run_dir/<stage>/resolved_config.yaml`.
Inputs are checked before any stage starts, so a bad path fails in seconds, not after annotation.
Training checks its questions against evaluate's test sets (train.contamination_sets, filled from
evaluate.test_sets unless given).

The terminal gets each stage's banner, one progress bar and its result in a few lines, then the
headline and a short table; the frameworks' logs go to framework.log (ray_cotd/console.py), or
to the terminal as well with `verbose: true` (`ray-cotd pipeline --verbose`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray_cotd.config import AnnotateConfig, ConfigError, ModelSpec, PipelineConfig
from ray_cotd.configbase import save_resolved, to_dict
from ray_cotd.console import Console
from ray_cotd.headline import format_p, format_rate, headline, headline_text, plot_headline
from ray_cotd.manifest import write_manifest
from ray_cotd.tracking import NoRun, Run, require_mlflow, stage_run, tracking_uri

LOG_FILE = "framework.log"
HEADLINE_PLOT = "headline.png"


def _preflight(cfg: PipelineConfig) -> None:
    """Fail fast on missing inputs (a job's log then names the path within seconds)."""
    from ray_cotd.data.readers import read_rows

    if not cfg.annotate.questions:
        raise ConfigError("annotate.questions: the pipeline needs a question file")
    path = Path(cfg.annotate.questions)
    if not path.exists():
        raise ConfigError(f"annotate.questions: file not found: {path}")
    for key, sets in (("evaluate.test_sets", cfg.evaluate.test_sets), ("train.contamination_sets",
                                                                         cfg.train.contamination_sets)):
        for i, test_set in enumerate(sets):
            if not Path(test_set.path).exists():
                raise ConfigError(f"{key}[{i}].path: file not found: {test_set.path}")
    read_rows(path)  # a file that is not readable data fails here, naming the file and line
    if cfg.train.target_questions and not Path(cfg.train.target_questions).exists():
        raise ConfigError(f"train.target_questions: file not found: {cfg.train.target_questions}")
    if cfg.mlflow:
        require_mlflow()


def annotate_config(cfg: PipelineConfig, run_dir: Path) -> AnnotateConfig:
    """The annotate stage's config inside the pipeline: its outputs under run_dir, train's hold-out split
    (`holdout: train` then skips the questions the student is tested on) and, when the teacher's
    log-probabilities are recorded for train's token-level KD, train's student as the model they are
    for, so a student with another vocabulary fails before any teacher time is spent."""
    logprobs_for = cfg.annotate.logprobs_for
    if logprobs_for is None and cfg.annotate.logprobs is not None and cfg.train.kd_weight > 0:
        logprobs_for = cfg.train.student
    return dataclasses.replace(cfg.annotate, output_dir=str(run_dir / "annotate"),
                               holdout_fraction=cfg.train.holdout_fraction, split_seed=cfg.train.split_seed,
                               logprobs_for=logprobs_for)


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


# -- what the terminal and report.md say: plain functions of the stages' summaries ---------------


def _cut(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def corpus_line(stats: dict[str, Any]) -> str:
    rejected = stats["rows_done"] - stats["kept"]
    reasons = ", ".join(f"{reason} {n}" for reason, n in stats["dropped_by_reason"].items())
    teacher = stats["accuracy_of_generated"]
    return (f"kept {stats['kept']} of {stats['rows_done']} teacher samples, rejected {rejected}"
            + (f" ({reasons})" if reasons else "")
            + (f"; the teacher was right on {100 * teacher:.0f}%" if teacher is not None else ""))


def train_line(trained: dict[str, Any]) -> str:
    loss = (f", loss {trained['first_loss']:.3f} -> {trained['final_loss']:.3f}"
            if trained["first_loss"] is not None else "")
    rows = trained["data"]["train_rows"]
    return f"{trained['steps']} steps on {rows} rows{loss}"


def contamination_line(trained: dict[str, Any]) -> str:
    check = trained["data"].get("contamination")
    if check is None:
        return "not checked (no contamination_sets, or decontaminate: off)"
    parts = [f"{s['name']}: {s['exact']} exact, {s['ngram']} by {check['ngram']}-gram" for s in check["sets"]]
    action = {"warn": "kept", "drop": "dropped"}[check["decontaminate"]] if check["flagged_rows"] else "nothing to do"
    return f"{'; '.join(parts)} of {check['train_rows']} training rows ({action})"


def evaluate_lines(report: dict[str, Any]) -> list[str]:
    """One line per system: its pooled accuracy per split, with CI and counts."""
    lines = []
    for system, splits in report["splits"].items():
        cells = [f"{split} {format_rate(rate)}" for split, rate in splits.items()]
        lines.append(f"{system}: " + "; ".join(cells))
    return lines


def headline_line(h: dict[str, Any]) -> str:
    if h["reason"] is not None:
        return f"no comparison: {h['reason']}"
    return (f"trained {format_rate(h['student_accuracy'])} vs untrained {format_rate(h['baseline_accuracy'])}; "
            f"exact McNemar {format_p(h['p_value'])}, n = {h['n']}")


def served_line(answered: dict[str, Any]) -> str:
    response = answered["response"]
    return f"{_cut(answered['question'], 60)!r} -> {response.get('answer')!r} ({answered['url']}/v1/reason)"


def summary_rows(summary: dict[str, Any], log_file: Path | None) -> list[tuple[str, str]]:
    """(label, value) rows of the table the pipeline ends with; only the stages that ran."""
    rows = [("corpus", corpus_line(summary["annotate"])),
            ("contamination", contamination_line(summary["train"])),
            ("train", train_line(summary["train"])),
            ("accuracy", headline_line(summary["headline"]))]
    if "tune" in summary:
        tuned = summary["tune"]
        rows.append(("tune", f"{tuned['trials']} trials, best {tuned['best_params']} -> {tuned['best_train_yaml']}"))
    if "serve" in summary:
        rows.append(("served", served_line(summary["serve"])))
    if summary.get("stage_s"):
        rows.append(("time", f"{summary['wall_s']:.0f} s: {stages_line(summary['stage_s'])}"))
    run_dir = summary["run_dir"]
    rows.append(("outputs", f"{run_dir}/: report.md, {HEADLINE_PLOT}, summary.json, annotate/ train/ evaluate/"
                            + (" serve/" if "serve" in summary else "")))
    rows.append(("logs", f"{log_file} (framework logs)" if log_file is not None else "on the terminal (verbose)"))
    return rows


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def report_markdown(summary: dict[str, Any], rows: list[tuple[str, str]]) -> str:
    """run_dir/report.md: the headline first, its plot, then the table."""
    lines = [f"# ray-cotd pipeline: {summary['run_dir']}", "", headline_text(summary["headline"]), "",
             f"![trained vs untrained]({HEADLINE_PLOT})", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in rows]
    lines += ["", "Every system and test set: evaluate/report.md. Stage summaries: summary.json.", ""]
    return "\n".join(lines)


# -- the job --------------------------------------------------------------------------------------


def _tracked(cfg: PipelineConfig, parent: Run | NoRun, run_dir: Path) -> dict[str, Any]:
    """The MLflow keys that make a stage's own run a child of the pipeline's (none when off)."""
    if parent.ref is None:
        return {}
    return {"mlflow": True, "mlflow_uri": tracking_uri(True, cfg.mlflow_uri, run_dir),
            "mlflow_parent_run_id": parent.ref.run_id}


def _child(cfg: PipelineConfig, parent: Run | NoRun, run_dir: Path, name: str, params: Any) -> Any:
    """A child run the pipeline logs itself (annotate, tune, serve)."""
    return stage_run(parent.ref is not None, cfg.mlflow_uri, run_dir, name,
                     parent_run_id=parent.ref.run_id if parent.ref else None, params=params)


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run every configured stage; write report.md, headline.png, summary.json; print the table."""
    _preflight(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir)
    log_file = None if cfg.verbose else run_dir / LOG_FILE
    t0 = time.perf_counter()
    with Console(log_file) as console, stage_run(cfg.mlflow, cfg.mlflow_uri, run_dir, "pipeline",
                                                 params=to_dict(cfg)) as tracked:
        if log_file is not None:
            print(f"ray-cotd pipeline -> {run_dir}/ (framework logs: {log_file}; --verbose shows them here)",
                  flush=True)
        summary = _run_stages(cfg, run_dir, console, tracked)
        summary["wall_s"] = round(time.perf_counter() - t0, 1)
        summary["log_file"] = str(log_file) if log_file is not None else None
        rows = summary_rows(summary, log_file)
        plot_headline(summary["headline"], run_dir / HEADLINE_PLOT)
        (run_dir / "report.md").write_text(report_markdown(summary, rows))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        h = summary["headline"]
        tracked.log_metrics({"n": h["n"], "student_correct": h["student_correct"],
                             "baseline_correct": h["baseline_correct"], "p_value": h["p_value"],
                             "wall_s": summary["wall_s"],
                             **{f"stage_s/{k}": v for k, v in summary["stage_s"].items()}})
        for name in ("report.md", HEADLINE_PLOT, "summary.json"):
            tracked.log_artifact(run_dir / name)
    print(f"\n=== done in {summary['wall_s']:.0f} s ({stages_line(summary['stage_s'])}): "
          f"{headline_text(summary['headline'])}\n", flush=True)
    print(format_table(rows), flush=True)
    return summary


@contextmanager
def _timed(summary: dict[str, Any], stage: str) -> Iterator[None]:
    """summary["stage_s"][stage]: the stage's wall seconds, its start-up (Ray, engines) included."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        summary["stage_s"][stage] = round(time.perf_counter() - t0, 1)


def stages_line(stage_s: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stage_s.items())


def _run_stages(cfg: PipelineConfig, run_dir: Path, console: Console, tracked: Run | NoRun) -> dict[str, Any]:
    from ray_cotd.evaluate import load_predictions, run_evaluate
    from ray_cotd.lm.model import spec_for_student_dir
    from ray_cotd.student.train import run_train
    from ray_cotd.teacher.annotate import run_annotate

    total = 3 + (cfg.tune is not None) + (cfg.serve is not None)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "headline": None, "stage_s": {}}

    with console.stage(1, total, f"annotate {cfg.annotate.questions} with the {cfg.annotate.engine} teacher"), \
            _timed(summary, "annotate"):
        started = dt.datetime.now(dt.timezone.utc)
        # one hold-out split for the whole run: annotate's `holdout: train` skips train's test side
        annotate_cfg = annotate_config(cfg, run_dir)
        with _child(cfg, tracked, run_dir, "annotate", to_dict(annotate_cfg)) as child:
            stats = run_annotate(annotate_cfg)
            child.log_metrics({k: v for k, v in stats.items() if k not in ("this_run", "tokens")})
            child.log_artifact(Path(annotate_cfg.output_dir) / "stats.json")
        write_manifest(
            annotate_cfg.output_dir, stage="annotate", config=annotate_cfg, inputs=[annotate_cfg.questions],
            outputs=[annotate_cfg.output_dir], summary=stats, started=started,
        )
        summary["annotate"] = stats
        print(f"corpus: {corpus_line(stats)}", flush=True)

    with console.stage(2, total, f"train a {cfg.train.objective} student ({cfg.train.peft}, "
                                 f"{cfg.train.max_steps} steps)"), _timed(summary, "train"):
        started = dt.datetime.now(dt.timezone.utc)
        corpus = str(Path(annotate_cfg.output_dir) / "corpus")  # annotate's kept rows (Parquet parts)
        train_cfg = dataclasses.replace(
            cfg.train, corpus=corpus, output_dir=str(run_dir / "train"),
            contamination_sets=cfg.train.contamination_sets or cfg.evaluate.test_sets,
            **_tracked(cfg, tracked, run_dir))
        trained = run_train(train_cfg)
        write_manifest(
            train_cfg.output_dir, stage="train", config=train_cfg, inputs=[train_cfg.corpus],
            outputs=[trained["student_dir"]], summary=trained, started=started,
        )
        summary["train"] = trained
        student = spec_for_student_dir(trained["student_dir"])

    with console.stage(3, total, "evaluate the student against its untrained self"), _timed(summary, "evaluate"):
        started = dt.datetime.now(dt.timezone.utc)
        eval_cfg = dataclasses.replace(cfg.evaluate, students=[student], output_dir=str(run_dir / "evaluate"),
                                       **_tracked(cfg, tracked, run_dir))
        report = run_evaluate(eval_cfg)
        write_manifest(
            eval_cfg.output_dir, stage="evaluate", config=eval_cfg,
            inputs=[trained["student_dir"], *[t.path for t in eval_cfg.test_sets]],
            outputs=[eval_cfg.output_dir], summary=report, started=started,
        )
        summary["evaluate"] = report
        summary["headline"] = headline(report, load_predictions(eval_cfg.output_dir))
        for line in evaluate_lines(report):
            print(line, flush=True)
        print(f"headline: {headline_line(summary['headline'])}", flush=True)
    step = 3

    if cfg.tune is not None:
        from ray_cotd.tune import run_tune

        step += 1
        with console.stage(step, total, "tune alpha / lambda / granularity level"), _timed(summary, "tune"):
            started = dt.datetime.now(dt.timezone.utc)
            tune_cfg = dataclasses.replace(cfg.tune, output_dir=str(run_dir / "tune"))
            with _child(cfg, tracked, run_dir, "tune", to_dict(tune_cfg)) as child:
                tuned = run_tune(tune_cfg)
                child.log_artifact(Path(tune_cfg.output_dir) / "trials.md")
            write_manifest(
                tune_cfg.output_dir, stage="tune", config=tune_cfg, inputs=list(tune_cfg.level_corpora.values()),
                outputs=[tune_cfg.output_dir], summary=tuned, started=started,
            )
            summary["tune"] = tuned

    if cfg.serve is not None:
        from ray import serve  # noqa: F401  its logger exists before the stage's sweep

        step += 1
        with console.stage(step, total, "answer a question through the two-stage endpoint"), _timed(summary, "serve"):
            started = dt.datetime.now(dt.timezone.utc)
            serve_cfg = dataclasses.replace(cfg.serve, student=student)
            with _child(cfg, tracked, run_dir, "serve", to_dict(serve_cfg)) as child:
                answered = _ask_endpoint(cfg, student, run_dir / "serve")
                child.log_artifact(run_dir / "serve" / "answer.json")
            write_manifest(
                run_dir / "serve", stage="serve", config=serve_cfg,
                inputs=[trained["student_dir"]], outputs=[str(run_dir / "serve" / "answer.json")],
                summary=answered, started=started,
            )
            summary["serve"] = answered
            print(f"served: {served_line(answered)}", flush=True)
    return summary


__all__ = ["LOG_FILE", "run_pipeline", "summary_rows"]
