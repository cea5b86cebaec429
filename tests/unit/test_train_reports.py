"""What a Train worker sends the driver: progress lines once under Ray Train V2's print patch, reports
only where they are needed, and the run's Ray Train log level."""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
from unittest import mock

import pytest
from ray.train.v2._internal.logging.patch_print import redirected_print

from ray_cotd.config import ConfigError, TrainConfig
from ray_cotd.configbase import from_dict
from ray_cotd.student.train import progress


@contextlib.contextmanager
def train_worker_streams():
    """What a Ray Train V2 worker looks like: `print` patched, stdout wrapped by Ray, and a root
    logger whose console handler writes to the same stream (Ray forwards both to the driver).
    A context manager, not a fixture: pytest resets sys.stdout between a fixture and the test."""
    captured = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(captured)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # setLevel, not the attribute: it clears logging's level cache
    try:
        with contextlib.redirect_stdout(captured), mock.patch.object(builtins, "print", redirected_print):
            yield captured
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


def test_progress_line_is_written_once_where_print_is_written_twice():
    with train_worker_streams() as captured:
        print("[train] step 1/2 loss=1", flush=True)  # the harness reproduces the duplicate
        progress("[train] step 2/2 loss=0.5")
    lines = captured.getvalue().splitlines()
    assert lines.count("[train] step 1/2 loss=1") == 2
    assert lines.count("[train] step 2/2 loss=0.5") == 1


def test_ray_log_level_defaults_to_warning_and_is_checked():
    assert TrainConfig().ray_log_level == "WARNING"
    with pytest.raises(ConfigError, match="ray_log_level"):
        from_dict(TrainConfig, {"ray_log_level": "CHATTY"})


def test_reports_only_at_checkpoints_validations_and_report_every():
    """Ray Train V2 takes one report per worker per 2-s poll: steps between them report nothing."""
    from ray_cotd.student.train import report_kind

    cfg = TrainConfig(max_steps=25, checkpoint_every=10)
    kinds = {s: report_kind(s, cfg, validated=s == 5) for s in range(1, 26)}
    assert {s for s, k in kinds.items() if k == "checkpoint"} == {10, 20, 25}
    assert {s for s, k in kinds.items() if k == "metrics"} == {5}
    every3 = TrainConfig(max_steps=25, checkpoint_every=10, report_every=3)
    assert {s for s in range(1, 26) if report_kind(s, every3, validated=False) == "metrics"} == {3, 6, 9, 12, 15, 18,
                                                                                                   21, 24}
    with pytest.raises(ConfigError, match="report_every"):
        from_dict(TrainConfig, {"report_every": -1})
