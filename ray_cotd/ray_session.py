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

# The address start_local_cluster put in RAY_ADDRESS; once that cluster is shut down, connect()
# starts a new one rather than trying to join the dead one.
_started_address: str | None = None


def start_local_cluster(**init_kwargs: Any) -> Any:
    """Start a new local Ray cluster (`ray.init(address="local", **init_kwargs)`) on a free GCS
    port, with RAY_ADDRESS and RAY_GCS_SERVER_PORT set first so that its processes inherit them.
    Returns ray.init's context. Subprocesses started afterwards join it through RAY_ADDRESS."""
    import ray

    global _started_address
    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    address = f"{ray.util.get_node_ip_address()}:{port}"  # [ray]
    os.environ.update(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=address)
    ctx = ray.init(address="local", **init_kwargs)  # [ray] "local" starts a new cluster, ignoring RAY_ADDRESS
    if ctx.address_info["address"] != address:  # the port was taken between the probe and the start
        os.environ["RAY_ADDRESS"] = ctx.address_info["address"]
    _started_address = os.environ["RAY_ADDRESS"]
    return ctx


def connect(**init_kwargs: Any) -> None:
    """Make sure this process has a Ray session, as a bare `ray.init()` would: keep the current
    one; else join the cluster RAY_ADDRESS names (`ray job submit`, KubeRay) or the one last started
    on this machine by `ray start`; else start a local cluster, here with start_local_cluster.
    init_kwargs apply to a start only."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    if ray.is_initialized():
        return
    if _started_address is not None and os.environ.get("RAY_ADDRESS") == _started_address:
        del os.environ["RAY_ADDRESS"]  # ours, and shut down since: start afresh
    # ray.init's own lookup (private; ray is pinned): None means a bare ray.init() would start a
    # new local cluster. Not address="auto": that also joins any other process's local cluster.
    if canonicalize_bootstrap_address(None) is None:  # [ray]
        start_local_cluster(**init_kwargs)
    else:
        ray.init()  # [ray]
