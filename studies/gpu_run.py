"""The study's core on one GPU in one call, without Ray (issue 21 item 5): item 1's objectives and
item 2's granularity levels at the `paper` preset, with studies/run.py's configs, run layout, resume and
tables.

    python studies/gpu_run.py                        # --scale paper --only objectives,granularity on cuda
    python studies/gpu_run.py --scale smoke --device cpu --steps 2 --limit 4 --out runs/study-gpu-smoke

Every run is the runner's: the same YAML + scale overrides (studies/run.py `Study`), the same output
directories, a finished run skipped on a second start, the same OUT/tables.md, study.json and plots.
Only the two functions that run a loaded config differ: instead of run_train / run_evaluate (Ray Train,
Ray Data) they run in this process on one device.

- train: ray_cotd.student.train's Ray-agnostic core, the loop of its Ray Train worker without the Ray
  calls: prepare_data, build_student, BatchStream (the same seeded data order as rank 0 of a one-worker
  run), train_step with the scheduled λ, the validation task loss at the last step, save_student.
- evaluate: ray_cotd.evaluate's preparation, prompt-length check, scoring and report, with its
  GenerateActor (ray_cotd.lm.generate's Generator, or vLLM's engine with `--backend vllm`) called on
  batches here instead of inside a Ray Data actor pool.

Under the `paper` preset: 400 steps x 8 rows per train run (7 arms of item 1, 12 levels of item 2),
full StrategyQA (290) and CommonsenseQA (1,221) test sets, 80 + 57 SVAMP hold-out rows. On one H200
the whole call is estimated at about 8-10 minutes (docs/study.md says how, and that no GPU was lent
to measure it); --only objectives or --only granularity halves it. P-Tuning students (the prada arm)
always generate on the HF backend: vLLM does not feed their virtual tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import run as study_run  # studies/run.py, beside this script

GPU_EXPERIMENTS = ("objectives", "granularity")  # items 1 and 2; tune needs Ray Tune
EVAL_BATCH = {"cuda": 256, "cpu": 16}  # questions per generate call


def train_in_process(cfg: Any, *, device: str) -> dict[str, Any]:
    """run_train's outputs (student/, metrics.jsonl, resolved_config.yaml, bad_rows.jsonl,
    summary.json) from one process on `device`: the Ray Train worker loop of ray_cotd.student.train
    for world size 1, without its Ray calls (no checkpoints: a stopped run starts again)."""
    import torch

    from ray_cotd.configbase import save_resolved
    from ray_cotd.data.readers import BadRow, write_bad_rows
    from ray_cotd.lm.model import load_tokenizer
    from ray_cotd.student.objectives import LossParams, get_objective
    from ray_cotd.student.prada import lambda_at
    from ray_cotd.student.train import (
        METRICS_LOG,
        BatchStream,
        build_student,
        make_scheduler,
        param_groups,
        prepare_data,
        save_student,
        train_step,
        validation_loss,  # the training loop's own validation task loss (world size 1: no collective)
    )

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    started = time.perf_counter()
    objective = get_objective(cfg.objective)
    tokenizer = load_tokenizer(cfg.student)
    data = prepare_data(cfg, tokenizer)
    corpus = data["corpus"]
    write_bad_rows([BadRow(b["path"], b["row"], b["field"], b["reason"], b["detail"]) for b in corpus.bad],
                   out / "bad_rows.jsonl")
    torch.manual_seed(cfg.seed)  # as the worker loop: before the student's fresh weights
    student = build_student(cfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(student, cfg), lr=cfg.lr, weight_decay=0.0)
    scheduler = make_scheduler(optimizer, cfg)
    targets = [s for seqs in data["targets"] for s in seqs] if objective.domain_adversarial else None
    stream = BatchStream(data["train"], cfg, pad_id=tokenizer.pad_token_id, seed=cfg.seed * 1000, targets=targets)
    history: list[dict[str, Any]] = []
    student.train()
    params = LossParams(alpha=cfg.alpha, lambda_=cfg.lambda_)
    for step in range(1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        params = LossParams(alpha=cfg.alpha, lambda_=lambda_at(cfg.lambda_, cfg.lambda_schedule,
                                                               (step - 1) / cfg.max_steps))
        micro = [stream.batch((step - 1) * cfg.grad_accum + i).to(device) for i in range(cfg.grad_accum)]
        values = train_step(student, student, optimizer, scheduler, micro, objective, params, precision=cfg.precision)
        history.append({"step": step, **values, "lr": scheduler.get_last_lr()[0],
                        "tokens": sum(b.real_tokens for b in micro), "step_s": time.perf_counter() - t0})
        if objective.domain_adversarial:
            history[-1]["lambda"] = params.lambda_
    val_loss = (validation_loss(student, data["val"], cfg, objective, params, tokenizer.pad_token_id, 1, torch.device(device))
                if data["val"] else None)
    if val_loss is not None:
        history.append({"step": cfg.max_steps, "val_loss": val_loss})
    student_dir = save_student(student, cfg, tokenizer, out / "student")
    (out / METRICS_LOG).write_text("".join(json.dumps(h) + "\n" for h in history))
    steps = [h for h in history if "loss" in h]
    summary = {
        "steps": cfg.max_steps, "first_loss": steps[0]["loss"], "final_loss": steps[-1]["loss"], "val_loss": val_loss,
        "val_accuracy": None, "student_dir": str(student_dir), "metrics_log": str(out / METRICS_LOG),
        "device": device, "train_s": time.perf_counter() - started,
        "data": {**corpus.summary(), "encode": data["stats"].as_dict(), "val_encode": data["val_stats"].as_dict(),
                 **({"target": data["target_stats"]} if data["target_stats"] is not None else {})},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"[gpu_run] trained {out.relative_to(out.parents[1])}: {cfg.max_steps} steps in {summary['train_s']:.0f} s, "
          f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}", flush=True)
    return summary


def evaluate_in_process(cfg: Any, *, device: str) -> dict[str, Any]:
    """run_evaluate's outputs (report.json, report.md, accuracy.png, predictions/, unparseable.jsonl)
    from one process on `device`: ray_cotd.evaluate.evaluate_systems with its GenerateActor called here
    on the batches a Ray Data actor pool would get (batches_by_set) instead of in the pool."""
    import pandas as pd
    import torch

    from ray_cotd.evaluate import GenerateActor, actor_kwargs, batches_by_set, evaluate_systems, write_report

    actors: list[Any] = []  # one GenerateActor, built on the first call (it loads every system's model)

    def generate(rows: list[dict], cfg: Any, systems: list, demos: dict, desc: str,
                 on_result: Callable[[dict], None]) -> list[dict]:
        if not rows:  # every answer came from an earlier start's log (evaluate.GeneratedLog)
            return []
        if not actors:
            actors.append(GenerateActor(**{
                **actor_kwargs(cfg, systems, demos),
                "threads": torch.get_num_threads(),  # this process's own: GenerateActor sets torch's threads to it
                "use_gpu": device == "cuda"}))
        by_index: dict[int, dict[str, Any]] = {}
        for batch in batches_by_set(rows, cfg.batch_size):  # as the Ray Data actor pool batches them
            for result in actors[0](pd.DataFrame(batch)).to_dict("records"):
                # pandas reads a column of None and strings (constrained_answer) back with NaN for None
                by_index[int(result["index"])] = {k: None if isinstance(v, float) and math.isnan(v) else v
                                                  for k, v in result.items()}
                on_result(by_index[int(result["index"])])
        return [by_index[row["index"]] for row in rows]

    started = time.perf_counter()
    try:
        report = evaluate_systems(cfg, generate=generate)
    finally:  # the next arm trains in this process: a vLLM engine (in process by default) gives its memory back
        for actor in actors:
            actor.close()
    report["throughput"]["device"] = device
    out_dir = Path(cfg.output_dir)
    write_report(report, out_dir)  # again, with the device
    print(f"[gpu_run] evaluated {out_dir.parent.name}/{out_dir.name}: {report['throughput']['questions']} answers "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="paper", help="a preset of studies/scales.yaml (default: paper)")
    parser.add_argument("--only", default=",".join(GPU_EXPERIMENTS),
                        help="comma-separated subset of answer_only_vs_cot, objectives, granularity, teachers")
    parser.add_argument("--out", default="runs/study-gpu", help="run directory (relative to the repository root)")
    parser.add_argument("--data", default=study_run.DATA_PREFIX, help="the shared data dir")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="generation: hf (ray-cotd's decoding loop) or vllm (needs vllm installed; not run here)")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="questions per generate call "
                        f"(default {EVAL_BATCH['cuda']} on cuda, {EVAL_BATCH['cpu']} on cpu)")
    parser.add_argument("--steps", type=int, default=None, help="override every train run's max_steps (smoke tests)")
    parser.add_argument("--limit", type=int, default=None, help="cap every test set at N questions (smoke tests)")
    args = parser.parse_args(argv)

    import torch

    os.chdir(study_run.REPO)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = Path(args.data).resolve()
    for problem in (study_run.check_library(), study_run.check_data(data)):
        if problem is not None:
            print(f"studies/gpu_run.py: {problem}", file=sys.stderr)
            return 2
    out = Path(args.out).resolve()
    evaluate_overrides = [f"batch_size={args.eval_batch_size or EVAL_BATCH.get(device, 16)}"]
    if device == "cuda":
        evaluate_overrides.append("gpus_per_worker=1")  # as a GPU actor would be asked for (recorded in the config)
    if args.backend == "vllm":
        evaluate_overrides.append("backend=vllm")  # P-Tuning arms keep their own backend=hf
    try:
        study = study_run.Study(out, data, args.scale, out,  # plots beside the tables, never over docs/
                                runners={"train": lambda cfg: train_in_process(cfg, device=device),
                                         "evaluate": lambda cfg: evaluate_in_process(cfg, device=device)},
                                evaluate_overrides=evaluate_overrides)
        only = study_run.parse_only(args.only, study.scale, args.scale)
        if "tune" in only:
            raise study_run.StudyError("--only tune: the sweep runs on Ray Tune; use studies/run.py")
    except study_run.StudyError as err:
        parser.error(str(err))
    if args.steps is not None:
        study.scale["train"] = [*study.scale["train"], f"max_steps={args.steps}", f"checkpoint_every={args.steps}"]
        study.scale["epochs"] = {}
    if args.limit is not None:
        study.scale["test_limits"] = {name: min(args.limit, limit or args.limit)
                                      for name, limit in study.scale["test_limits"].items()}
        for by_set in study.scale.get("test_limits_by_experiment", {}).values():
            by_set.update({name: min(args.limit, limit or args.limit) for name, limit in by_set.items()})
    out.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"[gpu_run] scale {args.scale}, {', '.join(only)} on {device} ({where}), generation {args.backend}; {out}",
          flush=True)
    try:
        study_run.run_study(study, only)
    except study_run.StudyError as err:
        print(f"studies/gpu_run.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # the guard vLLM's engine process needs
    sys.exit(main())
