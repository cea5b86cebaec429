"""Integration tier: one local Ray cluster per test session, shared by every test that needs it, and
one stand-in LoRA student of the real model for the tests that generate or serve a trained student."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

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


@pytest.fixture(scope="session")
def lora_student(tmp_path_factory) -> Iterator:
    """A LoRA student directory of the real default model as training writes it (adapter +
    student.json), with random non-zero LoRA B matrices (r 8) so that it answers differently from
    its base; its vLLM merged copies (made in the model cache, ~0.5 GB each) are deleted at the end."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ray_cotd.config import ModelSpec
    from ray_cotd.lm.model import cache_root, load_model, write_student_meta

    out = tmp_path_factory.mktemp("lora-student")
    torch.manual_seed(0)
    model = get_peft_model(load_model(ModelSpec()), LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM",
                                                               target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    model.save_pretrained(str(out))
    write_student_meta(out, {"base": "default", "gguf_file": None, "peft": "lora", "objective": "cascod"})
    yield ModelSpec(source="default", adapter=str(out))
    for merged in (cache_root() / "merged").glob(f"{out.name}-*"):
        if (merged / "SOURCE").is_file() and str(out) in (merged / "SOURCE").read_text(errors="replace"):
            shutil.rmtree(merged, ignore_errors=True)
