"""The student over HTTP: a Ray Serve application answering with two-stage CasCoD inference.

    POST /v1/reason             {"question": ..., limits} -> rationale, answer, usage, timings
    POST /v1/chat/completions   OpenAI-compatible; content = rationale + "\\nThe answer is X."
                                (`stream: true` streams the rationale, then the answer, over SSE)
    GET  /v1/models             the one served model
    GET  /healthz               liveness (never needs the token)
    GET  /openapi.json, /docs   the schema FastAPI publishes

Two layers (STYLE 7): `create_api(cfg, backend)` is plain FastAPI - request models, validation,
auth, limits, error bodies, request logs - testable without Ray; `StudentService` is the replica:
one `Generator` from `ray_cotd.lm.generate` (so a served answer is the evaluated answer, with stage 2
reusing stage 1's KV cache), Serve's dynamic batcher in front of it, and the API built on top.
`app_from_config` turns a `ServeConfig` into a bound Serve application; `build_app` is the same for
`serve run` / `serve deploy` YAML (`import_path: ray_cotd.serve:build_app`); `run_serve` is what
`ray-cotd serve CONFIG` calls.

Errors are OpenAI-shaped, `{"error": {"message", "type", "param", "code"}}`, so OpenAI clients
raise them as the matching exception: 400 malformed JSON, 401 missing/wrong token, 404 unknown
route or model, 413 body or question too long, 422 missing/empty/wrongly typed fields and limits
out of range, 503 model failure or per-request timeout (with the reason, never a stack trace).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Optional, Protocol, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_cotd.config import ConfigError, ServeConfig
from ray_cotd.configbase import from_dict, to_dict
from ray_cotd.lm.generate import STAGE2_PREFIX, GenerationLimits, Generator, TwoStageResult
from ray_cotd.ray_session import connect

HEALTH_PATH = "/healthz"
DEPLOYMENT_NAME = "StudentServer"
# The schema's own ceilings; the config's bounds (checked per request) are usually far lower.
SCHEMA_MAX_TOKENS = 1 << 16
SCHEMA_MAX_SEED = (1 << 32) - 1
SAMPLING_FLOOR = 1e-4  # temperature or top_p below this decodes greedily (see _limits)

log = logging.getLogger("ray_cotd.serve.requests")


# ----------------------------------------------------------------------------- request models


class GenerationParams(BaseModel):
    """Optional per-request generation limits; unset fields take the server's defaults."""

    # strict: "5" is not an int and 1 is not a bool; wrong types are the client's bug to hear about.
    model_config = ConfigDict(strict=True, extra="forbid")

    max_rationale_tokens: Optional[int] = Field(None, ge=1, le=SCHEMA_MAX_TOKENS, description="stage-1 token limit")
    max_answer_tokens: Optional[int] = Field(None, ge=1, le=SCHEMA_MAX_TOKENS, description="stage-2 token limit")
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0, description="0 or unset = greedy (as evaluated)")
    top_p: Optional[float] = Field(None, ge=0.0, le=1.0, description="nucleus sampling p (with temperature > 0)")
    seed: Optional[int] = Field(None, ge=0, le=SCHEMA_MAX_SEED, description="sampling seed")


class ReasonRequest(GenerationParams):
    question: str = Field(min_length=1, description="the question, as a user would ask it")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is empty (whitespace only)")
        return value


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    text: Optional[str] = None


class ChatMessage(BaseModel):
    # extra="allow": OpenAI clients add fields (name, tool_calls, ...) that a student ignores.
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat request a two-stage student can honour; other fields are ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1, description="caps the rationale (clamped to the server bound)")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="same as max_tokens (newer clients)")
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=SCHEMA_MAX_SEED)
    n: int = Field(1, ge=1, le=1, description="only one choice per request")


# ---------------------------------------------------------------------------- response models


class ReasonUsage(BaseModel):
    prompt_tokens: int
    rationale_tokens: int
    answer_tokens: int
    total_tokens: int


class ReasonTimings(BaseModel):
    stage1_s: float = Field(description="rationale generation (prefill + decode)")
    stage2_s: float = Field(description="answer generation on stage 1's KV cache")
    total_s: float = Field(description="server time for the request, batching wait included")


class ReasonResponse(BaseModel):
    id: str
    model: str
    rationale: str
    answer: Optional[str] = Field(description="the parsed answer; null when stage 2 produced none")
    answer_text: str = Field(description="stage 2's raw text after 'The answer is' (e.g. ' 145.')")
    rationale_stop: str = Field(description="why stage 1 ended: eos, marker or length (truncated)")
    usage: ReasonUsage
    timings: ReasonTimings


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: Literal["stop", "length"]


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ReasoningParts(BaseModel):
    """The two stages apart, for clients that want them without re-parsing `content`."""

    rationale: str
    answer: Optional[str]
    timings: ReasonTimings


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    reasoning: ReasoningParts


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ray-cotd"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# ------------------------------------------------------------------------------------- errors

# status -> OpenAI error type (the OpenAI client maps the status to its exception class).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An HTTP error with an OpenAI-shaped JSON body."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        detail = ErrorDetail(message=self.message, type=ERROR_TYPES[self.status], param=self.param, code=self.code)
        return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=self.status, headers=headers)


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _loc(loc: tuple) -> str:
    """("body", "messages", 0, "role") -> "messages[0].role"; the body itself -> "body"."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_error(errors: list[dict]) -> ApiError:
    """FastAPI/pydantic validation errors -> one ApiError naming every bad field."""
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "not valid JSON")
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {reason}")
    problems = []
    for e in errors:
        where = _loc(tuple(e.get("loc", ())))
        if where == "body" and isinstance(e.get("input"), bytes):
            # FastAPI hands over the raw bytes when the Content-Type is not JSON (curl -d sends a form type).
            return ApiError(415, "unsupported_media_type",
                            "send the body as a JSON object with 'Content-Type: application/json'")
        if where == "body":
            got = _JSON_TYPES.get(type(e.get("input")), "something else")
            problems.append("request body is required (a JSON object)" if e.get("type") == "missing"
                            else f"request body must be a JSON object, got {got}")
        else:
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
    first = _loc(tuple(errors[0].get("loc", ()))) if errors else None
    return ApiError(422, "invalid_request", "; ".join(problems), param=first)


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


# ---------------------------------------------------------------------------------- middleware


class JsonLinesSink:
    """Writes one JSON object per line to the `ray_cotd.serve.requests` logger and optionally a file."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def __call__(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True)
        log.info(line)
        if self.path:
            # One write per line in append mode: lines from several replicas do not interleave.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def _route_path(scope: dict) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class RequestLog:
    """Outermost ASGI middleware: one JSON line per request with status and latency.

    Handlers add fields (tokens, question length) to `request.state.log`; rejected requests
    (auth, size) are logged too because this wraps the guard.
    """

    def __init__(self, app: Any, sink: Callable[[dict], None]) -> None:
        self.app, self.sink = app, sink

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = fields
        request_id = uuid.uuid4().hex
        scope["state"]["request_id"] = request_id
        start = time.perf_counter()
        status = 500  # what the client sees if the app dies before starting a response

        async def send_logged(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-ray-cotd-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            self.sink({
                "ts": time.time(),
                "request_id": request_id,
                "method": scope.get("method"),
                "path": _route_path(scope),
                "status": status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 2),
                **fields,
            })


class Guard:
    """ASGI middleware: bearer token (all routes but /healthz) and request body size.

    Runs before FastAPI parses anything, so a wrong token is a 401 even when the body is garbage,
    and an oversized body is refused before it is buffered in full.
    """

    def __init__(self, app: Any, *, token_sha256: str | None, max_body_bytes: int) -> None:
        self.app, self.token_sha256, self.max_body_bytes = app, token_sha256, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token_sha256 and _route_path(scope) != HEALTH_PATH:
            problem = _auth_problem(headers.get("authorization"), self.token_sha256)
            if problem:
                await self._reject(ApiError(401, "invalid_token", problem), scope, receive, send,
                                   {"WWW-Authenticate": "Bearer"})
                return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        # Chunked bodies carry no length: read up to the limit, then replay what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        err = ApiError(413, "body_too_large", f"request body exceeds the limit of {self.max_body_bytes} bytes")
        await self._reject(err, scope, receive, send)

    @staticmethod
    async def _reject(err: ApiError, scope: dict, receive: Any, send: Any, headers: dict | None = None) -> None:
        scope.get("state", {}).get("log", {})["error"] = err.code  # for RequestLog, which wraps this
        await err.response(headers)(scope, receive, send)


def _auth_problem(header: str | None, token_sha256: str) -> str | None:
    if not header:
        return "missing bearer token: send 'Authorization: Bearer <token>'"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "malformed Authorization header: expected 'Bearer <token>'"
    # Compare digests, so the replica never holds the token itself and timing reveals nothing.
    if not hmac.compare_digest(hashlib.sha256(token.strip().encode()).hexdigest(), token_sha256):
        return "wrong bearer token"
    return None


# ----------------------------------------------------------------------------------- the API


class Backend(Protocol):
    """What the API needs from a model host (the Serve replica, or a test double)."""

    async def reason(self, question: str, limits: GenerationLimits) -> TwoStageResult: ...

    def stream(self, question: str, limits: GenerationLimits) -> AsyncIterator[Union[str, TwoStageResult]]:
        """Rationale pieces as they are generated, then the complete result as the last item."""
        ...


def _model_failure(err: BaseException) -> ApiError:
    if isinstance(err, TimeoutError):
        return ApiError(503, "timeout", "the request did not finish within the server's request timeout; retry later")
    return ApiError(503, "model_error", f"the model failed on this request: {type(err).__name__}: {err}")


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
        return ApiError(status, code, f"{request.method} {_route_path(request.scope)}: {err.detail}").response(
            dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        # A bug, not bad input: say which, keep the stack trace in the replica log only.
        log.exception("unhandled error")
        return ApiError(500, "internal_error", f"internal error ({type(err).__name__}); see the server log").response()

    async def run_two_stage(request: Request, question: str, limits: GenerationLimits) -> TwoStageResult:
        request.state.log["question_chars"] = len(question)
        try:
            result = await asyncio.wait_for(backend.reason(question, limits), cfg.request_timeout_s)
        except Exception as err:  # any model-side failure is the server's 503, never a 500
            raise _model_failure(err) from err
        request.state.log.update(
            prompt_tokens=result.prompt_tokens, rationale_tokens=result.rationale_tokens,
            answer_tokens=result.answer_tokens, stage1_s=round(result.stage1_s, 4), stage2_s=round(result.stage2_s, 4))
        return result

    errors = {s: {"model": ErrorBody} for s in (400, 401, 413, 415, 422, 503)}

    @app.get(HEALTH_PATH, response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        return Health(model=cfg.model_name)

    @app.post("/v1/reason", response_model=ReasonResponse, responses=errors, tags=["reason"])
    async def reason(body: ReasonRequest, request: Request) -> ReasonResponse:
        """Rationale, then answer from question + rationale (CasCoD two-stage inference)."""
        question = check_question(body.question, cfg)
        limits = resolve_limits(body, cfg)
        start = time.perf_counter()
        r = await run_two_stage(request, question, limits)
        return ReasonResponse(
            id=f"reason-{request.state.request_id}",
            model=cfg.model_name,
            rationale=r.rationale,
            answer=r.answer,
            answer_text=r.answer_text,
            rationale_stop=r.rationale_stop,
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
              responses={**errors, 200: {"content": {"text/event-stream": {}}}}, tags=["openai"])
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
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
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
    length, token limits) are checked per request and written into the schema here, so clients and
    fuzzers see what the server accepts. The bearer scheme is declared when auth is on (the Guard
    middleware enforces it).
    """
    build = app.openapi
    bounds = {"question": {"maxLength": cfg.max_question_chars},
              "max_rationale_tokens": {"maximum": cfg.max_rationale_tokens},
              "max_answer_tokens": {"maximum": cfg.max_answer_tokens}}

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            props = schema["components"]["schemas"]["ReasonRequest"]["properties"]
            for name, bound in bounds.items():
                for branch in props[name].get("anyOf", [props[name]]):  # Optional[...] = anyOf [T, null]
                    if branch.get("type") != "null":
                        branch.update(bound)
            if auth:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, ops in schema["paths"].items():
                    for op in ops.values():
                        op["security"] = [] if path == HEALTH_PATH else [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


async def _sse_chat(backend: Backend, question: str, limits: GenerationLimits, cfg: ServeConfig, completion_id: str,
                    created: int, include_usage: bool, log_fields: dict) -> AsyncIterator[bytes]:
    """OpenAI chunk events: role, rationale pieces, the answer segment, finish, [usage], [DONE].

    The status line (200) is already sent when generation starts, so a failure mid-stream is an
    `error` event (which OpenAI clients raise) followed by [DONE].
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
    except Exception as err:  # the client already has a 200: report in-band
        api_err = _model_failure(err)
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


# ----------------------------------------------------------------------------- the Ray shell


class StudentService:
    """One Serve replica: the student's Generator behind Serve's dynamic batcher, and the API.

    Deployed through `app_from_config`, which wraps this class with `serve.ingress()` (the app is
    built per replica by `__serve_build_asgi_app__`, so routes can reach this instance).
    """

    def __init__(self, cfg_data: dict, token_sha256: Optional[str]) -> None:
        import torch
        from ray import serve  # Ray call: the batcher

        self.cfg: ServeConfig = from_dict(ServeConfig, cfg_data)
        self.token_sha256 = token_sha256
        # Ray sets OMP_NUM_THREADS from num_cpus, but torch may have read it before; say it once more.
        torch.set_num_threads(max(1, int(self.cfg.num_cpus)))
        self.generator = Generator.from_spec(self.cfg.student)
        # Batch size and wait come from the config, so the batcher is made per instance, not per class.
        self._batched = serve.batch(
            self._generate_batch, max_batch_size=self.cfg.max_batch_size,
            batch_wait_timeout_s=self.cfg.batch_wait_timeout_s, max_concurrent_batches=1)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.cfg, self, token_sha256=self.token_sha256)

    async def reason(self, question: str, limits: GenerationLimits) -> TwoStageResult:
        out = await self._batched((question, limits))
        if isinstance(out, BaseException):
            raise out
        return out

    async def _generate_batch(
        self, items: list[tuple[str, GenerationLimits]]
    ) -> list[Union[TwoStageResult, Exception]]:
        """One `two_stage` call per distinct limits in the batch (usually one); failures stay per group."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, limits) in enumerate(items):
            groups.setdefault(dataclasses.astuple(limits), []).append(i)
        out: dict[int, Union[TwoStageResult, Exception]] = {}
        for idxs in groups.values():
            questions = [items[i][0] for i in idxs]
            try:
                # A thread keeps the replica's event loop free to take the next batch's requests.
                results = await asyncio.to_thread(self.generator.two_stage, questions, items[idxs[0]][1])
            except Exception as err:  # reported per request as a 503 by the API
                results = [err] * len(idxs)
            out.update(zip(idxs, results))
        return [out[i] for i in range(len(items))]

    async def stream(self, question: str, limits: GenerationLimits) -> AsyncIterator[Union[str, TwoStageResult]]:
        """Stage-1 text chunks as the student writes them, then the finished TwoStageResult.

        The decoding runs in a worker thread (one token step at a time) and hands items to the
        event loop; a client that goes away sets `stop`, so the thread quits at the next token.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        end = object()

        def pump() -> None:
            try:
                rationale = self.generator.stream_rationale(question, limits)
                for chunk in rationale:
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, rationale.finish())
            except Exception as err:  # raised again on the event loop side
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, end)

        loop.run_in_executor(None, pump)
        try:
            while (item := await queue.get()) is not end:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()


def token_digest(cfg: ServeConfig) -> str | None:
    """sha256 of the bearer token named by `cfg.auth_token_env`, read where the app is built.

    Only the digest travels to the replicas (and into Serve's stored deployment args), never the
    token. A named variable that is unset or empty is a ConfigError: auth silently off is worse.
    """
    if not cfg.auth_token_env:
        return None
    token = os.environ.get(cfg.auth_token_env, "").strip()
    if not token:
        raise ConfigError(f"auth_token_env: environment variable {cfg.auth_token_env} is unset or empty")
    return hashlib.sha256(token.encode()).hexdigest()


def deployment_options(cfg: ServeConfig) -> dict:
    """Serve deployment options from the config: replicas or autoscaling, concurrency, resources."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    }
    if cfg.max_replicas > cfg.num_replicas:
        options["autoscaling_config"] = {
            "min_replicas": cfg.num_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = cfg.num_replicas
    return options


def app_from_config(cfg: ServeConfig) -> Any:
    """A bound Serve application (pass to `serve.run`) serving `cfg.student`."""
    from ray import serve  # Ray call: the deployment

    deployment = serve.deployment(serve.ingress()(StudentService), **deployment_options(cfg))
    return deployment.bind(to_dict(cfg), token_digest(cfg))


def build_app(args: dict) -> Any:
    """Serve app builder for YAML `import_path: ray_cotd.serve:build_app`; `args` are ServeConfig keys."""
    return app_from_config(from_dict(ServeConfig, dict(args or {}), where="args"))


def run_serve(cfg: ServeConfig, *, blocking: bool = True) -> str:
    """Start Serve on cfg.host:cfg.port, deploy the student and return the base URL.

    blocking=True (the CLI) serves until Ctrl-C, then shuts Serve down. Uses the running Ray
    session, or joins the cluster RAY_ADDRESS names, or starts a local one (ray_session.connect).
    """
    from ray import serve

    from ray_cotd.lm.model import resolve_source

    # Fail here on a bad path rather than in every replica; also converts a GGUF once, not per replica.
    resolve_source(cfg.student)
    token_digest(cfg)
    connect()  # [ray]
    # Serve's own timeout is a backstop above ours, so a normal timeout is our 503 with a reason.
    serve.start(http_options={"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s + 30})
    serve.run(app_from_config(cfg), name=cfg.app_name, route_prefix="/", blocking=False)
    url = f"http://{cfg.host}:{cfg.port}"
    if blocking:
        print(f"serving {cfg.model_name} at {url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url


__all__ = [
    "ApiError",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "GenerationParams",
    "ReasonRequest",
    "ReasonResponse",
    "StudentService",
    "app_from_config",
    "build_app",
    "chat_content",
    "chat_question",
    "create_api",
    "deployment_options",
    "resolve_limits",
    "run_serve",
    "token_digest",
    "validation_error",
]
