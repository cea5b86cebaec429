"""precision / dtype `auto`: bfloat16 where the device runs it natively, float32 elsewhere.

On a CPU without AVX512_BF16 or AMX (an AVX2-only machine) PyTorch's bf16 matmul is a reference
kernel two orders of magnitude slower than fp32, so the shipped configs say `auto`, and these tests
pin what it resolves to on either kind of machine (native_bfloat16 stands in for the hardware).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from ray_cotd.config import ConfigError, ModelSpec, TrainConfig, VLLMEngineSpec
from ray_cotd.lm import model as lm_model
from ray_cotd.lm.model import resolve_precision, torch_dtype
from ray_cotd.lm.vllm import engine_kwargs
from ray_cotd.student.train import _autocast, student_meta


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-native-bf16"])
def native(request, monkeypatch) -> bool:
    monkeypatch.setattr(lm_model, "native_bfloat16", lambda device=None: request.param)
    return request.param


def test_auto_is_bfloat16_only_where_it_is_native(native):
    expected = "bfloat16" if native else "float32"
    assert resolve_precision("auto") == resolve_precision("auto", "cpu") == expected
    assert torch_dtype("auto") == {"bfloat16": torch.bfloat16, "float32": torch.float32}[expected]
    assert resolve_precision("float32") == "float32"


def test_explicit_bfloat16_is_kept_and_warned_about_where_it_is_slow(native):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision("bfloat16") == "bfloat16"
    assert [str(w.message) for w in caught if "not native" in str(w.message)] == ([] if native else [
        "bfloat16 is not native on this device (no AVX512_BF16 / AMX CPU, or a GPU older than compute capability "
        "8.0): it runs many times slower than float32 here; set auto or float32"])


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="'float16': expected one of auto, float32, bfloat16"):
        resolve_precision("float16")


def test_training_autocasts_only_when_auto_resolves_to_bfloat16(native):
    cpu = torch.device("cpu")
    assert isinstance(_autocast("auto", cpu), torch.autocast) is native
    assert not isinstance(_autocast("float32", cpu), torch.autocast)
    # what the student was trained in is recorded resolved, not as "auto"
    assert student_meta(TrainConfig(precision="auto"))["precision"] == ("bfloat16" if native else "float32")


def test_vllm_engines_get_a_concrete_dtype(native, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    expected = "bfloat16" if native else "float32"
    assert engine_kwargs("/models/x", VLLMEngineSpec(dtype="auto"), dtype="float32")["dtype"] == expected
    assert engine_kwargs("/models/x", VLLMEngineSpec(), dtype="auto")["dtype"] == expected
    assert engine_kwargs("/models/x", VLLMEngineSpec(), dtype="float32")["dtype"] == "float32"


def test_configs_accept_auto():
    assert ModelSpec(dtype="auto").dtype == "auto"
    assert TrainConfig(precision="auto").precision == "auto"
    with pytest.raises(ConfigError):
        TrainConfig(precision="float16")

