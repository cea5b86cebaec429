"""What stops a vLLM engine from starting is named before it starts (no vLLM needed: configs only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_cotd.config import ModelSpec, VLLMEngineSpec
from ray_cotd.lm.model import ModelLoadError
from ray_cotd.lm.vllm import EngineStartError, check_engine, engine_kwargs, student_plan


def _model_dir(tmp_path: Path, **config) -> str:
    base = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
            "num_hidden_layers": 80, "max_position_embeddings": 131072, "vocab_size": 32000,
            "intermediate_size": 11008}
    (tmp_path / "config.json").write_text(json.dumps({**base, **config}))
    return str(tmp_path)


def test_max_model_len_beyond_the_model_names_the_setting(tmp_path):
    source = _model_dir(tmp_path, max_position_embeddings=2048)
    with pytest.raises(EngineStartError, match=r"vllm.max_model_len: 4096 is beyond the model's 2048 positions"):
        check_engine(source, VLLMEngineSpec(max_model_len=4096), dtype="float32")
    assert check_engine(source, VLLMEngineSpec(max_model_len=1024), dtype="float32") == 1024


def test_a_kv_cache_too_small_for_one_sequence_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    source = _model_dir(tmp_path)  # 80 layers x 8 KV heads x 128 dims x 2 (K, V) x 4 bytes = 655 kB a token
    with pytest.raises(EngineStartError, match=r"vllm.kv_cache_gib: 1 GiB cannot hold one sequence of 131072 tokens"):
        check_engine(source, VLLMEngineSpec(kv_cache_gib=1), dtype="float32")
    assert check_engine(source, VLLMEngineSpec(kv_cache_gib=1, max_model_len=1024), dtype="float32") == 1024


def test_a_missing_model_path_fails_before_any_engine(tmp_path):
    with pytest.raises(ModelLoadError, match="model path not found"):
        student_plan(ModelSpec(source=str(tmp_path / "no-such-model")))


def test_cpu_engines_keep_prefills_whole_and_use_small_kv_blocks(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    kwargs = engine_kwargs("/models/x", VLLMEngineSpec(), dtype="float32", lora_rank=12)
    assert kwargs["enable_chunked_prefill"] is False and kwargs["block_size"] == 32 and kwargs["enforce_eager"]
    assert kwargs["enable_lora"] and kwargs["max_lora_rank"] == 16  # vLLM takes ranks 8, 16, 32, ...
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    gpu = engine_kwargs("/models/x", VLLMEngineSpec(tensor_parallel_size=2), dtype="bfloat16")
    assert "enable_chunked_prefill" not in gpu and "block_size" not in gpu and not gpu["enforce_eager"]
    assert gpu["tensor_parallel_size"] == 2 and gpu["gpu_memory_utilization"] == 0.9


def test_an_engine_stage_that_cannot_be_placed_is_an_error_before_work_starts():
    from ray_cotd.config import AnnotateConfig, ConfigError
    from ray_cotd.teacher.annotate import check_placement

    cpu = AnnotateConfig(engine="vllm", num_workers=1, cpus_per_worker=1.0)
    check_placement(cpu, {"CPU": 2.0})  # fits a 2-CPU cluster
    with pytest.raises(ConfigError, match=r"the vllm engine needs 4 CPU \(2 replica\(s\) x 1 bundle\(s\)\), but the Ray "
                                          r"cluster has 2"):
        check_placement(AnnotateConfig(engine="vllm", num_workers=2, cpus_per_worker=2.0), {"CPU": 2.0})
    gpu = AnnotateConfig(engine="vllm", num_workers=2, gpus_per_worker=1.0, vllm={"tensor_parallel_size": 2})
    with pytest.raises(ConfigError, match=r"needs 4 GPU \(2 replica\(s\) x 2 bundle\(s\)\), but the Ray cluster has 2"):
        check_placement(gpu, {"CPU": 64.0, "GPU": 2.0})
    with pytest.raises(ConfigError, match=r"the transformers engine needs 3 CPU \(3 actor\(s\)\)"):
        check_placement(AnnotateConfig(num_workers=3, cpus_per_worker=1.0), {"CPU": 2.0})
