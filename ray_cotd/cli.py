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
Each stage's module is imported only when its command runs, so `--help` and `inspect` start
without torch or Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import yaml

from ray_cotd import names
from ray_cotd.config import (
    AnnotateConfig,
    EvaluateConfig,
    MappingSpec,
    PipelineConfig,
    ServeConfig,
    TrainConfig,
    TuneConfig,
    describe_stage,
    load_stage_config,
)
from ray_cotd.configbase import ConfigError, to_dict
from ray_cotd.data.answers import ANSWER_TYPES
from ray_cotd.data.readers import MAPPING_PRESETS


# -- one runner per stage: takes the stage's typed config, returns its summary -----------------


def annotate(cfg: AnnotateConfig) -> dict[str, Any]:
    from ray_cotd.teacher.annotate import run_annotate

    return run_annotate(cfg)


def train(cfg: TrainConfig) -> dict[str, Any]:
    from ray_cotd.student.train import run_train

    return run_train(cfg)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    from ray_cotd.evaluate import run_evaluate

    return run_evaluate(cfg)


def tune(cfg: TuneConfig) -> dict[str, Any]:
    from ray_cotd.tune import run_tune

    return run_tune(cfg)


def serve(cfg: ServeConfig) -> str:
    from ray_cotd.serve import run_serve

    return run_serve(cfg)


def pipeline(cfg: PipelineConfig) -> None:
    """Prints its own short table; the whole summary is in run_dir/summary.json."""
    from ray_cotd.pipeline import run_pipeline

    run_pipeline(cfg)


STAGE_RUNNERS: dict[str, Callable[[Any], Any]] = {
    "annotate": annotate,
    "train": train,
    "evaluate": evaluate,
    "tune": tune,
    "serve": serve,
    "pipeline": pipeline,
}
names.require_keys("cli.STAGE_RUNNERS", STAGE_RUNNERS, names.STAGES)


def resolve_runner(stage: str) -> Callable[[Any], Any]:
    """The runner of `stage` (studies/run.py calls the stages through this, like the CLI)."""
    return STAGE_RUNNERS[stage]


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or a run that produced nothing: printed as one clear line, no
    traceback, exit code 2 (the CLI and jobs/_common.py alike)."""
    from ray_cotd.data.errors import DataError
    from ray_cotd.lm.model import ModelLoadError
    from ray_cotd.teacher.annotate import NothingKept
    from ray_cotd.teacher.engines import EngineRequestError

    return (ConfigError, DataError, ModelLoadError, FileNotFoundError, NothingKept, EngineRequestError)


def _run_stage(args: argparse.Namespace) -> int:
    if args.help_config:
        print(f"keys of the {args.command} config (YAML or key=value):\n{describe_stage(args.command)}")
        return 0
    if args.config is None:
        raise ConfigError(f"`ray-cotd {args.command}` needs a CONFIG file (see --help-config for its keys)")
    overrides = args.overrides + (["verbose=true"] if args.verbose else [])
    cfg = load_stage_config(args.command, args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    summary = resolve_runner(args.command)(cfg)
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from ray_cotd.data.inspect import format_inspect, inspect_path

    columns = {k: getattr(args, k) for k in ("question", "output", "answer", "gold", "domain")}
    mapping = MappingSpec(preset=args.preset, **columns).field_mapping()
    report = inspect_path(
        args.path, mapping, answer_type=args.answer_type, lenient=args.lenient, gold_path=args.gold_file,
        test_sets=args.test_set,
    )
    print(json.dumps(report, indent=2, default=str) if args.json else format_inspect(report))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from ray_cotd.evaluate import run_report

    summary = run_report(args.run_dirs, args.output_dir)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _run_cache(args: argparse.Namespace) -> int:
    from ray_cotd.lm.cache import cache_entries, format_entries, prune_merged
    from ray_cotd.lm.model import cache_root

    if not args.prune:
        if args.older_than is not None or args.orphaned or args.dry_run:
            raise ConfigError("--older-than, --orphaned and --dry-run go with --prune")
        print(format_entries(cache_entries(), cache_root()))
        return 0
    try:
        pruned = prune_merged(older_than_days=args.older_than, orphaned_only=args.orphaned, dry_run=args.dry_run)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    verb = "would delete" if args.dry_run else "deleted"
    for entry in pruned:
        print(f"{verb} {entry.path} ({entry.bytes / 1e9:.2f} GB)")
    print(f"{verb} {len(pruned)} merged copies, {sum(e.bytes for e in pruned) / 1e9:.2f} GB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-cotd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ray_cotd import __version__

    parser.add_argument("--version", action="version", version=f"ray-cotd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, help_text in names.STAGES.items():
        p = sub.add_parser(stage, help=help_text, description=help_text)
        p.add_argument("config", nargs="?", help="YAML config file")
        p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for sections)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.add_argument("--help-config", action="store_true", help="list every config key with its doc")
        if stage == "pipeline":
            p.add_argument("--verbose", action="store_true",
                           help="framework logs on the terminal too (default: only in RUN_DIR/framework.log)")
        p.set_defaults(func=_run_stage, verbose=False)

    p = sub.add_parser("inspect", help="rows, parse failures, marker coverage and gold agreement of a data file")
    p.add_argument("path", help="JSON/JSONL/Parquet/CSV file, HF datasets dir or hub id")
    p.add_argument("--preset", choices=list(MAPPING_PRESETS), help="field-mapping preset (default: detect)")
    for col in ("question", "output", "answer", "gold", "domain"):
        p.add_argument(f"--{col}", metavar="COLUMN", help=f"column holding the {col}")
    p.add_argument("--answer-type", choices=list(ANSWER_TYPES), help="default: infer")
    p.add_argument("--lenient", action="store_true", help="also read answers from outputs without the marker")
    p.add_argument("--gold-file", metavar="PATH", help="gold answers aligned by question (e.g. train_answer_only.json)")
    p.add_argument("--test-set", metavar="PATH", action="append", default=[],
                   help="report this file's questions that overlap a test set's (normalized exact match, "
                        "13-gram); repeatable")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_inspect)

    p = sub.add_parser("cache", help="list the model cache (RAY_COTD_CACHE); --prune deletes merged LoRA copies",
                       description="List the model cache: GGUF conversions (models/) and LoRA students merged for "
                                   "vLLM on CPU (merged/, one per student and dtype), with sizes and last use. "
                                   "--prune deletes merged copies; every copy is remade when a run needs it.")
    p.add_argument("--prune", action="store_true", help="delete merged LoRA copies (all, or those chosen below)")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="only copies unused for DAYS days")
    p.add_argument("--orphaned", action="store_true", help="only copies whose adapter directory is gone")
    p.add_argument("--dry-run", action="store_true", help="say what --prune would delete, delete nothing")
    p.set_defaults(func=_run_cache)

    p = sub.add_parser("report", help="compare earlier evaluation runs without re-evaluating")
    p.add_argument("run_dirs", nargs="+", help="evaluation output directories")
    p.add_argument("--output-dir", default="runs/report", help="where the comparison goes")
    p.set_defaults(func=_run_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as err:
        print(f"ray-cotd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
