"""Ray Train reports per step against reports at checkpoints and validations only: the loop's pace.

    python bench/train_reports.py [--quick] [--steps N] [--rounds R] [--corpus PATH]

Ray Train V2's controller takes one `ray.train.report` per worker per poll (every
RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default) through a queue of one, so a loop that reports
every step cannot go faster than one step per poll, however short its steps are.
`TrainConfig.report_every` sets the cadence (0, the default: checkpoints and validations only).

Each round trains the real default student (SmolLM2-135M-Instruct, LoRA, precision auto:
bf16 autocast where the CPU runs bf16 natively, else float32) through
`run_train`, the function `ray-cotd train` calls, once with `report_every=1` (what the loop did
before) and once with the default, the order alternating between rounds, on one local Ray cluster.
Rows: SVAMP GPT-4o level-1 rationales from ../shared/data (third-party, not in this repo), batch
2, so a step is about a second on 2 CPU cores. Per run, from metrics.jsonl: the loop's seconds per
step (wall clock between the first and the last step's record) and the median compute time of a
step (`step_s`: batch, forward, backward, optimizer). Medians over rounds.

Last line: `every_step_over_default=<loop s/step ratio> default_loop_over_compute=<ratio>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ray_cotd.config import ModelSpec, TrainConfig
from ray_cotd.ray_session import start_local_cluster
from ray_cotd.student.train import run_train

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "svamp" / "train_chatgpt_level1.json"


def train_config(corpus: Path, out: Path, *, steps: int, report_every: int) -> TrainConfig:
    return TrainConfig(
        corpus=str(corpus), student=ModelSpec(), objective="std_cot", peft="lora", precision="auto",
        num_workers=1, cpus_per_worker=2.0, batch_size=2, max_steps=steps, checkpoint_every=steps,
        max_seq_len=320, lr=1e-3, warmup_steps=2, val_fraction=0.0, report_every=report_every,
        output_dir=str(out), name=f"reports{report_every}", max_failures=0,
    )


def pace(cfg: TrainConfig) -> dict[str, float]:
    started = time.perf_counter()
    summary = run_train(cfg)
    wall = time.perf_counter() - started
    history = [json.loads(line) for line in Path(summary["metrics_log"]).read_text().splitlines() if line.strip()]
    steps = [h for h in history if "loss" in h]
    loop = (steps[-1]["time"] - steps[0]["time"]) / (len(steps) - 1)
    compute = statistics.median(h["step_s"] for h in steps[1:])
    return {"loop_s": loop, "compute_s": compute, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 40 steps")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 40, 1
    if not args.corpus.exists():
        raise SystemExit(f"corpus not found: {args.corpus} (pass --corpus; ../shared/data is not shipped)")

    start_local_cluster(num_cpus=2)
    runs: dict[int, list[dict[str, float]]] = {1: [], 0: []}
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        for r in range(args.rounds):
            for every in ((1, 0) if r % 2 == 0 else (0, 1)):
                result = pace(train_config(args.corpus, Path(tmp) / f"r{r}-every{every}", steps=args.steps,
                                           report_every=every))
                runs[every].append(result)
                print(f"[bench] round {r + 1} report_every={every}: loop {result['loop_s']:.3f} s/step, "
                      f"compute {result['compute_s']:.3f} s/step, run {result['wall_s']:.0f} s", flush=True)
    med = {every: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for every, rs in runs.items()}
    for every, m in med.items():
        print(f"[bench] report_every={every}: median loop {m['loop_s']:.3f} s/step, compute {m['compute_s']:.3f} "
              f"s/step, {args.steps} steps in {m['wall_s']:.0f} s", flush=True)
    print(f"every_step_over_default={med[1]['loop_s'] / med[0]['loop_s']:.3f} "
          f"default_loop_over_compute={med[0]['loop_s'] / med[0]['compute_s']:.3f}", flush=True)


if __name__ == "__main__":
    main()
