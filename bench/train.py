"""Student training throughput on the real default student (SmolLM2-135M-Instruct).

    python bench/train.py [--quick] [--steps N] [--corpus PATH]
    python bench/train.py --kd-only [--steps N] [--kd-rows 8] [--kd-k 20] [--device cpu|cuda]

On a CPU without a bf16 path (ray_cotd.lm.model.native_bfloat16 False: an AVX2-only CPU, where a bf16
LoRA step is ~35x its fp32 time, bench/precision.py) the bf16 peak and bf16 modes are skipped, and the
LoRA student of parts 3-4 and --kd-only trains at precision auto (fp32 there, bf16 elsewhere).

1. Peak: the machine's fp32 and bf16 matmul rate (torch.mm 2048², median), in this process, at the
   start and again at the end; MFU divides by the higher of the two (on these shared VMs one
   measurement of the peak varied 159-186 GFLOP/s between runs, and a low one inflates MFU).
2. MFU at batch 8 x 256 tokens (rows filled with real SVAMP text, positions restarting per
   example): full fine-tuning and LoRA, fp32 and bf16 autocast. Full fp32 runs through Ray Train
   (TorchTrainer, 1 worker with every CPU); the others run the same `train_step` in a plain loop.
   FLOPs per step: 6·N·tokens for full fine-tuning, 4·N·tokens for LoRA (frozen weights need no
   weight gradients), N = the student's parameter count (tied embedding counted once);
   attention FLOPs are left out. MFU = achieved FLOP/s / the peak of that precision.
   Full fp32 also runs in a plain loop in the same process, so Ray Train's cost is a side-by-side ratio.
   The bench re-executes itself with the glibc malloc tunables that full fine-tuning workers get
   (ray_cotd.student.train.CPU_MALLOC_TUNABLES, TrainConfig.cpu_malloc_cache; LoRA and P-Tuning
   workers keep glibc's defaults since 2026-12-03, so the LoRA modes here run under tunables those
   workers no longer get); `--malloc stock` measures without them. Without --quick, a child process with stock malloc times the plain full
   fp32 loop once more (malloc_cache_speedup). The first 2 steps of each mode are warm-up (they
   still page-fault their buffers in).
3. cascod / std_cot step-time ratio on the same 8 real rows (one forward pass each), their steps
   alternating on one LoRA student (precision auto) for steps + 3 rounds; the ratio is the median of the
   per-round ratios (a paired statistic: with 3 rounds, one slow step moved the ratio of medians
   from ~1.0 to 1.197 in one run).
4. Packing vs randomly ordered padded batches (and length-grouped, left out with --quick) on real
   rows: real (non-pad) tokens per second over the same number of batches of 8 examples, the modes
   alternating.

Last line: mfu_full_fp32=<fraction> cascod_over_std_cot=<ratio> packing_speedup=<ratio>

--kd-only: the cost of the token-level KD term (TrainConfig.kd_weight, objectives/kd.py) on cascod,
LoRA at precision auto, one packed batch of --kd-rows real rows. Every target position gets a synthetic teacher
top-k (--kd-k entries, the target first): the cost depends on how many positions and k, not on the
values, and a real corpus aligns at most every target. Step time: kd_weight 0 and 1 alternate on one
student for steps + 3 rounds, after one warm-up round; the overhead is the median of the per-round
ratios. Memory: each mode runs alone in a child process, and the parent compares their peaks (CPU:
peak RSS, which includes the loaded model; CUDA: torch.cuda.max_memory_allocated). The term keeps
N x V fp32 student logits for its backward pass (N positions, V the vocabulary): printed beside.
Last line: kd_step_overhead=<ratio> kd_memory_overhead=<ratio> kd_extra_mib=<MiB>
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ray_cotd.config import TrainConfig
from ray_cotd.data.splits import holdout_split
from ray_cotd.student.collate import ROLE_NONE, Batch, collate, plan_batches
from ray_cotd.student.corpus import read_training_rows
from ray_cotd.lm.model import load_tokenizer, native_bfloat16, resolve_precision
from ray_cotd.student.objectives import OBJECTIVES, LossParams
from ray_cotd.student.train import (CPU_MALLOC_TUNABLES, build_student, encode_rows, make_scheduler, train_step,
                                    worker_runtime_env)

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "svamp" / "train_chatgpt_level3.json"
ROWS, WIDTH = 8, 256
WARMUP = 2


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Median FLOP/s of an n x n matmul (after 3 warm-up calls)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def full_rows(examples: list, pad_id: int) -> Batch:
    """ROWS x WIDTH rows filled completely with consecutive real examples (the last one in a row
    cut), positions restarting per example, std_cot targets: the MFU workload."""
    seqs = [s for ex in examples for s in ex]
    ids, pos, tgt, roles, exi = [], [], [], [], []
    k = 0
    for _ in range(ROWS):
        row = ([], [], [], [], [])
        while len(row[0]) < WIDTH:
            s = seqs[k % len(seqs)]
            take = min(len(s), WIDTH - len(row[0]))
            row[0].extend(s.input_ids[:take]); row[1].extend(range(take)); row[2].extend(s.targets[:take])
            row[3].extend(s.roles[:take]); row[4].extend([k] * take)
            k += 1
        for dest, src in zip((ids, pos, tgt, roles, exi), row):
            dest.append(src)
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    shape = (ROWS, WIDTH)
    return Batch(t(ids), t(pos), t(tgt), t(roles), t(exi), torch.full(shape, -1), torch.zeros(shape, dtype=torch.bool),
                 torch.zeros(k, dtype=torch.long))


def time_steps(cfg: TrainConfig, batches: list[Batch], objective: str, steps: int, warmup: int = WARMUP) -> list[float]:
    """Seconds per optimizer step (forward + backward + AdamW) over `batches`, after warmup."""
    student = build_student(cfg)
    student.train()
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    scheduler = make_scheduler(optimizer, cfg)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        train_step(student, student, optimizer, scheduler, [batches[i % len(batches)]], OBJECTIVES[objective],
                   LossParams(alpha=0.3), precision=cfg.precision)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_interleaved(cfg: TrainConfig, work: dict[str, tuple[list[Batch], str]], steps: int,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per optimizer step for each named (batches, objective), their steps alternating on one
    student (step i of every name runs before step i+1 of any), after `warmup` rounds."""
    student = build_student(cfg)
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    scheduler = make_scheduler(optimizer, cfg)
    times: dict[str, list[float]] = {name: [] for name in work}
    for i in range(warmup + steps):
        for name, (batches, objective) in work.items():
            t0 = time.perf_counter()
            train_step(student, student, optimizer, scheduler, [batches[i % len(batches)]], OBJECTIVES[objective],
                       LossParams(alpha=0.3), precision=cfg.precision)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def ray_worker(config: dict) -> dict:
    """TorchTrainer worker: the same timed loop, inside Ray Train."""
    import ray.train

    torch.set_num_threads(config["threads"])
    times = time_steps(config["cfg"], [config["batch"]], "std_cot", config["steps"])
    ray.train.report({"median_step_s": statistics.median(times)})
    return {"times": times}


def through_ray_train(cfg: TrainConfig, batch: Batch, steps: int, threads: int) -> list[float]:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(num_cpus=threads, include_dashboard=True)
    trainer = TorchTrainer(
        ray_worker, train_loop_config={"cfg": cfg, "batch": batch, "steps": steps, "threads": threads},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        run_config=ray.train.RunConfig(name=f"bench-{time.time_ns()}", storage_path="/tmp/ray-cotd-bench",
                                       worker_runtime_env=worker_runtime_env(cfg)),
    )
    return trainer.fit().return_value["times"]


def with_synthetic_kd(batch: Batch, k: int, vocab: int, seed: int = 0) -> Batch:
    """`batch` with a teacher top-k at every target position: k random ids with the target first,
    log-probabilities of a random distribution, best first."""
    positions = (batch.roles.flatten() != ROLE_NONE).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (len(positions), k), generator=g)
    ids[:, 0] = batch.targets.flatten()[positions]
    logprobs = torch.log_softmax(torch.randn(len(positions), k, generator=g) * 2, -1).sort(descending=True).values
    return dataclasses.replace(batch, kd_index=positions, kd_ids=ids, kd_logprobs=logprobs)


def kd_batch(corpus: str, rows: int, k: int) -> tuple[Batch, int]:
    """One packed cascod batch of `rows` real rows with synthetic teacher top-k, and the vocabulary size."""
    tokenizer = load_tokenizer(TrainConfig(corpus=corpus).student)
    train_rows, _, _ = read_training_rows(corpus)
    laid, _ = encode_rows(tokenizer, train_rows[:rows], OBJECTIVES["cascod"], max_seq_len=512)
    batch = collate([s for ex in laid for s in ex], pad_id=tokenizer.pad_token_id, pack=True, capacity=512)
    return with_synthetic_kd(batch, k, len(tokenizer)), len(tokenizer)


def kd_steps(cfg: TrainConfig, batch: Batch, weights: tuple[float, ...], steps: int, device: str) -> dict[float, list[float]]:
    """Seconds per optimizer step for each kd_weight in `weights`, their steps alternating on one
    student (one warm-up round)."""
    student = build_student(cfg).to(device)
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    scheduler = make_scheduler(optimizer, cfg)
    batch = batch.to(device)
    times: dict[float, list[float]] = {w: [] for w in weights}
    for i in range(1 + steps):
        for w in weights:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_step(student, student, optimizer, scheduler, [batch], OBJECTIVES["cascod"],
                       LossParams(alpha=0.3, kd_weight=w), precision=cfg.precision)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 1:
                times[w].append(time.perf_counter() - t0)
    return times


def kd_child_peak(args: argparse.Namespace, weight: float) -> int:
    """Peak memory in bytes of a child process that trains only with kd_weight `weight`."""
    out = subprocess.run([sys.executable, __file__, "--kd-child", str(weight), "--corpus", args.corpus,
                          "--kd-rows", str(args.kd_rows), "--kd-k", str(args.kd_k), "--device", args.device,
                          "--steps", str(args.steps or 3)], env=dict(os.environ), check=True, capture_output=True,
                         text=True).stdout
    return int(out.strip().splitlines()[-1])


def kd_section(args: argparse.Namespace) -> None:
    lora = TrainConfig(peft="lora", precision="auto", objective="cascod", max_steps=1000, lr_schedule="constant")
    batch, vocab = kd_batch(args.corpus, args.kd_rows, args.kd_k)
    if args.kd_child is not None:  # the child of kd_child_peak: one mode alone, then its peak
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        kd_steps(lora, batch, (args.kd_child,), args.steps or 3, args.device)
        peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(peak)
        return
    n = int(batch.kd_index.numel())
    print(f"KD: cascod, LoRA {resolve_precision('auto', args.device)} on {args.device}, {args.kd_rows} rows packed into {tuple(batch.input_ids.shape)}, "
          f"{n} KD positions x top-{args.kd_k}; vocabulary {vocab}: the term keeps {n * vocab * 4 / 2**20:.0f} MiB of "
          "fp32 logits for its backward pass", flush=True)
    times = kd_steps(lora, batch, (0.0, 1.0), (args.steps or 5) + 3, args.device)
    ratio = statistics.median(on / off for off, on in zip(times[0.0], times[1.0]))
    print(f"step without KD {statistics.median(times[0.0]):.3f} s, with KD {statistics.median(times[1.0]):.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in times[1.0])}); median per-round ratio {ratio:.3f}", flush=True)
    off_peak, on_peak = kd_child_peak(args, 0.0), kd_child_peak(args, 1.0)
    kind = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
    print(f"{kind}: without KD {off_peak / 2**20:.0f} MiB, with KD {on_peak / 2**20:.0f} MiB", flush=True)
    print(f"kd_step_overhead={ratio:.3f} kd_memory_overhead={on_peak / off_peak:.3f} "
          f"kd_extra_mib={(on_peak - off_peak) / 2**20:.0f}")


BATCHING_MODES = ("padded", "grouped", "packed")  # padded first: the baseline of each alternating round


def batching_section(lora: TrainConfig, tokenizer: Any, examples: list, n_batches: int,
                     modes: tuple[str, ...] = BATCHING_MODES) -> float:
    """Packing vs randomly ordered padding (and length grouping): real tokens/s over the same number
    of batches of 8 examples, the three batchings alternating batch by batch on one student.
    Prints each mode; returns packed / padded."""
    lengths = [sum(len(s) for s in ex) for ex in examples]
    modes_batches = {}
    for batching in modes:
        plan = plan_batches(lengths, 8, batching=batching, seed=0)[:n_batches]
        modes_batches[batching] = ([collate([s for i in b for s in examples[i]], pad_id=tokenizer.pad_token_id,
                                            pack=batching == "packed", capacity=512) for b in plan], "std_cot")
    batch_times = time_interleaved(lora, modes_batches, n_batches)
    rate = {}
    for batching, (batches, _) in modes_batches.items():
        real = sum(b.real_tokens for b in batches)
        computed = sum(b.input_ids.numel() for b in batches)
        rate[batching] = real / sum(batch_times[batching])
        print(f"{batching}: {rate[batching]:.0f} real tokens/s ({real} real of {computed} computed tokens)", flush=True)
    speedup = rate["packed"] / rate["padded"]
    computed = {batching: sum(b.input_ids.numel() for b in batches) for batching, (batches, _) in modes_batches.items()}
    print(f"packing ceiling (padded / packed computed tokens) {computed['padded'] / computed['packed']:.3f}; "
          f"packed speedup {speedup:.3f}", flush=True)
    if "grouped" in rate:
        print(f"grouped_speedup={rate['grouped'] / rate['padded']:.3f} "
              f"packed_over_grouped={rate['packed'] / rate['grouped']:.3f}", flush=True)
    return speedup


def mfu_batch_and_rows(corpus: str) -> tuple[Any, list, list, Batch]:
    """The tokenizer, the training split's rows and encoded std_cot examples, and the MFU batch."""
    tokenizer = load_tokenizer(TrainConfig(corpus=corpus).student)
    rows, _, _ = read_training_rows(corpus)
    rows, _ = holdout_split(rows, test_fraction=0.2, seed=0)
    examples, _ = encode_rows(tokenizer, rows, OBJECTIVES["std_cot"], max_seq_len=512)
    return tokenizer, rows, examples, full_rows(examples[:64], tokenizer.pad_token_id)


def stock_malloc_step(corpus: str, steps: int) -> float:
    """Median plain-loop full fp32 step in a child process without the malloc tunables."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, __file__, "--plain-full-fp32", str(steps), "--corpus", corpus, "--malloc", "stock"],
                         env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def mode_label(peft: str, precision: str, via_ray: bool) -> str:
    return f"{peft:4s} {precision:8s} ({'Ray Train, 1 worker' if via_ray else 'plain loop'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 timed steps per mode; full fp32 only (Ray and plain); packed vs padded only "
                             "(under 5 minutes here)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 5; 2 with --quick)")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--packing-batches", type=int, default=None, help="batches per batching mode (default 6)")
    parser.add_argument("--packing-only", action="store_true",
                        help="only the batching comparison (section 4); its last line is packing_speedup=<ratio>")
    parser.add_argument("--malloc", choices=("cache", "stock"), default="cache",
                        help="cache: run with the training workers' glibc malloc tunables (default); stock: without")
    parser.add_argument("--kd-only", action="store_true",
                        help="only the token-level KD cost (step time and memory of kd_weight 1 vs 0); its last line is "
                             "kd_step_overhead=<ratio> kd_memory_overhead=<ratio> kd_extra_mib=<MiB>")
    parser.add_argument("--kd-rows", type=int, default=8, help="--kd-only: real rows in the batch")
    parser.add_argument("--kd-k", type=int, default=20, help="--kd-only: teacher top-k per position")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="--kd-only: where the student trains")
    parser.add_argument("--plain-full-fp32", type=int, metavar="STEPS", help=argparse.SUPPRESS)
    parser.add_argument("--kd-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.malloc == "cache" and os.environ.get("GLIBC_TUNABLES") != CPU_MALLOC_TUNABLES:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": CPU_MALLOC_TUNABLES})
    if args.kd_only or args.kd_child is not None:
        kd_section(args)
        return
    if args.plain_full_fp32:  # the child of stock_malloc_step
        cfg = TrainConfig(peft="full", precision="float32", objective="std_cot", max_steps=1000, lr_schedule="constant")
        print(statistics.median(time_steps(cfg, [mfu_batch_and_rows(args.corpus)[3]], "std_cot", args.plain_full_fp32)))
        return
    steps = args.steps or (2 if args.quick else 5)
    n_batches = args.packing_batches or 6
    threads = torch.get_num_threads()
    bf16 = native_bfloat16("cpu")
    if not bf16:
        print("no bf16 path on this CPU (native_bfloat16 False): bf16 peak and modes skipped, LoRA at fp32", flush=True)

    if not args.packing_only:
        peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16) if bf16 else float("nan")
        print(f"peak at start: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s ({threads} threads)",
              flush=True)

    print(f"malloc: {args.malloc} (GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')})", flush=True)
    tokenizer, rows, examples, mfu_batch = mfu_batch_and_rows(args.corpus)
    tokens = ROWS * WIDTH

    lora = TrainConfig(peft="lora", precision="auto", max_steps=1000, lr_schedule="constant")
    if args.packing_only:
        speedup = batching_section(lora, tokenizer, examples, n_batches)
        print(f"packing_speedup={speedup:.3f}")
        return

    n_params = sum(p.numel() for p in build_student(TrainConfig(peft="full", objective="std_cot")).lm.parameters())
    step_s, flops_s = {}, {}
    # full fp32 runs twice, through Ray Train and in a plain loop, so Ray's cost is measured side by side
    modes = [("full", "float32", True), ("full", "float32", False)]
    if not args.quick:
        modes += [("lora", "bfloat16", False), ("full", "bfloat16", False)] if bf16 else []
        modes += [("lora", "float32", False)]
    for peft, precision, via_ray in modes:
        cfg = TrainConfig(peft=peft, precision=precision, objective="std_cot", max_steps=1000, lr_schedule="constant",
                          cpu_malloc_cache=args.malloc == "cache")
        times = through_ray_train(cfg, mfu_batch, steps, threads) if via_ray else time_steps(cfg, [mfu_batch], "std_cot", steps)
        step = step_s[(peft, precision, via_ray)] = statistics.median(times)
        flops = flops_s[(peft, precision, via_ray)] = (6 if peft == "full" else 4) * n_params * tokens / step
        print(f"{mode_label(peft, precision, via_ray)}: step {step:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}), "
              f"{tokens / step:.0f} tokens/s, {flops / 1e9:.1f} GFLOP/s", flush=True)

    # cascod vs std_cot: the same 8 real rows, LoRA at precision auto (the fastest mode), packed; the two
    # objectives' steps alternate on one student, so machine noise hits both alike
    pairs = {}
    for name in ("std_cot", "cascod"):
        laid, _ = encode_rows(tokenizer, rows[:8], OBJECTIVES[name], max_seq_len=512)
        pairs[name] = ([collate([s for ex in laid for s in ex], pad_id=tokenizer.pad_token_id, pack=True,
                                capacity=512)], name)
    pair_times = time_interleaved(lora, pairs, steps + 3)
    step_time = {name: statistics.median(t) for name, t in pair_times.items()}
    for name, (batches, _) in pairs.items():
        print(f"{name}: step {step_time[name]:.2f} s on {batches[0].real_tokens} tokens "
              f"(runs {', '.join(f'{t:.2f}' for t in pair_times[name])})", flush=True)
    ratio = statistics.median(c / s for c, s in zip(pair_times["cascod"], pair_times["std_cot"]))
    print(f"cascod / std_cot: median of per-round ratios {ratio:.3f} "
          f"(ratio of medians {step_time['cascod'] / step_time['std_cot']:.3f})", flush=True)

    speedup = batching_section(lora, tokenizer, examples, n_batches,
                               tuple(m for m in BATCHING_MODES if not (args.quick and m == "grouped")))
    end32, end16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16) if bf16 else float("nan")
    peak32, peak16 = max(peak32, end32), max(peak16, end16)
    print(f"peak at end: fp32 {end32 / 1e9:.1f} GFLOP/s, bf16 {end16 / 1e9:.1f} GFLOP/s; MFU uses the higher: "
          f"fp32 {peak32 / 1e9:.1f}, bf16 {peak16 / 1e9:.1f}", flush=True)
    results = {}
    for (peft, precision, via_ray), flops in flops_s.items():
        results[(peft, precision, via_ray)] = mfu = flops / (peak32 if precision == "float32" else peak16)
        print(f"MFU {mode_label(peft, precision, via_ray)}: {mfu:.3f}", flush=True)
    if not args.quick and args.malloc == "cache":
        stock = stock_malloc_step(args.corpus, steps)
        print(f"full fp32 plain loop with stock malloc (child process): step {stock:.2f} s; "
              f"malloc_cache_speedup={stock / step_s[('full', 'float32', False)]:.3f}", flush=True)
    ray_mfu, plain_mfu = results[("full", "float32", True)], results[("full", "float32", False)]
    print(f"full fp32: Ray Train MFU / plain-loop MFU = {ray_mfu / plain_mfu:.3f}", flush=True)
    print(f"mfu_full_fp32={ray_mfu:.3f} cascod_over_std_cot={ratio:.3f} packing_speedup={speedup:.3f}")


if __name__ == "__main__":
    main()
