"""The HTTP API: `create_api(cfg, backend)` is plain FastAPI, testable without Ray or a model.

Routes, per-request limits, the chat request read as one question, the published schema, and the
SSE stream of a chat completion. The model sits behind the `Backend` protocol (`reason` and
`stream`); the Serve replica passes its backend (`hf.HFBackend`), tests pass a scripted one.

Kept by hand, and why:
- `_publish_config` overrides `app.openapi` (FastAPI's documented way to change the schema) to
  write the config's bounds and the bearer scheme into it; the pydantic models cannot carry
  bounds that come from the config.
- The per-request timeout is `asyncio.wait_for` here, not Serve's `request_timeout_s`: Serve's
  answers without our error body and does not exist outside a replica. Serve's is set 30 s higher
  as a backstop (`deployment.run_serve`).
- SSE framing uses FastAPI's `format_sse_event` and `EventSourceResponse`; the event generator is
  ours because the chat route answers JSON or SSE depending on `stream`, and FastAPI's own SSE
  path needs the route itself to be a generator.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_cotd.config import ServeConfig
from ray_cotd.lm.generate import STAGE2_PREFIX, GenerationLimits, TwoStageResult
from ray_cotd.serve.guard import (
    CLIENT_CLOSED,
    ERROR_TYPES,
    HEALTH_PATH,
    ApiError,
    Guard,
    JsonLinesSink,
    RequestLog,
    log,
    model_failure,
    route_path,
    validation_error,
)
from ray_cotd.serve.schema import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChatUsage,
    ErrorBody,
    ErrorDetail,
    GenerationParams,
    Health,
    ModelCard,
    ModelList,
    ReasoningParts,
    ReasonRequest,
    ReasonResponse,
    ReasonTimings,
    ReasonUsage,
)

SAMPLING_FLOOR = 1e-4  # temperature or top_p below this decodes greedily (see _limits)


class Backend(Protocol):
    """What the API needs from a model host (the Serve replica's backend, or a test double).

    Abandoned work must stop: the API cancels `reason` when its client disconnects or the request
    times out, and closes the `stream` iterator when its client leaves; the backend then stops that
    request's generation within one decoding step. A failure raised for one request must not fail
    the other requests it was batched with.
    """

    async def reason(self, question: str, limits: GenerationLimits,
                     choices: list[str] | None = None) -> TwoStageResult:
        """The two-stage answer; with `choices`, also the constrained one (TwoStageResult)."""
        ...

    def stream(self, question: str, limits: GenerationLimits) -> AsyncIterator[Union[str, TwoStageResult]]:
        """Rationale pieces as they are generated, then the complete result as the last item."""
        ...


# ------------------------------------------------------------------------------ limits / input


def resolve_limits(params: GenerationParams, cfg: ServeConfig) -> GenerationLimits:
    """Request limits checked against the server's bounds (422 naming the field when above them)."""
    for key in ("max_rationale_tokens", "max_answer_tokens"):
        value = getattr(params, key)
        if value is not None and value > getattr(cfg, key):
            bound = getattr(cfg, key)
            raise ApiError(422, "limit_out_of_range", f"{key}: {value} exceeds this server's bound {bound}", key)
    return _limits(cfg, params.max_rationale_tokens, params.max_answer_tokens, params.temperature, params.top_p,
                   params.seed)


def chat_limits(req: ChatCompletionRequest, cfg: ServeConfig) -> GenerationLimits:
    """OpenAI's max_tokens is a ceiling the client accepts, so it is clamped, not rejected."""
    asked = req.max_completion_tokens or req.max_tokens
    rationale = min(asked, cfg.max_rationale_tokens) if asked else None
    return _limits(cfg, rationale, None, req.temperature, req.top_p, req.seed)


def _limits(cfg: ServeConfig, rationale: int | None, answer: int | None, temperature: float | None,
            top_p: float | None, seed: int | None) -> GenerationLimits:
    # Unset or ~0 temperature or top_p is greedy, exactly the evaluated decoding; both limits ARE
    # greedy decoding, and values that underflow in float32 (top_p=1e-200) would otherwise make the
    # sampler drop every token - a 503 caused by input (found by the schema fuzz test).
    sample = (temperature or 0.0) >= SAMPLING_FLOOR and (top_p is None or top_p >= SAMPLING_FLOOR)
    return GenerationLimits(
        max_rationale_tokens=rationale or cfg.max_rationale_tokens,
        max_answer_tokens=answer or cfg.max_answer_tokens,
        do_sample=sample,
        temperature=temperature if sample else 1.0,
        top_p=top_p if (sample and top_p is not None) else 1.0,
        seed=seed or 0,
    )


def check_question(question: str, cfg: ServeConfig, param: str = "question") -> str:
    if len(question) > cfg.max_question_chars:
        raise ApiError(413, "question_too_long",
                       f"{param}: {len(question)} characters exceeds the limit of {cfg.max_question_chars}", param)
    return question


def chat_question(req: ChatCompletionRequest) -> str:
    """The student answers one question: the text of the last user message."""
    for i in range(len(req.messages) - 1, -1, -1):
        msg = req.messages[i]
        if msg.role != "user":
            continue
        if isinstance(msg.content, str):
            text = msg.content
        else:
            text = "\n".join(p.text or "" for p in msg.content or [] if p.type == "text")
        if not text.strip():
            where = f"messages[{i}].content"
            raise ApiError(422, "invalid_request", f"{where}: the user message is empty", where)
        return text
    raise ApiError(422, "invalid_request", "messages: no message with role 'user' (the question)", "messages")


def chat_content(result: TwoStageResult) -> str:
    """The message content: the rationale, then the answer segment as the student wrote it in
    stage 2 ("...\nThe answer is 145.") - the student format of ray_cotd.lm.format."""
    return result.rationale + answer_segment(result)


def answer_segment(result: TwoStageResult) -> str:
    return STAGE2_PREFIX + result.answer_text


# ----------------------------------------------------------------------------------- the API


def create_api(cfg: ServeConfig, backend: Backend, *, token_sha256: str | None = None,
               sink: Callable[[dict], None] | None = None) -> FastAPI:
    """The HTTP API over `backend`; every route's validation, auth and limits live here."""
    app = FastAPI(
        title="ray-cotd student",
        version="1",
        description="Two-stage chain-of-thought answers from a distilled student (rationale, then answer).",
    )
    started = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        request.state.log["error"] = err.code
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        api_err = validation_error(list(err.errors()))
        request.state.log["error"] = api_err.code
        return api_err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        status = err.status_code if err.status_code in ERROR_TYPES else 400
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return ApiError(status, code, f"{request.method} {route_path(request.scope)}: {err.detail}").response(
            dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        # A bug, not bad input: say which, keep the stack trace in the replica log only.
        log.exception("unhandled error")
        return ApiError(500, "internal_error", f"internal error ({type(err).__name__}); see the server log").response()

    async def run_two_stage(request: Request, question: str, limits: GenerationLimits,
                            choices: list[str] | None = None) -> TwoStageResult:
        request.state.log["question_chars"] = len(question)
        try:
            result = await asyncio.wait_for(backend.reason(question, limits, choices), cfg.request_timeout_s)
        except Exception as err:  # any model-side failure is the server's 503, never a 500
            raise model_failure(err) from err
        request.state.log.update(
            prompt_tokens=result.prompt_tokens, rationale_tokens=result.rationale_tokens,
            answer_tokens=result.answer_tokens, stage1_s=round(result.stage1_s, 4), stage2_s=round(result.stage2_s, 4))
        return result

    errors = {s: {"model": ErrorBody} for s in (400, 401, 413, 415, 422, 503)}
    model_errors = {**errors, 404: {"model": ErrorBody, "description": "`model` is not the served model"}}

    @app.get(HEALTH_PATH, response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        return Health(model=cfg.model_name)

    @app.post("/v1/reason", response_model=ReasonResponse, responses=errors, tags=["reason"])
    async def reason(body: ReasonRequest, request: Request) -> ReasonResponse:
        """Rationale, then answer from question + rationale (CasCoD two-stage inference)."""
        question = check_question(body.question, cfg)
        limits = resolve_limits(body, cfg)
        start = time.perf_counter()
        r = await run_two_stage(request, question, limits, body.choices)
        return ReasonResponse(
            id=f"reason-{request.state.request_id}",
            model=cfg.model_name,
            rationale=r.rationale,
            answer=r.answer,
            answer_text=r.answer_text,
            rationale_stop=r.rationale_stop,
            constrained_answer=r.constrained_answer,
            usage=ReasonUsage(prompt_tokens=r.prompt_tokens, rationale_tokens=r.rationale_tokens,
                              answer_tokens=r.answer_tokens,
                              total_tokens=r.prompt_tokens + r.rationale_tokens + r.answer_tokens),
            timings=ReasonTimings(stage1_s=r.stage1_s, stage2_s=r.stage2_s, total_s=time.perf_counter() - start),
        )

    @app.get("/v1/models", response_model=ModelList, responses={401: {"model": ErrorBody}}, tags=["openai"])
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=cfg.model_name, created=started)])

    @app.get("/v1/models/{model_id}", response_model=ModelCard,
             responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}}, tags=["openai"])
    async def model(model_id: str) -> ModelCard:
        _check_model(model_id, cfg)
        return ModelCard(id=cfg.model_name, created=started)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses={**model_errors, 200: {"content": {"text/event-stream": {}}}}, tags=["openai"])
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        """OpenAI chat completion: content = rationale + "\\nThe answer is X."; `stream` sends SSE."""
        _check_model(body.model, cfg)
        question = check_question(chat_question(body), cfg, "messages")
        limits = chat_limits(body, cfg)
        completion_id = f"chatcmpl-{request.state.request_id}"
        created = int(time.time())
        if body.stream:
            request.state.log.update(stream=True, question_chars=len(question))
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _sse_chat(backend, question, limits, cfg, completion_id, created, include_usage, request.state.log)
            return EventSourceResponse(events, headers={"Cache-Control": "no-cache"})
        start = time.perf_counter()
        r = await run_two_stage(request, question, limits)
        completion = r.rationale_tokens + r.answer_tokens
        return ChatCompletionResponse(
            id=completion_id,
            created=created,
            model=cfg.model_name,
            choices=[ChatChoice(message=ChatResponseMessage(content=chat_content(r)),
                                finish_reason=_finish_reason(r))],
            usage=ChatUsage(prompt_tokens=r.prompt_tokens, completion_tokens=completion,
                            total_tokens=r.prompt_tokens + completion),
            reasoning=ReasoningParts(rationale=r.rationale, answer=r.answer,
                                     timings=ReasonTimings(stage1_s=r.stage1_s, stage2_s=r.stage2_s,
                                                           total_s=time.perf_counter() - start)),
        )

    _publish_config(app, cfg, auth=bool(token_sha256))
    app.add_middleware(Guard, token_sha256=token_sha256, max_body_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestLog, sink=sink or JsonLinesSink(cfg.request_log))  # added last = outermost
    return app


def _check_model(model_id: str, cfg: ServeConfig) -> None:
    if model_id != cfg.model_name:
        raise ApiError(404, "model_not_found",
                       f"model {model_id!r} is not served here; this server serves {cfg.model_name!r}", "model")


def _finish_reason(result: TwoStageResult) -> Literal["stop", "length"]:
    """OpenAI's "length" = cut by the token limit: here, a rationale truncated before the marker."""
    return "length" if result.rationale_stop == "length" else "stop"


def _publish_config(app: FastAPI, cfg: ServeConfig, auth: bool) -> None:
    """Make the OpenAPI schema state this server's bounds and auth, not just the static models.

    The request models carry only config-independent constraints; the config's bounds (question
    length, token limits) and the served model name are checked per request and written into the
    schema here, so clients and fuzzers see what the server accepts. The bearer scheme is declared
    when auth is on (the Guard middleware enforces it).
    """
    build = app.openapi
    bounds = {"ReasonRequest": {"question": {"maxLength": cfg.max_question_chars},
                                "max_rationale_tokens": {"maximum": cfg.max_rationale_tokens},
                                "max_answer_tokens": {"maximum": cfg.max_answer_tokens}},
              "ChatCompletionRequest": {"model": {"enum": [cfg.model_name]}}}

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for model, fields in bounds.items():
                props = schema["components"]["schemas"][model]["properties"]
                for name, bound in fields.items():
                    for branch in props[name].get("anyOf", [props[name]]):  # Optional[...] = anyOf [T, null]
                        if branch.get("type") != "null":
                            branch.update(bound)
            model_id = schema["paths"]["/v1/models/{model_id}"]["get"]["parameters"][0]
            model_id["schema"]["enum"] = [cfg.model_name]  # any other is a 404, as for the chat `model`
            if auth:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, ops in schema["paths"].items():
                    for op in ops.values():
                        op["security"] = [] if path == HEALTH_PATH else [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _sse(data: dict | str) -> bytes:
    return format_sse_event(data_str=data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))


async def _sse_chat(backend: Backend, question: str, limits: GenerationLimits, cfg: ServeConfig, completion_id: str,
                    created: int, include_usage: bool, log_fields: dict) -> AsyncIterator[bytes]:
    """OpenAI chunk events: role, rationale pieces, the answer segment, finish, [usage], [DONE].

    The status line (200) is already sent when generation starts, so a failure mid-stream is an
    `error` event (which OpenAI clients raise) followed by [DONE]. A client that leaves cancels
    this generator; closing `stream` stops the backend's generation, and the log says so.
    """

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                     "model": cfg.model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    deadline = time.monotonic() + cfg.request_timeout_s
    result: TwoStageResult | None = None
    stream = backend.stream(question, limits)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                item = await asyncio.wait_for(anext(stream), remaining)
            except StopAsyncIteration:
                break
            if isinstance(item, str):
                if item:
                    yield chunk({"content": item})
            else:
                result = item
        if result is None:
            raise RuntimeError("the stream ended without a result")
    except asyncio.CancelledError:
        # Starlette cancels the response's task on a disconnect and returns normally: say so here.
        log_fields["error"] = CLIENT_CLOSED
        raise
    except Exception as err:  # the client already has a 200: report in-band
        api_err = model_failure(err)
        log_fields["error"] = api_err.code
        detail = ErrorDetail(message=api_err.message, type=ERROR_TYPES[503], code=api_err.code)
        yield _sse(ErrorBody(error=detail).model_dump())
        yield _sse("[DONE]")
        return
    finally:
        await stream.aclose()
    log_fields.update(prompt_tokens=result.prompt_tokens, rationale_tokens=result.rationale_tokens,
                      answer_tokens=result.answer_tokens, stage1_s=round(result.stage1_s, 4),
                      stage2_s=round(result.stage2_s, 4))
    yield chunk({"content": answer_segment(result)})
    yield chunk({}, _finish_reason(result))
    if include_usage:
        completion = result.rationale_tokens + result.answer_tokens
        yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name,
                    "choices": [], "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion,
                                             "total_tokens": result.prompt_tokens + completion}})
    yield _sse("[DONE]")


__all__ = [
    "Backend",
    "answer_segment",
    "chat_content",
    "chat_limits",
    "chat_question",
    "check_question",
    "create_api",
    "resolve_limits",
]
