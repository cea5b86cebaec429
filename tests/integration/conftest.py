"""Integration tier: one local Ray cluster per test session, shared by every test that needs it."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A fresh local Ray cluster for the whole session (dashboard on: Train/Tune need the State API).

    start_local_cluster starts a new cluster (address="local", ignoring a stale
    /tmp/ray/ray_current_cluster left by a head killed without `ray stop`, notes/ray-2.60.md §5)
    with its own address in RAY_ADDRESS, so that Tune's early stops free their CPUs even when another
    Ray cluster (a study, a second test session) runs on the machine.
    """
    import ray

    from ray_cotd.ray_session import start_local_cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ctx = start_local_cluster(
        num_cpus=2,
        include_dashboard=True,
        ignore_reinit_error=True,
        log_to_driver=True,
        configure_logging=True,
    )
    yield ctx
    ray.shutdown()
