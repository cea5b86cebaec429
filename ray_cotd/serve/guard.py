"""The HTTP guard and errors: OpenAI-shaped error bodies, auth, body size and request logs.

Errors are `{"error": {"message", "type", "param", "code"}}`, so OpenAI clients raise them as the
matching exception. FastAPI's exception handlers (registered in `api.py`) turn `ApiError`,
pydantic's validation errors and Starlette's 404/405 into that body; `validation_error` is the one
mapping from pydantic's error list to a message naming every bad field.

Two hand-written ASGI middlewares are kept, because neither FastAPI, Starlette nor Ray Serve has them:
- `Guard` checks the bearer token and the body size before FastAPI parses anything. FastAPI's
  `HTTPBearer` is a dependency: it runs after the body is parsed (a wrong token with a garbage body
  would be a 400, not a 401) and never guards `/openapi.json` or `/docs`. Starlette, uvicorn and
  Serve's proxy have no request-body limit at all. A chunked body carries no length, so the guard
  reads up to the limit and replays what it read to the app (ASGI lets one reader consume it).
- `RequestLog` writes one JSON line per request with the fields the handlers add (tokens, stage
  times) and the real outcome: a request whose client went away (Serve cancels it) is status 499
  `client_closed` (nginx's code), not a 500. Serve's access log has status and latency but not
  those fields, and only inside a replica; Starlette's `BaseHTTPMiddleware` would run the app in
  another task, which changes how streaming responses and cancellation reach it. The request id is
  ours for the same reason (the API runs without Ray in tests); it is returned in
  `x-ray-cotd-request-id`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from ray_cotd.serve.schema import ErrorBody, ErrorDetail

HEALTH_PATH = "/healthz"
# Logged, never sent: the client left before its response was complete (nginx's "client closed request").
CLIENT_CLOSED_STATUS, CLIENT_CLOSED = 499, "client_closed"

log = logging.getLogger("ray_cotd.serve.requests")

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
    if any(_loc(tuple(e.get("loc", ()))).startswith("choices") for e in errors):
        # bad choices are a malformed request (400), not an out-of-range value
        bad = [e for e in errors if _loc(tuple(e.get("loc", ()))).startswith("choices")]
        return ApiError(400, "invalid_choices", "; ".join(
            f"{_loc(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in bad), param="choices")
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


def model_failure(err: BaseException) -> ApiError:
    """A failure on the model side is the server's 503 with the reason, never a 500 or a trace."""
    if isinstance(err, TimeoutError):
        return ApiError(503, "timeout", "the request did not finish within the server's request timeout; retry later")
    return ApiError(503, "model_error", f"the model failed on this request: {type(err).__name__}: {err}")


def route_path(scope: dict) -> str:
    """The request path without the app's root path (Serve mounts an app under its route prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


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


class RequestLog:
    """Outermost ASGI middleware: one JSON line per request with status and latency.

    Handlers add fields (tokens, question length) to `request.state.log`; rejected requests
    (auth, size) are logged too because this wraps the guard. A request cancelled under it (Serve
    cancels a request whose client disconnected), or a stream that says its client left, is
    logged as 499 client_closed, whatever status line was already sent.
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
        except asyncio.CancelledError:
            fields["error"] = CLIENT_CLOSED
            raise
        finally:
            if fields.get("error") == CLIENT_CLOSED:
                status = CLIENT_CLOSED_STATUS
            self.sink({
                "ts": time.time(),
                "request_id": request_id,
                "method": scope.get("method"),
                "path": route_path(scope),
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
        if self.token_sha256 and route_path(scope) != HEALTH_PATH:
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


__all__ = [
    "CLIENT_CLOSED",
    "CLIENT_CLOSED_STATUS",
    "ERROR_TYPES",
    "HEALTH_PATH",
    "ApiError",
    "Guard",
    "JsonLinesSink",
    "RequestLog",
    "model_failure",
    "route_path",
    "validation_error",
]
