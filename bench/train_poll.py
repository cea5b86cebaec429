"""Ray Train's fixed cost at Ray's default controller poll (2 s) against a 0.2-s poll.

    python bench/train_poll.py [--rounds R] [--reports K] [--real [--steps N] [--corpus PATH]]

Ray Train V2's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
default) and takes at most one `ray.train.report` per worker per poll, so a run of a few steps
waits for a poll at each report and at its end, as do a user's many short runs (a sweep's
trials). Ray Train passes the driver's value on to its controller, so the bench sets it in its own
environment before each run.

Each round fits, once per interval (the order alternating between rounds, on one local Ray
cluster, after one uncounted fit that warms the cluster):
- by default, a TorchTrainer with two workers of one CPU whose function only calls
  `ray.train.report` K times: the fixed cost alone (worker-group start, torch's process group,
  reports, teardown);
- with --real, the real default student (SmolLM2-135M-Instruct, LoRA, precision auto) for a few
  steps through `run_train`, the function `ray-cotd train` calls, with two workers of one CPU as
  tests/integration/test_train_ray.py does. Rows: SVAMP GPT-4o level-1 rationales from
  ../shared/data (third-party, not in this repo).
Per fit: the wall clock. Medians over rounds.

Last line: `default_fit_s=<median> fast_fit_s=<median> default_over_fast=<ratio>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ray_cotd.config import TrainConfig
from ray_cotd.ray_session import start_local_cluster
from train_reports import DEFAULT_CORPUS, train_config  # bench/ is the script's own directory

POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
DEFAULT_POLL, FAST_POLL = "2.0", "0.2"


def noop_fit(storage: Path, reports: int) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer

    def loop(config: dict) -> None:
        for i in range(config["reports"]):
            ray.train.report({"i": i})

    TorchTrainer(loop, train_loop_config={"reports": reports},
                 scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                 run_config=ray.train.RunConfig(name="poll", storage_path=str(storage))).fit()


def real_config(corpus: Path, out: Path, steps: int) -> TrainConfig:
    """bench/train_reports.py's run (reports at checkpoints only) on two workers of one CPU."""
    return dataclasses.replace(train_config(corpus, out, steps=steps, report_every=0), num_workers=2,
                               cpus_per_worker=1.0, warmup_steps=1, name="poll")


def real_fit(corpus: Path, out: Path, steps: int) -> None:
    from ray_cotd.student.train import run_train

    run_train(real_config(corpus, out, steps))


def timed(fit: Callable[[Path], None], out: Path, poll: str) -> float:
    os.environ[POLL_ENV] = poll
    started = time.perf_counter()
    fit(out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reports", type=int, default=3, help="reports per no-op fit")
    parser.add_argument("--real", action="store_true", help="a real run_train of --steps steps instead")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    if args.real and not args.corpus.exists():
        raise SystemExit(f"corpus not found: {args.corpus} (pass --corpus; ../shared/data is not shipped)")

    def fit(out: Path) -> None:
        if args.real:
            real_fit(args.corpus, out, args.steps)
        else:
            noop_fit(out, args.reports)

    what = f"run_train of {args.steps} steps" if args.real else f"no-op fit, {args.reports} reports"
    start_local_cluster(num_cpus=2)
    walls: dict[str, list[float]] = {DEFAULT_POLL: [], FAST_POLL: []}
    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
        print(f"[bench] warm-up {what} (not counted): {timed(fit, Path(tmp) / 'warmup', FAST_POLL):.1f} s", flush=True)
        for r in range(args.rounds):
            for poll in ((DEFAULT_POLL, FAST_POLL) if r % 2 == 0 else (FAST_POLL, DEFAULT_POLL)):
                wall = timed(fit, Path(tmp) / f"r{r}-poll{poll}", poll)
                walls[poll].append(wall)
                print(f"[bench] round {r + 1} {POLL_ENV}={poll}: {what} in {wall:.1f} s", flush=True)
    med = {poll: statistics.median(w) for poll, w in walls.items()}
    for poll, w in walls.items():
        print(f"[bench] {POLL_ENV}={poll}: median {med[poll]:.1f} s ({', '.join(f'{x:.1f}' for x in w)})", flush=True)
    print(f"default_fit_s={med[DEFAULT_POLL]:.1f} fast_fit_s={med[FAST_POLL]:.1f} "
          f"default_over_fast={med[DEFAULT_POLL] / med[FAST_POLL]:.3f}", flush=True)


if __name__ == "__main__":
    main()
