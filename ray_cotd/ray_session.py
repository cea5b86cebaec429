"""How every stage gets its Ray session: join a running cluster, or start a local one that knows its
own address.

The trap this avoids: Ray Train's PlacementGroupCleaner (which frees a Train run's placement group
when Tune kills the trial, as ASHA does at every early stop) looks its cluster up without an
address. With a second Ray cluster on the machine (a test session, a study, someone else's job) it
finds several, gives up, and the stopped trial's CPUs stay reserved, so the next trial never starts
and the sweep hangs. A cluster started with RAY_ADDRESS already in the environment hands it to all
its processes, and the lookup then finds exactly one.

A second trap, with the same symptom: a placement group that outlives its job. Ray removes a
placement group when its job has ended and the actor that created it has died (unless it is
detached). A Train controller that creates its worker group's placement group in the instant it is
killed (a sweep interrupted with Ctrl-C while Tune restarts a trial) leaves one whose creator the
GCS never marks dead: it holds its CPUs for the cluster's lifetime, and the resumed sweep's next
worker group waits for them forever ("The worker group startup timed out", retried every minute).
`release_leaked_placement_groups` removes exactly those: run_tune calls it before it reserves
anything, and fit_student before every Train run (`ray-cotd train`, and each Tune trial).
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


def leaked_placement_groups(groups: list[dict[str, Any]], live_jobs: set[str],
                            live_actors: set[str]) -> list[dict[str, Any]]:
    """The placement groups of `groups` Ray's own lifetime rule says should be gone: not removed, not
    detached, their job ended (not in `live_jobs`) and their creator, where an actor created them,
    no longer alive (not in `live_actors`; the GCS's own flag for that can miss a death, see the
    module doc). Each group: {"id", "state", "detached", "job", "actor" (hex or None), "bundles"}."""
    return [g for g in groups
            if g["state"] != "REMOVED" and not g["detached"] and g["job"] not in live_jobs
            and (g["actor"] is None or g["actor"] not in live_actors)]


def _placement_groups() -> list[dict[str, Any]]:
    """Every placement group the GCS holds, with the creator fields ray.util.placement_group_table()
    leaves out (job, creating actor, detached)."""
    from ray._private import state  # [ray] the GCS table as protobufs: the public table has no creator
    from ray.core.generated import gcs_pb2  # [ray]

    table = gcs_pb2.PlacementGroupTableData
    groups = []
    for raw in state.state._connect_and_get_accessor().get_placement_group_table():  # [ray]
        pg = table.FromString(raw)
        actor = pg.creator_actor_id.hex()
        groups.append({"id": pg.placement_group_id.hex(), "state": table.PlacementGroupState.Name(pg.state),
                       "detached": pg.is_detached, "job": pg.creator_job_id.hex(),
                       "actor": None if not actor or set(actor) <= {"f"} else actor,  # nil: the driver made it
                       "bundles": [dict(b.unit_resources) for b in pg.bundles]})
    return groups


def release_leaked_placement_groups() -> list[dict[str, Any]]:
    """Remove the cluster's leaked placement groups (leaked_placement_groups), printing each, and
    return them. Needs a Ray session (connect)."""
    import ray
    from ray._private import state  # [ray]
    from ray.util.placement_group import PlacementGroup

    live_jobs = {j["JobID"] for j in state.jobs() if not j["IsDead"]}  # [ray]
    candidates = leaked_placement_groups(_placement_groups(), live_jobs, set())
    creators = {g["actor"] for g in candidates if g["actor"] is not None}
    live_actors = {a for a in creators if state.actors(actor_id=a).get("State") != "DEAD"}  # [ray]
    leaked = leaked_placement_groups(candidates, live_jobs, live_actors)
    for g in leaked:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(g["id"]))))  # [ray]
        print(f"[ray] removed placement group {g['id']} ({g['bundles']}): its job {g['job']} has ended and its "
              f"creator is gone, but Ray kept it, which would hold those resources for the cluster's lifetime",
              flush=True)
    return leaked
