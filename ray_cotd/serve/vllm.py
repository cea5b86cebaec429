"""The vLLM backend of a Serve replica: vLLM's AsyncLLM, continuous batching in place of @serve.batch.

Every request is its own pair of engine requests (stage 1, then stage 2 on the kept rationale ids
and the marker ids, lm.vllm.TwoStages): vLLM's scheduler batches whatever requests are in flight
at each decoding step, so a short request never waits for a batch to fill or for a long one to
finish, and streams need no threads of their own. A request whose caller leaves (client
disconnect, request timeout) is cancelled by the API; closing vLLM's output iterator aborts the
engine request, which then stops at the engine's next step. A request vLLM fails on fails alone.

It implements the API's `Backend` protocol (`reason`, `stream`) beside hf.HFBackend, with the same
answers as ray_cotd.lm.vllm.VLLMGenerator (what `evaluate` runs with backend vllm).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Union

from ray_cotd.config import ModelSpec, ServeConfig
from ray_cotd.lm.generate import GenerationLimits, TwoStageResult, _Row
from ray_cotd.lm.model import answers_through_label_task, load_tokenizer
from ray_cotd.lm.vllm import (
    TwoStages,
    engine_env,
    engine_kwargs,
    generation_eos,
    prepare_student,
)
from ray_cotd.worker_hooks import setup as setup_worker


class VLLMBackend:
    """Two-stage answers on an AsyncLLM engine (see the module doc)."""

    def __init__(self, engine: Any, stages: TwoStages, lora: Any = None) -> None:
        self.engine, self.stages, self.lora = engine, stages, lora

    async def _final(self, prompt: list[int], params: Any) -> Any:
        """The finished RequestOutput of one engine request (cancelling the caller aborts it)."""
        last = None
        async for output in self.engine.generate({"prompt_token_ids": prompt}, params, uuid.uuid4().hex,
                                                 lora_request=self.lora):
            last = output
        return last

    async def _answer(self, rationale: _Row, limits: GenerationLimits,
                      choices: list[str] | None = None) -> tuple[_Row, str | None]:
        stages = self.stages
        prompt = stages.stage2_prompt(rationale)
        output = await self._final(prompt, stages.params(limits, 2, choices=choices))
        pick, prefix = stages.pick(choices, output)
        if prefix is not None:  # undecided from the free answer: one token restricted to the options
            restricted = await self._final(*stages.restricted(prompt, prefix, choices))
            pick = stages.picked(choices, restricted)
        return stages.answer(prompt, list(output.outputs[0].token_ids), limits), pick

    async def reason(self, question: str, limits: GenerationLimits,
                     choices: list[str] | None = None) -> TwoStageResult:
        t0 = time.perf_counter()
        if self.stages.label_task:
            rationale = self.stages.label_row(question)
        else:
            prompt = self.stages.prompt_ids(question)
            output = await self._final(prompt, self.stages.params(limits, 1))
            rationale = self.stages.rationale(prompt, list(output.outputs[0].token_ids), limits)
        t1 = time.perf_counter()
        answer, pick = await self._answer(rationale, limits, choices)
        return self.stages.result(question, rationale, answer, t1 - t0, time.perf_counter() - t1, pick)

    async def stream(self, question: str, limits: GenerationLimits) -> AsyncIterator[Union[str, TwoStageResult]]:
        """Stage-1 text as vLLM writes it (never any part of the marker), then the finished result.

        Stage 1's rule runs on every new token, so the stream stops where two_stage's rationale
        stops; leaving the engine's iterator there aborts the rest of the request.
        """
        if self.stages.label_task:  # no rationale to stream
            yield await self.reason(question, limits)
            return
        rules = self.stages.rules
        t0 = time.perf_counter()
        prompt = self.stages.prompt_ids(question)
        row, sent, budget = _Row(prompt), 0, limits.max_rationale_tokens
        async for output in self.engine.generate({"prompt_token_ids": prompt}, self.stages.params(limits, 1),
                                                 uuid.uuid4().hex, lora_request=self.lora):
            ids = output.outputs[0].token_ids
            for i in range(len(row.generated), len(ids)):
                rules.push(row, ids[i])
                rules.stage1(row, ids[i], i + 1 >= budget or (output.finished and i + 1 == len(ids)))
                if row.keep is not None:
                    break
            chunk = rules.ready_rationale(row)[sent:]
            if chunk:
                sent += len(chunk)
                yield chunk
            if row.keep is not None:
                break
        if row.keep is None:  # the engine returned no token at all
            row.keep, row.stop = 0, "length"
        tail = rules.ready_rationale(row)[sent:]
        if tail:
            yield tail
        t1 = time.perf_counter()
        answer, _ = await self._answer(row, limits)
        yield self.stages.result(question, row, answer, t1 - t0, time.perf_counter() - t1)


def replica_backend(cfg: ServeConfig) -> VLLMBackend:
    """The backend of one Serve replica: an AsyncLLM for `cfg.student` with `cfg.vllm`'s settings.

    A student vLLM cannot run (P-Tuning) or an engine that cannot start fails here, in the
    replica's constructor, with the reason; run_serve checks both before deploying.
    """
    import os

    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    plan = prepare_student(cfg.student, cfg.vllm)  # a merged LoRA student (on CPU) runs from its cached copy
    setup_worker()  # a replica is a Ray worker (the job's hook ran already when ray-cotd started the job)
    os.environ.update(engine_env(cfg.vllm))
    kwargs = engine_kwargs(plan.source, cfg.vllm, dtype=plan.dtype, lora_rank=plan.lora_rank,
                           trust_remote_code=cfg.student.trust_remote_code)
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    tokenizer = load_tokenizer(ModelSpec(source=plan.source, dtype=plan.dtype,
                                         trust_remote_code=cfg.student.trust_remote_code))
    lora = None
    if plan.lora_dir is not None:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("student", 1, plan.lora_dir)
    stages = TwoStages(tokenizer, generation_eos(plan.source, tokenizer),
                       label_task=answers_through_label_task(cfg.student))
    return VLLMBackend(engine, stages, lora)


__all__ = ["VLLMBackend", "replica_backend"]
