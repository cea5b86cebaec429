"""The text formats: chat rendering (teacher and student alike) and the student's example format,
one definition used by annotation, training, evaluation, tuning and serving.

A student example is three token segments, tokenized separately and concatenated as ids:

    prompt    = chat template of the question, ending with the assistant turn's start
    rationale = the rationale text (leading/trailing whitespace stripped)
    marker    = STAGE2_PREFIX, i.e. "\\nThe answer is"
    value     = " " + answer + ANSWER_SUFFIX, i.e. " 145."

followed by EOS. Concatenating ids (instead of tokenizing the joined string) makes the rationale
sequence an exact causal prefix of the full sequence for every tokenizer, which the one-pass CasCoD
loss relies on, and it is exactly what two-stage inference does: stage 1 produces the rationale ids,
stage 2 appends the ids of STAGE2_PREFIX and continues. Train and inference therefore see the same
ids at the rationale/marker boundary.
"""

from __future__ import annotations

from typing import Any

from ray_cotd.data.answers import ANSWER_MARKER

# What stage 2 appends after the rationale, and the marker segment of every training example. It
# ends before the space: the answer segment " 145." / " True" then tokenizes naturally ("ĠTrue"),
# where a marker ending in " " would leave a bare-space token that no natural text contains.
STAGE2_PREFIX = "\n" + ANSWER_MARKER
ANSWER_SUFFIX = "."
# step_by_step's two tasks (Distilling step-by-step, Hsieh et al. 2023), told apart by a prefix on
# the question: "[label] Q" -> the answer, "[rationale] Q" -> the rationale. A step_by_step student
# answers through its label task (names.OBJECTIVES[...].label_task).
TASK_PREFIXES = {"label": "[label] ", "rationale": "[rationale] "}


def render_chat(tokenizer: Any, messages: list[dict[str, str]],
                chat_template_kwargs: dict[str, Any] | None = None) -> str:
    """The prompt text a local model is fed for chat `messages`: its chat template, ending at the
    assistant turn's start. Models without a chat template get one plain layout with the same
    content: a system turn as its text, user turns as "Question: ...", assistant turns as
    "Answer: ...", blank lines between, ending in "Answer: ".

    chat_template_kwargs: extra variables for the template (e.g. Qwen3's {"enable_thinking": False}),
    as `apply_chat_template(..., **kwargs)` takes them; a template that does not read one ignores it,
    and so does the plain layout."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **(chat_template_kwargs or {}))
    labels = {"system": "", "user": "Question: ", "assistant": "Answer: "}
    return "".join(labels[m["role"]] + m["content"] + "\n\n" for m in messages) + "Answer: "


def question_messages(question: str, *, few_shot: list[tuple[str, str, str]] | None = None) -> list[dict[str, str]]:
    """The student's chat: the question as a user turn, after optional demonstrations.

    few_shot: optional (question, rationale, answer) demonstrations placed as earlier turns, used by
    the few-shot baseline so an untrained student learns the format from the context alone.
    """
    messages: list[dict[str, str]] = []
    for q, r, a in few_shot or []:
        messages.append({"role": "user", "content": q.strip()})
        messages.append({"role": "assistant", "content": r.strip() + answer_text(a)})
    messages.append({"role": "user", "content": question.strip()})
    return messages


def prompt_text(tokenizer: Any, question: str, *, few_shot: list[tuple[str, str, str]] | None = None,
                task: str | None = None) -> str:
    """The stage-1 prompt: the question as a user turn, then the assistant turn's start.

    task: a key of TASK_PREFIXES, whose prefix goes before the question (step_by_step's tasks).
    """
    if task is not None:
        question = TASK_PREFIXES[task] + question
    return render_chat(tokenizer, question_messages(question, few_shot=few_shot))


def student_prompt_ids(tokenizer: Any, question: str, *, few_shot: list[tuple[str, str, str]] | None = None,
                       label_task: bool = False) -> list[int]:
    """The stage-1 prompt ids a student is fed (before any P-Tuning placeholders): prompt_text,
    through its label task for a step_by_step student. Both generation backends and evaluation's
    prompt-length check build the prompt with this."""
    return encode(tokenizer, prompt_text(tokenizer, question, few_shot=few_shot, task="label" if label_task else None))


def answer_value_text(answer: str) -> str:
    """The value segment after the marker: " {answer}."."""
    return " " + answer.strip() + ANSWER_SUFFIX


def answer_text(answer: str) -> str:
    """Marker and value as text: "\\nThe answer is {answer}."."""
    return STAGE2_PREFIX + answer_value_text(answer)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of one segment, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


__all__ = [
    "ANSWER_SUFFIX",
    "STAGE2_PREFIX",
    "TASK_PREFIXES",
    "answer_text",
    "answer_value_text",
    "encode",
    "prompt_text",
    "question_messages",
    "render_chat",
    "student_prompt_ids",
]
