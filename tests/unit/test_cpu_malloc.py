"""The CPU training workers' glibc malloc tunables (TrainConfig.cpu_malloc_cache)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ray_cotd.config import TrainConfig
from ray_cotd.student.train import CPU_MALLOC_TUNABLES, worker_runtime_env

# Ray Train runs the training function in a thread of the worker, not its main thread. Each round
# there writes and frees a step's worth of large buffers (logits-, activation- and gradient-sized);
# count the page faults of the rounds after the first four (the heap settles in those).
CHILD = """
import resource, threading, torch
faults = []
def work():
    for i in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffers = [torch.ones(mib * 2**20 // 4) for mib in (100, 40, 100, 8)]
        del buffers
        if i >= 4:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work); t.start(); t.join()
print(sum(faults))
"""


def faults(env_tunables: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if env_tunables is not None:
        env["GLIBC_TUNABLES"] = env_tunables
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_tunables_stop_page_faulting_freed_memory_back_in_a_thread():
    # stock glibc mmaps each block and unmaps it on free: ~63k faults of 4 KiB per round
    assert faults(None) > 4 * 50_000
    assert faults(CPU_MALLOC_TUNABLES) < 1_000


def test_runtime_env_only_for_cpu_workers_when_enabled(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert worker_runtime_env(TrainConfig()) == {"env_vars": {"GLIBC_TUNABLES": CPU_MALLOC_TUNABLES}}
    assert worker_runtime_env(TrainConfig(use_gpu=True)) == {}
    assert worker_runtime_env(TrainConfig(cpu_malloc_cache=False)) == {}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")  # the operator's own choice wins
    assert worker_runtime_env(TrainConfig()) == {}
