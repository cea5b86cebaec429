"""`ray-cotd`: one command per stage, each taking a YAML config plus `key=value` overrides.

    ray-cotd annotate CONFIG [key=value ...]     teacher rationales on Ray Data
    ray-cotd train    CONFIG [key=value ...]     student fine-tuning on Ray Train
    ray-cotd evaluate CONFIG [key=value ...]     IND/OOD accuracy report
    ray-cotd tune     CONFIG [key=value ...]     α / λ / granularity search on Ray Tune
    ray-cotd serve    CONFIG [key=value ...]     two-stage endpoint on Ray Serve
    ray-cotd pipeline CONFIG [key=value ...]     annotate -> train -> evaluate (-> tune, serve)
    ray-cotd inspect  PATH [mapping options]     rows, parse failures, marker coverage, gold agreement
    ray-cotd report   RUN_DIR ...                compare earlier evaluation runs

`--print-config` shows the resolved config without running; `--help-config` lists every key.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable

from ray_cotd.configbase import ConfigError

# stage -> (module, function). The function takes the stage's typed config and returns a summary.
STAGE_RUNNERS: dict[str, tuple[str, str]] = {
    "annotate": ("ray_cotd.teacher.annotate", "run_annotate"),
    "train": ("ray_cotd.student.train", "run_train"),
    "evaluate": ("ray_cotd.evaluate", "run_evaluate"),
    "tune": ("ray_cotd.tune", "run_tune"),
    "serve": ("ray_cotd.serve", "run_serve"),
    "pipeline": ("ray_cotd.pipeline", "run_pipeline"),
}

STAGE_HELP = {
    "annotate": "annotate questions with teacher rationales (Ray Data)",
    "train": "fine-tune a student with a distillation objective (Ray Train)",
    "evaluate": "score students on IND/OOD test sets and write a report",
    "tune": "search alpha, lambda and granularity level (Ray Tune + Optuna + ASHA)",
    "serve": "serve a student's two-stage answers over HTTP (Ray Serve)",
    "pipeline": "annotate -> train -> evaluate (-> tune, serve) under one run directory",
}


class NotImplementedYet(RuntimeError):
    """A stage whose implementation is not in this version of ray-cotd."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input: printed as one clear line, no traceback."""
    from ray_cotd.data.errors import DataError
    from ray_cotd.lm.model import ModelLoadError

    return (ConfigError, DataError, ModelLoadError, NotImplementedYet, FileNotFoundError)


def resolve_runner(stage: str) -> Callable[[Any], Any]:
    module_name, func_name = STAGE_RUNNERS[stage]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise NotImplementedYet(f"`ray-cotd {stage}` is not implemented yet in this version") from None
        raise
    return getattr(module, func_name)


def _run_stage(args: argparse.Namespace) -> int:
    from ray_cotd.config import describe_stage, load_stage_config

    if args.help_config:
        print(f"keys of the {args.command} config (YAML or key=value):\n{describe_stage(args.command)}")
        return 0
    if args.config is None:
        raise ConfigError(f"`ray-cotd {args.command}` needs a CONFIG file (see --help-config for its keys)")
    cfg = load_stage_config(args.command, args.config, args.overrides)
    if args.print_config:
        import yaml

        from ray_cotd.configbase import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    runner = resolve_runner(args.command)
    summary = runner(cfg)
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from ray_cotd.data.inspect import format_inspect, inspect_path
    from ray_cotd.config import MappingSpec

    columns = {k: getattr(args, k) for k in ("question", "output", "answer", "gold", "domain")}
    mapping = MappingSpec(preset=args.preset, **columns).field_mapping()
    report = inspect_path(
        args.path, mapping, answer_type=args.answer_type, lenient=args.lenient, gold_path=args.gold_file
    )
    print(json.dumps(report, indent=2, default=str) if args.json else format_inspect(report))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    module = importlib.import_module("ray_cotd.evaluate")
    summary = module.run_report(args.run_dirs, args.output_dir)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-cotd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ray_cotd import __version__

    parser.add_argument("--version", action="version", version=f"ray-cotd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, help_text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=help_text, description=help_text)
        p.add_argument("config", nargs="?", help="YAML config file")
        p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for sections)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.add_argument("--help-config", action="store_true", help="list every config key with its doc")
        p.set_defaults(func=_run_stage)

    p = sub.add_parser("inspect", help="rows, parse failures, marker coverage and gold agreement of a data file")
    p.add_argument("path", help="JSON/JSONL/Parquet/CSV file, HF datasets dir or hub id")
    p.add_argument("--preset", choices=["alpaca", "testset", "arc", "plain"], help="field-mapping preset (default: detect)")
    for col in ("question", "output", "answer", "gold", "domain"):
        p.add_argument(f"--{col}", metavar="COLUMN", help=f"column holding the {col}")
    p.add_argument("--answer-type", choices=["numeric", "boolean", "multiple_choice", "text"], help="default: infer")
    p.add_argument("--lenient", action="store_true", help="also read answers from outputs without the marker")
    p.add_argument("--gold-file", metavar="PATH", help="gold answers aligned by question (e.g. train_answer_only.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_inspect)

    p = sub.add_parser("report", help="compare earlier evaluation runs without re-evaluating")
    p.add_argument("run_dirs", nargs="+", help="evaluation output directories")
    p.add_argument("--output-dir", default="runs/report", help="where the comparison goes")
    p.set_defaults(func=_run_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as err:
        print(f"ray-cotd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
