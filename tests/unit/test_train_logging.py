"""Worker progress lines reach the driver once under Ray Train V2's print patch, and the run's
Ray Train log level is the config's."""

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
