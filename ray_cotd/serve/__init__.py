"""The student over HTTP: a Ray Serve application answering with two-stage CasCoD inference.

    POST /v1/reason             {"question": ..., limits} -> rationale, answer, usage, timings
    POST /v1/chat/completions   OpenAI-compatible; content = rationale + "\\nThe answer is X."
                                (`stream: true` streams the rationale, then the answer, over SSE)
    GET  /v1/models             the one served model
    GET  /healthz               liveness (never needs the token)
    GET  /openapi.json, /docs   the schema FastAPI publishes

Split by concern (STYLE 7: the HTTP layers are plain FastAPI, testable without Ray):

    schema.py      request and response bodies, the OpenAI-shaped error body (pydantic)
    guard.py       errors and their mapping, the auth + body-size guard, the request log
    api.py         create_api(cfg, backend): routes, limits, the chat question, SSE; the Backend protocol
    hf.py          HFBackend: the replica's Generator behind Serve's batcher and stream threads; a
                   failed request fails alone, abandoned generation stops within one step
    deployment.py  StudentService (the replica), app_from_config, build_app, run_serve

`build_app` is the builder for `serve run` / `serve deploy` YAML (`import_path:
ray_cotd.serve:build_app`); `run_serve` is what `ray-cotd serve CONFIG` calls.
"""

from ray_cotd.serve.api import (
    Backend,
    chat_content,
    chat_limits,
    chat_question,
    check_question,
    create_api,
    resolve_limits,
)
from ray_cotd.serve.deployment import (
    DEPLOYMENT_NAME,
    StudentService,
    app_from_config,
    build_app,
    deployment_options,
    run_serve,
    token_digest,
)
from ray_cotd.serve.guard import ApiError, validation_error
from ray_cotd.serve.hf import HFBackend
from ray_cotd.serve.schema import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    GenerationParams,
    ReasonRequest,
    ReasonResponse,
)

__all__ = [
    "DEPLOYMENT_NAME",
    "ApiError",
    "Backend",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "GenerationParams",
    "HFBackend",
    "ReasonRequest",
    "ReasonResponse",
    "StudentService",
    "app_from_config",
    "build_app",
    "chat_content",
    "chat_limits",
    "chat_question",
    "check_question",
    "create_api",
    "deployment_options",
    "resolve_limits",
    "run_serve",
    "token_digest",
    "validation_error",
]
