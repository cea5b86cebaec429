"""Teacher engines: one request/completion contract, three backends, chosen by `AnnotateConfig.engine`.

The plain core (no Ray): a `GenerationRequest` (chat messages + sampling settings for ONE sample)
becomes a `Completion` (text, why generation stopped, token counts). Two engines implement it as
plain classes you can call in a notebook or a test:

    TransformersTeacher  batched `generate` on CPU or GPU; the embedded default teacher
    OpenAITeacher        an OpenAI-compatible /chat/completions endpoint (hosted API, vLLM, Ray Serve)

The thin Ray shell (`ENGINES`, `generate_stage`) turns a Ray Dataset of work rows into the same
rows plus the output columns, with each engine as a Ray Data stage:

    transformers  map_batches over an actor pool of TransformersTeacher (one model per actor)
    openai        map_batches over an actor pool of OpenAITeacher (bounded threads per actor)
    vllm          Ray Data LLM's vLLM processor (`build_processor`), GPU clusters only

Request columns (REQUEST_COLUMNS): id, messages (JSON string), temperature, top_p, seed,
max_new_tokens. Output columns added (OUTPUT_COLUMNS): generated_text, finish_reason (FINISH_REASONS), prompt_tokens,
completion_tokens, error (detail for "timeout"/"error"/"refused", else ""), reasoning (an HTTP reply's
reasoning field, `reasoning_content` or `reasoning`; None elsewhere: transformers and vLLM replies
carry a trace as <think> text, ray_cotd.data.reasoning reads both forms). The vLLM engine with
`logprobs: k` also adds `topk` (a ray_cotd.data.logprobs.TopK record, read on the driver).

Chat-template variables (AnnotateConfig.chat_template_kwargs, e.g. Qwen3's enable_thinking) reach
every engine: `render_chat(..., chat_template_kwargs)` for transformers (in the actor) and vLLM (on
the driver, annotate.fit_prompts), and a `chat_template_kwargs` field in the HTTP payload.

One sample per request everywhere: Ray Data LLM keeps only the first of vLLM's `n` outputs
(vLLMOutputData reads outputs[0]), and vLLM 0.32's CPU engine dies on a seeded n > 1 ("CPU
Generator does not use offset"), so n rationales per question are n rows with seeds seed+i, and the same
rows drive every engine, which keeps the row keys and resuming engine-independent.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ray_cotd.config import DEFAULT_MODEL, AnnotateConfig, ModelSpec, OpenAIEngineSpec
from ray_cotd.data.logprobs import topk_from_vllm, vocab_fingerprint
from ray_cotd.lm.format import render_chat
from ray_cotd.lm.generate import eos_token_ids, sample_tokens
from ray_cotd.lm.model import load_model, load_tokenizer, resolve_source

DEFAULT_TEACHER_NAME = "SmolLM2-135M-Instruct"

FINISH_REASONS = (
    "stop",  # the model ended its turn (EOS / stop)
    "length",  # it hit max_new_tokens: the reply is cut off
    "timeout",  # an HTTP request that never answered within timeout_s, after every retry
    "error",  # 429/5xx/connection failures after every retry, or an unreadable reply body
    "refused",  # the HTTP endpoint refused this one request (REFUSED_STATUSES), e.g. a prompt over its context
)
REQUEST_COLUMNS = ("id", "messages", "temperature", "top_p", "seed", "max_new_tokens")
OUTPUT_COLUMNS = ("generated_text", "finish_reason", "prompt_tokens", "completion_tokens", "error", "reasoning")


class EngineRequestError(RuntimeError):
    """The endpoint cannot serve this run: a wrong URL, model or key (401/403/404 and other 4xx
    outside REFUSED_STATUSES), or a one-token probe it refused or never answered. The run stops."""


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to generate. temperature 0 = greedy; seed makes a sampled row reproducible."""

    messages: list[dict[str, str]]
    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int

    @classmethod
    def from_columns(cls, batch: dict[str, Any], i: int) -> GenerationRequest:
        return cls(
            messages=json.loads(batch["messages"][i]),
            temperature=float(batch["temperature"][i]),
            top_p=float(batch["top_p"][i]),
            seed=int(batch["seed"][i]),
            max_new_tokens=int(batch["max_new_tokens"][i]),
        )


@dataclass(frozen=True)
class Completion:
    """text: the reply (HTTP: `content`); reasoning: an HTTP reply's reasoning field, else None."""

    text: str
    finish_reason: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str = ""
    reasoning: str | None = None


def teacher_name(cfg: AnnotateConfig) -> str:
    """The teacher recorded in rows (part of the row key): the configured name, else the model."""
    if cfg.teacher_name:
        return cfg.teacher_name
    if cfg.engine == "openai":
        return cfg.openai.model
    return DEFAULT_TEACHER_NAME if cfg.teacher.source == DEFAULT_MODEL else cfg.teacher.source


# --------------------------------------------------------------------------- transformers


def _seeded_sampler(temperatures: list[float], top_ps: list[float], seeds: list[int]) -> LogitsProcessor:
    """A LogitsProcessor that samples every row from its own torch.Generator.

    HF `generate(do_sample=True)` draws from one global RNG, so a row's sample would depend on
    which rows share its batch, and a resumed run (other batches) would not reproduce a clean
    run. Here each sampled row draws its token with its own seeded generator (the project's one
    sampler, lm.generate.sample_tokens) and returns a one-hot score row, which greedy decoding then
    picks; greedy rows (temperature 0) pass through.
    """

    class SeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.rows = [i for i, t in enumerate(temperatures) if t > 0]
            self.generators = {i: torch.Generator().manual_seed(seeds[i]) for i in self.rows}

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # scores: (B, V)
            if not self.rows:
                return scores
            scores = scores.clone()
            for i in self.rows:
                token = int(sample_tokens(scores[i : i + 1].cpu(), temperatures[i], top_ps[i], self.generators[i]))
                scores[i] = float("-inf")
                scores[i, token] = 0.0
            return scores

    return SeededSampler()


class TransformersTeacher:
    """Batched `generate` with a Hugging Face causal LM (the embedded default: SmolLM2-135M-Instruct)."""

    def __init__(self, spec: ModelSpec | None = None, *, num_threads: int | None = None, device: str = "cpu",
                 chat_template_kwargs: dict[str, Any] | None = None) -> None:
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if num_threads:
            # Ray sets OMP_NUM_THREADS to the actor's CPUs; torch must use all of them explicitly.
            torch.set_num_threads(num_threads)
        spec = spec or ModelSpec()
        self.device = device
        self.model = load_model(spec).to(device).eval()
        self.tokenizer = load_tokenizer(spec)
        self.tokenizer.padding_side = "left"  # generation continues at the right edge of every row
        self.eos_ids = eos_token_ids(self.model.generation_config, self.tokenizer)

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        prompts = [render_chat(self.tokenizer, r.messages, self.chat_template_kwargs) for r in requests]
        # The chat template already holds the special tokens; adding BOS again would change the prompt.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        limit = max(r.max_new_tokens for r in requests)
        # An explicit config, so a teacher's own sampling defaults never mix into our settings.
        gen_config = GenerationConfig(
            max_new_tokens=limit,
            do_sample=False,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        sampler = _seeded_sampler([r.temperature for r in requests], [r.top_p for r in requests], [r.seed for r in requests])
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=gen_config, logits_processor=LogitsProcessorList([sampler]))
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        return [
            self._completion(ids, request.max_new_tokens, int(n_prompt))
            for ids, request, n_prompt in zip(new_tokens, requests, prompt_lengths)
        ]

    def _completion(self, ids: list[int], max_new_tokens: int, prompt_tokens: int) -> Completion:
        end = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        if end is not None and end < max_new_tokens:
            ids, reason = ids[: end + 1], "stop"  # the EOS counts as a generated token, as in vLLM
        else:
            ids, reason = ids[:max_new_tokens], "length"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text, reason, prompt_tokens, len(ids))


# --------------------------------------------------------------------------- OpenAI-compatible HTTP

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# Statuses about one request's content (a prompt over the endpoint's context, a body it cannot
# process): that row is rejected and the run goes on. Other 4xx are about the run (EngineRequestError).
REFUSED_STATUSES = frozenset({400, 413, 422})
PROBE = [{"role": "user", "content": "Reply with OK."}]
_HINTS = {
    401: "check the API key in the environment variable named by openai.api_key_env",
    403: "check the API key in the environment variable named by openai.api_key_env",
    404: "check openai.base_url (it should end in /v1) and openai.model",
}


def chat_payload(request: GenerationRequest, model: str,
                 chat_template_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The /chat/completions body for one sample. chat_template_kwargs (vLLM's and SGLang's extra
    field, e.g. {"enable_thinking": false}) is sent only when there are any: endpoints that do not
    know the field may refuse it."""
    body = {
        "model": model,
        "messages": request.messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "max_tokens": request.max_new_tokens,
        "n": 1,
    }
    if chat_template_kwargs:
        body["chat_template_kwargs"] = dict(chat_template_kwargs)
    return body


# Where OpenAI-compatible servers with a reasoning parser put the trace: vLLM and ray.serve.llm say
# `reasoning_content`, newer vLLM and some others `reasoning`. The first non-empty one is read.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def parse_chat_response(body: Any) -> Completion:
    """A Completion from a /chat/completions JSON body; an unreadable body is an "error" completion.
    The reply's reasoning field (REASONING_FIELDS), if any, becomes Completion.reasoning."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        reasoning = next((message[f] for f in REASONING_FIELDS if isinstance(message.get(f), str) and message[f]),
                         None)
        usage = body.get("usage") or {}
        reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return Completion("", "error", error=f"unreadable reply body: {json.dumps(body)[:200]}")
    return Completion(
        text,
        "length" if reason == "length" else "stop",
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        reasoning=reasoning,
    )


class OpenAITeacher:
    """An OpenAI-compatible chat endpoint: bounded concurrency, timeouts, retries with backoff.

    The API key (from the variable `api_key_env` names) goes over https, or over http to this
    machine only; the spec refuses plain http to another host unless allow_insecure_http is set,
    and then the key is not sent.

    429, 408, 5xx, timeouts and dropped connections are retried (Retry-After honoured, else
    backoff_s doubling); when retries run out the sample becomes a "timeout"/"error" completion
    and the run goes on. 400, 413 and 422 refuse that one request (a prompt over the endpoint's
    context, say): a "refused" completion, not retried. Any other 4xx raises EngineRequestError at
    once: it means a wrong URL, model or key, and every further request would fail the same way.
    `check()` sends one one-token request first, so those, and an endpoint that does not answer,
    stop the run before any row is sent.
    """

    def __init__(self, spec: OpenAIEngineSpec, *, sleep: Callable[[float], None] = time.sleep,
                 chat_template_kwargs: dict[str, Any] | None = None) -> None:
        import requests

        self.spec = spec
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(spec.api_key_env)
        if key and spec.sends_api_key():  # never over plain http to another host (allow_insecure_http)
            self.headers["Authorization"] = f"Bearer {key}"
        self.session = requests.Session()
        self.sleep = sleep

    def complete(self, request: GenerationRequest) -> Completion:
        import requests

        payload = chat_payload(request, self.spec.model, self.chat_template_kwargs)
        attempts = self.spec.max_retries + 1
        for attempt in range(attempts):
            wait = self.spec.backoff_s * 2**attempt
            try:
                resp = self.session.post(self.url, json=payload, headers=self.headers, timeout=self.spec.timeout_s)
            except requests.Timeout:
                failure = Completion("", "timeout", error=f"no reply within {self.spec.timeout_s}s")
            except requests.ConnectionError as err:
                failure = Completion("", "error", error=f"connection failed: {err}")
            else:
                if resp.status_code == 200:
                    try:
                        return parse_chat_response(resp.json())
                    except ValueError:
                        return Completion("", "error", error=f"reply is not JSON: {resp.text[:200]}")
                if resp.status_code in REFUSED_STATUSES:
                    return Completion("", "refused", error=f"HTTP {resp.status_code} {resp.reason}: {resp.text[:300]}")
                if resp.status_code not in RETRY_STATUSES:
                    hint = _HINTS.get(resp.status_code, "the request itself was refused; retrying cannot help")
                    raise EngineRequestError(
                        f"teacher endpoint {self.url} answered HTTP {resp.status_code} {resp.reason}: "
                        f"{resp.text[:300]} ({hint})"
                    )
                failure = Completion("", "error", error=f"HTTP {resp.status_code}: {resp.text[:200]}")
                wait = _retry_after(resp.headers.get("Retry-After"), wait)
            if attempt + 1 < attempts:
                self.sleep(wait)
        tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
        return Completion("", failure.finish_reason, error=f"{failure.error} (after {tries})")

    def check(self) -> None:
        """One one-token request (PROBE, greedy) before any row is sent. Raises EngineRequestError
        naming the endpoint when it refuses it (any 4xx: for so small a request a 400 means a
        setting such as chat_template_kwargs, not a row) or does not answer after every retry."""
        got = self.complete(GenerationRequest(PROBE, 0.0, 1.0, 0, 1))
        if got.finish_reason == "refused":
            raise EngineRequestError(f"teacher endpoint {self.url} refused a one-token request: {got.error} (check "
                                     "openai.model and the request settings, e.g. chat_template_kwargs)")
        if got.finish_reason in ("timeout", "error"):
            raise EngineRequestError(f"teacher endpoint {self.url} did not answer a one-token request: {got.error} "
                                     "(check openai.base_url and that the server is up)")

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """All requests with at most `max_concurrency` in flight; results in request order."""
        with ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, len(requests))) as pool:
            return list(pool.map(self.complete, requests))


def _retry_after(header: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (seconds form), capped at 60 s; else `default`."""
    try:
        return min(max(float(header), 0.0), 60.0) if header is not None else default
    except ValueError:
        return default


# --------------------------------------------------------------------------- vLLM (Ray Data LLM)

# vLLM's default max_logprobs: a request asking for more is refused unless the engine allows it.
VLLM_MAX_LOGPROBS = 20
# Columns the vLLM stages add; dropped again so every engine hands back the same row shape.
_VLLM_COLUMNS = frozenset({
    "sampling_params", "generated_text", "generated_tokens", "num_generated_tokens", "num_input_tokens",
    "prompt", "prompt_token_ids", "tokenized_prompt", "metrics", "logprobs", "prompt_logprobs",
    "request_id", "batch_uuid", "time_taken_llm", "params", "embeddings", "__inference_error__",
})


def vllm_on_gpu(cfg: AnnotateConfig) -> bool:
    return cfg.gpus_per_worker > 0


def vllm_stage_resources(cfg: AnnotateConfig) -> dict[str, float]:
    """Ray resources the vLLM engine stage holds in all: every replica takes one bundle per
    tensor x pipeline rank, of cpus_per_worker CPUs (CPU cluster) or 1 GPU + 1 CPU (GPU cluster,
    Ray Data LLM's default bundle)."""
    ranks = cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size
    if vllm_on_gpu(cfg):
        return {"CPU": float(cfg.num_workers * ranks), "GPU": float(cfg.num_workers * ranks)}
    return {"CPU": float(cfg.num_workers * ranks * cfg.cpus_per_worker)}


def vllm_processor_config(cfg: AnnotateConfig) -> Any:
    """The `ray.data.llm.vLLMEngineProcessorConfig` of an annotate config, CPU or GPU from one config.

    Prompts arrive as token ids rendered on the driver (the same chat rendering the transformers
    engine uses, and what the prompt-length check counted), so the chat-template, tokenize and
    detokenize stages are off: each would hold an actor of its own (on a 2-CPU cluster the four
    stages' actors wait forever for 4 CPUs). Replicas are fixed at num_workers (an int alone would
    mean autoscaling 1..n). CPU cluster: each replica is a placement group of tp*pp bundles of
    cpus_per_worker CPUs. GPU cluster: Ray Data LLM's GPU bundles, tp*pp per replica, sharded by
    vLLM's Ray executor when tp*pp > 1. A row vLLM fails on comes back with `__inference_error__`
    and the job goes on (should_continue_on_error).
    """
    from ray.data.llm import vLLMEngineProcessorConfig

    from ray_cotd.lm.vllm import engine_env, engine_kwargs

    source = resolve_source(cfg.teacher)
    ranks = cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size
    kwargs = engine_kwargs(source, cfg.vllm, dtype=cfg.teacher.dtype, seed=cfg.seed,
                           trust_remote_code=cfg.teacher.trust_remote_code)
    if cfg.logprobs is not None and cfg.logprobs > VLLM_MAX_LOGPROBS:  # vLLM refuses more than max_logprobs per request
        kwargs["max_logprobs"] = cfg.logprobs
    placement = None if vllm_on_gpu(cfg) else {"bundles": [{"CPU": cfg.cpus_per_worker} for _ in range(ranks)],
                                               "strategy": "PACK"}
    return vLLMEngineProcessorConfig(
        model_source=source,
        engine_kwargs=kwargs,
        batch_size=cfg.batch_size,
        concurrency=(cfg.num_workers, cfg.num_workers),
        max_concurrent_batches=cfg.vllm.max_concurrent_batches,
        accelerator_type=cfg.vllm.accelerator_type,
        placement_group_config=placement,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": engine_env(cfg.vllm)},
    )


def vllm_request(row: dict[str, Any], eos_ids: frozenset[int] = frozenset(),
                 logprobs: int | None = None) -> dict[str, Any]:
    """Preprocess: a work row -> the vLLM stage's input (prompt token ids + per-row sampling_params).

    One sample per row with the row's own seed (vLLM's seeded n > 1 kills the CPU engine, and Ray
    Data LLM keeps only the first of n outputs anyway). stop_token_ids holds the same EOS ids the
    transformers engine stops at. logprobs: k top log-probabilities per generated token (vLLM's raw
    ones: the model's distribution before temperature and top-p).
    """
    params: dict[str, Any] = {
        "temperature": float(row["temperature"]),
        "top_p": float(row["top_p"]),
        "seed": int(row["seed"]),
        "max_tokens": int(row["max_new_tokens"]),
        "stop_token_ids": sorted(eos_ids),
        "n": 1,
    }
    if logprobs is not None:
        params["logprobs"] = logprobs
    return {**row, "tokenized_prompt": list(row["prompt_ids"]), "sampling_params": params}


def vllm_result(row: dict[str, Any], eos_ids: frozenset[int] = frozenset(), logprobs: int | None = None,
                vocab: str = "") -> dict[str, Any]:
    """Postprocess: vLLM output -> the work row plus OUTPUT_COLUMNS (and `topk` with logprobs).

    Ray Data LLM reports no finish reason: the reply stopped ("stop") when its last token is an EOS
    id or it is shorter than max_tokens, else it hit max_tokens ("length": cut off). A row vLLM
    failed on is an "error" completion with vLLM's message. logprobs: the k best entries of each
    generated token become a TopK record (the teacher tokenizer's `vocab` fingerprint with it), or
    a LogprobFailure when vLLM's list does not match the generated tokens.
    """
    out = {k: v for k, v in row.items() if k not in _VLLM_COLUMNS and k != "prompt_ids"}
    error = row.get("__inference_error__") or ""
    if error:
        out.update(generated_text="", finish_reason="error", prompt_tokens=len(row["prompt_ids"]),
                   completion_tokens=0, error=f"vLLM: {error}"[:500], reasoning=None)
        return out
    tokens = [int(t) for t in (row.get("generated_tokens") if row.get("generated_tokens") is not None else [])]
    stopped = bool(tokens) and tokens[-1] in eos_ids or len(tokens) < int(row["max_new_tokens"])
    out.update(
        generated_text=row["generated_text"] or "",
        finish_reason="stop" if stopped else "length",
        prompt_tokens=int(row["num_input_tokens"]),
        completion_tokens=len(tokens),
        error="",
        reasoning=None,  # vLLM's engine returns text: a trace arrives as <think> tags in it
    )
    if logprobs is not None:
        steps = row.get("logprobs")
        out["topk"] = topk_from_vllm(tokens, list(steps) if steps is not None else None, logprobs, vocab)
    return out


# --------------------------------------------------------------------------- the Ray shell


def complete_batch(teacher: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Run one Ray Data batch (column -> array) through a plain teacher; add OUTPUT_COLUMNS."""
    n = len(batch["messages"])
    completions = teacher.generate([GenerationRequest.from_columns(batch, i) for i in range(n)])
    batch = dict(batch)
    batch["generated_text"] = [c.text for c in completions]
    batch["finish_reason"] = [c.finish_reason for c in completions]
    batch["prompt_tokens"] = [c.prompt_tokens for c in completions]  # None when an endpoint reports no usage
    batch["completion_tokens"] = [c.completion_tokens for c in completions]
    batch["error"] = [c.error for c in completions]
    batch["reasoning"] = [c.reasoning for c in completions]
    return batch


class TransformersStage:
    """Ray Data actor: one TransformersTeacher per actor, loaded once."""

    def __init__(self, spec: ModelSpec, num_threads: int, device: str, chat_template_kwargs: dict[str, Any]) -> None:
        self.teacher = TransformersTeacher(spec, num_threads=num_threads, device=device,
                                           chat_template_kwargs=chat_template_kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return complete_batch(self.teacher, batch)


class OpenAIStage:
    """Ray Data actor: one OpenAITeacher (HTTP session + thread pool) per actor."""

    def __init__(self, spec: OpenAIEngineSpec, chat_template_kwargs: dict[str, Any]) -> None:
        self.teacher = OpenAITeacher(spec, chat_template_kwargs=chat_template_kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return complete_batch(self.teacher, batch)


def _transformers_stage(ds: Any, cfg: AnnotateConfig) -> Any:
    import ray.data

    device = "cuda" if cfg.gpus_per_worker > 0 else "cpu"
    return ds.map_batches(
        TransformersStage,
        fn_constructor_kwargs={"spec": cfg.teacher, "num_threads": max(1, int(cfg.cpus_per_worker)), "device": device,
                               "chat_template_kwargs": cfg.chat_template_kwargs},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker,
    )


def _openai_stage(ds: Any, cfg: AnnotateConfig) -> Any:
    import ray.data

    return ds.map_batches(
        OpenAIStage,
        fn_constructor_kwargs={"spec": cfg.openai, "chat_template_kwargs": cfg.chat_template_kwargs},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.cpus_per_worker,
    )


def _vllm_stage(ds: Any, cfg: AnnotateConfig) -> Any:
    """Ray Data LLM's processor with the engine stage alone: requests are shaped and results read
    on the driver (EngineRows), so no map stage starts worker processes around the engine."""
    from ray.data.llm import build_processor

    return build_processor(vllm_processor_config(cfg))(ds)


ENGINES: dict[str, Callable[[Any, AnnotateConfig], Any]] = {
    "transformers": _transformers_stage,
    "openai": _openai_stage,
    "vllm": _vllm_stage,
}


@dataclass(frozen=True)
class EngineRows:
    """How the driver shapes a request row for the engine stage and reads its output row back into
    the work row + OUTPUT_COLUMNS. Identity for the engines whose stage does that itself."""

    request: Callable[[dict[str, Any]], dict[str, Any]]
    result: Callable[[dict[str, Any]], dict[str, Any]]


def engine_rows(cfg: AnnotateConfig) -> EngineRows:
    if cfg.engine != "vllm":
        return EngineRows(request=lambda row: row, result=lambda row: row)
    from functools import partial

    from ray_cotd.lm.vllm import generation_eos

    tokenizer = load_tokenizer(cfg.teacher)
    eos_ids = generation_eos(resolve_source(cfg.teacher), tokenizer)
    vocab = vocab_fingerprint(tokenizer) if cfg.logprobs is not None else ""
    return EngineRows(request=partial(vllm_request, eos_ids=eos_ids, logprobs=cfg.logprobs),
                      result=partial(vllm_result, eos_ids=eos_ids, logprobs=cfg.logprobs, vocab=vocab))


def generate_stage(ds: Any, cfg: AnnotateConfig) -> Any:
    """Request rows (EngineRows.request) -> output rows (EngineRows.result reads them), through the
    engine `cfg.engine` names."""
    return ENGINES[cfg.engine](ds, cfg)


__all__ = [
    "Completion",
    "DEFAULT_TEACHER_NAME",
    "ENGINES",
    "EngineRequestError",
    "EngineRows",
    "FINISH_REASONS",
    "GenerationRequest",
    "OUTPUT_COLUMNS",
    "OpenAITeacher",
    "REASONING_FIELDS",
    "REQUEST_COLUMNS",
    "RETRY_STATUSES",
    "TransformersTeacher",
    "chat_payload",
    "complete_batch",
    "engine_rows",
    "generate_stage",
    "parse_chat_response",
    "teacher_name",
    "vllm_processor_config",
    "vllm_stage_resources",
    "vllm_request",
    "vllm_result",
]
