"""What bfloat16 costs or saves on this machine, and what `precision: auto` / `dtype: auto` pick.

    python bench/precision.py [--rounds 3] [--no-vllm]

bf16 is fast only where the hardware has it: a CPU with AVX512_BF16 or AMX (oneDNN's bf16 path), or
a CUDA GPU of compute capability 8.0+. Elsewhere (an AVX2-only CPU) PyTorch runs bf16 matmuls in a
reference kernel, and a config that says bfloat16 runs many times slower than float32. `auto`
(ray_cotd.lm.model.resolve_precision) picks bf16 only where it is native; this bench measures both
precisions side by side on the CPU, in one process, so the choice can be checked:

1. matmul: torch.mm of 1024² matrices, fp32 then bf16, median of 5 after one warm-up, GFLOP/s.
2. a LoRA training step on the default student (SmolLM2-135M-Instruct, LoRA r16 on the attention
   and MLP projections, as `ray-cotd train` builds it): forward + backward + AdamW step on one batch
   of 2 x 64 tokens of the packaged demo questions, fp32 vs bf16 autocast, the precisions alternating
   for --rounds rounds after one warm-up step each; median seconds per step.
3. (unless --no-vllm, or vLLM is not installed) vLLM two-stage generation of the 14 packaged demo
   questions x 4 on the default student, 128 rationale tokens: one engine in float32, then one in
   bfloat16, each timed over one call after a warm-up call.

Last line: auto=<float32|bfloat16> matmul_fp32_gflops=<x> matmul_bf16_gflops=<x> step_fp32_s=<s>
step_bf16_s=<s> bf16_step_slowdown=<ratio> vllm_fp32_s=<s> vllm_bf16_s=<s> vllm_bf16_slowdown=<ratio>
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ray_cotd.config import ModelSpec, TrainConfig
from ray_cotd.lm.model import load_tokenizer, native_bfloat16, resolve_precision
from ray_cotd.student.train import _autocast, build_student

DEMO = Path(__file__).resolve().parents[1] / "ray_cotd" / "assets" / "demo_questions.jsonl"
QUESTIONS = [json.loads(line)["question"] for line in DEMO.read_text().splitlines()]


def matmul_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def lora_steps(rounds: int) -> dict[str, float]:
    cfg = TrainConfig(peft="lora", lora_r=16, lora_alpha=32)
    student = build_student(cfg)
    model = student.lm
    model.train()
    tok = load_tokenizer(cfg.student)
    text = " ".join(QUESTIONS)
    ids = torch.tensor(tok(text)["input_ids"][:128]).view(2, 64)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cpu = torch.device("cpu")

    def step(precision: str) -> float:
        t = time.perf_counter()
        with _autocast(precision, cpu):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for precision in times:  # warm-up
        step(precision)
    for r in range(rounds):
        for precision in times:
            times[precision].append(step(precision))
            print(f"  step round {r + 1} {precision}: {times[precision][-1]:.2f} s", flush=True)
    return {p: statistics.median(v) for p, v in times.items()}


def vllm_two_stage(dtype: str) -> float:
    from ray_cotd.config import VLLMEngineSpec
    from ray_cotd.lm.generate import GenerationLimits
    from ray_cotd.lm.vllm import VLLMEngines

    questions = QUESTIONS * 4
    limits = GenerationLimits(max_rationale_tokens=128, max_answer_tokens=8)
    engines = VLLMEngines(VLLMEngineSpec(max_model_len=1024, kv_cache_gib=1, dtype=dtype), [ModelSpec()])
    try:
        generator = engines.generator(ModelSpec())
        generator.two_stage(questions[:2], limits)
        t = time.perf_counter()
        generator.two_stage(questions, limits)
        return time.perf_counter() - t
    finally:
        engines.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)  # the explicit-bf16 warning: measuring it is the point
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"oneDNN bf16 path: {native_bfloat16('cpu')}, auto -> {resolve_precision('auto', 'cpu')}", flush=True)
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"matmul 1024²: fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s", flush=True)
    steps = lora_steps(args.rounds)
    print(f"LoRA step (2 x 64 tokens): fp32 {steps['float32']:.2f} s, bf16 {steps['bfloat16']:.2f} s", flush=True)
    engine_s = {"float32": float("nan"), "bfloat16": float("nan")}
    if not args.no_vllm:
        try:
            import vllm  # noqa: F401  (only whether it is installed)
        except ImportError:
            print("vLLM not installed: skipping its part", flush=True)
        else:
            for dtype in engine_s:
                engine_s[dtype] = vllm_two_stage(dtype)
                print(f"vLLM two-stage, {len(QUESTIONS) * 4} questions, {dtype}: {engine_s[dtype]:.1f} s", flush=True)
    print(f"auto={resolve_precision('auto', 'cpu')} matmul_fp32_gflops={fp32:.1f} matmul_bf16_gflops={bf16:.1f} "
          f"step_fp32_s={steps['float32']:.2f} step_bf16_s={steps['bfloat16']:.2f} "
          f"bf16_step_slowdown={steps['bfloat16'] / steps['float32']:.2f} "
          f"vllm_fp32_s={engine_s['float32']:.1f} vllm_bf16_s={engine_s['bfloat16']:.1f} "
          f"vllm_bf16_slowdown={engine_s['bfloat16'] / engine_s['float32']:.2f}")


if __name__ == "__main__":
    main()
