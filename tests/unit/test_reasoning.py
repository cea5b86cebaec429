"""Reasoning teachers: a trace apart from the final text (data/reasoning.py), and what annotation's
judge makes of it (rationale_source, the trace failures). No Ray, no model."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import AnnotateConfig
from ray_cotd.data.logprobs import LogprobFailure, TopK, read_topk
from ray_cotd.data.reasoning import Reasoned, TraceFailure, prompt_opens_trace, split_reasoning
from ray_cotd.data.schema import AnnotatedRecord
from ray_cotd.teacher.annotate import REJECT_REASONS, judge, plan_work, sampling_of

import numpy as np

# Shaped like the replies of Qwen3 and of a DeepSeek-R1 distill (whose chat template writes "<think>\n"
# at the end of the prompt, so the reply holds only the rest of the trace).
QWEN3 = ("<think>\nOkay, Kim has 3 apples and eats one. 3 - 1 = 2. Wait, let me double-check: yes, 2.\n</think>\n\n"
         "Kim starts with 3 apples and eats 1, so 3 - 1 = 2 are left.\nThe answer is 2.")
R1_AFTER_OPENED_PROMPT = ("Alright, so the problem says Kim has 3 apples. She eats one... 3 minus 1 is 2.\n</think>\n\n"
                          "**Solution:** 3 - 1 = 2.\nThe answer is 2.")


def test_the_text_form_splits_trace_and_final_text():
    got = split_reasoning(QWEN3)
    assert got.trace == "Okay, Kim has 3 apples and eats one. 3 - 1 = 2. Wait, let me double-check: yes, 2."
    assert got.final == "Kim starts with 3 apples and eats 1, so 3 - 1 = 2 are left.\nThe answer is 2."


def test_a_trace_opened_by_the_prompt_or_by_a_template_we_never_saw():
    opened = split_reasoning(R1_AFTER_OPENED_PROMPT, opened=True)
    assert opened.trace.startswith("Alright, so") and opened.final == "**Solution:** 3 - 1 = 2.\nThe answer is 2."
    assert split_reasoning(R1_AFTER_OPENED_PROMPT) == opened  # a lone closing tag (an HTTP server's template)
    assert prompt_opens_trace("<｜Assistant｜><think>\n") and not prompt_opens_trace("<|im_start|>assistant\n")
    # Qwen3 with thinking off: the template writes an empty trace into the prompt; the reply has none
    assert not prompt_opens_trace("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_the_field_form_and_replies_without_a_trace():
    assert split_reasoning("3 - 1 = 2.\nThe answer is 2.", " Kim eats one.\n") == \
        Reasoned("Kim eats one.", "3 - 1 = 2.\nThe answer is 2.")
    assert split_reasoning("3 - 1 = 2.\nThe answer is 2.") == Reasoned(None, "3 - 1 = 2.\nThe answer is 2.")
    assert split_reasoning("<think>\n\n</think>\n\nThe answer is 2.") == Reasoned(None, "The answer is 2.")  # empty
    assert split_reasoning(None) == Reasoned(None, "")
    assert split_reasoning("Sure. <think>3 - 1</think> The answer is 2.") == Reasoned("3 - 1", "Sure.\nThe answer is 2.")


@pytest.mark.parametrize("text, reasoning, opened, reason", [
    ("<think>\nOkay, Kim has 3 apples and eats one, so", None, False, "truncated_trace"),
    ("Alright, so the problem says Kim has 3 apples", None, True, "truncated_trace"),
    ("", "Okay, Kim has 3 apples and", False, "truncated_trace"),  # a parser put the unclosed trace in the field
    ("<think>a</think><think>b</think>The answer is 2.", None, False, "multiple_traces"),
    ("<think>a</think>The answer is 2.</think>", None, False, "multiple_traces"),
    ("</think>x<think>y", None, False, "multiple_traces"),
    ("<think>b</think>The answer is 2.", "a", False, "multiple_traces"),
    ("<think>x</think>The answer is 2.", None, True, "multiple_traces"),  # the prompt opened one, the reply another
])
def test_unclosed_and_repeated_traces_are_failures_with_their_reason(text, reasoning, opened, reason):
    got = split_reasoning(text, reasoning, opened=opened)
    assert isinstance(got, TraceFailure) and got.reason == reason and got.detail
    assert reason in REJECT_REASONS


# --------------------------------------------------------------------------- annotation's judge


def _row(text, *, reasoning=None, finish="stop", opened=False, source="final", topk=None):
    cfg = AnnotateConfig(rationale_source=source)
    row = plan_work([{"id": "q0", "question": "Kim has 3 apples and eats one. How many are left?", "gold": "2",
                      "domain": None, "source": "mine.jsonl", "row": 0}], cfg, "t", "numeric")[0]
    row.update(generated_text=text, reasoning=reasoning, finish_reason=finish, prompt_tokens=50,
               completion_tokens=40, error="", prompt_opens_trace=opened)
    if topk is not None:
        row["topk"] = topk
    return row


@pytest.mark.parametrize("source, rationale", [
    ("final", "Kim starts with 3 apples and eats 1, so 3 - 1 = 2 are left."),
    ("trace", "Okay, Kim has 3 apples and eats one. 3 - 1 = 2. Wait, let me double-check: yes, 2."),
    ("both", "Okay, Kim has 3 apples and eats one. 3 - 1 = 2. Wait, let me double-check: yes, 2.\n\n"
             "Kim starts with 3 apples and eats 1, so 3 - 1 = 2 are left."),
])
def test_rationale_source_picks_the_rationale_and_the_row_records_both_parts(source, rationale):
    verdict = judge(_row(QWEN3, source=source), "numeric", "aside", set(), rationale_source=source)
    assert verdict.outcome == "kept" and verdict.record.correct is True
    record = verdict.record
    assert record.rationale == rationale and record.answer == "2" and record.rationale_source == source
    assert record.trace.startswith("Okay, Kim") and record.final_text.endswith("The answer is 2.")
    again = AnnotatedRecord.from_dict(record.to_dict())
    assert again == record


def test_the_field_form_judges_like_the_text_form():
    text_form = judge(_row(QWEN3, source="both"), "numeric", "aside", set(), rationale_source="both").record
    trace, final = split_reasoning(QWEN3).trace, split_reasoning(QWEN3).final
    field_form = judge(_row(final, reasoning=trace, source="both"), "numeric", "aside", set(),
                       rationale_source="both").record
    assert (field_form.rationale, field_form.trace, field_form.final_text) == \
        (text_form.rationale, text_form.trace, text_form.final_text)


@pytest.mark.parametrize("kw, source, reason", [
    (dict(text="<think>\nOkay, Kim has 3 apples and eats one, so", finish="length"), "final", "truncated_trace"),
    (dict(text="<think>\nOkay, Kim has 3 apples and eats one, so 2.", finish="stop"), "final", "truncated_trace"),
    (dict(text="", reasoning="Okay, Kim has 3 apples and eats one, so", finish="length"), "final", "truncated_trace"),
    (dict(text="<think>a</think><think>b</think>\nThe answer is 2."), "final", "multiple_traces"),
    (dict(text="Kim eats one: 3 - 1 = 2.\nThe answer is 2."), "trace", "no_trace"),
    (dict(text="Kim eats one: 3 - 1 = 2.\nThe answer is 2."), "both", "no_trace"),
    (dict(text="<think>3 - 1 = 2</think>\n\n"), "trace", "empty_reply"),
    (dict(text="<think>3 - 1 = 2</think>\nThe answer is 2."), "final", "empty_rationale"),
    (dict(text="<think>3 - 1 = 2</think>\nKim has 2 apples left, so", finish="length"), "final", "truncated"),
])
def test_trace_failures_are_rejections_with_their_reason(kw, source, reason):
    verdict = judge(_row(**kw, source=source), "numeric", "aside", set(), rationale_source=source)
    assert (verdict.outcome, verdict.reason, verdict.record) == ("rejected", reason, None)
    assert reason in REJECT_REASONS


def test_a_trace_is_enough_when_the_final_text_is_only_the_answer_line():
    verdict = judge(_row("<think>3 - 1 = 2</think>\nThe answer is 2.", source="trace"), "numeric", "aside", set(),
                    rationale_source="trace")
    assert verdict.outcome == "kept" and verdict.record.rationale == "3 - 1 = 2"


def test_a_cut_off_unclosed_trace_says_where_it_was_cut():
    verdict = judge(_row("<think>\nOkay, Kim has", finish="length"), "numeric", "aside", set())
    assert verdict.detail == "<think> without </think>: the reply ends inside its trace (cut off at 40 tokens)"


def test_the_logprob_record_goes_into_the_row_and_a_bad_one_is_rejected():
    tokens = np.arange(40, dtype="<i4")
    record = TopK(tokens, np.stack([tokens, tokens + 1], 1), np.full((40, 2), -0.5, dtype="<f2"), "49152:abc")
    kept = judge(_row("3 - 1 = 2.\nThe answer is 2.", topk=record), "numeric", "aside", set()).record
    back = read_topk(kept.to_dict())
    assert back.vocab == "49152:abc" and np.array_equal(back.ids, record.ids) and kept.topk_k == 2
    bad = judge(_row("3 - 1 = 2.\nThe answer is 2.", topk=LogprobFailure("39 logprob steps for 40 generated tokens")),
                "numeric", "aside", set())
    assert (bad.outcome, bad.reason, bad.detail) == ("rejected", "logprobs_mismatch",
                                                     "39 logprob steps for 40 generated tokens")


def test_new_settings_change_row_keys_only_when_set():
    base = AnnotateConfig()
    plain = plan_work([{"id": "q0", "question": "Q?", "gold": "1", "domain": None, "source": "s", "row": 0}],
                      base, "t", "numeric")[0]
    assert json.loads(plain["sampling"]) == sampling_of(base, 0) == {"temperature": 0.0, "top_p": 1.0, "seed": 0,
                                                                      "max_new_tokens": 256}
    keys = {plain["id"]}
    for kw in (dict(chat_template_kwargs={"enable_thinking": False}), dict(rationale_source="trace"),
               dict(engine="vllm", logprobs=20)):
        row = plan_work([{"id": "q0", "question": "Q?", "gold": "1", "domain": None, "source": "s", "row": 0}],
                        AnnotateConfig(**kw), "t", "numeric")[0]
        keys.add(row["id"])
        assert set(row) == set(plain)  # the request columns stay the same
    assert len(keys) == 4
