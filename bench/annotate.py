"""Annotate pipeline throughput vs a plain batched `generate` loop (same model, questions, batch size).

    python bench/annotate.py            # 96 questions, batch 8, 96 new tokens, 3 interleaved rounds
    python bench/annotate.py --quick    # 40 questions, batch 8, 64 new tokens, 2 rounds (< 5 minutes idle)

Both sides run the embedded default teacher (SmolLM2-135M-Instruct), greedy, on the same rendered
level-3 prompts, on the machine's CPUs: the plain loop in this process with torch using every CPU,
the pipeline in two layouts of Ray Data actors: "1x2" (one actor reserving every CPU, torch using
them all) and "2x1" (one single-threaded actor per CPU, the layout `ray-cotd annotate` recommends on
CPU; each actor takes whole batches). Generated tokens are counted the same way on both sides: up to
and including the first EOS.

Timed: the plain loop from model load to the last batch; the pipeline from run_annotate's call to its
return (actor start, model load, generation, parsing, Parquet commits). Starting the local Ray
cluster is not timed (a cluster outlives many annotate runs). The pipeline's own generate-phase
rate (stats.json this_run.tokens_per_s) is printed too.

Each round runs the plain loop, then each pipeline layout; the ratios are of the medians.

Then the engines side by side, `ray-cotd annotate` end to end on the same --engine-questions
(default 200) questions, greedy, in the same dtype (--dtype, default auto: bfloat16 where the CPU runs it
natively, else float32, as `ray_cotd.lm.model.resolve_precision` decides): the transformers
engine in its recommended CPU layout (2x1) against the vLLM engine (Ray Data LLM, one replica with
1 CPU; vLLM's threads use both cores), actor and engine start included, alternating, --engine-rounds
rounds each.

Last line: pipeline_over_plain=<median pipeline tokens/s / median plain tokens/s, end to end, in the
recommended layout (--layout, default 2x1)> vllm_over_transformers=<median vLLM-engine tokens/s /
median transformers-engine tokens/s, end to end>.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

SHAPES = [
    ("A box holds {a} pens. There are {b} boxes. How many pens are there?", lambda a, b: a * b),
    ("Leo has {a} stickers and gets {b} more. How many stickers does he have?", lambda a, b: a + b),
    ("A tank holds {a} litres. {b} litres leak out. How many litres are left?", lambda a, b: a - b),
    ("{a} cookies are shared equally by {b} children. How many cookies does each child get?", lambda a, b: a // b),
]


def make_questions(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n distinct invented word problems with gold answers (division always comes out even).

    The division shape has 121 distinct questions in its first range: once 50 draws in a row repeat
    questions already made, that draw's numbers come from a wider range (so n in the thousands
    works). Runs that never reach 50 repeats in a row (n of a few hundred) get the questions they
    always got."""
    rng = random.Random(seed)
    rows, seen, misses = [], set(), 0
    while len(rows) < n:
        text, solve = SHAPES[len(rows) % len(SHAPES)]
        wide = misses >= 50
        b = rng.randint(2, 12)
        a = b * rng.randint(2, 99 if wide else 12) if "shared" in text else rng.randint(b + 1, 999 if wide else 99)
        question = text.format(a=a, b=b)
        if question in seen:
            misses += 1
            if misses > 10_000:
                raise ValueError(f"cannot make {n} distinct questions from {len(SHAPES)} shapes")
            continue
        seen.add(question)
        rows.append({"question": question, "answer": str(solve(a, b))})
        misses = 0
    return rows


def plain_loop(questions: list[dict[str, str]], level: int, batch_size: int, max_new_tokens: int) -> tuple[int, float]:
    """(generated tokens, seconds) of the straightforward loop: load, render, tokenize, generate."""
    import torch

    from ray_cotd.lm.model import load_model_and_tokenizer
    from ray_cotd.lm.format import render_chat
    from ray_cotd.teacher.prompts import render_messages

    torch.set_num_threads(2)
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer()
    model.eval()
    tok.padding_side = "left"
    eos = tok.eos_token_id
    tokens = 0
    for i in range(0, len(questions), batch_size):
        prompts = [render_chat(tok, render_messages(q["question"], level, "cot", "numeric"))
                   for q in questions[i : i + batch_size]]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens, time.perf_counter() - start


LAYOUTS = {"1x2": (1, 2.0), "2x1": (2, 1.0)}  # name -> (actors, CPUs = torch threads per actor)


def pipeline(questions_path: Path, out_dir: Path, level: int, batch_size: int, max_new_tokens: int,
             layout: str) -> tuple[int, float, dict]:
    from ray_cotd.config import AnnotateConfig
    from ray_cotd.teacher.annotate import run_annotate

    workers, cpus = LAYOUTS[layout]
    cfg = AnnotateConfig(questions=str(questions_path), output_dir=str(out_dir), levels=[level],
                         max_new_tokens=max_new_tokens, batch_size=batch_size, num_workers=workers,
                         cpus_per_worker=cpus, wrong="keep")  # a run that keeps nothing raises: keep all
    start = time.perf_counter()
    stats = run_annotate(cfg)
    return stats["this_run"]["completion_tokens"], time.perf_counter() - start, stats


def engine_run(questions_path: Path, out_dir: Path, engine: str, level: int, max_new_tokens: int,
               dtype: str) -> tuple[int, float]:
    """(completion tokens, seconds) of `ray-cotd annotate` with one engine, start included."""
    from ray_cotd.config import AnnotateConfig, ModelSpec
    from ray_cotd.teacher.annotate import run_annotate

    teacher = ModelSpec(dtype=dtype)
    if engine == "vllm":
        cfg = AnnotateConfig(questions=str(questions_path), output_dir=str(out_dir), levels=[level], engine="vllm",
                             teacher=teacher, max_new_tokens=max_new_tokens, batch_size=64, num_workers=1,
                             cpus_per_worker=1.0, vllm={"max_model_len": 1024}, wrong="keep")
    else:
        cfg = AnnotateConfig(questions=str(questions_path), output_dir=str(out_dir), levels=[level],
                             teacher=teacher, max_new_tokens=max_new_tokens, batch_size=8, num_workers=2,
                             cpus_per_worker=1.0, wrong="keep")
    start = time.perf_counter()
    stats = run_annotate(cfg)
    return stats["this_run"]["completion_tokens"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (< 5 minutes on 2 idle CPU cores)")
    parser.add_argument("--questions", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="rounds of plain + each layout, interleaved")
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="2x1", help="the layout of the last line")
    parser.add_argument("--engine-questions", type=int, default=200, help="questions of the engine comparison")
    parser.add_argument("--engine-rounds", type=int, default=None, help="rounds of each engine, alternating")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="engine comparison dtype (auto: bfloat16 where native, else float32)")
    args = parser.parse_args()
    from ray_cotd.lm.model import resolve_precision

    dtype = resolve_precision(args.dtype, "cpu")
    print(f"engine comparison dtype: {args.dtype} -> {dtype}", flush=True)
    engine_rounds = args.engine_rounds or (1 if args.quick else 2)
    n = args.questions or (40 if args.quick else 96)
    max_new = args.max_new_tokens or (64 if args.quick else 96)
    repeats = args.repeats or (2 if args.quick else 3)

    import ray

    questions = make_questions(n)
    plain_rates: list[float] = []
    pipe_rates: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    gen_rates: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
        qpath = Path(tmp) / "questions.jsonl"
        qpath.write_text("".join(json.dumps(q) + "\n" for q in questions))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            # Interleaved rounds: on a shared machine the load drifts, and one round sees similar load.
            for rep in range(repeats):
                plain_tokens, plain_s = plain_loop(questions, args.level, args.batch_size, max_new)
                plain_rates.append(plain_tokens / plain_s)
                print(f"round {rep}: plain {plain_tokens} tokens in {plain_s:.1f} s = {plain_rates[-1]:.1f} tok/s",
                      flush=True)
                for layout in LAYOUTS:
                    pipe_tokens, pipe_s, stats = pipeline(qpath, Path(tmp) / f"out-{layout}-{rep}", args.level,
                                                          args.batch_size, max_new, layout)
                    pipe_rates[layout].append(pipe_tokens / pipe_s)
                    gen_rates[layout].append(stats["this_run"]["tokens_per_s"])
                    print(f"round {rep}: pipeline {layout} {pipe_tokens} tokens in {pipe_s:.1f} s = "
                          f"{pipe_rates[layout][-1]:.1f} tok/s end to end (generate phase "
                          f"{gen_rates[layout][-1]:.1f} tok/s); same tokens: {pipe_tokens == plain_tokens}", flush=True)
            engine_path = Path(tmp) / "engine-questions.jsonl"
            engine_path.write_text("".join(json.dumps(q) + "\n" for q in make_questions(args.engine_questions, seed=1)))
            engine_rates: dict[str, list[float]] = {"transformers": [], "vllm": []}
            for rep in range(engine_rounds):
                for engine in engine_rates:
                    tokens, seconds = engine_run(engine_path, Path(tmp) / f"engine-{engine}-{rep}", engine, args.level,
                                                 max_new, dtype)
                    engine_rates[engine].append(tokens / seconds)
                    print(f"engine round {rep}: {engine} {tokens} tokens in {seconds:.1f} s = "
                          f"{engine_rates[engine][-1]:.1f} tok/s end to end ({args.engine_questions} questions, "
                          f"{dtype})", flush=True)
        finally:
            ray.shutdown()

    plain_med = statistics.median(plain_rates)
    print(f"questions={n} batch_size={args.batch_size} max_new_tokens={max_new} level={args.level} cpus=2 "
          f"rounds={repeats}")
    print(f"median plain {plain_med:.1f} tok/s")
    for layout in LAYOUTS:
        med = statistics.median(pipe_rates[layout])
        print(f"pipeline {layout}: median {med:.1f} tok/s end to end, {statistics.median(gen_rates[layout]):.1f} "
              f"tok/s generate phase; over plain {med / plain_med:.3f} "
              f"(per round {[round(p / q, 3) for p, q in zip(pipe_rates[layout], plain_rates)]})")
    print(f"pipeline kept {stats['kept']}/{stats['rows_in']} rows; dropped {stats['dropped_by_reason']}")
    vllm_med, tf_med = statistics.median(engine_rates["vllm"]), statistics.median(engine_rates["transformers"])
    print(f"engines: vllm {vllm_med:.1f} tok/s, transformers (2x1) {tf_med:.1f} tok/s end to end, "
          f"{args.engine_questions} questions, {dtype}, {engine_rounds} round(s)")
    print(f"pipeline_over_plain={statistics.median(pipe_rates[args.layout]) / plain_med:.3f} "
          f"vllm_over_transformers={vllm_med / tf_med:.3f}")


if __name__ == "__main__":
    main()
