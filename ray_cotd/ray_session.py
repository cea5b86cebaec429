"""How every stage gets its Ray session: join a running cluster, or start a local one that knows its
own address.

The trap this avoids: Ray Train's PlacementGroupCleaner (which frees a Train run's placement group
when Tune kills the trial, as ASHA does at every early stop) looks its cluster up without an
address. With a second Ray cluster on the machine (a test session, a study, someone else's job) it
finds several, gives up, and the stopped trial's CPUs stay reserved, so the next trial never starts
and the sweep hangs. A cluster started with RAY_ADDRESS already in the environment hands it to all
its processes, and the lookup then finds exactly one.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_PINNED = ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")


def start_local_cluster(**init_kwargs: Any) -> Any:
    """Start a new local Ray cluster (`ray.init(address="local", **init_kwargs)`) on a free GCS
    port, with RAY_ADDRESS and RAY_GCS_SERVER_PORT set while it starts so that its processes (and
    every worker they start) inherit them. This process's environment is restored afterwards: left
    behind, they would point a later `ray start` or subprocess at this cluster after it is gone.
    Returns ray.init's context; pass `ctx.address_info["address"]` on to subprocesses that should join."""
    import ray

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    saved = {name: os.environ.get(name) for name in _PINNED}
    os.environ.update(RAY_ADDRESS=f"{ray.util.get_node_ip_address()}:{port}", RAY_GCS_SERVER_PORT=str(port))  # [ray]
    try:
        return ray.init(address="local", **init_kwargs)  # [ray] "local" starts a new cluster, ignoring RAY_ADDRESS
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(**init_kwargs: Any) -> None:
    """Make sure this process has a Ray session, as a bare `ray.init()` would: keep the current
    one; else join the cluster RAY_ADDRESS names (`ray job submit`, KubeRay) or the one last started
    on this machine by `ray start`; else start a local cluster, here with start_local_cluster.
    init_kwargs apply to a start only."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    if ray.is_initialized():
        return
    # ray.init's own lookup (private; ray is pinned): None means a bare ray.init() would start a
    # new local cluster. Not address="auto": that also joins any other process's local cluster.
    if canonicalize_bootstrap_address(None) is None:  # [ray]
        start_local_cluster(**init_kwargs)
    else:
        ray.init()  # [ray]
