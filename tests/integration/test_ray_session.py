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
