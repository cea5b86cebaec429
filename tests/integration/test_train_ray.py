"""Training through Ray Train: 2 CPU workers, the real default student with LoRA, real SVAMP rows
(train side of holdout_split(test_fraction=0.2, seed=0), done inside load_corpus)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from ray_cotd.config import ModelSpec, TrainConfig
from ray_cotd.data.errors import DataError
from ray_cotd.student.train import run_train

pytestmark = [pytest.mark.ray, pytest.mark.real_model]


def _cfg(shared_data, tmp_path, **overrides):
    values = dict(
        corpus=str(shared_data / "svamp" / "train_chatgpt_level1.json"), objective="cascod", peft="lora", lora_r=4,
        num_workers=2, batch_size=2, max_seq_len=128, lr=2e-3, lr_schedule="constant", max_steps=3,
        checkpoint_every=2, val_fraction=0.02, output_dir=str(tmp_path / "out"), name=f"t-{uuid.uuid4().hex[:8]}",
    )
    values.update(overrides)
    return TrainConfig(**values)


def _history(summary):
    return [json.loads(line) for line in Path(summary["metrics_log"]).read_text().splitlines()]


def test_two_workers_train_checkpoint_and_resume(ray_cluster, shared_data, tmp_path):
    cfg = _cfg(shared_data, tmp_path, max_steps=4)
    first = run_train(cfg)
    assert first["steps"] == 4 and first["resumed_from_step"] == 0
    history = _history(first)
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    times = [h["time"] for h in history]  # wall clock per step: steps/s include what step_s leaves out
    assert times == sorted(times) and times[-1] - times[0] >= sum(h["step_s"] for h in history[1:])
    assert first["data"]["held_out_rows"] > 0 and first["data"]["encode"]["truncated_rationale"] > 0
    # loss falls: the last two steps average below the first two (lr 2e-3 on 2x2 rows per step)
    assert (history[2]["loss"] + history[3]["loss"]) < (history[0]["loss"] + history[1]["loss"])
    assert first["val_loss"] is not None
    student = Path(first["student_dir"])
    assert (student / "adapter_config.json").is_file() and (student / "adapter_model.safetensors").is_file()
    assert len(first["checkpoints"]) >= 1 and Path(first["checkpoints"][-1], "trainer_state.pt").is_file()
    assert (Path(cfg.output_dir) / "resolved_config.yaml").is_file()

    # peft loads the student directly
    from ray_cotd.lm.model import load_model

    model = load_model(ModelSpec(adapter=str(student)))
    assert type(model).__name__ == "PeftModelForCausalLM"

    # the same run name and storage resume from the latest checkpoint and go on to step 6
    second = run_train(_cfg(shared_data, tmp_path, max_steps=6, name=cfg.name))
    assert second["resumed_from_step"] == 4
    assert [h["step"] for h in _history(second)] == [1, 2, 3, 4, 5, 6]


def test_a_killed_worker_does_not_lose_the_run(ray_cluster, shared_data, tmp_path):
    import ray
    from ray.util.state import list_actors

    cfg = _cfg(shared_data, tmp_path, max_steps=5, checkpoint_every=1, val_fraction=0.0, max_failures=2)
    run_dir = Path(cfg.output_dir) / "ray" / cfg.name
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=run_train(cfg)), daemon=True)
    thread.start()
    deadline = time.time() + 400
    # A second checkpoint directory means the first one is registered: a kill before that would
    # restart from step 0, which is still a retry but not a resume.
    while len(list(run_dir.glob("checkpoint_*"))) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert len(list(run_dir.glob("checkpoint_*"))) >= 2, "no checkpoint was written"
    # address: other local clusters may be running on a shared machine
    workers = list_actors(address=ray.get_runtime_context().gcs_address,
                          filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    assert workers
    os.kill(workers[-1].pid, signal.SIGKILL)
    thread.join(timeout=600)
    summary = outcome["summary"]
    assert summary["steps"] == 5
    assert summary["resumed_from_step"] >= 1  # the retried worker group started from a checkpoint
    assert [h["step"] for h in _history(summary)] == [1, 2, 3, 4, 5]


def test_bad_corpus_fails_before_any_worker_starts(shared_data, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DataError, match="empty"):
        run_train(_cfg(shared_data, tmp_path, corpus=str(empty)))
    gold_only = shared_data / "svamp" / "train_answer_only.json"
    with pytest.raises(DataError, match="none of the .* rows has a rationale"):
        run_train(_cfg(shared_data, tmp_path, corpus=str(gold_only), mapping={"preset": "answer_only"}))
    with pytest.raises(DataError, match="max_seq_len"):
        run_train(_cfg(shared_data, tmp_path, max_seq_len=40))
