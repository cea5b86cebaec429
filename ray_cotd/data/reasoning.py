"""A reasoning teacher's trace apart from its final text. Pure functions: no torch, no Ray.

Reasoning teachers (DeepSeek-R1 distills, Qwen3 and their kind) think before they answer, and the
trace reaches annotation in one of two forms:

    text form    "<think>\\n...trace...\\n</think>\\n\\nfinal text"  (transformers and vLLM replies,
                 and HTTP content from a server without a reasoning parser)
    field form   message.reasoning_content (some servers: `reasoning`) = the trace,
                 message.content = the final text             (vLLM / ray.serve.llm with a parser)

`split_reasoning` reads either into (trace, final text). Some chat templates open the trace
themselves (DeepSeek-R1 distills end their generation prompt with "<think>\\n"), so the reply
holds only "...trace...</think>final": `opened=True` says the prompt ended inside a trace (the
driver knows for the engines it renders prompts for), and a lone closing tag is read the same way
for an HTTP server whose prompt we never see.

Failures, each with its reason (annotation's rejection reasons):
    truncated_trace   the trace never closes: "<think>" without "</think>", or a reasoning field
                      with no final text after it (vLLM's parsers put a reply whose "</think>" never
                      came wholly into the field). The reply was cut off, or ended, inside its
                      reasoning: there is no answer to read.
    multiple_traces   more than one trace: two "<think>" blocks, a stray second tag, or a reasoning
                      field beside a tag in the text.

An empty trace ("<think>\\n\\n</think>", what Qwen3 writes with thinking turned off) counts as no trace.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TRACE_FAILURE_REASONS = ("truncated_trace", "multiple_traces")


@dataclass(frozen=True)
class Reasoned:
    """A reply split at its trace. trace: the reasoning (stripped), None when the reply has none.
    final: the text after the trace, stripped (the whole reply when there is no trace)."""

    trace: str | None
    final: str


@dataclass(frozen=True)
class TraceFailure:
    """Why a reply's trace cannot be read; `reason` is one of TRACE_FAILURE_REASONS."""

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in TRACE_FAILURE_REASONS:
            raise ValueError(f"unknown trace failure reason {self.reason!r}; valid: {', '.join(TRACE_FAILURE_REASONS)}")


def prompt_opens_trace(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an opened trace (the template wrote "<think>" last)."""
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(text: str | None, reasoning: str | None = None, *, opened: bool = False) -> Reasoned | TraceFailure:
    """(trace, final text) of one reply, or why not. Never raises on any input.

    text: the reply's text (HTTP `content`). reasoning: the reasoning field of an HTTP reply, if any.
    opened: the prompt ended inside a trace (`prompt_opens_trace`), so the text starts in it.
    """
    text = text if isinstance(text, str) else ""
    field = reasoning.strip() if isinstance(reasoning, str) else ""
    opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if field:
        if opens or closes:
            return TraceFailure("multiple_traces", f"a reasoning field and {opens + closes} trace tag(s) in the text")
        if not text.strip():
            return TraceFailure("truncated_trace", "a reasoning field and no final text: the trace never closed")
        return Reasoned(field, text.strip())
    if opened:  # the prompt wrote the opening tag: the text starts inside the trace
        text, opens = THINK_OPEN + text, opens + 1
    if opens == 0 and closes == 0:
        return Reasoned(None, text.strip())
    if opens == 0 and closes == 1:  # a template we did not render opened it
        head, _, final = text.partition(THINK_CLOSE)
        return Reasoned(head.strip() or None, final.strip())
    if opens == 1 and closes == 0:
        return TraceFailure("truncated_trace", f"{THINK_OPEN} without {THINK_CLOSE}: the reply ends inside its trace")
    if opens == 1 and closes == 1 and text.index(THINK_OPEN) < text.index(THINK_CLOSE):
        before, _, rest = text.partition(THINK_OPEN)
        trace, _, after = rest.partition(THINK_CLOSE)
        final = "\n".join(part.strip() for part in (before, after) if part.strip())
        return Reasoned(trace.strip() or None, final)
    return TraceFailure("multiple_traces", f"{opens} {THINK_OPEN} and {closes} {THINK_CLOSE} tag(s)")


__all__ = [
    "Reasoned",
    "THINK_CLOSE",
    "THINK_OPEN",
    "TRACE_FAILURE_REASONS",
    "TraceFailure",
    "prompt_opens_trace",
    "split_reasoning",
]
