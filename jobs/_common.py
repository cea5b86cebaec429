"""The one piece every job shares: parse `CONFIG.yaml [key=value ...]`, then run the stage.

A job is `python jobs/<stage>.py CONFIG.yaml [key=value ...]`, run by `ray job submit` (or by hand).
The config is parsed before anything heavy is imported (Ray, torch, the stage's library module),
so a typo in a key fails the job within seconds, with the config error as the last line of its log.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ray_cotd.cli import user_errors
from ray_cotd.config import ConfigError, describe_stage, load_stage_config

CONFIG_ERROR_EXIT = 2  # argparse's code for a bad command line; a bad config is the same kind of mistake
STAGE_ERROR_EXIT = 2  # bad input found while running, or nothing produced: `ray-cotd <stage>` exits the same


def run_stage(stage: str, run: Callable[[Any], Any], argv: list[str] | None = None) -> int:
    """Load `stage`'s config from argv, hand it to `run`, return the process exit code.

    `run` imports its library function inside itself, so nothing heavy loads before the config
    has parsed. Errors that mean bad input or an empty result (ray_cotd.cli.user_errors: a config,
    data or model-path error, an output_dir in use, an annotation that kept nothing) print one
    line and exit with STAGE_ERROR_EXIT, which marks the Ray job FAILED; any other error
    propagates with its traceback: a failed stage must show where it failed.
    """
    parser = argparse.ArgumentParser(
        prog=f"jobs/{stage}.py",
        description=f"Run the {stage} stage from a YAML config plus key=value overrides.",
        epilog=f"{stage} config keys:\n{describe_stage(stage)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys (lora_r=8)")
    args = parser.parse_args(argv)
    try:
        cfg = load_stage_config(stage, args.config, args.overrides)
    except ConfigError as err:
        print(f"config error ({stage}): {err}", file=sys.stderr, flush=True)
        return CONFIG_ERROR_EXIT
    print(f"[{stage}] config {args.config} loaded" + (f" with {' '.join(args.overrides)}" if args.overrides else ""), flush=True)
    try:
        result = run(cfg)
    except user_errors() as err:
        print(f"{stage} failed: {err}", file=sys.stderr, flush=True)
        return STAGE_ERROR_EXIT
    if result is not None:
        print(f"[{stage}] result: {result}", flush=True)
    return 0


def main(stage: str, run: Callable[[Any], Any]) -> None:
    """Entry point of `jobs/<stage>.py`: exit with `run_stage`'s code (non-zero fails the Ray job)."""
    sys.exit(run_stage(stage, run))
