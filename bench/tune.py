"""ASHA against running every trial to the end: training steps spent, and whether both pick the same best.

    python bench/tune.py [--quick] [--data DIR]

Runs the same sweep twice on the real default student, each as `ray-cotd tune CONFIG` (a separate
process, as a user runs it): once with ASHA early stopping (the `ray-cotd tune` default) and once
with ASHA's rungs out of reach (grace_period = max_steps, so every trial runs to the end).
OptunaSearch is seeded and every trial count stays within TPE's random start-up phase, so both
sweeps try the same configurations in the same order. Levels are SVAMP teacher corpora from
../shared/data (third-party data, not in this repo).

Both sweeps run at the same time on one local Ray cluster of 2 CPUs, because a short trial is
mostly Ray Train start-up and model loading (~30 s on a quiet machine), which overlaps well: the
ASHA sweep runs one trial at a time (its stopping decisions would otherwise depend on which trial
reports first), the full sweep two (no trial of it stops early, so timing cannot change it). Each
trial is a 1-thread Train worker of 0.65 logical CPUs plus the 0.01-CPU trial actor: 3 x 0.66 <= 2.

Last line: `asha_steps_over_full=<ratio> same_best=<0|1>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml

from ray_cotd.ray_session import start_local_cluster

REPO = Path(__file__).resolve().parents[1]


def sweep_config(data: Path, out: Path, *, name: str, trials: int, concurrent: int, steps: int, grace: int,
                 max_seq_len: int) -> dict:
    return {
        "level_corpora": {level: str(data / "svamp" / f"train_chatgpt_level{level}.json") for level in ("1", "6")},
        "search_levels": [1, 6], "search_alpha": [0.1, 0.9], "num_samples": trials,
        "max_concurrent_trials": concurrent, "metric": "val_loss", "mode": "min", "grace_period": grace,
        "reduction_factor": 2,
        # Distinct names: Tune stages two experiments of one name started together in one directory.
        "output_dir": str(out), "name": name,
        "train": {
            "objective": "cascod", "peft": "lora", "lora_r": 4, "lora_alpha": 8, "batch_size": 2,
            "max_steps": steps, "max_seq_len": max_seq_len, "lr": 1e-3, "lr_schedule": "constant",
            "val_every": 1, "val_fraction": 0.02, "checkpoint_every": steps,
            "num_workers": 1, "cpus_per_worker": 0.65, "seed": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 trials of 4 steps, max_seq_len 128 (under 5 minutes)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--keep", default=None, help="write both sweeps (configs, logs, results) to this new dir")
    args = parser.parse_args()
    trials = args.trials or (3 if args.quick else 8)
    steps = args.steps or (4 if args.quick else 12)
    max_seq_len = 128 if args.quick else 160
    data = Path(args.data)
    if not (data / "svamp").is_dir():
        raise SystemExit(f"needs the SVAMP corpora under {data} (pass --data)")
    if args.keep and Path(args.keep).exists():
        raise SystemExit(f"--keep {args.keep}: exists; give a new directory (an existing sweep would resume)")

    t_start = time.perf_counter()
    ctx = start_local_cluster(num_cpus=2, include_dashboard=True)  # one cluster for both sweeps
    env = {**os.environ, "RAY_ADDRESS": ctx.address_info["address"]}  # the sweeps join it
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        procs = {}
        for name, grace, concurrent in (("asha", 1, 1), ("full", steps, 2)):
            cfg_path = Path(tmp) / f"{name}.yaml"
            out = Path(tmp) / name
            cfg_path.write_text(yaml.safe_dump(sweep_config(
                data, out, name=name, trials=trials, concurrent=concurrent, steps=steps, grace=grace,
                max_seq_len=max_seq_len)))
            log = open(Path(tmp) / f"{name}.log", "w")
            procs[name] = (subprocess.Popen([sys.executable, "-m", "ray_cotd.cli", "tune", str(cfg_path)],
                                            env=env, stdout=log, stderr=subprocess.STDOUT),
                           log, out, time.perf_counter())
        ended: dict[str, float] = {}
        while len(ended) < len(procs):  # each sweep's own wall time, whichever finishes first
            for name, (proc, *_) in procs.items():
                if name not in ended and proc.poll() is not None:
                    ended[name] = time.perf_counter()
            time.sleep(1)
        for name, (proc, log, out, t0) in procs.items():
            rc, wall = proc.returncode, round(ended[name] - t0, 1)
            log.close()
            if rc != 0:
                print(Path(log.name).read_text()[-6000:], file=sys.stderr)
                raise SystemExit(f"the {name} sweep failed (exit {rc})")
            summary = json.loads((out / "summary.json").read_text())
            results[name] = {**summary, "wall_s": wall}
            print(f"[bench] {name}: {summary['trials']} trials, {summary['total_steps']} steps, "
                  f"{summary['stopped_early']} stopped early, best {summary['best_params']}, {wall} s", flush=True)
    ray.shutdown()
    ratio = results["asha"]["total_steps"] / results["full"]["total_steps"]
    same = int(results["asha"]["best_params"] == results["full"]["best_params"])
    print(json.dumps({**{k: {kk: v[kk] for kk in ("total_steps", "stopped_early", "best_params", "wall_s")}
                         for k, v in results.items()},
                      "total_wall_s": round(time.perf_counter() - t_start, 1)}, default=str))
    print(f"asha_steps_over_full={ratio:.3f} same_best={same}")


if __name__ == "__main__":
    main()
