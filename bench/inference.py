"""Two-stage generation latency and evaluation throughput on the default student, HF and vLLM.

    python bench/inference.py --quick        # ~10 minutes on 2 CPU cores
    python bench/inference.py                # longer rationales, more repeats, 100 questions

1. Latency, batch 1 and 8: two-stage with KV reuse (Generator.two_stage), the naive two-stage
   (stage 2 re-encodes prompt + rationale), and ONE model.generate call forced to the same total
   number of decoding steps as the two-stage run (stage-1 steps + stage-2 steps). Medians of
   --repeats runs; the first run of each variant is a discarded warm-up.
2. Throughput of Generator.two_stage (what each evaluation actor runs) in questions/s at batch
   1, 8 and 32.

3. The two backends side by side (interleaved rounds, after a warm-up of each): two-stage answers
   on the same questions (64 with --quick, else 100; the project's generated word problems), each
   backend at its default settings: the HF backend (`Generator.two_stage`, fp32) at batch 32, the
   vLLM backend (`VLLMGenerator.two_stage`, fp32, prefix caching, 32-token KV blocks) on all the
   questions at once (its scheduler batches them). Questions/s of each, their ratio, and the share
   of questions whose parsed answers agree (`answer_agreement`); the vLLM engine's start is timed
   apart. Then batch-1 decoding on the vLLM engine: 64 tokens with EOS ignored, ms per token, over
   the weight-read floor of this machine: reading the 538 MB of fp32 weights at 30-50 GB/s takes
   11-18 ms per token; the upper end is the floor (`decode_ms_over_floor`). The vLLM side runs
   twice, interleaved: its engine core in this process (evaluate's default, `vllm.in_process`) and
   in vLLM's own process (`own_process_*`).

The last line is `two_stage_over_single=<ratio> naive_over_single=<ratio> vllm_over_hf=<ratio>
answer_agreement=<share> decode_ms_over_floor=<ratio> own_process_over_hf=<ratio>
own_process_decode_ms_over_floor=<ratio>`; the first two are the larger of the
batch-1 and batch-8 ratios of medians (the target is two_stage_over_single <= 1.1).
Questions are generated from our own templates (no dataset rows).

    python bench/inference.py --lora [--student DIR]   # ~4 minutes on 2 CPU cores

4. A LoRA student on vLLM both ways (`vllm.lora`): merged into a cached full-weights copy (the CPU
   default) and as a LoRA request on its base's engine, two engines side by side, the same 64
   questions, two-stage (rationale <= 96 tokens), interleaved rounds after a warm-up of each, in
   precision auto (bf16 where the CPU runs it natively, else float32: what training writes
   with the shipped configs). The student is DIR, or a stand-in made
   here: LoRA r 16 on all seven projections of the default model (a trained student's shape) with
   seeded random B matrices. Last line: `lora_merged_over_request=<ratio of questions/s>
   lora_answer_agreement=<share of parsed answers alike>`.

    python bench/inference.py --engine-core [--student DIR]   # ~5 minutes on 2 CPU cores

5. Where vLLM's engine core runs (`vllm.in_process`): in vLLM's own process (vLLM's default) or in
   the caller's (evaluate's default since 2026-12-03; part 3 runs both ways, part 4 its two engines in
   vLLM's own processes, as they ran before). For each, three fresh engines on one LoRA student
   (DIR, or part 4's stand-in; merged, precision auto: what evaluate runs on CPU) answer the same 64
   questions two-stage (rationale <= 96 tokens) in evaluate's way, one batch of 16 after another:
   in order, in reverse order, in order again. A question "moved" when its rationale or answer differs between any two of the three.
   Last line: `moved_process=<questions> moved_in_process=<questions> in_process_speedup=<ratio of
   the median generation times>`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ray_cotd.config import ModelSpec, VLLMEngineSpec
from ray_cotd.data.wordproblems import SEED, generate
from ray_cotd.lm.generate import GenerationLimits, Generator
from ray_cotd.lm.model import load_model_and_tokenizer

FLOOR_MS = 18.0  # ms per token to read 538 MB of fp32 weights at 30 GB/s, the slow end measured here

TEMPLATES = [
    "Ann has {a} apples and buys {b} more. How many apples does she have now?",
    "A box holds {a} pens. How many pens are in {b} boxes?",
    "Tom had {a} marbles and lost {b} of them. How many marbles does he have left?",
    "A train travels {a} km every hour. How far does it go in {b} hours?",
]


def questions(n: int) -> list[str]:
    return [TEMPLATES[i % len(TEMPLATES)].format(a=7 + 3 * i, b=2 + i % 5) for i in range(n)]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def single_generate(gen: Generator, qs: list[str], steps: int) -> None:
    """One HF generate call over the same left-padded prompts, exactly `steps` new tokens."""
    prompts = [gen.prompt_ids(q) for q in qs]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[gen.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        gen.model.generate(ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                           pad_token_id=gen.pad_id)


def latency(gen: Generator, batch: int, limits: GenerationLimits, repeats: int) -> dict[str, float]:
    qs = questions(batch)
    # the decoding steps the two-stage run takes: its longest row in each stage (+1 for a row that
    # stopped on EOS, whose EOS step is not counted in its tokens)
    ref = gen.two_stage(qs, limits)
    steps = max(r.rationale_tokens for r in ref) + 1 + max(r.answer_tokens for r in ref)
    variants = {
        "two_stage": lambda: gen.two_stage(qs, limits),
        "naive": lambda: gen.two_stage_naive(qs, limits),
        "single": lambda: single_generate(gen, qs, steps),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for k, fn in variants.items():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in variants.items():  # interleaved, so machine noise hits all variants alike
            times[k].append(timed(fn)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"latency batch={batch} {k}: median {med[k]:.3f}s (min {min(v):.3f}, max {max(v):.3f}) "
              f"steps={steps}")
    return med


def throughput(gen: Generator, batch: int, n: int, limits: GenerationLimits) -> float:
    qs = questions(n)
    gen.two_stage(qs[:batch], limits)  # warm-up
    elapsed = 0.0
    tokens = 0
    for i in range(0, n, batch):
        t, results = timed(lambda: gen.two_stage(qs[i:i + batch], limits))
        elapsed += t
        tokens += sum(r.rationale_tokens + r.answer_tokens for r in results)
    qps = n / elapsed
    print(f"throughput batch={batch}: {qps:.3f} questions/s ({n} questions, {elapsed:.1f}s, "
          f"{tokens / elapsed:.1f} generated tokens/s)")
    return qps


def backends(hf: Generator, n: int, limits: GenerationLimits, rounds: int) -> dict[str, float]:
    """vLLM vs HF two-stage on the same n questions, each at its default settings, and vLLM's engine
    core in this process (evaluate's default) beside one in vLLM's own process (see module doc)."""
    from ray_cotd.lm.vllm import VLLMGenerator

    qs = [p["question"] for p in generate(n, SEED)]
    engines = {}
    for name, in_process in (("vllm", True), ("vllm_own_process", False)):
        start, engines[name] = timed(lambda: VLLMGenerator.from_spec(ModelSpec(), VLLMEngineSpec(in_process=in_process)))
        print(f"{name} engine start: {start:.1f}s")

    def run_hf() -> list:
        return [r for i in range(0, n, 32) for r in hf.two_stage(qs[i:i + 32], limits)]

    runs = {"hf": run_hf, **{name: (lambda g=g: g.two_stage(qs, limits)) for name, g in engines.items()}}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    answers: dict[str, list] = {}
    for _ in range(rounds):
        for name, fn in runs.items():
            t, results = timed(fn)
            times[name].append(t)
            answers[name] = results
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"two-stage {k}: {n / med[k]:.3f} questions/s, median {med[k]:.1f}s over {rounds} rounds "
              f"(min {min(v):.1f}, max {max(v):.1f})")
    vllm = engines["vllm"]
    agree = sum(a.answer == b.answer for a, b in zip(answers["hf"], answers["vllm"])) / n
    same_rationale = sum(a.rationale == b.rationale for a, b in zip(answers["hf"], answers["vllm"])) / n
    same_placement = sum(a.rationale == b.rationale for a, b in zip(answers["vllm"], answers["vllm_own_process"]))
    print(f"answers agree on {agree * n:.0f}/{n} questions ({agree:.3f}); rationales identical on "
          f"{same_rationale * n:.0f}/{n} (in process vs own process: {same_placement}/{n}); vLLM stage 2 found "
          f"{vllm.stats.stage2_cached_tokens} of {vllm.stats.stage2_prompt_tokens} prompt tokens in the prefix cache")

    from vllm import SamplingParams

    one = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    decode = {}
    for name, g in engines.items():
        prompt = {"prompt_token_ids": g.stages.prompt_ids(qs[0])}
        g.engine.generate([prompt], one, use_tqdm=False)  # warm-up
        decode[name] = statistics.median(timed(lambda: g.engine.generate([prompt], one, use_tqdm=False))[0] * 1000 / 64
                                         for _ in range(5))
        print(f"{name} batch-1 decode: {decode[name]:.1f} ms/token (median of 5 runs of 64 tokens); floor {FLOOR_MS} ms")
    return {"vllm_over_hf": med["hf"] / med["vllm"], "answer_agreement": agree,
            "decode_ms_over_floor": decode["vllm"] / FLOOR_MS,
            "own_process_over_hf": med["hf"] / med["vllm_own_process"],
            "own_process_decode_ms_over_floor": decode["vllm_own_process"] / FLOOR_MS}


def stand_in_student(out: Path) -> Path:
    """A LoRA student directory as training writes it: r 16 on all seven projections, random B."""
    from peft import LoraConfig, get_peft_model

    from ray_cotd.lm.model import load_model, resolve_precision, write_student_meta

    torch.manual_seed(0)
    model = get_peft_model(load_model(ModelSpec()), LoraConfig(
        r=16, lora_alpha=32, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.01)
    model.save_pretrained(str(out))
    write_student_meta(out, {"base": "default", "gguf_file": None, "peft": "lora", "objective": "cascod",
                             "precision": resolve_precision("auto", "cpu")})
    return out


def lora_modes(student: Path, n: int, limits: GenerationLimits, rounds: int) -> dict[str, float]:
    """Questions/s of one LoRA student merged vs as a LoRA request (see module doc, 4)."""
    from ray_cotd.lm.model import spec_for_student_dir
    from ray_cotd.lm.vllm import VLLMEngines

    spec = spec_for_student_dir(student, dtype="auto")
    qs = [p["question"] for p in generate(n, SEED)]
    gens, engines = {}, []
    for mode in ("merge", "request"):
        # two engines at once, interleaved: in vLLM's own processes (one in-process engine per process)
        start, pool = timed(lambda: VLLMEngines(VLLMEngineSpec(lora=mode, in_process=False), [spec]))
        t, gens[mode] = timed(lambda: pool.generator(spec))
        engines.append(pool)
        print(f"{mode}: plan (merge included) {start:.1f}s, engine start {t:.1f}s")
    for gen in gens.values():
        gen.two_stage(qs, limits)  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in gens}
    answers: dict[str, list] = {}
    for _ in range(rounds):
        for mode, gen in gens.items():
            t, answers[mode] = timed(lambda: gen.two_stage(qs, limits))
            times[mode].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for mode, v in times.items():
        print(f"lora {mode}: {n / med[mode]:.3f} questions/s, median {med[mode]:.1f}s over {rounds} rounds "
              f"(min {min(v):.1f}, max {max(v):.1f})")
    agree = sum(a.answer == b.answer for a, b in zip(answers["merge"], answers["request"])) / n
    same = sum(a.rationale == b.rationale for a, b in zip(answers["merge"], answers["request"]))
    print(f"merged vs request: answers agree on {agree * n:.0f}/{n}, rationales identical on {same}/{n}")
    for pool in engines:
        pool.close()
    return {"lora_merged_over_request": med["request"] / med["merge"], "lora_answer_agreement": agree}


def engine_core(student: Path, n: int, limits: GenerationLimits, batch: int = 16) -> dict[str, float]:
    """The same answers in any batch order and on every start? Per engine-core placement (see module doc, 5)."""
    from ray_cotd.lm.model import spec_for_student_dir
    from ray_cotd.lm.vllm import VLLMEngines

    spec = spec_for_student_dir(student, dtype="auto")
    qs = [p["question"] for p in generate(n, SEED)]
    batches = [qs[i:i + batch] for i in range(0, n, batch)]
    moved, medians = {}, {}
    for in_process in (False, True):
        runs, times = [], []
        for name, order in (("in order", batches), ("reversed", batches[::-1]), ("in order again", batches)):
            pool = VLLMEngines(VLLMEngineSpec(in_process=in_process), [spec])
            start, gen = timed(lambda: pool.generator(spec))
            t, answers = timed(lambda: {q: (r.rationale, r.answer_text)
                                        for b in order for q, r in zip(b, gen.two_stage(b, limits))})
            pool.close()
            runs.append(answers)
            times.append(t)
            print(f"in_process={in_process} {name}: engine start {start:.1f}s, {n} questions in {t:.1f}s")
        moved[in_process] = sum(len({run[q] for run in runs}) > 1 for q in qs)
        medians[in_process] = statistics.median(times)
        print(f"in_process={in_process}: {moved[in_process]}/{n} questions moved between the three runs; "
              f"median {medians[in_process]:.1f}s")
    return {"moved_process": moved[False], "moved_in_process": moved[True],
            "in_process_speedup": medians[False] / medians[True]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rationales, 3 repeats (< 5 min on 2 cores)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lora", action="store_true", help="only part 4: a LoRA student merged vs as a LoRA request")
    parser.add_argument("--engine-core", action="store_true",
                        help="only part 5: vLLM's engine core in its own process vs in ours, batch orders")
    parser.add_argument("--student", type=Path, default=None,
                        help="with --lora or --engine-core: a trained LoRA student directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.engine_core:
        with tempfile.TemporaryDirectory() as tmp:
            student = args.student or stand_in_student(Path(tmp) / "student")
            out = engine_core(student, 64, GenerationLimits(max_rationale_tokens=96, max_answer_tokens=8))
        print(f"moved_process={out['moved_process']} moved_in_process={out['moved_in_process']} "
              f"in_process_speedup={out['in_process_speedup']:.3f}")
        return
    if args.lora:
        with tempfile.TemporaryDirectory() as tmp:
            student = args.student or stand_in_student(Path(tmp) / "student")
            out = lora_modes(student, 64, GenerationLimits(max_rationale_tokens=96, max_answer_tokens=8), rounds=2)
        print(" ".join(f"{k}={v:.3f}" for k, v in out.items()))
        return
    limits = GenerationLimits(max_rationale_tokens=32 if args.quick else 128, max_answer_tokens=8)
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"torch threads={torch.get_num_threads()} limits={limits} repeats={repeats}")

    gen = Generator(*load_model_and_tokenizer())
    ratios = {"two_stage": [], "naive": []}
    for batch in (1, 8):
        med = latency(gen, batch, limits, repeats)
        for k in ratios:
            ratios[k].append(med[k] / med["single"])
            print(f"ratio batch={batch} {k}_over_single={ratios[k][-1]:.3f}")
    for batch, n in ((1, 4 if args.quick else 16), (8, 8 if args.quick else 32), (32, 32 if args.quick else 64)):
        throughput(gen, batch, n, limits)
    eval_limits = GenerationLimits(max_rationale_tokens=96 if args.quick else 128, max_answer_tokens=12)
    vs = backends(gen, 64 if args.quick else 100, eval_limits, rounds=2 if args.quick else 3)
    print(f"two_stage_over_single={max(ratios['two_stage']):.3f} naive_over_single={max(ratios['naive']):.3f} "
          f"vllm_over_hf={vs['vllm_over_hf']:.3f} answer_agreement={vs['answer_agreement']:.3f} "
          f"decode_ms_over_floor={vs['decode_ms_over_floor']:.3f} own_process_over_hf={vs['own_process_over_hf']:.3f} "
          f"own_process_decode_ms_over_floor={vs['own_process_decode_ms_over_floor']:.3f}")


if __name__ == "__main__":  # vLLM spawns its engine core: the guard is required
    main()
