"""Teacher engines without Ray or a real model: sampling, completions, HTTP retries, vLLM config."""

from __future__ import annotations

import json

import pytest
import requests
import torch

from ray_cotd.config import AnnotateConfig, ConfigError, ModelSpec, OpenAIEngineSpec, load_stage_config
from ray_cotd.teacher import engines
from ray_cotd.teacher.annotate import REJECT_REASONS, TRANSIENT_REASONS, judge
from ray_cotd.teacher.engines import (
    PROBE,
    Completion,
    EngineRequestError,
    GenerationRequest,
    OpenAITeacher,
    TransformersTeacher,
    chat_payload,
    complete_batch,
    parse_chat_response,
    teacher_name,
    vllm_request,
    vllm_result,
)

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def _request(**kw) -> GenerationRequest:
    base = dict(messages=MESSAGES, temperature=0.0, top_p=1.0, seed=0, max_new_tokens=8)
    return GenerationRequest(**{**base, **kw})


# --------------------------------------------------------------------------- seeded sampling


def _draw(temperatures, top_ps, seeds, scores, steps=5):
    sampler = engines._seeded_sampler(temperatures, top_ps, seeds)
    picks = []
    for _ in range(steps):
        out = sampler(None, scores.clone())
        picks.append(out.argmax(dim=-1).tolist())
    return list(zip(*picks))  # per row: the tokens it picked over the steps


def test_a_sampled_row_depends_on_its_seed_not_on_its_batch_partners():
    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    alone = _draw([1.0], [1.0], [7], scores[1:2])
    in_batch = _draw([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [3, 7, 9], scores)
    assert in_batch[1] == alone[0]
    other_seed = _draw([1.0], [1.0], [8], scores[1:2])
    assert other_seed[0] != alone[0]


def test_greedy_rows_pass_through_and_tiny_top_p_is_greedy():
    scores = torch.tensor([[0.1, 3.0, 0.2, 2.9], [0.0, 0.0, 5.0, 0.0]])
    sampler = engines._seeded_sampler([0.0, 1.0], [1.0, 1e-6], [0, 1])
    out = sampler(None, scores.clone())
    assert torch.equal(out[0], scores[0])
    assert out[1].argmax().item() == 2 and torch.isinf(out[1]).sum().item() == 3


def test_top_p_keeps_only_the_nucleus():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    drawn = set()
    for seed in range(200):
        drawn |= set(_draw([1.0], [0.7], [seed], scores, steps=1)[0])
    assert drawn == {0, 1}  # 0.5 + 0.3 reaches 0.7; 0.15 and 0.05 are cut


# --------------------------------------------------------------------------- transformers completions


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i == 2))


def _teacher() -> TransformersTeacher:
    teacher = object.__new__(TransformersTeacher)  # no model needed for the bookkeeping
    teacher.tokenizer, teacher.eos_ids = _Tok(), {2}
    return teacher


def test_completion_stops_at_eos_and_counts_it():
    c = _teacher()._completion([5, 6, 2, 2, 2], max_new_tokens=5, prompt_tokens=11)
    assert c == Completion("5 6", "stop", 11, 3)


def test_completion_without_eos_is_cut_off():
    c = _teacher()._completion([5, 6, 7, 8], max_new_tokens=4, prompt_tokens=3)
    assert c.finish_reason == "length" and c.completion_tokens == 4


def test_a_row_with_a_smaller_limit_than_its_batch_is_cut_at_its_own_limit():
    c = _teacher()._completion([5, 6, 7, 2], max_new_tokens=2, prompt_tokens=3)
    assert (c.text, c.finish_reason, c.completion_tokens) == ("5 6", "length", 2)


# --------------------------------------------------------------------------- OpenAI-compatible


def test_chat_payload_is_one_seeded_sample():
    body = chat_payload(_request(temperature=0.7, top_p=0.9, seed=12, max_new_tokens=64), "gpt-4o")
    assert body == {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.7, "top_p": 0.9, "seed": 12,
                    "max_tokens": 64, "n": 1}


def test_parse_chat_response_reads_text_reason_and_usage():
    body = {"choices": [{"message": {"content": "2 + 3 = 5.\nThe answer is 5."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9}}
    assert parse_chat_response(body) == Completion("2 + 3 = 5.\nThe answer is 5.", "stop", 20, 9)
    cut = parse_chat_response({"choices": [{"message": {"content": "2 +"}, "finish_reason": "length"}]})
    assert cut == Completion("2 +", "length", None, None)
    bad = parse_chat_response({"error": "oops"})
    assert bad.finish_reason == "error" and "unreadable reply body" in bad.error


class _Resp:
    def __init__(self, status, body=None, headers=None):
        self.status_code, self._body, self.headers = status, body, headers or {}
        self.reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                       503: "Service Unavailable"}.get(status, "")
        self.text = json.dumps(body)

    def json(self):
        return self._body


class _Session:
    """Answers from a script; an exception in the script is raised instead."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def post(self, url, json, headers, timeout):
        self.calls.append((url, json, headers, timeout))
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


OK = _Resp(200, {"choices": [{"message": {"content": "The answer is 5."}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 4, "completion_tokens": 5}})


def _http(script, monkeypatch, **spec):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    waits: list[float] = []
    teacher = OpenAITeacher(
        OpenAIEngineSpec(base_url="https://teacher.local/v1/", model="m", api_key_env="TEST_TEACHER_KEY",
                         max_retries=3, backoff_s=0.5, timeout_s=2.0, **spec),
        sleep=waits.append,
    )
    teacher.session = _Session(script)
    return teacher, waits


def test_http_retries_429_and_5xx_with_doubling_backoff(monkeypatch):
    teacher, waits = _http([_Resp(429), _Resp(503), OK], monkeypatch)
    assert teacher.complete(_request()) == Completion("The answer is 5.", "stop", 4, 5)
    assert waits == [0.5, 1.0]
    url, body, headers, timeout = teacher.session.calls[0]
    assert url == "https://teacher.local/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test" and timeout == 2.0 and body["model"] == "m"


def test_http_retry_after_header_wins(monkeypatch):
    teacher, waits = _http([_Resp(429, headers={"Retry-After": "3"}), OK], monkeypatch)
    assert teacher.complete(_request()).finish_reason == "stop"
    assert waits == [3.0]


def test_http_failures_after_every_retry_become_rows_not_crashes(monkeypatch):
    teacher, waits = _http([_Resp(500)] * 4, monkeypatch)
    c = teacher.complete(_request())
    assert c.finish_reason == "error" and "HTTP 500" in c.error and "after 4 attempts" in c.error
    assert waits == [0.5, 1.0, 2.0]
    teacher, _ = _http([requests.Timeout()] * 4, monkeypatch)
    c = teacher.complete(_request())
    assert c.finish_reason == "timeout" and "no reply within 2.0s" in c.error


def test_http_4xx_is_a_clear_error_at_once(monkeypatch):
    teacher, waits = _http([_Resp(401, {"error": "invalid key"})], monkeypatch)
    with pytest.raises(EngineRequestError, match=r"answered HTTP 401 Unauthorized.*invalid key.*api_key_env"):
        teacher.complete(_request())
    assert waits == []


@pytest.mark.parametrize("status", [400, 413, 422])
def test_http_a_refused_request_is_one_rejected_row_not_a_stopped_run(monkeypatch, status):
    """A 400 from a vLLM server whose context the prompt exceeds is about that row: not retried."""
    body = {"error": {"message": "This model's maximum context length is 2048 tokens"}}
    teacher, waits = _http([_Resp(status, body), OK], monkeypatch)
    c = teacher.complete(_request())
    assert c.finish_reason == "refused" and c.error.startswith(f"HTTP {status}") and "maximum context length" in c.error
    assert waits == [] and len(teacher.session.calls) == 1
    assert teacher.complete(_request()).finish_reason == "stop"  # the next row goes on
    verdict = judge({"generated_text": "", "finish_reason": c.finish_reason, "error": c.error}, "numeric", "aside", set())
    assert (verdict.outcome, verdict.reason) == ("rejected", "request_refused") and "maximum context" in verdict.detail
    assert "request_refused" in REJECT_REASONS and "request_refused" not in TRANSIENT_REASONS  # a resume skips it


def test_check_sends_one_token_and_names_a_wrong_model_or_a_dead_server(monkeypatch):
    teacher, _ = _http([OK], monkeypatch)
    teacher.check()
    (_, body, _, _), = teacher.session.calls
    assert body["max_tokens"] == 1 and body["messages"] == PROBE and body["model"] == "m"
    teacher, _ = _http([_Resp(404, {"error": "model 'm' not found"})], monkeypatch)
    with pytest.raises(EngineRequestError, match=r"HTTP 404.*model 'm' not found.*openai.base_url"):
        teacher.check()
    teacher, _ = _http([_Resp(400, {"error": "unknown field chat_template_kwargs"})], monkeypatch)
    with pytest.raises(EngineRequestError, match=r"refused a one-token request: HTTP 400.*chat_template_kwargs"):
        teacher.check()
    teacher, waits = _http([requests.ConnectionError("refused")] * 4, monkeypatch)
    with pytest.raises(EngineRequestError, match=r"teacher.local/v1/chat/completions did not answer a one-token "
                                                 r"request: connection failed.*after 4 attempts.*server is up"):
        teacher.check()
    assert waits == [0.5, 1.0, 2.0]


def test_no_key_in_the_environment_sends_no_auth_header(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    teacher = OpenAITeacher(OpenAIEngineSpec(base_url="https://x/v1", model="m", api_key_env="NO_SUCH_KEY_VAR"))
    assert "Authorization" not in teacher.headers


@pytest.mark.parametrize("base_url, allowed, key_sent", [
    ("https://api.openai.com/v1", True, True),
    ("http://127.0.0.1:8000/v1", True, True),
    ("http://127.9.9.9:8000/v1", True, True),
    ("http://localhost:8000/v1", True, True),
    ("http://[::1]:8000/v1", True, True),
    ("http://10.0.0.7:8000/v1", False, False),
    ("http://teacher.example.com/v1", False, False),
    ("http://localhost.example.com/v1", False, False),
])
def test_plain_http_to_another_host_is_refused_and_never_gets_the_key(monkeypatch, base_url, allowed, key_sent):
    """Issue 23: the HTTP teacher sent its API key to any base_url, plain http included."""
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    spec = dict(base_url=base_url, model="m", api_key_env="TEST_TEACHER_KEY")
    if not allowed:
        with pytest.raises(ConfigError, match=rf"^base_url: {base_url} is plain http to another host.*https"):
            OpenAIEngineSpec(**spec)
        with pytest.raises(ConfigError, match=rf"^openai.base_url: {base_url} is plain http"):
            load_stage_config("annotate", None, ["engine=openai", f"openai.base_url={base_url}", "openai.model=m"])
        spec["allow_insecure_http"] = True  # the user's explicit choice: requests go, the key does not
    teacher = OpenAITeacher(OpenAIEngineSpec(**spec))
    assert ("Authorization" in teacher.headers) is key_sent
    with pytest.raises(ConfigError, match="base_url: 'api.openai.com/v1' is not an http"):
        OpenAIEngineSpec(base_url="api.openai.com/v1", model="m")


def test_openai_engine_config_needs_url_and_model():
    with pytest.raises(ConfigError, match="openai.base_url and openai.model"):
        AnnotateConfig(engine="openai")
    cfg = AnnotateConfig(engine="openai", openai=OpenAIEngineSpec(base_url="https://x/v1", model="gpt-4o"))
    assert teacher_name(cfg) == "gpt-4o"


# --------------------------------------------------------------------------- Ray Data batch glue


class _EchoTeacher:
    def generate(self, reqs):
        return [Completion(f"seed {r.seed}", "stop", len(r.messages), r.max_new_tokens) for r in reqs]


def test_complete_batch_adds_the_output_columns_in_row_order():
    batch = {"id": ["a", "b"], "messages": [json.dumps(MESSAGES)] * 2, "temperature": [0.7, 0.7],
             "top_p": [1.0, 1.0], "seed": [4, 5], "max_new_tokens": [16, 16]}
    out = complete_batch(_EchoTeacher(), batch)
    assert out["id"] == ["a", "b"]
    assert out["generated_text"] == ["seed 4", "seed 5"]
    assert out["finish_reason"] == ["stop", "stop"] and out["completion_tokens"] == [16, 16]
    assert set(engines.OUTPUT_COLUMNS) <= set(out)


def test_teacher_name_defaults():
    assert teacher_name(AnnotateConfig()) == "SmolLM2-135M-Instruct"
    assert teacher_name(AnnotateConfig(teacher=ModelSpec(source="Qwen/Qwen3-8B"))) == "Qwen/Qwen3-8B"
    assert teacher_name(AnnotateConfig(teacher_name="gpt4o-2024")) == "gpt4o-2024"


# --------------------------------------------------------------------------- vLLM requests (the processor config
# imports ray.data.llm: tests/integration/test_annotate.py builds it)


def test_vllm_request_and_result_round_trip_a_row():
    row = {"id": "r1", "messages": json.dumps(MESSAGES), "temperature": 0.8, "top_p": 0.95, "seed": 3,
           "max_new_tokens": 32, "prompt_ids": [5, 6, 7]}
    req = vllm_request(row, eos_ids=frozenset({2, 0}))
    assert req["tokenized_prompt"] == [5, 6, 7]  # the driver's rendering, counted by the length check
    assert req["sampling_params"] == {"temperature": 0.8, "top_p": 0.95, "seed": 3, "max_tokens": 32,
                                      "stop_token_ids": [0, 2], "n": 1}
    engine_row = {**req, "generated_text": "5.\nThe answer is 5.", "num_generated_tokens": 9,
                  "num_input_tokens": 21, "generated_tokens": [1] * 8 + [2], "prompt": "...", "batch_uuid": "u",
                  "time_taken_llm": 0.1, "__inference_error__": ""}
    out = vllm_result(engine_row, eos_ids=frozenset({2}))
    assert set(out) == {"id", "messages", "temperature", "top_p", "seed", "max_new_tokens", *engines.OUTPUT_COLUMNS}
    assert json.loads(out["messages"]) == MESSAGES
    assert (out["finish_reason"], out["prompt_tokens"], out["completion_tokens"]) == ("stop", 21, 9)
    # max_tokens reached without EOS: cut off; the same length ending in EOS: stopped
    full = {**engine_row, "generated_tokens": [1] * 32}
    assert vllm_result(full, eos_ids=frozenset({2}))["finish_reason"] == "length"
    assert vllm_result({**full, "generated_tokens": [1] * 31 + [2]}, eos_ids=frozenset({2}))["finish_reason"] == "stop"
    failed = vllm_result({**engine_row, "__inference_error__": "ValueError: too long"}, eos_ids=frozenset({2}))
    assert failed["finish_reason"] == "error" and "too long" in failed["error"] and failed["generated_text"] == ""

# --------------------------------------------------------------------------- reasoning teachers, chat-template
# variables and the teacher's logprobs (issue 22)


def test_chat_template_kwargs_go_into_the_http_payload_only_when_set():
    body = chat_payload(_request(), "qwen3", {"enable_thinking": False})
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in chat_payload(_request(), "qwen3", {})


def test_the_reasoning_field_of_an_http_reply_is_read_under_either_name():
    for field in ("reasoning_content", "reasoning"):
        body = {"choices": [{"message": {"content": "The answer is 5.", field: "2 + 3 = 5"}, "finish_reason": "stop"}]}
        assert parse_chat_response(body) == Completion("The answer is 5.", "stop", reasoning="2 + 3 = 5")
    none = {"choices": [{"message": {"content": "The answer is 5.", "reasoning_content": None}, "finish_reason": "stop"}]}
    assert parse_chat_response(none).reasoning is None


def test_render_chat_passes_chat_template_kwargs_to_the_template():
    from ray_cotd.lm.format import render_chat

    class _Templated:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt, **kwargs):
            return f"{messages[-1]['content']}|{sorted(kwargs.items())}"

    assert render_chat(_Templated(), MESSAGES, {"enable_thinking": False}) == \
        "What is 2 + 3?|[('enable_thinking', False)]"
    assert render_chat(_Templated(), MESSAGES) == "What is 2 + 3?|[]"


def test_vllm_logprobs_are_asked_for_and_read_into_a_record():
    row = {"id": "r1", "messages": json.dumps(MESSAGES), "temperature": 0.0, "top_p": 1.0, "seed": 3,
           "max_new_tokens": 32, "prompt_ids": [5, 6, 7]}
    assert vllm_request(row, eos_ids=frozenset({2}), logprobs=5)["sampling_params"]["logprobs"] == 5
    assert "logprobs" not in vllm_request(row, eos_ids=frozenset({2}))["sampling_params"]
    steps = [{9: {"logprob": -0.1, "rank": 1, "decoded_token": "x"}, 4: {"logprob": -3.0, "rank": 2, "decoded_token": "y"}},
             {2: {"logprob": -0.01, "rank": 1, "decoded_token": ""}, 8: {"logprob": -5.0, "rank": 2, "decoded_token": "z"}}]
    engine_row = {**vllm_request(row, eos_ids=frozenset({2}), logprobs=2), "generated_text": "x",
                  "generated_tokens": [9, 2], "num_input_tokens": 3, "logprobs": steps}
    out = vllm_result(engine_row, eos_ids=frozenset({2}), logprobs=2, vocab="10:abc")
    assert out["topk"].ids.tolist() == [[9, 4], [2, 8]] and out["topk"].vocab == "10:abc"
    assert "logprobs" not in out and out["reasoning"] is None
    short = vllm_result({**engine_row, "logprobs": steps[:1]}, eos_ids=frozenset({2}), logprobs=2, vocab="10:abc")
    assert short["topk"].reason == "logprobs_mismatch"
    assert "topk" not in vllm_result(engine_row, eos_ids=frozenset({2}))  # not asked for


def test_logprobs_need_the_vllm_engine():
    with pytest.raises(ConfigError, match="logprobs: teacher log-probabilities are recorded on the vllm engine only"):
        AnnotateConfig(logprobs=5)
    with pytest.raises(ConfigError, match="logprobs_for: .* set logprobs: k too"):
        AnnotateConfig(engine="vllm", logprobs_for=ModelSpec())
    assert AnnotateConfig(engine="vllm", logprobs=20).logprobs == 20
