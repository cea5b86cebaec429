"""The student's text format: one definition used by training, evaluation, tuning and serving.

A student example is three token segments, tokenized separately and concatenated as ids:

    prompt    = chat template of the question, ending with the assistant turn's start
    rationale = the rationale text (leading/trailing whitespace stripped)
    answer    = ANSWER_PREFIX + answer + ANSWER_SUFFIX, i.e. "\\nThe answer is 145."

followed by EOS. Concatenating ids (instead of tokenizing the joined string) makes the rationale
sequence an exact causal prefix of the full sequence for every tokenizer, which the one-pass CasCoD
loss relies on, and it is exactly what two-stage inference does: stage 1 produces the rationale ids,
stage 2 appends the ids of ANSWER_PREFIX and continues. Train and inference therefore see the same
ids at the rationale/marker boundary.
"""

from __future__ import annotations

from typing import Any

from ray_cotd.data.answers import ANSWER_MARKER

ANSWER_PREFIX = "\n" + ANSWER_MARKER + " "  # what stage 2 appends after the rationale
ANSWER_SUFFIX = "."


def prompt_text(tokenizer: Any, question: str, *, few_shot: list[tuple[str, str, str]] | None = None) -> str:
    """The stage-1 prompt: the question as a user turn, then the assistant turn's start.

    few_shot: optional (question, rationale, answer) demonstrations placed as earlier turns, used by
    the few-shot baseline so an untrained student learns the format from the context alone.
    """
    messages: list[dict[str, str]] = []
    for q, r, a in few_shot or []:
        messages.append({"role": "user", "content": q.strip()})
        messages.append({"role": "assistant", "content": r.strip() + ANSWER_PREFIX + a.strip() + ANSWER_SUFFIX})
    messages.append({"role": "user", "content": question.strip()})
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Base models without a chat template: a plain Q/A layout.
    text = ""
    for m in messages:
        text += ("Question: " if m["role"] == "user" else "Answer: ") + m["content"] + "\n"
    return text + "Answer: "


def answer_text(answer: str) -> str:
    """The answer segment that follows the rationale: "\\nThe answer is {answer}."."""
    return ANSWER_PREFIX + answer.strip() + ANSWER_SUFFIX


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of one segment, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


__all__ = ["ANSWER_PREFIX", "ANSWER_SUFFIX", "answer_text", "encode", "prompt_text"]
