"""The CPU training workers' glibc malloc tunables (TrainConfig.cpu_malloc_cache)."""

from __future__ import annotations

from ray_cotd.config import TrainConfig
from ray_cotd.student.train import CPU_MALLOC_TUNABLES, worker_runtime_env

# The tunables' effect (0 page faults per step once warm) is measured on the real training step by
# bench/train.py (malloc_cache_speedup) and docs/benchmarks.md. A synthetic alloc/free loop was
# tried here and dropped: whether it stops faulting depends on the heap layout left by imports
# (0 faults on the dev venv, 179k on a fresh clone's), so it could not be a stable test.


def test_runtime_env_only_for_full_fine_tuning_on_cpu_when_enabled(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    full = TrainConfig(peft="full")
    assert worker_runtime_env(full) == {"env_vars": {"GLIBC_TUNABLES": CPU_MALLOC_TUNABLES}}
    assert worker_runtime_env(TrainConfig(peft="full", use_gpu=True)) == {}
    assert worker_runtime_env(TrainConfig(peft="full", cpu_malloc_cache=False)) == {}
    # LoRA / P-Tuning steps ran slower with arena_max=1 (docs/benchmarks.md): glibc's defaults
    assert [worker_runtime_env(TrainConfig(peft=p)) for p in ("lora", "ptuning", "lora+ptuning")] == [{}, {}, {}]
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")  # the operator's own choice wins
    assert worker_runtime_env(full) == {}
