"""ray_session.leaked_placement_groups: Ray's lifetime rule for placement groups, applied to rows
of the GCS table. The first rows are the ones a sweep interrupted with Ctrl-C left on a test
cluster (2026-12-03): job 04's Train controller created its worker group's group as it was killed,
and the GCS kept it, 1 CPU of the cluster's 2, while the resumed sweep waited for that CPU."""

from __future__ import annotations

from ray_cotd.ray_session import leaked_placement_groups

CONTROLLER = "fbd8dea78df4d43a8b9f5d4104000000"


def _group(gid: str, *, state: str = "CREATED", job: str = "01000000", actor: str | None = None,
           detached: bool = False) -> dict:
    return {"id": gid, "state": state, "detached": detached, "job": job, "actor": actor, "bundles": [{"CPU": 1.0}]}


def test_a_group_whose_job_ended_and_whose_creator_died_is_leaked():
    groups = [
        _group("cf2db5119fa0fbe6d1dc7970077304000000", job="04000000", actor=CONTROLLER),  # the leak
        _group("ce6f13b14b931863a77e639b98d004000000", job="04000000", actor=CONTROLLER, state="REMOVED"),
        _group("5078ef694922aeea903cda3b58af01000000"),  # the resumed sweep's trial: its job is alive
    ]
    assert [g["id"][:8] for g in leaked_placement_groups(groups, {"01000000"}, set())] == ["cf2db511"]


def test_detached_groups_live_jobs_and_live_creators_are_kept():
    groups = [
        _group("a1", job="02000000", detached=True),  # detached: outlives its job by design
        _group("a2", job="03000000", actor="serve_controller"),  # a live detached actor's (Serve's replicas)
        _group("a3", job="01000000", actor="dead_actor"),  # its job still runs: Ray Train's cleaner has it
        _group("a4", job="05000000", state="PENDING"),  # a dead driver's, never placed: still holds a request
    ]
    leaked = leaked_placement_groups(groups, {"01000000"}, {"serve_controller"})
    assert [g["id"] for g in leaked] == ["a4"]
