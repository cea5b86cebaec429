"""Integration tier: one local Ray cluster per test session, shared by every test that needs it."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A fresh local Ray cluster for the whole session (dashboard on: Train/Tune need the State API).

    address="local" always starts a new cluster, ignoring a stale /tmp/ray/ray_current_cluster
    left by a head that was killed without `ray stop` (see notes/ray-2.60.md §5).
    """
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ctx = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        ignore_reinit_error=True,
        log_to_driver=True,
        configure_logging=True,
    )
    yield ctx
    ray.shutdown()
