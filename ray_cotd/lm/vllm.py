"""Student generation on vLLM: lm.generate's two-stage contract on vLLM's engine.

    stage 1: prompt ids (the same ids the HF backend feeds)   -> rationale ids
    stage 2: prompt + kept rationale ids + ids of STAGE2_PREFIX -> answer ids

Both stages send token ids (vLLM's TokensPrompt), never text, so stage 2 sees exactly the marker
ids training saw; with prefix caching on (the default) stage 2 reuses stage 1's computed KV blocks
instead of prefilling prompt + rationale again (RequestOutput.num_cached_tokens says how many).
What each stage keeps is decided by lm.generate.StageRules replayed over the ids vLLM returned:
the same rules, on the same tokenizer's pieces, as the HF decoding loop. vLLM's own stop (the
marker string, "\\n" after the answer, EOS) only ends a request early; greedy tokens before the cut
do not depend on it.

Which students run here (`student_plan`, `engine_plan`): the base model or full weights as the
engine's model; a LoRA student either from its adapter merged into a cached copy of its base's
weights (`vllm.lora: merge`, the default on CPU: vLLM's CPU LoRA path generated ~7x slower than the
same student merged) or as a LoRARequest on its base (`request`, the default on GPU: vLLM applies
the adapter per request, so one engine serves the untrained baseline and every LoRA student of that
base). A P-Tuning student (a prompt encoder in its directory) is refused with the reason: its
virtual-token embeddings are not fed here, and answering without them would be a different model;
the HF backend runs it.

Where the engine core runs: in this process for VLLMEngines (evaluate's path; one such engine per
process, start_engine says why), in vLLM's child process for training validation and wherever
`vllm.in_process: false`; a script that builds an engine in `__main__` needs the
`if __name__ == "__main__":` guard for the latter.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, GenerationConfig, PreTrainedTokenizerBase

from ray_cotd.config import ConfigError, ModelSpec, VLLMEngineSpec
from ray_cotd.lm.format import STAGE2_PREFIX, encode, student_prompt_ids
from ray_cotd.lm.generate import GenerationLimits, StageRules, TwoStageResult, _Row, eos_token_ids, split_one_stage
from ray_cotd.lm.model import (
    ADAPTER_CONFIG,
    ModelLoadError,
    answers_through_label_task,
    check_adapter,
    load_tokenizer,
    merged_lora_source,
    resolve_precision,
    resolve_source,
)
from ray_cotd.lm.prompt_encoder import PROMPT_ENCODER_CONFIG

# vLLM accepts these LoRA ranks only (vllm.config.lora.MaxLoRARanks); an adapter's r is rounded up.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Stage 1 may stop as soon as the marker is written; the replayed rule then cuts before it.
STAGE1_STOP = ("The answer is",)
# Stage 2: the answer ends at a newline at the latest (answer_end also ends it after a period).
STAGE2_STOP = ("\n",)
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
# vLLM's CPU attention takes blocks in multiples of 32 and defaults to 128, which leaves a 100-token
# rationale entirely uncached for stage 2; 32 lets stage 2 find ~80% of its prompt in the cache.
CPU_BLOCK_SIZE = 32


class UnsupportedStudent(ModelLoadError):
    """A student the vLLM backend cannot run as trained; the message says why and what can."""


class EngineStartError(ConfigError):
    """A vLLM engine that cannot start; the message names the setting."""


class EngineStoppedError(RuntimeError):
    """A generator used after VLLMEngines stopped its engine to start another."""


@dataclass(frozen=True)
class StudentPlan:
    """How a student runs on vLLM: the engine's model, and a LoRA adapter applied per request."""

    source: str  # what the engine loads (a local directory or hub id)
    dtype: str
    lora_dir: str | None = None
    lora_rank: int | None = None


def student_plan(spec: ModelSpec) -> StudentPlan:
    """The engine model and LoRA adapter of `spec`, or UnsupportedStudent for a P-Tuning student."""
    check_adapter(spec)
    for directory in (spec.adapter, spec.source):
        if directory and (Path(directory) / PROMPT_ENCODER_CONFIG).is_file():
            raise UnsupportedStudent(
                f"{directory} is a P-Tuning student ({PROMPT_ENCODER_CONFIG}): the vLLM backend does not feed its "
                "virtual-token embeddings, so it would answer as another model; use backend: hf for it")
    base = ModelSpec(source=spec.source, gguf_file=spec.gguf_file, dtype=spec.dtype,
                     trust_remote_code=spec.trust_remote_code)
    source = resolve_source(base)
    if not spec.adapter:
        return StudentPlan(source, spec.dtype)
    adapter_config = Path(spec.adapter) / ADAPTER_CONFIG
    if not adapter_config.is_file():  # a student.json without LoRA weights and without a prompt encoder
        raise UnsupportedStudent(f"{spec.adapter} has no LoRA adapter ({ADAPTER_CONFIG}) for vLLM to apply")
    rank = int(json.loads(adapter_config.read_text()).get("r", 16))
    return StudentPlan(source, spec.dtype, str(Path(spec.adapter).resolve()), rank)


def merges_lora(vspec: VLLMEngineSpec) -> bool:
    """Whether LoRA students run from merged weights (`vspec.lora`; auto: where no GPU is)."""
    return vspec.lora == "merge" or (vspec.lora == "auto" and not torch.cuda.is_available())


def engine_plan(spec: ModelSpec, vspec: VLLMEngineSpec, plan: StudentPlan | None = None) -> StudentPlan:
    """student_plan(spec) (or `plan`, already made from it) as an engine under `vspec` runs it: where
    LoRA is merged (merges_lora), a LoRA student's plan is its merged copy (made on first use, then
    cached) with no LoRA request."""
    plan = plan or student_plan(spec)
    if plan.lora_dir is None or not merges_lora(vspec):
        return plan
    return StudentPlan(str(merged_lora_source(spec, vspec.dtype or plan.dtype)), plan.dtype)


def engine_dtype(vspec: VLLMEngineSpec, dtype: str) -> str:
    """The concrete dtype an engine under `vspec` runs a model of `dtype` in: vllm.dtype, where set,
    over the model spec's; auto resolved for this machine (resolve_precision)."""
    return resolve_precision(vspec.dtype or dtype)


def engine_kwargs(source: str, vspec: VLLMEngineSpec, *, dtype: str, lora_rank: int | None = None,
                  max_loras: int = 1, seed: int = 0, trust_remote_code: bool = False) -> dict[str, Any]:
    """Keyword arguments of vllm.LLM / AsyncEngineArgs for one engine."""
    on_gpu = torch.cuda.is_available()
    kwargs: dict[str, Any] = {
        "model": source,
        "dtype": engine_dtype(vspec, dtype),
        "enable_prefix_caching": vspec.enable_prefix_caching,
        "enforce_eager": vspec.enforce_eager if vspec.enforce_eager is not None else not on_gpu,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
        "tensor_parallel_size": vspec.tensor_parallel_size,
        "pipeline_parallel_size": vspec.pipeline_parallel_size,
    }
    if vspec.max_model_len is not None:
        kwargs["max_model_len"] = vspec.max_model_len
    if vspec.max_num_seqs is not None:
        kwargs["max_num_seqs"] = vspec.max_num_seqs
    if on_gpu:
        kwargs["gpu_memory_utilization"] = vspec.gpu_memory_utilization
    else:
        # vLLM 0.32's CPU sampler cannot rewind a seeded request's generator when that request's
        # prefill is split into chunks ("CPU Generator does not use offset" kills the engine, every
        # request with it): on CPU, prefills stay whole.
        kwargs["enable_chunked_prefill"] = False
    if vspec.block_size is not None or not on_gpu:
        kwargs["block_size"] = vspec.block_size or CPU_BLOCK_SIZE
    if lora_rank is not None:
        kwargs.update(enable_lora=True, max_loras=max_loras,
                      max_lora_rank=next((r for r in LORA_RANKS if r >= lora_rank), LORA_RANKS[-1]))
    return {**kwargs, **vspec.engine_kwargs}


def engine_env(vspec: VLLMEngineSpec) -> dict[str, str]:
    """Environment the engine process reads at start (it is spawned, so it inherits ours)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(vspec.kv_cache_gib)}
    env.setdefault("VLLM_LOGGING_LEVEL", os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"))
    return env


def check_engine(source: str, vspec: VLLMEngineSpec, *, dtype: str, trust_remote_code: bool = False) -> int:
    """What makes a vLLM engine fail to start, checked before it starts; returns the context length.

    max_model_len beyond the model's positions, and (CPU) a KV cache too small for one sequence of
    max_model_len, each raise EngineStartError naming the setting. A missing model path was already
    a ModelLoadError in resolve_source.
    """
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    length = vspec.max_model_len or positions
    if positions is not None and vspec.max_model_len is not None and vspec.max_model_len > positions:
        raise EngineStartError(f"vllm.max_model_len: {vspec.max_model_len} is beyond the model's {positions} "
                               f"positions (max_position_embeddings of {source})")
    if length is not None and not torch.cuda.is_available():
        layers = getattr(config, "num_hidden_layers", 0)
        heads = getattr(config, "num_attention_heads", 1)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        per_token = 2 * layers * kv_heads * head_dim * _DTYPE_BYTES[engine_dtype(vspec, dtype)]
        if per_token * length > vspec.kv_cache_gib * (1 << 30):
            raise EngineStartError(
                f"vllm.kv_cache_gib: {vspec.kv_cache_gib} GiB cannot hold one sequence of {length} tokens "
                f"({per_token * length / (1 << 30):.2f} GiB); raise kv_cache_gib or lower vllm.max_model_len")
    return int(length) if length is not None else 0


def prepare_student(spec: ModelSpec, vspec: VLLMEngineSpec) -> StudentPlan:
    """What a run does once, in the driver, before any engine, actor or replica starts: the student
    checked for vLLM (student_plan: P-Tuning is refused; check_engine on its engine model: context
    length and KV cache) and, where LoRA is merged, its merged copy made (engine_plan). Returns the
    engine plan; a worker that calls it again finds the merged copy cached."""
    plan = student_plan(spec)
    check_engine(plan.source, vspec, dtype=plan.dtype, trust_remote_code=spec.trust_remote_code)
    return engine_plan(spec, vspec, plan)


def start_engine(kwargs: dict[str, Any], vspec: VLLMEngineSpec, *, in_process: bool = False) -> Any:
    """A vllm.LLM, or EngineStartError with vLLM's reason and the model it tried.

    in_process: its engine core runs in this process (VLLMEngines, evaluate's path), and LLM.generate
    adds a batch's requests, then steps the scheduler, so every step sees the whole batch. In vLLM's
    own engine-core process the scheduler starts as the first requests arrive, and which requests
    share the first steps depends on timing; on vLLM 0.32's CPU build (bf16, greedy) that changed
    2-10 of 137 SVAMP rationales of one student between runs and batch orders. In process, the
    answers were the same on every start and in either batch order, and the 137 questions took half
    the time on 2 vCPUs (no second process competing for the cores).

    In process, vLLM's state is the process's: its parallel groups (an engine's shutdown destroys
    them, under any other engine still running here), and on CPU its worker binds the process's
    OpenMP threads and turns torch.set_num_threads into a no-op for the rest of the process. Hence
    one in-process engine per process at a time (VLLMEngines enforces it), and none in a process that
    does other torch work (training validation uses vLLM's process)."""
    import vllm.envs
    from vllm import LLM

    os.environ.update(engine_env(vspec))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    # An engine core caches vLLM's environment variables once it is up; in process, that cache is
    # ours, and the next engine (another KV cache size, say) would read the first one's
    vllm.envs.disable_envs_cache()
    try:
        return LLM(**kwargs)
    except Exception as err:  # vLLM raises many types at start; all mean the engine cannot run
        raise EngineStartError(f"the vLLM engine for {kwargs['model']} failed to start "
                               f"({type(err).__name__}: {err}); check the vllm settings") from err


def generation_eos(source: str, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """lm.generate's end-of-sequence rule, from the model's generation_config.json when it has one."""
    try:
        config = GenerationConfig.from_pretrained(source)
    except OSError:
        config = None
    return eos_token_ids(config, tokenizer)


def stage_params(limits: GenerationLimits, *, max_tokens: int, stop: Sequence[str], eos_ids: frozenset[int],
                 seed: int, logprobs: int | None = None, allowed: list[int] | None = None) -> Any:
    """vllm.SamplingParams of one request: greedy, or temperature/top_p sampling seeded per request.

    stop_token_ids holds the EOS ids of lm.generate's rule, so vLLM ends where HF decoding does;
    the EOS and stop-string tokens stay in the returned ids, where the replayed rules see them.
    """
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=limits.temperature if limits.do_sample else 0.0,
        top_p=limits.top_p if limits.do_sample else 1.0,
        seed=seed if limits.do_sample else None,
        stop=list(stop),
        stop_token_ids=sorted(eos_ids),
        include_stop_str_in_output=True,
        skip_special_tokens=True,
        logprobs=logprobs,
        allowed_token_ids=allowed,
    )


@dataclass
class StageStats:
    """What the last call did, for benchmarks: prompt tokens sent and those found in the prefix cache."""

    stage2_prompt_tokens: int = 0
    stage2_cached_tokens: int = 0


# Stage 2 asks vLLM for the top log-probabilities at each answer position; an option among them at
# the first position is picked from there, with no extra request (constrained choices).
CHOICE_LOGPROBS = 20


class TwoStages:
    """The two stages as requests and replayed rules, engine-free: VLLMGenerator runs them in
    batches on vllm.LLM, the serve backend one request at a time on vLLM's AsyncLLM.

    label_task: the student answers through its "[label] Q" prompt with no rationale stage
    (step_by_step), as lm.generate.Generator does.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_ids: frozenset[int],
                 few_shot: list[tuple[str, str, str]] | None = None, label_task: bool = False) -> None:
        self.tokenizer, self.eos_ids, self.few_shot, self.label_task = tokenizer, eos_ids, few_shot, label_task
        self.rules = StageRules(tokenizer, eos_ids)
        self.stage2_ids = encode(tokenizer, STAGE2_PREFIX)

    def prompt_ids(self, question: str) -> list[int]:
        """The stage-1 prompt ids: exactly what the HF backend feeds (lm.format.prompt_text)."""
        return student_prompt_ids(self.tokenizer, question, few_shot=self.few_shot, label_task=self.label_task)

    def params(self, limits: GenerationLimits, stage: int, seed_offset: int = 0, choices: list[str] | None = None) -> Any:
        """SamplingParams of stage 1 (rationale) or 2 (answer); sampled rows of one call draw with
        seed + their row index, so they do not repeat each other. Stage 2 of a question with
        choices also returns the top log-probabilities (pick)."""
        if stage == 1:
            return stage_params(limits, max_tokens=limits.max_rationale_tokens, stop=STAGE1_STOP,
                                eos_ids=self.eos_ids, seed=limits.seed + seed_offset)
        return stage_params(limits, max_tokens=limits.max_answer_tokens, stop=STAGE2_STOP, eos_ids=self.eos_ids,
                            seed=limits.seed + seed_offset, logprobs=CHOICE_LOGPROBS if choices else None)

    def label_row(self, question: str) -> _Row:
        """The finished, empty stage 1 of a label-task student: its prompt, no rationale."""
        return _Row(self.prompt_ids(question), keep=0, stop="label_task")

    def pick(self, choices: list[str] | None, output: Any) -> tuple[str | None, list[int] | None]:
        """(constrained choice, or None and the ids a one-token request restricted to the options
        must continue from to decide).

        Where the choices part ways (StageRules.option_plan), the position's top log-probabilities
        hold the best option whenever they hold any option (one outside them scores below all of
        them), when the free answer took the choices' common prefix; HF reads the same logits.
        """
        plan = self.rules.option_plan(choices)
        if plan is None:
            return None, None
        prefix, tokens = plan
        completion = output.outputs[0]
        ids, logprobs = list(completion.token_ids), completion.logprobs or []
        if ids[: len(prefix)] == prefix and len(logprobs) > len(prefix):
            top = logprobs[len(prefix)]
            present = [(top[t].logprob, i) for i, t in enumerate(tokens) if t in top]
            if present:
                return choices[max(present)[1]], None
        return None, prefix

    def restricted(self, prompt: list[int], prefix: list[int], choices: list[str]) -> tuple[list[int], Any]:
        """The request that decides a pick pick() could not: prompt + the choices' common prefix,
        one greedy token among the choices' deciding tokens."""
        params = stage_params(GenerationLimits(), max_tokens=1, stop=(), eos_ids=frozenset(), seed=0,
                              allowed=self.rules.option_plan(choices)[1])
        return prompt + prefix, params

    def picked(self, choices: list[str], output: Any) -> str:
        """The choice a restricted request chose."""
        return choices[self.rules.option_plan(choices)[1].index(output.outputs[0].token_ids[0])]

    def rationale(self, prompt: list[int], generated: list[int], limits: GenerationLimits) -> _Row:
        """Stage 1's rule replayed over vLLM's ids: what the rationale keeps, and why it stopped."""
        return self.rules.replay(_Row(prompt), generated, limits.max_rationale_tokens, self.rules.stage1)

    def stage2_prompt(self, rationale: _Row) -> list[int]:
        """Prompt + the kept rationale ids + the marker ids training saw: token ids, never text."""
        return rationale.prefix + rationale.generated[: rationale.keep] + self.stage2_ids

    def answer(self, prompt: list[int], generated: list[int], limits: GenerationLimits) -> _Row:
        return self.rules.replay(_Row(prompt), generated, limits.max_answer_tokens, self.rules.stage2)

    def result(self, question: str, rationale: _Row, answer: _Row, stage1_s: float, stage2_s: float,
               constrained: str | None = None) -> TwoStageResult:
        return self.rules.result(
            question, self.tokenizer.decode(rationale.generated[: rationale.keep], skip_special_tokens=True).strip(),
            answer.generated[: answer.keep], prompt_tokens=len(rationale.prefix), rationale_tokens=rationale.keep,
            answer_tokens=len(answer.generated), stage1_s=stage1_s, stage2_s=stage2_s,
            rationale_stop=rationale.stop, constrained_answer=constrained)


class VLLMGenerator:
    """Two-stage answers from a student on a vLLM engine; the API of lm.generate.Generator.

    engine: a vllm.LLM (one engine may serve several VLLMGenerators: the baseline and the LoRA
    students of one base). lora: a vllm LoRARequest applied to every request, or None.
    """

    def __init__(self, engine: Any, tokenizer: PreTrainedTokenizerBase, eos_ids: frozenset[int], *,
                 lora: Any = None, few_shot: list[tuple[str, str, str]] | None = None, label_task: bool = False) -> None:
        self.engine, self.tokenizer, self.lora = engine, tokenizer, lora
        self.stages = TwoStages(tokenizer, eos_ids, few_shot, label_task)
        self.stats = StageStats()

    @classmethod
    def from_spec(cls, spec: ModelSpec, vspec: VLLMEngineSpec | None = None,
                  few_shot: list[tuple[str, str, str]] | None = None) -> VLLMGenerator:
        """One engine for one student (evaluation shares engines through VLLMEngines instead)."""
        return VLLMEngines(vspec or VLLMEngineSpec(), [spec]).generator(spec, few_shot=few_shot)

    def _run(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        """vLLM's RequestOutputs of the prompts, in order (one continuous-batching call)."""
        if self.engine is None:
            raise EngineStoppedError("this generator's vLLM engine was stopped (VLLMEngines runs one in-process "
                                     "engine per process and at most max_engines of its own); ask "
                                     "VLLMEngines.generator for the student again")
        return self.engine.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False,
                                    lora_request=self.lora)

    @staticmethod
    def _ids(output: Any) -> list[int]:
        return list(output.outputs[0].token_ids)

    def two_stage(self, questions: list[str], limits: GenerationLimits | None = None,
                  choices: list[list[str] | None] | None = None) -> list[TwoStageResult]:
        """Rationale, then answer from question + rationale ids (see the module doc); choices as in
        lm.generate.Generator.two_stage."""
        if not questions:
            return []
        limits = limits or GenerationLimits()
        choices = choices or [None] * len(questions)
        stages = self.stages
        t0 = time.perf_counter()
        if stages.label_task:
            rationales = [stages.label_row(q) for q in questions]
        else:
            prompts = [stages.prompt_ids(q) for q in questions]
            outputs = self._run(prompts, [stages.params(limits, 1, i) for i in range(len(prompts))])
            rationales = [stages.rationale(p, self._ids(o), limits) for p, o in zip(prompts, outputs)]
        t1 = time.perf_counter()
        answers, picks = self._stage2([stages.stage2_prompt(r) for r in rationales], limits, choices)
        t2 = time.perf_counter()
        return [stages.result(q, r, a, t1 - t0, t2 - t1, pick)
                for q, r, a, pick in zip(questions, rationales, answers, picks)]

    def _stage2(self, prompts: list[list[int]], limits: GenerationLimits,
                choices: list[list[str] | None]) -> tuple[list[_Row], list[str | None]]:
        stages = self.stages
        outputs = self._run(prompts, [stages.params(limits, 2, i, c) for i, c in enumerate(choices)])
        self.stats = StageStats(sum(len(p) for p in prompts), sum(o.num_cached_tokens or 0 for o in outputs))
        picked = [stages.pick(c, o) for c, o in zip(choices, outputs)]
        picks = [p for p, _ in picked]
        undecided = [i for i, (_, prefix) in enumerate(picked) if prefix is not None]
        if undecided:  # pick() could not decide from the free answer: one token restricted to the options
            requests = [stages.restricted(prompts[i], picked[i][1], choices[i]) for i in undecided]
            extra = self._run([p for p, _ in requests], [params for _, params in requests])
            for i, output in zip(undecided, extra):
                picks[i] = stages.picked(choices[i], output)
        return [stages.answer(p, self._ids(o), limits) for p, o in zip(prompts, outputs)], picks

    def answer_from_rationales(self, questions: list[str], rationales: list[str],
                               limits: GenerationLimits | None = None) -> list[TwoStageResult]:
        """Stage 2 only, on given rationale texts (the faithfulness check swaps them)."""
        if len(questions) != len(rationales):
            raise ValueError(f"{len(questions)} questions but {len(rationales)} rationales")
        if not questions:
            return []
        limits = limits or GenerationLimits()
        stages = self.stages
        t0 = time.perf_counter()
        rows, _ = self._stage2([stages.prompt_ids(q) + encode(self.tokenizer, r.strip()) + stages.stage2_ids
                                for q, r in zip(questions, rationales)], limits, [None] * len(questions))
        t2 = time.perf_counter() - t0
        return [stages.rules.given(q, r, row, len(stages.stage2_ids), t2) for q, r, row in zip(questions, rationales, rows)]

    def one_stage(self, questions: list[str], limits: GenerationLimits | None = None) -> list[TwoStageResult]:
        """One pass: the student writes rationale and answer itself (see Generator.one_stage)."""
        if not questions:
            return []
        limits = limits or GenerationLimits()
        stages = self.stages
        budget = limits.max_rationale_tokens + limits.max_answer_tokens
        prompts = [stages.prompt_ids(q) for q in questions]
        t0 = time.perf_counter()
        outputs = self._run(prompts, [stage_params(limits, max_tokens=budget, stop=(), eos_ids=stages.eos_ids,
                                                   seed=limits.seed + i) for i in range(len(prompts))])
        rows = [stages.rules.replay(_Row(p), self._ids(o), budget, stages.rules.one_stage)
                for p, o in zip(prompts, outputs)]
        seconds = time.perf_counter() - t0
        return [split_one_stage(self.tokenizer, q, row, seconds) for q, row in zip(questions, rows)]


# The engine running in this process, and its VLLMEngines (one at a time: start_engine says why).
_IN_PROCESS_ENGINE: tuple[VLLMEngines, tuple[str, str]] | None = None


class VLLMEngines:
    """The vLLM engines one process needs for a set of students: one per distinct engine model
    (engine_plan), LoRA enabled where a LoRA request student uses that base (each adapter gets its
    own LoRARequest id), and their generators. Where LoRA students are merged, each is an engine of
    its own, and at most `max_engines` (default 2 there, else unbounded) run at once: starting
    another stops the one used least recently (its generators with it), so a run over many students
    in order holds two engines' memory, not one per student.

    Engine cores run in this process unless `vspec.in_process` is false (start_engine says why and
    what that costs the process). In process, one engine runs per process, across every VLLMEngines
    in it: starting one stops the other (max_engines is 1, and a stopped engine's generators raise
    EngineStoppedError). An in-process start takes ~2 s on CPU, so switching students is cheap."""

    def __init__(self, vspec: VLLMEngineSpec, specs: list[ModelSpec], max_engines: int | None = None) -> None:
        self.vspec = vspec
        self.in_process = vspec.in_process is not False
        if self.in_process:
            max_engines = 1
        self.max_engines = max_engines if max_engines is not None else (2 if merges_lora(vspec) else None)
        self.plans = {self._key(s): engine_plan(s, vspec) for s in specs}
        self.engines: dict[tuple[str, str], Any] = {}  # in order of last use
        self.tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self.loras: dict[str, Any] = {}
        self.generators: dict[tuple[str, str], tuple[tuple[str, str], VLLMGenerator]] = {}

    def close(self) -> None:
        """Stop every engine's processes now (else they stop at interpreter exit, when vLLM's own
        shutdown may log to streams already closed)."""
        for key in list(self.engines):
            self._stop(key)

    def _stop(self, key: tuple[str, str]) -> None:
        global _IN_PROCESS_ENGINE
        engine = self.engines.pop(key)
        if _IN_PROCESS_ENGINE == (self, key):
            _IN_PROCESS_ENGINE = None
        for engine_key, gen in self.generators.values():
            if engine_key == key:
                gen.engine = None
        self.generators = {k: v for k, v in self.generators.items() if v[0] != key}
        engine.llm_engine.engine_core.shutdown()

    @staticmethod
    def _key(spec: ModelSpec) -> str:
        return json.dumps([spec.source, spec.gguf_file, spec.adapter, spec.dtype], sort_keys=True)

    def _engine_key(self, plan: StudentPlan) -> tuple[str, str]:
        """One engine per source and resolved dtype: "auto" and the name it resolves to share it."""
        with warnings.catch_warnings():  # a slow explicit bf16 warns when its engine starts, not here
            warnings.simplefilter("ignore", RuntimeWarning)
            return plan.source, engine_dtype(self.vspec, plan.dtype)

    def _engine(self, plan: StudentPlan, spec: ModelSpec) -> tuple[tuple[str, str], Any]:
        key = self._engine_key(plan)
        if key in self.engines:
            self.engines[key] = self.engines.pop(key)  # most recently used last
            return key, self.engines[key]
        siblings = [p for p in self.plans.values() if self._engine_key(p) == key]
        ranks = [p.lora_rank for p in siblings if p.lora_rank is not None]
        check_engine(plan.source, self.vspec, dtype=plan.dtype, trust_remote_code=spec.trust_remote_code)
        if self.max_engines is not None:
            while len(self.engines) >= self.max_engines:
                self._stop(next(iter(self.engines)))
        kwargs = engine_kwargs(plan.source, self.vspec, dtype=plan.dtype, lora_rank=max(ranks) if ranks else None,
                               max_loras=max(1, len(ranks)), trust_remote_code=spec.trust_remote_code)
        global _IN_PROCESS_ENGINE
        if self.in_process and _IN_PROCESS_ENGINE is not None:  # another VLLMEngines' engine in this process
            owner, owner_key = _IN_PROCESS_ENGINE
            owner._stop(owner_key)
        self.engines[key] = start_engine(kwargs, self.vspec, in_process=self.in_process)
        if self.in_process:
            _IN_PROCESS_ENGINE = (self, key)
        return key, self.engines[key]

    def generator(self, spec: ModelSpec, *, few_shot: list[tuple[str, str, str]] | None = None) -> VLLMGenerator:
        """The generator of `spec` (with `few_shot` demonstrations), made once and kept while its engine runs."""
        key = self._key(spec)
        if key not in self.plans:
            self.plans[key] = engine_plan(spec, self.vspec)
        plan = self.plans[key]
        engine_key, engine = self._engine(plan, spec)
        cache_key = (key, json.dumps(few_shot))
        if cache_key in self.generators:
            return self.generators[cache_key][1]
        if plan.source not in self.tokenizers:
            self.tokenizers[plan.source] = load_tokenizer(ModelSpec(source=plan.source, dtype=plan.dtype,
                                                                    trust_remote_code=spec.trust_remote_code))
        tokenizer = self.tokenizers[plan.source]
        lora = None
        if plan.lora_dir is not None:
            if plan.lora_dir not in self.loras:
                from vllm.lora.request import LoRARequest

                self.loras[plan.lora_dir] = LoRARequest(Path(plan.lora_dir).name, len(self.loras) + 1, plan.lora_dir)
            lora = self.loras[plan.lora_dir]
        gen = VLLMGenerator(engine, tokenizer, generation_eos(plan.source, tokenizer), lora=lora, few_shot=few_shot,
                            label_task=answers_through_label_task(spec))
        self.generators[cache_key] = (engine_key, gen)
        return gen


__all__ = [
    "EngineStartError",
    "EngineStoppedError",
    "StudentPlan",
    "TwoStages",
    "UnsupportedStudent",
    "VLLMEngines",
    "VLLMGenerator",
    "check_engine",
    "engine_plan",
    "engine_env",
    "engine_kwargs",
    "generation_eos",
    "merges_lora",
    "prepare_student",
    "stage_params",
    "start_engine",
    "student_plan",
]
