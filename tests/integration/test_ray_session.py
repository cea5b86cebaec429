"""ray_cotd.ray_session: the local cluster knows its own address; connect() joins a named cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_local_cluster_processes_inherit_its_address_and_the_driver_keeps_its_env(ray_cluster):
    """The session cluster is started by start_local_cluster: a task on it sees the cluster's own
    address in RAY_ADDRESS, which is what Ray Train's placement-group cleanup needs to find it when
    another cluster runs on the machine. The driver's environment is left as it was: a RAY_ADDRESS
    left behind hung the e2e tier's `ray start` of a second head after this cluster was shut down."""
    import ray

    @ray.remote(num_cpus=0)
    def address_seen_by_a_worker() -> str | None:
        return os.environ.get("RAY_ADDRESS")

    address = ray_cluster.address_info["address"]
    assert ray.get(address_seen_by_a_worker.remote()) == address
    assert os.environ.get("RAY_ADDRESS") != address
    assert os.environ.get("RAY_GCS_SERVER_PORT") != address.rsplit(":", 1)[1]


def test_connect_joins_the_cluster_ray_address_names(ray_cluster):
    """A stage started with RAY_ADDRESS set (ray job submit, a subprocess of a study) joins that
    cluster instead of starting its own: the job it submits runs on the session cluster's node."""
    import ray

    script = textwrap.dedent("""
        import ray
        from ray_cotd.ray_session import connect
        connect()
        print("NODE", ray.get_runtime_context().get_node_id())
        ray.shutdown()
    """)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    node = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("NODE "))
    assert node == ray.get_runtime_context().get_node_id()


def test_release_leaked_placement_groups_removes_only_what_ray_should_have_removed(ray_cluster, monkeypatch):
    """On the session cluster: this job's placement group, a detached one and one a live detached
    actor made (as Serve's controller makes its replicas'), the last two from a job that has ended,
    are all kept. Then the race the function exists for, staged: the actor's death as Ray's actor
    table reports it, while the GCS still counts the actor as the group's live creator (how a Train
    controller killed mid-start left 1 CPU held on 2026-12-03): that group, and only it, is removed."""
    import time

    import ray
    from ray._private import state
    from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

    from ray_cotd import ray_session

    mine = placement_group([{"CPU": 0.01}])
    ray.get(mine.ready(), timeout=60)
    script = textwrap.dedent("""
        import ray
        from ray.util.placement_group import placement_group
        ray.init()
        detached = placement_group([{"CPU": 0.01}], lifetime="detached")
        ray.get(detached.ready())

        @ray.remote(num_cpus=0)
        class Keeper:
            def make(self):
                pg = placement_group([{"CPU": 0.01}])
                ray.get(pg.ready())
                return pg.id.hex()

        keeper = Keeper.options(name="pg_keeper", namespace="ray_cotd_test", lifetime="detached").remote()
        print("PGS", detached.id.hex(), ray.get(keeper.make.remote()), keeper._actor_id.hex(),
              ray.get_runtime_context().get_job_id())
    """)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    detached, made, keeper, job = next(line.split()[1:] for line in out.stdout.splitlines() if line.startswith("PGS "))
    try:
        deadline = time.monotonic() + 60
        while any(j["JobID"] == job and not j["IsDead"] for j in state.jobs()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray_session.release_leaked_placement_groups() == []
        states = {g["id"]: g for g in ray_session._placement_groups()}
        assert [states[g]["state"] for g in (mine.id.hex(), detached, made)] == ["CREATED"] * 3
        assert states[made]["actor"] == keeper and states[made]["job"] == job and states[detached]["detached"]

        real_actors = state.actors
        monkeypatch.setattr(state, "actors", lambda actor_id=None, **kw: {"State": "DEAD"} if actor_id == keeper
                            else real_actors(actor_id=actor_id, **kw))
        released = ray_session.release_leaked_placement_groups()
        assert [g["id"] for g in released] == [made]
        states = {g["id"]: g["state"] for g in ray_session._placement_groups()}
        assert (states[made], states[detached], states[mine.id.hex()]) == ("REMOVED", "CREATED", "CREATED")
    finally:
        ray.kill(ray.get_actor("pg_keeper", namespace="ray_cotd_test"))
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(detached))))
        remove_placement_group(mine)
