"""What goes over the wire: request and response bodies, and the OpenAI-shaped error body.

Plain pydantic models; FastAPI validates requests with them and publishes them as the OpenAPI
schema. They carry only the constraints that do not depend on the config (types, ranges, `n == 1`,
text a tokenizer can encode, a user turn in a chat); the config's bounds (question length, token
limits, the served model name) are checked per request in `api.py` and written into the published
schema there.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The schema's own ceilings; the config's bounds (checked per request) are usually far lower.
SCHEMA_MAX_TOKENS = 1 << 16
SCHEMA_MAX_SEED = (1 << 32) - 1
MAX_CHOICES = 26  # answer options of one question (A-Z)

# The chat question is the text of the last user message (api.chat_question): the schema states that
# a user message with some text exists ("last" is said in the description; JSON Schema cannot).
_SOME_TEXT = {"type": "string", "pattern": "\\S"}
_TEXT_PART = {"type": "object", "properties": {"type": {"const": "text"}, "text": _SOME_TEXT},
              "required": ["type", "text"]}
USER_TURN = {
    "type": "object",
    "properties": {"role": {"const": "user"},
                   "content": {"anyOf": [_SOME_TEXT, {"type": "array", "contains": _TEXT_PART}]}},
    "required": ["role", "content"],
}


def whole_number(value: object) -> object:
    """3.0 -> 3; anything else unchanged. JSON Schema's "integer" is any number without a fraction,
    3.0 included (clients and fuzzers send it), which strict validation would refuse; "3", 3.5 and
    true are still refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def encodable(text: str) -> str:
    """`text` unchanged, or ValueError when it holds a lone surrogate ("\\udc80" is a valid JSON
    escape, but no text a tokenizer can encode: the model would fail on it with a 503)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode text: a lone surrogate at character {err.start}") from None
    return text


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

    _whole = field_validator("max_rationale_tokens", "max_answer_tokens", "seed", mode="before")(whole_number)


class ReasonRequest(GenerationParams):
    question: str = Field(min_length=1, description="the question, as a user would ask it")
    choices: Optional[list[str]] = Field(
        None, min_length=1, max_length=MAX_CHOICES,
        description="the question's answer options as the answer reads them (e.g. [\"A\", \"B\", \"C\"]); "
                    "constrained_answer is then the one the student scores highest at the answer position")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is empty (whitespace only)")
        return encodable(value)

    @field_validator("choices")
    @classmethod
    def _distinct_choices(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return value
        cleaned = [encodable(c).strip() for c in value]
        if any(not c for c in cleaned):
            raise ValueError("a choice is empty (whitespace only)")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"choices repeat: {sorted({c for c in cleaned if cleaned.count(c) > 1})}")
        return cleaned


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    text: Optional[str] = None


class ChatMessage(BaseModel):
    # extra="allow": OpenAI clients add fields (name, tool_calls, ...) that a student ignores.
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None

    @field_validator("content")
    @classmethod
    def _encodable(cls, content: Union[str, list[ContentPart], None]) -> Union[str, list[ContentPart], None]:
        # Every message, not only the question: one error naming the message, as /v1/reason names
        # its question (a validator on the str branch would name the union member instead).
        parts = [content] if isinstance(content, str) else [p.text for p in content or [] if p.text is not None]
        for text in parts:
            encodable(text)
        return content


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat request a two-stage student can honour; other fields are ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str = Field(description="the served model's name (GET /v1/models); any other is a 404")
    messages: list[ChatMessage] = Field(
        min_length=1, json_schema_extra={"contains": USER_TURN},
        description="the conversation; it must hold a user message, and the last user message (its text "
                    "non-empty) is the question the student answers (422 otherwise)")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1, description="caps the rationale (clamped to the server bound)")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="same as max_tokens (newer clients)")
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=SCHEMA_MAX_SEED)
    n: int = Field(1, ge=1, le=1, description="only one choice per request")

    _whole = field_validator("max_tokens", "max_completion_tokens", "seed", "n", mode="before")(whole_number)


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
    rationale_stop: str = Field(description="why stage 1 ended: eos, marker or length (truncated); label_task for a "
                                            "student that answers without a rationale (step_by_step)")
    constrained_answer: Optional[str] = Field(
        None, description="with `choices`: the choice the student scores highest at the answer position")
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
    "USER_TURN",
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
    "encodable",
    "whole_number",
]
