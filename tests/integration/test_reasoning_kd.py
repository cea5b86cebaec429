"""Reasoning teachers and token-level KD end to end (issue 22, items 1 and 2).

- A real local HTTP server answers in both forms (a `reasoning_content` / `reasoning` field, and
  <think> text in `content`), plus a cut-off trace and a reply with two traces, through
  `run_annotate` on the session's Ray cluster; it also records that chat_template_kwargs arrive.
- The real default model behind a chat template that opens a trace (as DeepSeek-R1 distills do)
  unless `enable_thinking` is false (as Qwen3 does): the transformers engine renders with the
  variables, and a reply inside the open trace is a truncated_trace.
- vLLM (CPU build) records the teacher's top-k log-probabilities, and training with kd_weight reads
  them back, aligned with the student's targets.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_cotd.config import AnnotateConfig, ConfigError, ModelSpec, TrainConfig
from ray_cotd.data.logprobs import bytes_per_token, read_topk, vocab_fingerprint
from ray_cotd.data.schema import AnnotatedRecord
from ray_cotd.lm.format import encode, render_chat
from ray_cotd.lm.model import load_tokenizer, resolve_source
from ray_cotd.teacher.annotate import judge, plan_work, run_annotate
from ray_cotd.teacher.engines import GenerationRequest, TransformersTeacher
from ray_cotd.teacher.prompts import render_messages

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ray_cotd" / "assets" / "demo_questions.jsonl"

# Scripted replies by a word of the question (demo questions 1-6): message fields and finish reason.
REPLIES = {
    "Mia": ({"content": "She has 7 + 5 = 12 pencils.\nThe answer is 12.",
             "reasoning_content": "Mia has 7 red and 5 blue pencils. 7 + 5 = 12."}, "stop"),
    "farmer": ({"content": "<think>\n36 eggs in boxes of 6: 36 / 6 = 6.\n</think>\n\nHe fills 36 / 6 = 6 boxes.\n"
                           "The answer is 6."}, "stop"),
    "Tom": ({"content": "15 + 23 = 38 pages.\nThe answer is 38.", "reasoning": "Monday 15, Tuesday 23: 15 + 23 = 38."},
            "stop"),
    "bus": ({"content": "", "reasoning_content": "40 seats, 27 taken, so 40 - 27 is"}, "length"),
    "stickers": ({"content": "<think>8 x 4</think>\n<think>= 32</think>\nShe has 32.\nThe answer is 32."}, "stop"),
    "baker": ({"content": "50 - 18 - 14 = 18 rolls are left.\nThe answer is 18."}, "stop"),
}


def _reasoning_server(payloads: list[dict]) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            payloads.append(body)
            question = body["messages"][-1]["content"]
            # anything else is annotate's one-token check of the endpoint (engines.PROBE)
            message, finish = next((v for word, v in REPLIES.items() if word in question), ({"content": "OK"}, "stop"))
            data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", **message},
                                            "finish_reason": finish}],
                               "usage": {"prompt_tokens": 90, "completion_tokens": 30}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def _corpus(out: Path) -> list[dict]:
    return [row for p in sorted((out / "corpus").glob("*.parquet")) for row in pq.read_table(p).to_pylist()]


def _rejected(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    return {next(w for w in REPLIES if w in r["question"]): r["reason"] for r in rows}


@pytest.mark.ray
def test_an_http_teacher_answering_in_both_forms(ray_cluster, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(DEMO.read_text().splitlines()[:6]) + "\n")
    payloads: list[dict] = []
    server, url = _reasoning_server(payloads)
    try:
        common = dict(questions=str(questions), engine="openai", levels=[1], batch_size=3, cpus_per_worker=0.5,
                      openai={"base_url": url, "model": "qwen3", "max_retries": 0},
                      chat_template_kwargs={"enable_thinking": True})
        final = AnnotateConfig(**common, output_dir=str(tmp_path / "final"))
        stats = run_annotate(final)
        assert stats["kept"] == 4 and stats["dropped_by_reason"] == {"truncated_trace": 1, "multiple_traces": 1}
        assert _rejected(tmp_path / "final") == {"bus": "truncated_trace", "stickers": "multiple_traces"}
        rows = {next(w for w in REPLIES if w in r["question"]): AnnotatedRecord.from_dict(r)
                for r in _corpus(tmp_path / "final")}
        assert rows["Mia"].trace == "Mia has 7 red and 5 blue pencils. 7 + 5 = 12."  # reasoning_content
        assert rows["Mia"].rationale == "She has 7 + 5 = 12 pencils." and rows["Mia"].answer == "12"
        assert rows["farmer"].trace == "36 eggs in boxes of 6: 36 / 6 = 6."  # <think> text in content
        assert rows["farmer"].final_text == "He fills 36 / 6 = 6 boxes.\nThe answer is 6."
        assert rows["Tom"].trace == "Monday 15, Tuesday 23: 15 + 23 = 38."  # the field's other name
        assert rows["baker"].trace is None and rows["baker"].rationale == "50 - 18 - 14 = 18 rolls are left."
        assert {r.rationale_source for r in rows.values()} == {"final"} and all(r.correct for r in rows.values())
        assert all(r.sampling["chat_template_kwargs"] == {"enable_thinking": True} for r in rows.values())
        assert payloads and all(p["chat_template_kwargs"] == {"enable_thinking": True} for p in payloads)
        ledger = [json.loads(line) for p in sorted((tmp_path / "final" / "ledger").glob("*.jsonl"))
                  for line in p.read_text().splitlines()]
        bus = next(e for e in ledger if "bus" in e["question"])
        assert bus["reasoning"] == "40 seats, 27 taken, so 40 - 27 is" and bus["reply"] == ""

        trace = AnnotateConfig(**common, output_dir=str(tmp_path / "trace"), rationale_source="trace")
        stats = run_annotate(trace)
        assert stats["kept"] == 3 and stats["dropped_by_reason"] == {"truncated_trace": 1, "multiple_traces": 1,
                                                                      "no_trace": 1}
        assert _rejected(tmp_path / "trace")["baker"] == "no_trace"
        traced = {next(w for w in REPLIES if w in r["question"]): r for r in _corpus(tmp_path / "trace")}
        assert traced["farmer"]["rationale"] == "36 eggs in boxes of 6: 36 / 6 = 6." and traced["farmer"]["answer"] == "6"
        assert traced["Mia"]["id"] != rows["Mia"].id  # another rationale source is another row
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- a template with a trace


GENERATION_PROMPT = "{{ '<|im_start|>assistant\n' }}{% endif %}"
THINKING_PROMPT = ("{{ '<|im_start|>assistant\n' }}{% if enable_thinking is defined and enable_thinking is false %}"
                   "{{ '<think>\n\n</think>\n\n' }}{% else %}{{ '<think>\n' }}{% endif %}{% endif %}")


def _model_copy(out: Path, *, template: str | None = None, extra_token: str | None = None) -> ModelSpec:
    """The default model's files (linked), with another chat template or one more token in its vocabulary."""
    src = Path(resolve_source(ModelSpec()))
    out.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "chat_template.jinja" or template is None:
            (out / f.name).symlink_to(f)
    if template is not None:
        (out / "chat_template.jinja").write_text(template)
    if extra_token is not None:
        tokenizer = load_tokenizer(ModelSpec())
        tokenizer.add_tokens([extra_token])
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (out / name).unlink()
        tokenizer.save_pretrained(str(out))
    return ModelSpec(source=str(out))


@pytest.fixture(scope="module")
def thinking_teacher(tmp_path_factory) -> ModelSpec:
    """The default model under a template that opens a <think> trace (DeepSeek-R1 distills' way) unless
    enable_thinking is false (then an empty closed trace, Qwen3's way)."""
    template = (Path(resolve_source(ModelSpec())) / "chat_template.jinja").read_text()
    assert GENERATION_PROMPT in template
    return _model_copy(tmp_path_factory.mktemp("teachers") / "thinking",
                       template=template.replace(GENERATION_PROMPT, THINKING_PROMPT))


@pytest.mark.real_model
def test_the_transformers_engine_renders_with_chat_template_kwargs(thinking_teacher):
    tokenizer = load_tokenizer(thinking_teacher)
    messages = render_messages(json.loads(DEMO.read_text().splitlines()[0])["question"], 1, "cot", "numeric")
    off = render_chat(tokenizer, messages, {"enable_thinking": False})
    on = render_chat(tokenizer, messages)
    assert off.endswith("<think>\n\n</think>\n\n") and on.endswith("<think>\n")
    request = GenerationRequest(messages, 0.0, 1.0, 0, 12)
    quiet = TransformersTeacher(thinking_teacher, num_threads=2, chat_template_kwargs={"enable_thinking": False})
    thinking = TransformersTeacher(thinking_teacher, num_threads=2)
    assert quiet.generate([request])[0].prompt_tokens == len(encode(tokenizer, off))
    reply = thinking.generate([request])[0]
    assert reply.prompt_tokens == len(encode(tokenizer, on))
    # the model never closes the trace its prompt opened: a truncated_trace, not a no_marker
    row = plan_work([{"id": "q0", "question": "Q?", "gold": "12", "domain": None, "source": "s", "row": 0}],
                    AnnotateConfig(), "t", "numeric")[0]
    row.update(generated_text=reply.text, reasoning=None, finish_reason=reply.finish_reason,
               prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, error="",
               prompt_opens_trace=True)
    assert judge(row, "numeric", "aside", set()).reason == "truncated_trace"


def test_logprobs_for_a_student_with_another_vocabulary_fails_before_any_work(tmp_path):
    other = _model_copy(tmp_path / "other", extra_token="<kd-test-token>")
    cfg = AnnotateConfig(questions=str(DEMO), output_dir=str(tmp_path / "out"), engine="vllm", logprobs=5,
                         logprobs_for=other)
    with pytest.raises(ConfigError, match=r"logprobs_for: the teacher default and the student .* do not share a "
                                          r"tokenizer \(the teacher's vocabulary has 49152 tokens, the student's 49153"):
        run_annotate(cfg)


# --------------------------------------------------------------------------- vLLM logprobs -> KD training


@pytest.mark.ray
@pytest.mark.real_model
@pytest.mark.vllm
def test_vllm_records_the_teachers_topk_and_training_distils_from_it(ray_cluster, tmp_path, thinking_teacher):
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from ray_cotd.student.train import run_train

    k = 5
    cfg = AnnotateConfig(questions=str(DEMO), output_dir=str(tmp_path / "annotate"), engine="vllm",
                         teacher=thinking_teacher, limit=4, levels=[3], max_new_tokens=64, batch_size=4,
                         answer_type="numeric", wrong="keep", num_workers=1, cpus_per_worker=1.0,
                         vllm={"max_model_len": 1024, "kv_cache_gib": 1}, chat_template_kwargs={"enable_thinking": False},
                         logprobs=k, logprobs_for=ModelSpec())
    stats = run_annotate(cfg)
    rows = _corpus(Path(cfg.output_dir))
    assert len(rows) == stats["kept"] >= 2
    tokenizer = load_tokenizer(thinking_teacher)
    for row in rows:
        record = read_topk(row)
        n = row["completion_tokens"]
        assert len(record) == n and record.k == k and record.vocab == vocab_fingerprint(load_tokenizer(ModelSpec()))
        assert sum(len(row[c]) for c in ("teacher_tokens", "topk_ids", "topk_logprobs")) == n * bytes_per_token(k)
        assert (record.logprobs[:, :-1] >= record.logprobs[:, 1:]).all() and (record.logprobs <= 0).all()
        # greedy: the generated token is the teacher's best; its text is the reply
        assert (record.ids[:, 0] == record.tokens).all()
        assert row["trace"] is None and row["final_text"] and json.loads(row["sampling"])["logprobs"] == k
        assert json.loads(row["sampling"])["chat_template_kwargs"] == {"enable_thinking": False}
        messages = render_messages(row["question"], 3, "cot", "numeric")
        assert row["prompt_tokens"] == len(encode(tokenizer, render_chat(tokenizer, messages,
                                                                         {"enable_thinking": False})))

    train = TrainConfig(corpus=str(Path(cfg.output_dir) / "corpus"), objective="cascod", kd_weight=1.0, max_steps=2,
                        batch_size=4, holdout_fraction=0.0, val_fraction=0.0, num_workers=1, cpus_per_worker=2.0,
                        checkpoint_every=2, output_dir=str(tmp_path / "train"), name="kd")
    summary = run_train(train)
    kd = summary["data"]["kd"]
    assert kd["k"] == k and kd["rows_with_logprobs"] == len(rows) and kd["logprobs_mismatch"] == 0
    encoded = summary["data"]["encode"]
    # the re-tokenized rationales reproduce most of the teacher's ids; one end-of-rationale EOS per row never does
    assert encoded["kd_tokens"] > 4 * encoded["kd_unaligned_tokens"] and encoded["kd_unaligned_tokens"] >= len(rows)
    steps = [json.loads(line) for line in Path(summary["metrics_log"]).read_text().splitlines()]
    assert all(0 < s["kd_loss"] < 20 for s in steps if "loss" in s)
