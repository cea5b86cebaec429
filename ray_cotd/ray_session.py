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
# Every worker of a ray-cotd job runs this at start (a clean end of runs with vLLM engines in actors,
# see ray_cotd/worker_hooks.py); jobs/runtime_env.yaml names it for `ray job submit`.
WORKER_SETUP_HOOK = "ray_cotd.worker_hooks.setup"
# Set in the driver of a job submitted with `ray job submit`: its runtime env is the submission's.
_SUBMITTED_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def job_runtime_env(runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The runtime env a ray-cotd driver gives its job: `runtime_env` plus the worker set-up hook."""
    return {"worker_process_setup_hook": WORKER_SETUP_HOOK, **(runtime_env or {})}


def free_port() -> int:
    """A TCP port free on every interface now (a GCS's, or a Serve HTTP port in tests and benches);
    another process may still take it before the caller binds it."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def start_local_cluster(**init_kwargs: Any) -> Any:
    """Start a new local Ray cluster (`ray.init(address="local", **init_kwargs)`) on a free GCS
    port, with RAY_ADDRESS and RAY_GCS_SERVER_PORT set while it starts so that its processes (and
    every worker they start) inherit them. This process's environment is restored afterwards: left
    behind, they would point a later `ray start` or subprocess at this cluster after it is gone.
    Returns ray.init's context; pass `ctx.address_info["address"]` on to subprocesses that should join."""
    import ray

    existing = ray.is_initialized()  # with ignore_reinit_error=True, ray.init returns this session as is
    port = free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"  # [ray]
    saved = {name: os.environ.get(name) for name in _PINNED}
    os.environ.update(RAY_ADDRESS=address, RAY_GCS_SERVER_PORT=str(port))
    init_kwargs["runtime_env"] = job_runtime_env(init_kwargs.get("runtime_env"))
    try:
        ctx = ray.init(address="local", **init_kwargs)  # [ray] "local" starts a new cluster, ignoring RAY_ADDRESS
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if not existing and ctx.address_info["address"] != address:  # its processes would carry an address that is not theirs
        raise RuntimeError(f"the local Ray cluster started at {ctx.address_info['address']}, not at the "
                           f"{address} its processes were given (RAY_GCS_SERVER_PORT not honoured?)")
    return ctx


def connect() -> None:
    """Make sure this process has a Ray session, as a bare `ray.init()` would: keep the current
    one; else join the cluster RAY_ADDRESS names (`ray job submit`, KubeRay) or the one last started
    on this machine by `ray start`; else start a local cluster, here with start_local_cluster."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    if ray.is_initialized():
        return
    # ray.init's own lookup (private; ray is pinned): None means a bare ray.init() would start a
    # new local cluster. Not address="auto": that also joins any other process's local cluster.
    if canonicalize_bootstrap_address(None) is None:  # [ray]
        start_local_cluster()
    elif os.environ.get(_SUBMITTED_JOB):  # the submission's runtime env (jobs/runtime_env.yaml) holds the hook
        ray.init()  # [ray]
    else:
        ray.init(runtime_env=job_runtime_env())  # [ray]
