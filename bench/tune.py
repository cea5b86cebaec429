"""ASHA against running every trial to the end: training steps spent, and whether both pick the same best.

    python bench/tune.py [--quick] [--data DIR]

Runs the same sweep twice through `ray_cotd.tune.run_tune` on the real default student: once with
ASHA early stopping (the `ray-cotd tune` default) and once with ASHA's rungs out of reach
(grace_period = max_steps, so every trial runs to the end). OptunaSearch is seeded and every trial
count stays within TPE's random start-up phase, so both sweeps try the same configurations in the
same order. Levels are SVAMP teacher corpora from ../shared/data (third-party data, not in this repo).

Last line: `asha_steps_over_full=<ratio> same_best=<0|1>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray

from ray_cotd.config import load_stage_config
from ray_cotd.tune import run_tune

REPO = Path(__file__).resolve().parents[1]


def sweep_overrides(data: Path, out: Path, *, trials: int, steps: int, grace: int) -> list[str]:
    return [
        f"level_corpora={{'1': '{data / 'svamp' / 'train_chatgpt_level1.json'}', "
        f"'6': '{data / 'svamp' / 'train_chatgpt_level6.json'}'}}",
        "search_levels=[1,6]", "search_alpha=[0.1,0.9]", f"num_samples={trials}", "max_concurrent_trials=1",
        "metric=val_loss", "mode=min", f"grace_period={grace}", "reduction_factor=2",
        f"output_dir={out}", "name=bench",
        "train.objective=cascod", "train.peft=lora", "train.lora_r=4", "train.lora_alpha=8", "train.batch_size=2",
        f"train.max_steps={steps}", "train.max_seq_len=160", "train.lr=1e-3", "train.lr_schedule=constant",
        "train.val_every=1", "train.val_fraction=0.02", f"train.checkpoint_every={steps}",
        "train.num_workers=1", "train.cpus_per_worker=1.0", "train.seed=0",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 trials of 4 steps (a few minutes)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    trials = args.trials or (3 if args.quick else 8)
    steps = args.steps or (4 if args.quick else 12)
    data = Path(args.data)
    if not (data / "svamp").is_dir():
        raise SystemExit(f"needs the SVAMP corpora under {data} (pass --data)")

    ray.init(num_cpus=2, include_dashboard=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, grace in (("asha", 1), ("full", steps)):
            t0 = time.perf_counter()
            cfg = load_stage_config("tune", None, sweep_overrides(data, Path(tmp) / name, trials=trials,
                                                                 steps=steps, grace=grace))
            summary = run_tune(cfg)
            results[name] = {**summary, "wall_s": round(time.perf_counter() - t0, 1)}
            print(f"[bench] {name}: {summary['trials']} trials, {summary['total_steps']} steps, "
                  f"{summary['stopped_early']} stopped early, best {summary['best_params']}, "
                  f"{results[name]['wall_s']} s", flush=True)
    ray.shutdown()
    ratio = results["asha"]["total_steps"] / results["full"]["total_steps"]
    same = int(results["asha"]["best_params"] == results["full"]["best_params"])
    print(json.dumps({k: {kk: v[kk] for kk in ("total_steps", "stopped_early", "best_params", "wall_s")}
                      for k, v in results.items()}, default=str))
    print(f"asha_steps_over_full={ratio:.3f} same_best={same}")


if __name__ == "__main__":
    main()
