"""Every training variant on the real default student, kept cheap: P-Tuning, LoRA + P-Tuning and
full fine-tuning; the PRADA objectives with unlabeled target-domain questions; bf16; merged
adapters; FSDP on two CPU workers. Each Ray Train run is tiny (batch 2, max_seq_len 128, 2 steps,
LoRA rank 4, 4 virtual tokens) on real SVAMP rows (train side of the hold-out split): what is
checked is that each variant trains with finite per-step losses, writes a directory that
transformers / peft / ray-cotd load, and that the loaded student generates."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest
import torch

from ray_cotd.config import ModelSpec, TrainConfig
from ray_cotd.lm.generate import GenerationLimits, Generator
from ray_cotd.student.collate import collate, prompt_sequence
from ray_cotd.lm.model import load_model, load_prompt_encoder, load_tokenizer, resolve_precision, spec_for_student_dir
from ray_cotd.student.objectives import OBJECTIVES, LossParams
from ray_cotd.student.train import Student, build_student, compute_loss, encode_rows, run_train

pytestmark = [pytest.mark.ray, pytest.mark.real_model]

SVAMP = "svamp/train_chatgpt_level1.json"
DEMO_QUESTIONS = Path(__file__).resolve().parents[2] / "ray_cotd" / "assets" / "demo_questions.jsonl"
QUESTION = "Mia has 7 red pencils and 5 blue pencils. How many pencils does she have in total?"
PRADA_KEYS = ("task_loss", "domain_loss_source", "domain_loss_target", "domain_accuracy", "E", "lambda")


def _cfg(shared_data, tmp_path, **overrides):
    values = dict(
        corpus=str(shared_data / SVAMP), objective="cascod", peft="lora", lora_r=4, num_virtual_tokens=4,
        encoder_hidden_size=32, domain_head_width=32, num_workers=1, batch_size=2, max_seq_len=128, lr=1e-3,
        lr_schedule="constant", max_steps=2, checkpoint_every=2, val_fraction=0.0,
        output_dir=str(tmp_path / "out"), name=f"v-{uuid.uuid4().hex[:8]}",
    )
    values.update(overrides)
    return TrainConfig(**values)


def _steps(summary, n, extra=()):
    """The per-step records: steps 1..n, every loss (and each `extra` metric) finite."""
    history = [json.loads(line) for line in Path(summary["metrics_log"]).read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, n + 1))
    for h in history:
        for key in ("loss", "grad_norm", *extra):
            assert math.isfinite(h[key]), (key, h)
        assert h["loss"] > 0 and h["grad_norm"] > 0 and h["tokens"] > 0
    assert summary["steps"] == n and summary["final_loss"] == history[-1]["loss"]
    return history


def _generates(spec: ModelSpec, n_virtual: int) -> None:
    """The student directory loads as serve loads it (Generator.from_spec: base, adapter, prompt
    encoder) and answers a question in two stages."""
    generator = Generator.from_spec(spec)
    assert generator.n_virtual == n_virtual
    (result,) = generator.two_stage([QUESTION], GenerationLimits(max_rationale_tokens=8, max_answer_tokens=4))
    # two barely trained steps may already jump to the marker: an empty rationale is an answer too
    assert result.prompt_tokens > n_virtual and result.rationale_tokens <= 8
    assert 1 <= result.answer_tokens <= 4 and result.answer_text.strip()


def _files(directory) -> set[str]:
    return {p.name for p in Path(directory).iterdir()}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelSpec())


def _prompt_batch(tokenizer, n_virtual: int):
    return collate([prompt_sequence(tokenizer, QUESTION, n_virtual=n_virtual, domain=0)],
                   pad_id=tokenizer.pad_token_id, pack=False, capacity=128)


# ---------------------------------------------------------------------------------------------
# Without Ray: every objective's layout and loss back-propagate through the real student.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def svamp_rows(shared_data):
    from ray_cotd.student.corpus import load_corpus

    return load_corpus(shared_data / SVAMP, val_fraction=0.0).train[:2]


@pytest.fixture(scope="module")
def student():
    """LoRA + P-Tuning + domain head: every trainable part; objectives without PRADA ignore the head."""
    torch.manual_seed(0)
    return build_student(TrainConfig(objective="cascod+prada", peft="lora+ptuning", lora_r=4, num_virtual_tokens=4,
                                     encoder_hidden_size=32, domain_head_width=32,
                                     target_questions=str(DEMO_QUESTIONS)))


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_objective_trains_the_real_student(objective, student, svamp_rows, tokenizer):
    student.zero_grad(set_to_none=True)
    examples, stats = encode_rows(tokenizer, svamp_rows, OBJECTIVES[objective], max_seq_len=128, num_virtual=4)
    seqs = [s for seqs in examples for s in seqs]
    if OBJECTIVES[objective].domain_adversarial:
        seqs.append(prompt_sequence(tokenizer, QUESTION, n_virtual=4))
    batch = collate(seqs, pad_id=tokenizer.pad_token_id, pack=True, capacity=128)
    loss, parts = compute_loss(student, batch, OBJECTIVES[objective], LossParams(alpha=0.3, lambda_=0.1))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert stats.rows == 2 and len(examples) == 2
    if objective == "step_by_step":
        assert stats.sequences == 4  # the label task and the rationale task per row
    lora_grads = [p.grad for n, p in student.lm.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert student.prompt_encoder.embedding.weight.grad.abs().sum() > 0
    head_grads = [p.grad for p in student.domain_head.parameters()]
    if OBJECTIVES[objective].domain_adversarial:
        assert 0.0 <= parts["domain_accuracy"].item() <= 1.0 and "E" in parts
        assert all(g is not None and g.abs().sum() > 0 for g in head_grads)
    else:
        assert all(g is None for g in head_grads)  # the head is no part of these objectives' losses


def test_a_gsm8k_shaped_file_trains_cascod_on_its_own_rationales(student, tokenizer, tmp_path):
    """A dataset whose gold is a worked solution ("... #### 72") is a CoT corpus without a teacher:
    its rationale and answer train the real student's two CasCoD tasks (invented rows, GSM8K's layout)."""
    from ray_cotd.student.corpus import load_corpus

    path = tmp_path / "gsm8k.json"
    path.write_text(json.dumps([
        {"question": f"Tom has {n} bags of 4 apples. How many apples has he?", "answer": f"{n} * 4 = {4 * n}.\n#### {4 * n}"}
        for n in range(2, 8)]))
    rows = load_corpus(path, holdout_fraction=0.2, val_fraction=0.0).train[:2]
    assert rows and all(r["rationale"].endswith(f"= {r['answer']}.") for r in rows)
    student.zero_grad(set_to_none=True)
    examples, stats = encode_rows(tokenizer, rows, OBJECTIVES["cascod"], max_seq_len=128, num_virtual=4)
    batch = collate([s for seqs in examples for s in seqs], pad_id=tokenizer.pad_token_id, pack=True, capacity=128)
    loss, parts = compute_loss(student, batch, OBJECTIVES["cascod"], LossParams(alpha=0.3, lambda_=0.1))
    loss.backward()
    assert math.isfinite(loss.item()) and parts["rationale_loss"].item() > 0 and parts["answer_loss"].item() > 0


# ---------------------------------------------------------------------------------------------
# Through Ray Train
# ---------------------------------------------------------------------------------------------


def test_lora_ptuning_cascod_prada_auto_precision_merged(ray_cluster, shared_data, tmp_path, tokenizer):
    """One run covers LoRA + P-Tuning, cascod+prada with a target domain and the DANN λ ramp,
    precision auto (bf16 autocast where the CPU has a bf16 path; fp32 on an AVX2-only CPU, where this
    run took 227 s in bf16), validation, and merge_adapters."""
    target = shared_data / "strategyqa" / "train_answer_only.json"
    cfg = _cfg(shared_data, tmp_path, peft="lora+ptuning", objective="cascod+prada", precision="auto",
               target_questions=str(target), lambda_=0.5, lambda_schedule="dann", merge_adapters=True,
               val_fraction=0.01)
    summary = run_train(cfg)
    history = _steps(summary, 2, extra=PRADA_KEYS)
    for h in history:
        assert 0.0 <= h["domain_accuracy"] <= 1.0  # 2 source rows + 2 target questions per step
        assert h["loss"] == pytest.approx(h["task_loss"] + h["lambda"] * (h["domain_loss_source"]
                                                                         + h["domain_loss_target"]), rel=1e-4)
    assert history[0]["lambda"] == 0.0 and 0.0 < history[1]["lambda"] < 0.5  # the DANN ramp starts at 0
    assert summary["val_loss"] is not None and math.isfinite(summary["val_loss"])
    n_target = len(json.loads(target.read_text()))
    assert summary["data"]["target"]["questions"] == n_target
    assert 0 <= summary["data"]["target"]["dropped_too_long"] < n_target

    student_dir = Path(summary["student_dir"])
    assert {"adapter_config.json", "adapter_model.safetensors", "prompt_encoder.safetensors",
            "prompt_encoder.json", "domain_head.safetensors", "student.json"} <= _files(student_dir)
    meta = json.loads((student_dir / "student.json").read_text())
    assert (meta["peft"], meta["objective"], meta["precision"], meta["num_virtual_tokens"]) == (
        "lora+ptuning", "cascod+prada", resolve_precision("auto", "cpu"), 4)  # recorded resolved
    assert meta["holdout_split"] == {"split_seed": 0, "holdout_fraction": 0.2}  # what evaluate checks

    # merged full weights load with plain transformers and give base + adapter's logits
    from transformers import AutoModelForCausalLM

    merged_dir = Path(summary["merged_dir"])
    assert {"config.json", "model.safetensors", "prompt_encoder.safetensors", "student.json"} <= _files(merged_dir)
    assert "adapter_config.json" not in _files(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    adapted = load_model(spec_for_student_dir(student_dir)).eval()
    base = load_model(ModelSpec()).eval()
    ids = torch.tensor([tokenizer(QUESTION)["input_ids"]])
    with torch.no_grad():
        merged_logits, adapted_logits, base_logits = (m(input_ids=ids).logits for m in (merged, adapted, base))
    torch.testing.assert_close(merged_logits, adapted_logits, atol=2e-3, rtol=1e-3)
    assert (adapted_logits - base_logits).abs().max() > 2e-2  # the adapter trained: the check has teeth

    # ... and with the prompt encoder in front (what generation uses): the merged dir keeps it
    encoder = load_prompt_encoder(spec_for_student_dir(student_dir))
    merged_encoder = load_prompt_encoder(spec_for_student_dir(merged_dir))
    batch = _prompt_batch(tokenizer, 4)
    with torch.no_grad():
        a, _ = Student(adapted, encoder, None)(batch)
        m, _ = Student(merged, merged_encoder, None)(batch)
    # W + BA folded once vs W x + B(A x) round differently: after fp32 training (auto on an AVX2-only
    # CPU) 3 of 2.75 M logits differed by up to 0.0041, hence 5e-3
    torch.testing.assert_close(m, a, atol=5e-3, rtol=1e-3)

    _generates(spec_for_student_dir(student_dir), n_virtual=4)
    _generates(spec_for_student_dir(merged_dir), n_virtual=4)


def test_ptuning_only_prada(ray_cluster, shared_data, tmp_path, tokenizer):
    """P-Tuning alone (the base stays frozen, no LoRA files) under PRADA with Std-CoT as L_y, its
    domain classifier in its own optimizer group (domain_head_lr)."""
    cfg = _cfg(shared_data, tmp_path, peft="ptuning", objective="prada", target_questions=str(DEMO_QUESTIONS),
               lambda_=0.1, merge_adapters=True, domain_head_lr=1e-2)
    summary = run_train(cfg)
    history = _steps(summary, 2, extra=PRADA_KEYS)
    assert all(h["lambda"] == 0.1 for h in history)
    assert summary["data"]["target"] == {"questions": 14, "dropped_too_long": 0}
    assert "merged_dir" not in summary  # nothing to merge without LoRA

    student_dir = Path(summary["student_dir"])
    files = _files(student_dir)
    assert {"prompt_encoder.safetensors", "prompt_encoder.json", "domain_head.safetensors", "student.json"} <= files
    assert not {"adapter_config.json", "adapter_model.safetensors", "config.json"} & files
    spec = spec_for_student_dir(student_dir)
    assert spec.source == "default" and spec.adapter == str(student_dir)
    lm = load_model(spec)
    assert type(lm).__name__ == "LlamaForCausalLM"  # no peft wrapper: the base weights are untouched
    encoder = load_prompt_encoder(spec)
    assert encoder.config.num_virtual_tokens == 4 and encoder.config.encoder_hidden_size == 32
    # the encoder changes what the frozen base sees
    batch = _prompt_batch(tokenizer, 4)
    with torch.no_grad():
        with_encoder, _ = Student(lm, encoder, None)(batch)
        plain, _ = Student(lm, None, None)(batch)
    assert (with_encoder[0, -1] - plain[0, -1]).abs().max() > 1e-3
    _generates(spec, n_virtual=4)


def test_full_fine_tuning_step_by_step(ray_cluster, shared_data, tmp_path):
    """Full weights (every parameter trains), written as a plain HF model directory."""
    summary = run_train(_cfg(shared_data, tmp_path, peft="full", objective="step_by_step", lr=1e-4,
                             merge_adapters=True))
    _steps(summary, 2)
    assert "merged_dir" not in summary
    student_dir = Path(summary["student_dir"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "student.json"} <= _files(student_dir)
    assert not {"adapter_config.json", "prompt_encoder.json", "domain_head.safetensors"} & _files(student_dir)

    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(str(student_dir), dtype=torch.float32)
    base = load_model(ModelSpec())
    changed = [n for (n, p), q in zip(trained.named_parameters(), base.parameters()) if not torch.equal(p, q)]
    assert len(changed) > len(list(base.parameters())) // 2  # full fine-tuning moved most tensors
    spec = spec_for_student_dir(student_dir)
    assert spec.source == str(student_dir) and spec.adapter is None
    _generates(spec, n_virtual=0)


# ---------------------------------------------------------------------------------------------
# FSDP on two CPU workers (gloo)
# ---------------------------------------------------------------------------------------------


def test_adapter_written_from_gathered_tensors_equals_peft_s_own(tmp_path):
    """Under FSDP the LoRA files are written from the gathered tensors (save_student): byte for
    byte the tensors and config PeftModel.save_pretrained writes for the same weights."""
    from safetensors.torch import load_file

    from ray_cotd.student.train import save_student

    cfg = TrainConfig(peft="lora", lora_r=4)
    torch.manual_seed(0)
    student = build_student(cfg)
    for name, p in student.lm.named_parameters():
        if "lora_B" in name:
            p.data.normal_()  # not the zero init, so equal tensors mean something
    tok = load_tokenizer(ModelSpec())
    save_student(student, cfg, tok, tmp_path / "peft")
    gathered = {f"lm.{k}": v for k, v in student.lm.state_dict().items() if "lora_" in k}
    save_student(student, cfg, tok, tmp_path / "gathered", gathered)
    ours, theirs = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("gathered", "peft"))
    assert len(ours) == 420 and ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ours, theirs = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("gathered", "peft"))
    assert set(ours.pop("target_modules")) == set(theirs.pop("target_modules"))  # a set, written in any order
    assert ours == theirs


def test_fsdp_two_workers_gather_full_weights_and_resume(ray_cluster, shared_data, tmp_path):
    """parallel_strategy=fsdp shards the student over 2 CPU workers; the checkpoint holds the full
    tensors gathered on rank 0 (not rank 0's shard), and a second run resumes from it."""
    from safetensors.torch import load_file

    fsdp = dict(num_workers=2, parallel_strategy="fsdp", peft="lora+ptuning", objective="cascod+prada",
                target_questions=str(DEMO_QUESTIONS), batch_size=1)
    cfg = _cfg(shared_data, tmp_path, max_steps=1, **fsdp)
    summary = run_train(cfg)
    _steps(summary, 1, extra=PRADA_KEYS)
    student_dir = Path(summary["student_dir"])
    def shapes(tensors):
        return {k: tuple(v.shape) for k, v in tensors.items()}

    fresh = build_student(cfg)  # unsharded: the names and full shapes every file must have
    adapter = load_file(str(student_dir / "adapter_model.safetensors"))
    assert shapes(adapter) == {n.replace(".default.", "."): tuple(p.shape)  # peft's on-disk names
                               for n, p in fresh.lm.named_parameters() if "lora_" in n}
    assert len(adapter) == 420
    assert any(t.abs().sum() > 0 for n, t in adapter.items() if "lora_B" in n)  # trained, not the zero init
    encoder = load_file(str(student_dir / "prompt_encoder.safetensors"))
    assert shapes(encoder) == shapes(fresh.prompt_encoder.state_dict())
    head = load_file(str(student_dir / "domain_head.safetensors"))
    assert shapes(head) == shapes(fresh.domain_head.state_dict())
    _generates(spec_for_student_dir(student_dir), n_virtual=4)

    # the same run name resumes: FSDP loads the gathered optimizer state back into each shard
    resumed = run_train(_cfg(shared_data, tmp_path, max_steps=2, name=cfg.name, **fsdp))
    assert resumed["resumed_from_step"] == 1
    _steps(resumed, 2, extra=PRADA_KEYS)
