"""A LoRA student merged into a full-weights copy for vLLM on CPU (lm.model.merged_lora_source), and
the engines VLLMEngines holds when every merged student is an engine of its own. Tiny random-init
models and a stand-in engine: no vLLM here (tests/integration/test_vllm.py runs the real one)."""

from __future__ import annotations

import pytest
import torch

from ray_cotd.config import ModelSpec, VLLMEngineSpec
from ray_cotd.lm import vllm as lm_vllm
from ray_cotd.lm.model import load_model, merged_lora_source, write_student_meta
from ray_cotd.lm.vllm import VLLMEngines, engine_plan, merges_lora
from tiny_llama import tiny_llama


@pytest.fixture
def base_dir(tmp_path):
    model, tok = tiny_llama()
    out = tmp_path / "base"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _lora_student(base_dir, out, seed: int) -> ModelSpec:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(ModelSpec(source=str(base_dir))),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    model.save_pretrained(str(out))
    write_student_meta(out, {"base": str(base_dir), "gguf_file": None, "peft": "lora", "objective": "cascod"})
    return ModelSpec(source=str(base_dir), adapter=str(out))


def test_the_merged_copy_computes_what_the_adapter_on_its_base_computes(base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    spec = _lora_student(base_dir, tmp_path / "student", seed=1)
    merged = merged_lora_source(spec, "float32")
    assert (merged / "config.json").is_file() and (merged / "tokenizer.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    ids = torch.tensor([[5, 9, 14, 3, 22, 7]])
    with torch.no_grad():
        theirs = load_model(spec)(ids).logits
        ours = load_model(ModelSpec(source=str(merged)))(ids).logits
        bare = load_model(ModelSpec(source=str(base_dir)))(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(bare, theirs, atol=1e-3)  # the adapter changes the model: the merge carried it
    # bfloat16: merged in fp32, then cast once
    half = merged_lora_source(spec, "bfloat16")
    assert half != merged
    assert next(load_model(ModelSpec(source=str(half), dtype="bfloat16")).parameters()).dtype == torch.bfloat16


def test_a_merged_copy_is_made_once_per_adapter_and_again_when_the_adapter_changes(base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    spec = _lora_student(base_dir, tmp_path / "student", seed=1)
    first = merged_lora_source(spec, "float32")
    calls = []
    monkeypatch.setattr("ray_cotd.lm.model.load_model", lambda *a, **k: calls.append(a))
    assert merged_lora_source(spec, "float32") == first and calls == []  # cached: nothing loaded
    monkeypatch.undo()
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    _lora_student(base_dir, tmp_path / "student", seed=2)  # retrained in place: other weights
    second = merged_lora_source(spec, "float32")
    assert second != first and sorted(p.name for p in (tmp_path / "cache" / "merged").iterdir()) == sorted(
        [first.name, second.name])


def test_merging_is_the_cpu_default_and_a_setting(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert merges_lora(VLLMEngineSpec()) and not merges_lora(VLLMEngineSpec(lora="request"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert not merges_lora(VLLMEngineSpec()) and merges_lora(VLLMEngineSpec(lora="merge"))


class _Engine:
    def __init__(self, log, model):
        self.model, self.log = model, log
        core = type("Core", (), {"shutdown": lambda _: log.append(("stop", model))})()
        self.llm_engine = type("Engine", (), {"engine_core": core})()


def test_merged_students_hold_at_most_two_engines_and_stop_the_least_recently_used(base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    log: list = []
    monkeypatch.setattr(lm_vllm, "start_engine", lambda kwargs, vspec, in_process: log.append(
                            ("start", kwargs["model"])) or _Engine(log, kwargs["model"]))
    monkeypatch.setattr(lm_vllm, "check_engine", lambda *a, **k: 1024)
    students = [_lora_student(base_dir, tmp_path / f"s{i}", seed=i) for i in range(3)]
    base = ModelSpec(source=str(base_dir))
    engines = VLLMEngines(VLLMEngineSpec(in_process=False), [base, *students])  # vLLM's engine-core processes
    sources = {s.adapter: engine_plan(s, VLLMEngineSpec()).source for s in students}
    assert all("merged" in src for src in sources.values())
    assert all(plan.lora_dir is None for plan in engines.plans.values())
    first = engines.generator(students[0])
    assert engines.generator(students[0]) is first and first.lora is None  # kept; merged: no LoRA request
    engines.generator(base)
    engines.generator(students[0])  # used again: the base engine is now the least recent
    engines.generator(students[1])
    assert log == [("start", sources[students[0].adapter]), ("start", str(base_dir)),
                   ("stop", str(base_dir)), ("start", sources[students[1].adapter])]
    assert engines.generator(students[0]) is first  # still running, its generator still kept
    engines.generator(students[2])  # students[1] is the least recent now
    assert log[-2:] == [("stop", sources[students[1].adapter]), ("start", sources[students[2].adapter])]
    engines.close()
    assert {m for kind, m in log[-2:]} == {sources[students[0].adapter], sources[students[2].adapter]}
    assert engines.engines == {} and engines.generators == {}


def test_lora_requests_share_one_engine_per_base(base_dir, tmp_path, monkeypatch):
    pytest.importorskip("vllm", reason="LoRARequest is vLLM's")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    log: list = []
    monkeypatch.setattr(lm_vllm, "start_engine", lambda kwargs, vspec, in_process: log.append(
                            ("start", kwargs["model"], kwargs.get("max_loras")))
                        or _Engine(log, kwargs["model"]))
    monkeypatch.setattr(lm_vllm, "check_engine", lambda *a, **k: 1024)
    students = [_lora_student(base_dir, tmp_path / f"s{i}", seed=i) for i in range(3)]
    engines = VLLMEngines(VLLMEngineSpec(lora="request", in_process=False),
                          [ModelSpec(source=str(base_dir)), *students])
    gens = [engines.generator(s) for s in students]
    assert log == [("start", str(base_dir), 3)]
    assert [g.lora.lora_int_id for g in gens] == [1, 2, 3] and engines.max_engines is None


def test_in_process_one_engine_runs_per_process_and_a_stopped_ones_generators_say_so(base_dir, tmp_path,
                                                                                         monkeypatch):
    # in process, vLLM's parallel state is the process's and an engine's shutdown destroys it: two
    # VLLMEngines (an evaluate actor's and another) never hold live in-process engines at once
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    log: list = []
    monkeypatch.setattr(lm_vllm, "start_engine", lambda kwargs, vspec, in_process: log.append(
                            ("start", kwargs["model"], in_process)) or _Engine(log, kwargs["model"]))
    monkeypatch.setattr(lm_vllm, "check_engine", lambda *a, **k: 1024)
    student = _lora_student(base_dir, tmp_path / "s", seed=1)
    merged = engine_plan(student, VLLMEngineSpec()).source
    base = ModelSpec(source=str(base_dir))
    first = VLLMEngines(VLLMEngineSpec(), [base, student])  # in_process unset: in process
    assert first.in_process and first.max_engines == 1
    gen = first.generator(student)
    first.generator(base)  # one engine at a time in this VLLMEngines
    assert log == [("start", merged, True), ("stop", merged), ("start", str(base_dir), True)]
    with pytest.raises(lm_vllm.EngineStoppedError, match="ask VLLMEngines.generator"):
        gen.two_stage(["What is 2 + 3?"])
    other = VLLMEngines(VLLMEngineSpec(in_process=True), [base])
    other.generator(base)  # another VLLMEngines in the same process stops the first one's engine
    assert log[-2:] == [("stop", str(base_dir)), ("start", str(base_dir), True)] and first.engines == {}
    outside = VLLMEngines(VLLMEngineSpec(in_process=False), [base])
    outside.generator(base)  # in vLLM's own process: the in-process engine keeps running
    assert log[-1] == ("start", str(base_dir), False) and len(other.engines) == 1
    other.close()
    outside.close()
    assert lm_vllm._IN_PROCESS_ENGINE is None


def test_prepare_student_checks_the_engine_on_the_base_before_merging(base_dir, tmp_path, monkeypatch):
    # the driver's one call before any worker starts (evaluate, serve, a replica): a setting the
    # engine cannot start with fails before anything is merged; otherwise the merged copy is made
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    spec = _lora_student(base_dir, tmp_path / "student", seed=1)
    positions = tiny_llama()[0].config.max_position_embeddings
    with pytest.raises(lm_vllm.EngineStartError, match="vllm.max_model_len"):
        lm_vllm.prepare_student(spec, VLLMEngineSpec(max_model_len=positions + 1))
    assert not (tmp_path / "cache" / "merged").exists()
    plan = lm_vllm.prepare_student(spec, VLLMEngineSpec())
    assert plan.lora_dir is None and plan.source == str(merged_lora_source(spec, "float32"))
    request = lm_vllm.prepare_student(spec, VLLMEngineSpec(lora="request"))
    assert request.source == str(base_dir.resolve()) and request.lora_dir == str((tmp_path / "student").resolve())


@pytest.mark.parametrize("native", [False, True])
def test_auto_and_the_dtype_it_resolves_to_share_one_engine(base_dir, tmp_path, monkeypatch, native):
    # engines are keyed on the resolved dtype: a study whose students say "auto" and an evaluate
    # that names the same dtype explicitly do not start a second engine on the same weights
    from ray_cotd.lm import model as lm_model

    monkeypatch.setattr(lm_model, "native_bfloat16", lambda device=None: native)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    log: list = []
    monkeypatch.setattr(lm_vllm, "start_engine", lambda kwargs, vspec, in_process: log.append(
                            ("start", kwargs["model"], kwargs["dtype"])) or _Engine(log, kwargs["model"]))
    monkeypatch.setattr(lm_vllm, "check_engine", lambda *a, **k: 1024)
    resolved = "bfloat16" if native else "float32"
    auto, named = ModelSpec(source=str(base_dir), dtype="auto"), ModelSpec(source=str(base_dir), dtype=resolved)
    other = ModelSpec(source=str(base_dir), dtype="float32" if native else "bfloat16")
    engines = VLLMEngines(VLLMEngineSpec(in_process=False), [auto, named, other])
    engines.generator(auto)
    engines.generator(named)
    assert log == [("start", str(base_dir), resolved)] and len(engines.engines) == 1
    engines.generator(other)  # another dtype is another engine
    assert log[-1] == ("start", str(base_dir), other.dtype) and len(engines.engines) == 2
    engines.close()
