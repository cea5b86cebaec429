"""What goes over the wire: request and response bodies, and the OpenAI-shaped error body.

Plain pydantic models; FastAPI validates requests with them and publishes them as the OpenAPI
schema. They carry only the constraints that do not depend on the config (types, ranges, `n == 1`);
the config's bounds (question length, token limits) are checked per request in `api.py` and
written into the published schema there.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The schema's own ceilings; the config's bounds (checked per request) are usually far lower.
SCHEMA_MAX_TOKENS = 1 << 16
SCHEMA_MAX_SEED = (1 << 32) - 1


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


__all__ = [
    "SCHEMA_MAX_SEED",
    "SCHEMA_MAX_TOKENS",
    "ChatChoice",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ChatResponseMessage",
    "ChatUsage",
    "ContentPart",
    "ErrorBody",
    "ErrorDetail",
    "GenerationParams",
    "Health",
    "ModelCard",
    "ModelList",
    "ReasonRequest",
    "ReasonResponse",
    "ReasonTimings",
    "ReasonUsage",
    "ReasoningParts",
    "StreamOptions",
]
