"""Student training: `ray-cotd train CONFIG` → `run_train(cfg)`.

Read top to bottom:
1. Ray-agnostic core: encode rows with the objective's layout, build the student (LoRA / P-Tuning /
   both / full weights, and PRADA's domain head), `compute_loss` and `train_step` (forward,
   objective, backward, optimizer). These run on a GPU box without Ray.
2. The Ray Train worker loop (`train_loop_per_worker`): setup, resume, the step loop with
   validation and checkpoints, report. Ray calls are marked `# [ray]`; rank logic is in
   `save_checkpoint` only.
3. The driver (`run_train`): read and check the corpus before any worker starts, put the encoded
   rows in Ray Data, fit a TorchTrainer, export the student directory.

Outputs under cfg.output_dir: student/ (a PEFT adapter dir or full HF weights, plus the prompt
encoder for P-Tuning and the domain head for PRADA), merged/ (adapters merged into full weights,
when asked), metrics.jsonl (one record per step and per validation), bad_rows.jsonl,
resolved_config.yaml, summary.json.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import CustomPolicy
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from ray_cotd import dirlock
from ray_cotd.config import ConfigError, ModelSpec, TrainConfig, save_resolved
from ray_cotd.configbase import to_dict
from ray_cotd.console import step_line
from ray_cotd.data.answers import fit_answer_type
from ray_cotd.data.contamination import format_overlap
from ray_cotd.data.errors import DataError
from ray_cotd.data.logprobs import MISMATCH
from ray_cotd.data.splits import SPLIT_KEY, HoldoutSplit
from ray_cotd.lm.generate import GenerationLimits, Generator
from ray_cotd.lm.model import STUDENT_META, load_model, load_tokenizer, resolve_precision, write_student_meta
from ray_cotd.lm.prompt_encoder import (
    PROMPT_ENCODER_CONFIG,
    PROMPT_ENCODER_WEIGHTS,
    PromptEncoder,
    PromptEncoderConfig,
    embed_inputs,
)
from ray_cotd.names import OBJECTIVES
from ray_cotd.ray_session import connect, release_leaked_placement_groups
from ray_cotd.scoring import score, scored_type
from ray_cotd.student.collate import (IGNORE, Batch, EncodeStats, Sequence, TeacherTopK, collate, plan_batches,
                                      prompt_sequence, segments)
from ray_cotd.student.kd import attach_teacher_targets, load_teacher_topk
from ray_cotd.student.objectives import LossInputs, LossParams, Objective, Row, get_objective
from ray_cotd.student.objectives.kd import kd_loss
from ray_cotd.student.prada import DOMAIN_HEAD_WEIGHTS, DomainHead, lambda_at, pool_examples
from ray_cotd.tracking import RunRef, attach, stage_run

TRAINER_STATE = "trainer_state.pt"  # optimizer, scheduler, step: only in Ray checkpoints
METRICS_LOG = "metrics.jsonl"
PTUNING = ("ptuning", "lora+ptuning")
LORA = ("lora", "lora+ptuning")


# ---------------------------------------------------------------------------------------------
# 1. Ray-agnostic core
# ---------------------------------------------------------------------------------------------


def n_virtual(cfg: TrainConfig) -> int:
    return cfg.num_virtual_tokens if cfg.peft in PTUNING else 0


def encode_rows(tokenizer: Any, rows: list[dict[str, Any]], objective: Objective, *, max_seq_len: int,
                num_virtual: int = 0, kd: bool = False) -> tuple[list[list[Sequence]], EncodeStats]:
    """Each row's sequences under the objective's layout; rationales cut to fit, never answers.

    Rows whose question + answer alone exceed max_seq_len are dropped and counted (their ids kept
    in stats.dropped_examples for the report). kd: give the sequences of rows with a teacher
    record (row["topk"], student/kd.py load_teacher_topk) the teacher's top-k at their aligned
    targets, counted in stats.kd_*.
    """
    stats = EncodeStats(rows=len(rows))
    examples = []
    for r in rows:
        laid = objective.layout(tokenizer, Row(r["question"], r.get("rationale") or "", r["answer"]), max_seq_len,
                                num_virtual)
        if laid is None:
            stats.dropped_too_long += 1
            if len(stats.dropped_examples) < 20:
                stats.dropped_examples.append(str(r.get("id")))
            continue
        if laid.truncated_tokens:
            stats.truncated_rationale += 1
            stats.truncated_tokens += laid.truncated_tokens
        if kd and r.get("topk") is not None:
            seg = segments(tokenizer, r["question"], r.get("rationale") or "", r["answer"])
            aligned, unaligned = attach_teacher_targets(laid.sequences, seg, r["topk"])
            stats.kd_rows += 1
            stats.kd_tokens += aligned
            stats.kd_unaligned_tokens += unaligned
            stats.kd_rows_unaligned += aligned == 0
        stats.sequences += len(laid.sequences)
        examples.append(laid.sequences)
    return examples, stats


def to_items(examples: list[list[Sequence]]) -> list[dict[str, Any]]:
    """Plain, Arrow-friendly rows for Ray Data (one per training row, its sequences as lists)."""
    return [{"seqs": json.dumps([[s.input_ids, s.targets, s.roles, s.question_start, s.question_len, s.n_virtual,
                                  s.domain, s.kd.to_json() if s.kd is not None else None] for s in seqs])}
            for seqs in examples]


def from_item(item: dict[str, Any]) -> list[Sequence]:
    return [Sequence(*fields[:7], kd=TeacherTopK.from_json(fields[7]) if fields[7] is not None else None)
            for fields in json.loads(item["seqs"])]


class Student(nn.Module):
    """The causal LM (LoRA-wrapped or not) plus the optional P-Tuning prompt encoder and PRADA
    domain head, as one module so DDP/FSDP sync all trainable parts."""

    def __init__(self, lm: nn.Module, prompt_encoder: PromptEncoder | None, domain_head: DomainHead | None) -> None:
        super().__init__()
        self.lm = lm
        self.prompt_encoder = prompt_encoder
        self.domain_head = domain_head

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> logits (R, T, V) and, with a domain head, its logits (E, 2) for the batch's E examples.

        No attention mask: positions restarting at 0 make transformers build the block-diagonal
        causal mask of packed rows (see collate.py). use_cache=False matters: with a cache object
        transformers skips that packed-sequence detection and attends across examples.
        The domain head runs here, inside the wrapped forward, so FSDP has its weights gathered.
        """
        embeds = embed_inputs(self.lm.get_input_embeddings(), batch.input_ids, batch.virtual_index,
                              self.prompt_encoder)
        with_head = self.domain_head is not None
        out = self.lm(inputs_embeds=embeds, position_ids=batch.position_ids, output_hidden_states=with_head,
                      use_cache=False)
        if not with_head:
            return out.logits, None
        with torch.autocast(device_type=embeds.device.type, enabled=False):  # pooling and classifier in fp32
            pooled = pool_examples(out.hidden_states[-1].float(), batch.example_index, batch.question_mask,
                                   batch.n_examples)
            return out.logits, self.domain_head(pooled)


def build_student(cfg: TrainConfig, *, resume_dir: str | Path | None = None) -> Student:
    """The student of cfg.peft, fresh or restored from a checkpoint directory we wrote."""

    resume = Path(resume_dir) if resume_dir is not None else None
    if cfg.peft == "full":
        source = ModelSpec(**{**asdict(cfg.student), "source": str(resume)}) if resume else cfg.student
        lm = load_model(source)
    else:
        lm = load_model(ModelSpec(**{**asdict(cfg.student), "adapter": None}))
        for p in lm.parameters():
            p.requires_grad_(False)
        if cfg.peft in LORA:
            if resume:
                lm = PeftModel.from_pretrained(lm, str(resume), is_trainable=True)
            else:
                lm = get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                   target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    encoder = None
    if cfg.peft in PTUNING:
        encoder = PromptEncoder.load(resume) if resume else PromptEncoder(PromptEncoderConfig(
            cfg.num_virtual_tokens, lm.get_input_embeddings().embedding_dim, cfg.encoder_hidden_size))
    head = None
    if get_objective(cfg.objective).domain_adversarial:
        head = DomainHead(lm.get_input_embeddings().embedding_dim, cfg.domain_head_width)
        if resume:
            head.load_state_dict(load_file(str(resume / DOMAIN_HEAD_WEIGHTS)))
    return Student(lm, encoder, head)


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _save_gathered_adapter(lm: PeftModel, state: dict[str, torch.Tensor], out: Path) -> None:
    """The peft adapter files from LoRA tensors gathered off FSDP shards.

    PeftModel.save_pretrained cannot pick them out of a state dict here: it finds its tensors by
    module name, and nested FSDP units put `_fsdp_wrapped_module` into those names (it strips only
    a leading one), so it writes an empty adapter. These are the files it writes otherwise:
    adapter_config.json in inference mode, and the LoRA tensors keyed without the adapter name
    ("...q_proj.lora_A.weight"), which PeftModel.from_pretrained loads (tests/integration/test_train_variants.py).
    """
    name = lm.active_adapter
    config = copy.deepcopy(lm.peft_config[name])
    config.inference_mode = True
    config.save_pretrained(str(out))
    weights = {k.replace(f".{name}.", "."): v.contiguous() for k, v in state.items() if ".lora_" in k}
    save_file(weights, str(out / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})


def save_student(student: Student, cfg: TrainConfig, tokenizer: Any, directory: str | Path,
                 state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write what transformers/peft load: the adapter (ModelSpec(source=base, adapter=dir)) or
    full weights (ModelSpec(source=dir)), the prompt encoder / domain head, and student.json.

    state: the student's state dict gathered from FSDP shards (keys "lm.", "prompt_encoder.",
    "domain_head."; for adapters only the trainable tensors); None = read the module itself.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if state is not None and cfg.peft in LORA:
        _save_gathered_adapter(student.lm, _part(state, "lm."), out)
    elif cfg.peft in LORA or cfg.peft == "full":
        student.lm.save_pretrained(str(out), **({"state_dict": _part(state, "lm.")} if state is not None else {}))
    if cfg.peft == "full":
        tokenizer.save_pretrained(str(out))
    if student.prompt_encoder is not None:
        student.prompt_encoder.save(out, None if state is None else _part(state, "prompt_encoder."))
    if student.domain_head is not None:
        head = student.domain_head.state_dict() if state is None else _part(state, "domain_head.")
        save_file({k: v.detach().contiguous().cpu() for k, v in head.items()}, str(out / DOMAIN_HEAD_WEIGHTS))
    write_student_meta(out, student_meta(cfg))
    return out


def student_meta(cfg: TrainConfig) -> dict[str, Any]:
    """student.json: the base model, peft kind, objective (which prompt generation uses) and the
    hold-out split the student was trained beside (which evaluate checks before scoring it on the
    split's test side)."""
    return {"base": cfg.student.source, "gguf_file": cfg.student.gguf_file, "peft": cfg.peft,
            "objective": cfg.objective, "num_virtual_tokens": n_virtual(cfg),
            "precision": resolve_precision(cfg.precision, "cuda" if cfg.use_gpu else "cpu"),
            SPLIT_KEY: HoldoutSplit(cfg.split_seed, cfg.holdout_fraction).as_dict()}


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position, 0 where the target is IGNORE. logits (R, T, V) -> (R, T).

    cross_entropy fuses log-softmax and gather, so no second (R, T, V) tensor is materialized; it
    runs in fp32 under bf16 autocast.
    """
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return -nll.view(targets.shape)


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if resolve_precision(precision, device) == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_loss(model: nn.Module, batch: Batch, objective: Objective, params: LossParams,
                 precision: str = "float32") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward one collated batch and apply the objective, plus kd_weight · L_KD at the batch's
    teacher-aligned targets when params.kd_weight > 0 (objectives/kd.py). `model` is what to call:
    the DDP/FSDP wrapper or the Student itself."""
    with _autocast(precision, batch.input_ids.device):
        logits, domain_logits = model(batch)
    inputs = LossInputs(token_logp=token_logprobs(logits, batch.targets), roles=batch.roles)
    if objective.domain_adversarial:
        inputs.domain_logits = domain_logits
        inputs.domain = batch.domain
    loss, parts = objective.loss(inputs, params)
    if params.kd_weight > 0:
        kd = kd_loss(logits, batch.kd_index, batch.kd_ids, batch.kd_logprobs)
        loss = loss + params.kd_weight * kd
        parts = {**parts, "kd_loss": kd.detach()}
    return loss, parts


def train_step(model: nn.Module, student: Student, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
               micro_batches: list[Batch], objective: Objective, params: LossParams, *,
               precision: str = "float32", max_grad_norm: float = 1.0) -> dict[str, float]:
    """One optimizer step over `micro_batches` (gradient accumulation; DDP/FSDP sync on the last only)."""
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not isinstance(model, (nn.parallel.DistributedDataParallel, FSDP)) \
            else model.no_sync()
        with sync:
            loss, parts = compute_loss(model, batch, objective, params, precision)
            (loss / len(micro_batches)).backward()
        for key, value in {"loss": loss.detach(), **parts}.items():
            totals[key] = totals.get(key, 0.0) + float(value) / len(micro_batches)
    if isinstance(model, FSDP):  # each rank holds a shard of every gradient: FSDP computes the global norm
        totals["grad_norm"] = float(model.clip_grad_norm_(max_grad_norm))
    else:
        trainable = [p for p in student.parameters() if p.requires_grad]
        totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm))
    optimizer.step()
    scheduler.step()
    return totals


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups: every trainable tensor at cfg.lr, except PRADA's domain classifier
    at cfg.domain_head_lr when that is set (found by name, under any DDP/FSDP wrapper prefix)."""
    head, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if cfg.domain_head_lr is not None and "domain_head." in name else rest).append(p)
    return [{"params": rest, "lr": cfg.lr}] + ([{"params": head, "lr": cfg.domain_head_lr}] if head else [])


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR:
    """Linear warmup, then constant / linear decay to 0 / cosine to 0 at max_steps."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return LambdaLR(optimizer, factor)


def trainer_state(optimizer_state: dict[str, Any], scheduler: LRScheduler, step: int) -> dict[str, Any]:
    """What trainer_state.pt holds beside the student in a Ray checkpoint: the optimizer state (keyed
    by parameter name), the scheduler state, the step and the CPU RNG state. Tensors and plain
    containers only, so load_trainer_state reads it with weights_only=True."""
    return {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "step": step,
            "rng": torch.get_rng_state()}


def load_trainer_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """trainer_state.pt of a checkpoint directory, unpickled with weights_only=True: whoever can
    write the checkpoint storage (a shared volume, a bucket) must not be able to run code on resume."""
    return torch.load(os.path.join(checkpoint_dir, TRAINER_STATE), weights_only=True)


class BatchStream:
    """Micro-batches of one worker's rows, epoch after epoch, in a seeded order.

    Position `k` (micro-batches consumed so far) fully determines what comes next, so a resumed
    run continues the same order: epoch = k // batches_per_epoch.
    """

    def __init__(self, examples: list[list[Sequence]], cfg: TrainConfig, *, pad_id: int, seed: int,
                 targets: list[Sequence] | None = None) -> None:
        if not examples:
            raise DataError("this worker received no training rows (more workers than rows?)", field="num_workers")
        self.examples, self.cfg, self.pad_id, self.seed = examples, cfg, pad_id, seed
        self.targets = targets or []
        self.lengths = [sum(len(s) for s in seqs) for seqs in examples]
        self.per_epoch = math.ceil(len(examples) / cfg.batch_size)

    def batch(self, k: int) -> Batch:
        epoch, index = divmod(k, self.per_epoch)
        plan = plan_batches(self.lengths, self.cfg.batch_size, batching=self.cfg.batching, seed=self.seed + epoch)
        seqs = [s for i in plan[index] for s in self.examples[i]]
        if self.targets:  # PRADA: as many unlabeled target questions as labeled rows, cycling
            start = (k * len(plan[index])) % len(self.targets)
            seqs += [self.targets[(start + j) % len(self.targets)] for j in range(len(plan[index]))]
        return collate(seqs, pad_id=self.pad_id, pack=self.cfg.batching == "packed", capacity=self.cfg.max_seq_len)


# ---------------------------------------------------------------------------------------------
# 2. The Ray Train worker loop
# ---------------------------------------------------------------------------------------------


def _rows(shard: Any) -> list[list[Sequence]]:
    return [from_item(item) for item in shard.iter_rows()]


def _all_reduce_mean(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)  # NCCL needs device tensors
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t)}


def validation_loss(model: nn.Module, val: list[list[Sequence]], cfg: TrainConfig, objective: Objective,
                    params: LossParams, pad_id: int, world: int, device: torch.device) -> float:
    """Mean task loss over this worker's validation rows, averaged over all workers' batches.

    Under FSDP every forward is a collective: Ray Train splits datasets equally, so every worker
    runs the same number of batches here."""
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(val), cfg.batch_size):
            seqs = [s for seqs in val[start : start + cfg.batch_size] for s in seqs]
            batch = collate(seqs, pad_id=pad_id, pack=cfg.batching == "packed", capacity=cfg.max_seq_len)
            if objective.domain_adversarial:  # no target rows here: score the task loss L_y only
                batch.domain = torch.zeros_like(batch.domain)
            loss, parts = compute_loss(model, batch.to(device), objective, params, cfg.precision)
            total += float(parts.get("task_loss", loss))
            count += 1
    model.train()
    if world > 1:
        t = torch.tensor([total, count], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = float(t[0]), float(t[1])
    return total / max(count, 1.0)


class VLLMValidation:
    """Validation answers on vLLM (TrainConfig.val_backend: vllm), on rank 0: one engine on the base
    model, started at the first validation with LoRA enabled; every validation saves the adapter
    being trained and runs it as a new LoRA request (vLLM loads adapters per request), so the engine
    never restarts. Only LoRA students (TrainConfig checks)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.engine: Any = None
        self.adapters = Path(tempfile.mkdtemp(prefix="ray-cotd-val-adapters-"))
        self.count = 0

    def generator(self, student: Student, tokenizer: Any) -> Any:
        from vllm.lora.request import LoRARequest

        from ray_cotd.lm.vllm import VLLMGenerator, check_engine, engine_kwargs, generation_eos, start_engine, \
            student_plan

        cfg = self.cfg
        base = student_plan(ModelSpec(**{**asdict(cfg.student), "adapter": None}))
        if self.engine is None:
            check_engine(base.source, cfg.vllm, dtype=base.dtype, trust_remote_code=cfg.student.trust_remote_code)
            self.engine = start_engine(engine_kwargs(base.source, cfg.vllm, dtype=base.dtype, lora_rank=cfg.lora_r,
                                                     trust_remote_code=cfg.student.trust_remote_code), cfg.vllm,
                                       in_process=False)  # in process, vLLM would pin this training process's threads
            self.eos_ids = generation_eos(base.source, tokenizer)
        self.count += 1
        adapter = self.adapters / f"step-{self.count}"
        student.lm.save_pretrained(str(adapter))
        shutil.rmtree(self.adapters / f"step-{self.count - 2}", ignore_errors=True)  # vLLM has loaded it by now
        return VLLMGenerator(self.engine, tokenizer, self.eos_ids, lora=LoRARequest(adapter.name, self.count,
                                                                                    str(adapter)),
                             label_task=OBJECTIVES[cfg.objective].label_task)


def val_accuracy(student: Student, tokenizer: Any, questions: list[dict[str, str]], cfg: TrainConfig,
                 vllm: VLLMValidation | None = None) -> float:
    """Share of validation questions the student answers right by two-stage generation, scored by
    ray_cotd.scoring.score on the stage-2 text: the generation and the scoring evaluation uses, so
    a sweep selects on the accuracy the evaluation report shows. A step_by_step student answers
    through its label task, as evaluation prompts it. vllm: generate there instead of with the
    training model (TrainConfig.val_backend)."""
    answer_type = fit_answer_type(q["answer"] for q in questions).answer_type  # as evaluate types a set
    student.eval()
    if vllm is not None:
        generator = vllm.generator(student, tokenizer)
    else:
        generator = Generator(student.lm, tokenizer, prompt_encoder=student.prompt_encoder,
                              label_task=OBJECTIVES[cfg.objective].label_task)
    with torch.no_grad():
        results = generator.two_stage([q["question"] for q in questions],
                                      GenerationLimits(max_rationale_tokens=cfg.val_max_rationale_tokens))
    student.train()
    return sum(score(r.answer_text, q["answer"], scored_type(q["answer"], answer_type), question=q["question"])["correct"]
               for r, q in zip(results, questions)) / len(questions)


def save_checkpoint(model: nn.Module, student: Student, cfg: TrainConfig, tokenizer: Any,
                    optimizer: torch.optim.Optimizer, scheduler: LRScheduler, step: int,
                    history: list[dict[str, Any]], metrics: dict[str, Any], rank: int) -> None:
    """Rank 0 writes the student (HF format) + trainer state + metrics log; every rank reports.

    The one place with rank logic: every worker must call report (it is a barrier), and under FSDP
    every worker first joins the gather of the full weights and optimizer state, which only rank 0
    keeps (the module on each rank holds just its shard). The optimizer state is saved keyed by
    parameter name (torch.distributed.checkpoint.state_dict), the same layout for DDP and FSDP.
    """
    import ray.train

    # cpu_offload also keeps the gathered tensors on rank 0 only; torch 2.13 segfaults doing it for
    # tensors already on the CPU, where every rank then holds the gathered copy until it returns.
    offload = next(model.parameters()).device.type != "cpu"
    state = None
    if isinstance(model, FSDP):  # adapters: gather only the trainable tensors, not the frozen base
        state = get_model_state_dict(model, options=StateDictOptions(
            full_state_dict=True, cpu_offload=offload, ignore_frozen_params=cfg.peft != "full"))
    optimizer_state = get_optimizer_state_dict(model, optimizer,
                                               options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_student(student, cfg, tokenizer, tmp, state)
            torch.save(trainer_state(optimizer_state, scheduler, step), os.path.join(tmp, TRAINER_STATE))
            with open(os.path.join(tmp, METRICS_LOG), "w") as f:
                f.writelines(json.dumps(rec) + "\n" for rec in history)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)  # [ray]
        ray.train.report(metrics, checkpoint=checkpoint)  # [ray]


def fsdp_wrap_policy(student: Student, cfg: TrainConfig) -> CustomPolicy:
    """FSDP's units: each decoder layer (transformers' `_no_split_modules`), the prompt encoder,
    the domain head and, when only adapters train, each LM module with trainable weights of its own
    (the LoRA matrices). So no unit mixes frozen and trainable weights: FSDP reduces gradients per
    unit, and a decoder layer with LoRA inside would reduce-scatter a layer-sized gradient that is
    zero but for the LoRA part. The prompt encoder is one unit, not its leaves: its forward reads
    its embedding's weight directly, which FSDP gathers only for the unit being run."""
    base = student.lm.get_base_model() if isinstance(student.lm, PeftModel) else student.lm
    layer_names = set(base._no_split_modules or [])
    lm_modules = {id(m) for m in student.lm.modules()}
    adapters = cfg.peft != "full"

    def is_unit(module: nn.Module) -> bool:
        if type(module).__name__ in layer_names or isinstance(module, (PromptEncoder, DomainHead)):
            return True
        return adapters and id(module) in lm_modules and any(p.requires_grad for p in module.parameters(recurse=False))

    return CustomPolicy(is_unit)


def prepare_student(student: Student, cfg: TrainConfig, world: int) -> nn.Module:
    """Move the student to the worker's device and wrap it for cfg.parallel_strategy.

    DDP: Ray's prepare_model. FSDP: wrapped here, because Ray's prepare_model refuses FSDP when
    CUDA is absent and its default FSDP arguments fail on our student (LoRA and P-Tuning leave
    frozen weights beside trainable ones, which needs use_orig_params=True). Full sharding, units
    from `fsdp_wrap_policy`; the same code runs on CPU workers (gloo, tested) and on GPUs (NCCL,
    not verified here). One worker is never wrapped (as in Ray).
    """
    import ray.train.torch

    if cfg.parallel_strategy == "ddp" or world == 1:
        return ray.train.torch.prepare_model(student, parallel_strategy="ddp")  # [ray]
    device = ray.train.torch.get_device()  # [ray]
    student = ray.train.torch.prepare_model(student, parallel_strategy=None)  # [ray] only moves it to the device
    # Every rank built the same weights (same files, same seed); the broadcast that checks it
    # (sync_module_states) is GPU-only in torch, so CPU workers skip it.
    return FSDP(student, device_id=device, use_orig_params=True, auto_wrap_policy=fsdp_wrap_policy(student, cfg),
                sync_module_states=device.type != "cpu")


def progress(line: str) -> None:
    """One progress line from a Train worker, printed once.

    Ray Train V2 patches `print` in its workers: the text goes to the worker's stdout *and* to the
    root logger, whose console handler writes it again, so every `print` reached the driver twice.
    Writing to the stream directly skips the patch (metrics.jsonl keeps the values).
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def report_kind(step: int, cfg: TrainConfig, *, validated: bool) -> str | None:
    """What step `step` reports to Ray: "checkpoint", "metrics" (no checkpoint) or None.

    Checkpoint steps and the last step report with a checkpoint; validation steps (what Tune
    trials rank and ASHA stops on) and every `report_every`-th step report metrics; other steps
    report nothing. Ray Train V2's controller takes one report per worker per poll (every
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s) through a queue of one, so a report every step held
    training to 0.5 steps/s. Every step's metrics still go to metrics.jsonl. The same answer on
    every rank: a report is a barrier.
    """
    if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
        return "checkpoint"
    if validated or (cfg.report_every and step % cfg.report_every == 0):
        return "metrics"
    return None


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The TorchTrainer worker function: setup, resume, loop, report."""
    import ray.train
    import ray.train.torch


    cfg: TrainConfig = config["cfg"]
    ctx = ray.train.get_context()  # [ray]
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray sets OMP_NUM_THREADS to the worker's CPUs; torch must match or two workers oversubscribe.
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    objective = get_objective(cfg.objective)
    tokenizer = load_tokenizer(cfg.student)

    # --- setup: resume from the latest checkpoint when there is one (a retry or the same run name)
    device = ray.train.torch.get_device()  # [ray]
    if rank == 0 and cfg.precision == "auto":
        progress(f"precision auto: {resolve_precision('auto', device)} on {device.type}")
    start_step, history, state = 0, [], None
    checkpoint = ray.train.get_checkpoint()  # [ray]
    resume_ctx = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    with resume_ctx as resume_dir:
        student = build_student(cfg, resume_dir=resume_dir)
        if resume_dir is not None:
            state = load_trainer_state(resume_dir)
            start_step = state["step"]
            with open(os.path.join(resume_dir, METRICS_LOG)) as f:
                history = [json.loads(line) for line in f if line.strip()]
    model = prepare_student(student, cfg, world)
    # after wrapping: FSDP's use_orig_params parameters are what the optimizer must step
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=0.0)
    scheduler = make_scheduler(optimizer, cfg)
    if state is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    if rank == 0 and start_step:
        progress(f"[train] resumed from step {start_step}")

    train_rows = _rows(ray.train.get_dataset_shard("train"))  # [ray]
    val_rows = _rows(ray.train.get_dataset_shard("val")) if config["has_val"] else []  # [ray]
    targets = [s for seqs in _rows(ray.train.get_dataset_shard("target")) for s in seqs] \
        if objective.domain_adversarial else None  # [ray]
    stream = BatchStream(train_rows, cfg, pad_id=tokenizer.pad_token_id, seed=cfg.seed * 1000 + rank, targets=targets)
    tracked = attach(config["mlflow_run"] if rank == 0 else None)  # MLflow from rank 0 only (NoRun elsewhere)

    # --- the loop
    model.train()
    metrics: dict[str, Any] = {}
    vllm_validation: VLLMValidation | None = None
    for step in range(start_step + 1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        params = LossParams(alpha=cfg.alpha, lambda_=lambda_at(cfg.lambda_, cfg.lambda_schedule, (step - 1) / cfg.max_steps),
                            kd_weight=cfg.kd_weight)
        micro = [stream.batch((step - 1) * cfg.grad_accum + i).to(device) for i in range(cfg.grad_accum)]
        values = train_step(model, student, optimizer, scheduler, micro, objective, params, precision=cfg.precision)
        values = _all_reduce_mean(values, world, device)
        seconds = time.perf_counter() - t0
        tokens = sum(b.real_tokens for b in micro) * world
        metrics = {"step": step, **values, "lr": scheduler.get_last_lr()[0], "tokens": tokens,
                   "tokens_per_s": tokens / seconds, "step_s": seconds, "time": time.time()}
        if objective.domain_adversarial:
            metrics["lambda"] = params.lambda_
        if config["has_val"] and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.max_steps):
            metrics["val_loss"] = validation_loss(model, val_rows, cfg, objective, params, tokenizer.pad_token_id, world,
                                            device)
            if config["val_questions"] and rank == 0:
                if vllm_validation is None and cfg.val_backend == "vllm":
                    vllm_validation = VLLMValidation(cfg)
                metrics["val_accuracy"] = val_accuracy(student, tokenizer, config["val_questions"], cfg,
                                                       vllm_validation)
        history.append(metrics)
        if rank == 0:
            progress(step_line(step, cfg.max_steps,
                               {k: v for k, v in metrics.items() if k not in ("step", "tokens", "time")}))
            tracked.log_metrics({k: v for k, v in metrics.items() if k not in ("step", "time")}, step=step)
        report = report_kind(step, cfg, validated="val_loss" in metrics)
        if report == "checkpoint":
            save_checkpoint(model, student, cfg, tokenizer, optimizer, scheduler, step, history, metrics, rank)
        elif report == "metrics":
            ray.train.report(metrics)  # [ray] free-floating: Tune trials and the dashboard see it
    return {"start_step": start_step, "final": metrics}


# ---------------------------------------------------------------------------------------------
# 3. The driver
# ---------------------------------------------------------------------------------------------


def _storage_path(cfg: TrainConfig) -> str:
    if cfg.storage_path:
        return cfg.storage_path if "://" in cfg.storage_path else str(Path(cfg.storage_path).resolve())
    return str((Path(cfg.output_dir) / "ray").resolve())


def check_parallel(cfg: TrainConfig) -> None:
    """Settings the parallel strategy cannot run, refused before any worker starts."""
    if cfg.parallel_strategy == "fsdp" and cfg.num_workers > 1 and cfg.val_generate > 0:
        raise ConfigError("val_generate: scoring validation questions by generation needs the whole student on "
                          "rank 0, but under parallel_strategy=fsdp each worker holds a shard; use ddp or "
                          "val_generate=0")


def prepare_data(cfg: TrainConfig, tokenizer: Any) -> dict[str, Any]:
    """Read, split and encode the corpus, failing before any worker starts when it cannot train."""
    from ray_cotd.student.corpus import contamination_questions, decontaminate, load_corpus, load_target_questions

    objective = get_objective(cfg.objective)
    corpus = load_corpus(cfg.corpus, cfg.mapping, needs_rationale=objective.needs_rationale,
                         holdout_fraction=cfg.holdout_fraction, val_fraction=cfg.val_fraction,
                         split_seed=cfg.split_seed)
    contamination = None
    if cfg.decontaminate != "off" and cfg.contamination_sets:
        # a `holdout: test` set is its test side under this run's split, as evaluate takes it
        test_sets = contamination_questions(cfg.contamination_sets, holdout_fraction=cfg.holdout_fraction,
                                            split_seed=cfg.split_seed)
        contamination = decontaminate(corpus, test_sets, cfg.decontaminate)
    kd = None
    if cfg.kd_weight > 0:  # the teacher's records: a clear error here if there are none, or another vocabulary
        corpus.train, kd_bad, kd = load_teacher_topk(corpus.train, tokenizer, corpus=cfg.corpus,
                                                     student=cfg.student.source)
        corpus.dropped[MISMATCH] += len(kd_bad)
        corpus.bad.extend(kd_bad)
    nv = n_virtual(cfg)
    # validation rows carry no teacher targets: val_loss stays the objective's, comparable across kd_weight
    train, stats = encode_rows(tokenizer, corpus.train, objective, max_seq_len=cfg.max_seq_len, num_virtual=nv,
                               kd=kd is not None)
    val, val_stats = encode_rows(tokenizer, corpus.val, objective, max_seq_len=cfg.max_seq_len, num_virtual=nv)
    if not train:
        raise DataError(f"all {stats.rows} training rows are longer than max_seq_len={cfg.max_seq_len} even with "
                        "the rationale cut to one token; raise max_seq_len", path=cfg.corpus, field="max_seq_len")
    if kd is not None and stats.kd_tokens == 0:
        raise DataError(f"kd_weight: none of the {stats.kd_tokens + stats.kd_unaligned_tokens} training targets of the "
                        f"{stats.kd_rows} rows with teacher log-probabilities lines up with the teacher's tokens (the "
                        "re-tokenized rationales do not reproduce its ids)", path=cfg.corpus, field="kd_weight")
    if len(train) < cfg.num_workers:
        raise DataError(f"{len(train)} training rows cannot feed {cfg.num_workers} workers", path=cfg.corpus)
    targets: list[list[Sequence]] = []
    target_stats = None
    if objective.domain_adversarial:
        questions = load_target_questions(cfg.target_questions)
        for q in questions:
            seq = prompt_sequence(tokenizer, q, n_virtual=nv)
            if len(seq) <= cfg.max_seq_len:
                targets.append([seq])
        target_stats = {"questions": len(questions), "dropped_too_long": len(questions) - len(targets)}
        if len(targets) < cfg.num_workers:
            raise DataError(f"{len(targets)} of {len(questions)} target-domain questions fit max_seq_len="
                            f"{cfg.max_seq_len}; {cfg.num_workers} workers need at least one each",
                            path=cfg.target_questions, field="target_questions")
    return {"corpus": corpus, "train": train, "val": val, "targets": targets, "stats": stats, "val_stats": val_stats,
            "target_stats": target_stats, "contamination": contamination, "kd": kd}


def export_student(checkpoint_dir: str | Path, cfg: TrainConfig) -> dict[str, str]:
    """Copy the final checkpoint's student files to output_dir/student (and merge if asked)."""
    out = Path(cfg.output_dir)
    student_dir = out / "student"
    if student_dir.exists():
        shutil.rmtree(student_dir)
    shutil.copytree(checkpoint_dir, student_dir, ignore=shutil.ignore_patterns(TRAINER_STATE, METRICS_LOG))
    shutil.copy(Path(checkpoint_dir) / METRICS_LOG, out / METRICS_LOG)
    paths = {"student_dir": str(student_dir)}
    if cfg.merge_adapters and cfg.peft in LORA:
    
        merged = out / "merged"
        lm = load_model(ModelSpec(**{**asdict(cfg.student), "adapter": str(student_dir)})).merge_and_unload()
        lm.save_pretrained(str(merged))
        load_tokenizer(cfg.student).save_pretrained(str(merged))
        for name in (PROMPT_ENCODER_WEIGHTS, PROMPT_ENCODER_CONFIG, STUDENT_META):  # lora+ptuning keeps its encoder;
            # student.json: the objective and hold-out split of the merged weights too
            if (student_dir / name).is_file():
                shutil.copy(student_dir / name, merged / name)
        paths["merged_dir"] = str(merged)
    return paths


# glibc returns every freed block above its mmap threshold (the logits, most activations) to the
# OS, so each CPU step page-faults about 1 GB back in: 10-30% of a full fp32 step here
# (docs/benchmarks.md). These tunables keep freed memory in the process. glibc reads them at exec,
# so they go into the workers' environment (a mallopt() call at run time left most faults in place).
# arena_max=1 matters: Ray Train runs the loop in a non-main thread, whose arena mmaps large blocks
# whatever the threshold. The cost is a higher peak RSS (+11% for full fp32 here: 7.4 vs 6.7 GB).
# Full fine-tuning only: on a LoRA step (~300 tokens, many small kernels) arena_max=1 makes every
# thread allocate from one arena, and a 16-step LoRA bf16 run stepped 1.37x slower in a Ray Train
# worker with the tunables than without (1.97 vs 1.44 s; docs/benchmarks.md, 2026-12-03).
CPU_MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"
                       ":glibc.malloc.arena_max=1")


def worker_runtime_env(cfg: TrainConfig) -> dict[str, Any]:
    """The Ray Train workers' runtime env: the malloc tunables for CPU workers that fine-tune every
    weight (peft: full), unless turned off or the caller already set GLIBC_TUNABLES (workers inherit
    the job's environment). LoRA and P-Tuning workers keep glibc's defaults (see CPU_MALLOC_TUNABLES)."""
    if cfg.use_gpu or not cfg.cpu_malloc_cache or cfg.peft != "full" or "GLIBC_TUNABLES" in os.environ:
        return {}
    return {"env_vars": {"GLIBC_TUNABLES": CPU_MALLOC_TUNABLES}}


def fit_student(cfg: TrainConfig, *, callbacks: list[Any] | None = None,
                mlflow_run: RunRef | None = None) -> tuple[Any, dict[str, Any]]:
    """Check and encode the corpus, then fit a TorchTrainer; -> (Ray Train result, data report).

    Shared by `run_train` and by each Ray Tune trial (which passes TuneReportCallback so the
    rank-0 reports become the trial's results). mlflow_run: the MLflow run rank 0 logs every
    step's metrics to (ray_cotd.tracking), or None.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from ray_cotd.data.readers import BadRow, write_bad_rows

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    objective = get_objective(cfg.objective)
    print(f"[train] objective={cfg.objective} peft={cfg.peft} precision={cfg.precision} "
          f"workers={cfg.num_workers} batching={cfg.batching}", flush=True)

    check_parallel(cfg)
    data = prepare_data(cfg, load_tokenizer(cfg.student))
    corpus, stats = data["corpus"], data["stats"]
    bad_path = out / "bad_rows.jsonl"
    if bad_path.exists():
        bad_path.unlink()
    write_bad_rows([BadRow(b["path"], b["row"], b["field"], b["reason"], b["detail"]) for b in corpus.bad], bad_path)
    data_report = {**corpus.summary(), "encode": stats.as_dict(), "val_encode": data["val_stats"].as_dict()}
    if data["target_stats"] is not None:
        data_report["target"] = data["target_stats"]
    if data["kd"] is not None:
        data_report["kd"] = {**data["kd"], "kd_weight": cfg.kd_weight}
        kd_targets = stats.kd_tokens + stats.kd_unaligned_tokens
        print(f"[train] token-level KD (kd_weight={cfg.kd_weight}, teacher top-{data['kd']['k']}): "
              f"{data['kd']['rows_with_logprobs']} rows with teacher log-probabilities, "
              f"{data['kd']['rows_without_logprobs']} without, {data['kd'][MISMATCH]} rejected ({MISMATCH}); "
              f"{stats.kd_tokens} of {kd_targets} targets of those rows line up with the teacher's tokens", flush=True)
    print(f"[train] data: {len(corpus.train)} training rows, {len(corpus.val)} validation, {corpus.held_out} held "
          f"out as test; dropped {dict(corpus.dropped) or 'none'}; {stats.truncated_rationale} rationales cut to "
          f"fit, {stats.dropped_too_long} rows too long", flush=True)
    if data["contamination"] is not None:
        data_report["contamination"] = {**data["contamination"].as_dict(), "decontaminate": cfg.decontaminate}
        action = "kept (decontaminate: warn)" if cfg.decontaminate == "warn" else "dropped (decontaminate: drop)"
        print(f"[train] contamination check (normalized exact match and {data['contamination'].n}-gram overlap):",
              flush=True)
        for line in format_overlap(data["contamination"], action=action):
            print(f"[train]   {line}", flush=True)

    connect()  # [ray] the embedded local cluster; under `ray job submit` it joins the cluster
    # CPUs a dead job's Train run still holds (ray_session). Every Train run passes here: `ray-cotd
    # train` and each Tune trial, which may start before the GCS has recorded the death of the
    # interrupted sweep's Train controller, so run_tune's own call at the start can come too early.
    release_leaked_placement_groups()
    datasets = {"train": ray.data.from_items(to_items(data["train"]))}  # [ray]
    if data["val"]:
        datasets["val"] = ray.data.from_items(to_items(data["val"]))  # [ray]
    if objective.domain_adversarial:
        datasets["target"] = ray.data.from_items(to_items(data["targets"]))  # [ray]

    # Validation questions scored by two-stage generation (val_accuracy), on rank 0.
    unique = {r["question"]: r["answer"] for r in data["corpus"].val}  # several samples, one question
    val_questions = [{"question": q, "answer": a} for q, a in unique.items()][: cfg.val_generate]
    trainer = TorchTrainer(  # [ray]
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "has_val": bool(data["val"]), "val_questions": val_questions,
                           "mlflow_run": mlflow_run},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=_storage_path(cfg), callbacks=callbacks,
            worker_runtime_env=worker_runtime_env(cfg),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level=cfg.ray_log_level)),
        datasets=datasets,
    )
    return trainer.fit(), data_report  # [ray]


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a student as `cfg` says, on cfg.num_workers Ray Train workers; returns a summary with
    steps, final loss, student_dir and checkpoints. With `mlflow: true`, one MLflow run holds the
    config, every step's metrics (logged by rank 0) and the summary, metrics log and config files.
    One run per output directory (ray_cotd.dirlock): a second run into it is refused while the first
    lives; a killed run's lock, on this host or (after a minute without its heartbeat) on another, is
    taken over, so a restarted job resumes from its last checkpoint."""
    with dirlock.hold(cfg.output_dir, "train"), stage_run(
            cfg.mlflow, cfg.mlflow_uri, cfg.output_dir, "train", parent_run_id=cfg.mlflow_parent_run_id,
            params=to_dict(cfg)) as run:
        summary = train_student(cfg, run.ref)
        run.log_metrics({k: summary[k] for k in ("first_loss", "final_loss", "val_loss", "val_accuracy")
                         if summary[k] is not None}, step=summary["steps"])
        for name in ("summary.json", METRICS_LOG, "resolved_config.yaml", "bad_rows.jsonl"):
            run.log_artifact(Path(cfg.output_dir) / name)
    return summary


def train_student(cfg: TrainConfig, mlflow_run: RunRef | None = None) -> dict[str, Any]:
    """run_train's work: fit, export the student directory, write summary.json."""
    out = Path(cfg.output_dir)
    result, data_report = fit_student(cfg, mlflow_run=mlflow_run)
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint under {result.path}")
    with result.checkpoint.as_directory() as final_dir:
        paths = export_student(final_dir, cfg)
    history = [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines() if line.strip()]
    steps = [h for h in history if "loss" in h]
    summary = {
        "steps": steps[-1]["step"] if steps else 0,
        "first_loss": steps[0]["loss"] if steps else None,
        "final_loss": steps[-1]["loss"] if steps else None,
        "val_loss": next((h["val_loss"] for h in reversed(history) if "val_loss" in h), None),
        "val_accuracy": next((h["val_accuracy"] for h in reversed(history) if "val_accuracy" in h), None),
        "resumed_from_step": (result.return_value or {}).get("start_step"),
        **paths,
        "checkpoints": [c.path for c, _ in result.best_checkpoints],
        "run_path": result.path,
        "metrics_log": str(out / METRICS_LOG),
        "data": data_report,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"[train] done: {summary['steps']} steps, final loss {summary['final_loss']}, student {paths['student_dir']}",
          flush=True)
    return summary


__all__ = [
    "Student",
    "BatchStream",
    "build_student",
    "compute_loss",
    "encode_rows",
    "export_student",
    "fit_student",
    "load_trainer_state",
    "make_scheduler",
    "prepare_data",
    "run_train",
    "save_student",
    "student_meta",
    "train_student",
    "token_logprobs",
    "train_loop_per_worker",
    "trainer_state",
    "train_step",
]
