"""Teacher annotation: the driver-side logic, the real default model, real HTTP servers, kill + resume.

The first block is pure (no Ray, no model) and fast. The rest uses the session's local Ray cluster
(`ray_cluster` from tests/integration/conftest.py) and the real SmolLM2-135M-Instruct teacher with
a few tokens per reply.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ray_cotd.config import AnnotateConfig, OpenAIEngineSpec
from ray_cotd.data.schema import AnnotatedRecord
from ray_cotd.dirlock import LOCK_NAME
from ray_cotd.teacher.annotate import (
    NothingKept,
    ShardStore,
    Verdict,
    judge,
    plan_work,
    run_annotate,
    unique_questions,
)
from ray_cotd.teacher.engines import (
    Completion,
    EngineRequestError,
    GenerationRequest,
    OpenAITeacher,
    TransformersTeacher,
)
from ray_cotd.teacher.prompts import get_template, render_messages

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ray_cotd" / "assets" / "demo_questions.jsonl"


def _records(n=2):
    return [
        {"id": f"q{i}", "question": f"Kim has {i + 2} apples and eats one. How many are left?", "gold": str(i + 1),
         "domain": None, "source": "mine.jsonl", "row": i}
        for i in range(n)
    ]


def _generated(row, text, finish="stop", error=""):
    return {**row, "generated_text": text, "finish_reason": finish, "prompt_tokens": 50,
            "completion_tokens": 12, "error": error}


# --------------------------------------------------------------------------- pure driver logic


def test_plan_work_orders_rows_and_keys_every_setting():
    cfg = AnnotateConfig(levels=[1, 5], formats=["cot", "symbolic"], n_samples=3, temperature=0.7, seed=10)
    rows = plan_work(_records(2), cfg, "teacher-x", "numeric")
    assert len(rows) == 2 * 2 * 2 * 3
    assert len({r["id"] for r in rows}) == len(rows)
    first = rows[:3]  # one question's samples are adjacent, seeds are seed + i
    assert [r["sample_index"] for r in first] == [0, 1, 2] and [r["seed"] for r in first] == [10, 11, 12]
    assert {(r["question_id"], r["level"], r["format"]) for r in first} == {("q0", 1, "cot")}
    assert first[0]["template_version"] == get_template(1, "cot").version("numeric")
    assert json.loads(first[0]["messages"]) == render_messages(_records(1)[0]["question"], 1, "cot", "numeric")
    # the key covers sampling settings and the teacher: changing either gives new rows
    hotter = plan_work(_records(2), AnnotateConfig(**{**vars(cfg), "temperature": 0.9}), "teacher-x", "numeric")
    other = plan_work(_records(2), cfg, "teacher-y", "numeric")
    boolean = plan_work(_records(2), cfg, "teacher-x", "boolean")  # another answer line asked for
    assert not {r["id"] for r in rows} & {r["id"] for r in hotter}
    assert not {r["id"] for r in rows} & {r["id"] for r in other}
    assert not {r["id"] for r in rows} & {r["id"] for r in boolean}
    assert boolean[0]["template_version"] == get_template(1, "cot").version("boolean") != first[0]["template_version"]
    assert [r["id"] for r in plan_work(_records(2), cfg, "teacher-x", "numeric")] == [r["id"] for r in rows]


@pytest.mark.parametrize("text,finish,reason", [
    ("", "timeout", "timeout"),
    ("", "error", "engine_error"),
    ("   \n", "stop", "empty_reply"),
    ("Kim has 3 apples and eats one, so she", "length", "truncated"),
    ("Kim has 3 apples and eats one, so 2 remain.", "stop", "no_marker"),
    ("Kim eats one.\nThe answer is many.", "stop", "unreadable_answer"),
    ("The answer is 2.", "stop", "empty_rationale"),
])
def test_judge_rejects_bad_replies_with_their_reason(text, finish, reason):
    row = plan_work(_records(1), AnnotateConfig(), "t", "numeric")[0]
    verdict = judge(_generated(row, text, finish), "numeric", "aside", set())
    assert (verdict.outcome, verdict.reason, verdict.record) == ("rejected", reason, None)


def test_judge_checks_gold_dedups_and_applies_the_wrong_policy():
    cfg = AnnotateConfig(n_samples=3, temperature=0.7)
    rows = plan_work(_records(1), cfg, "t", "numeric")  # gold "1"
    seen: set[str] = set()
    good = judge(_generated(rows[0], "3 - 1 = 2? No: 2 - 1 = 1.\nThe answer is 1."), "numeric", "aside", seen)
    assert good.outcome == "kept" and good.record.correct is True and good.record.answer == "1"
    assert isinstance(good.record, AnnotatedRecord) and good.record.sampling["seed"] == 0
    dup = judge(_generated(rows[1], "3 - 1 = 2? No: 2 - 1 = 1.\nThe answer is 1."), "numeric", "aside", seen)
    assert (dup.outcome, dup.reason) == ("rejected", "duplicate_rationale")
    wrong_text = "She has 2 apples.\nThe answer is 2."
    for policy, outcome in (("aside", "aside"), ("drop", "rejected"), ("keep", "kept")):
        v = judge(_generated(rows[2], wrong_text), "numeric", policy, set())
        assert v.outcome == outcome and v.record.correct is False
        assert v.reason == (None if policy == "keep" else "wrong_answer")
    no_gold = {**rows[2], "gold": None}
    assert judge(_generated(no_gold, wrong_text), "numeric", "drop", set()).record.correct is None


def test_judge_reads_an_option_text_as_its_label_and_takes_any_accepted_answer():
    """As scoring does: "The answer is a cow." over options (A) cat (B) cow is B; a gold listing
    several right answers (the readers' "accepted") takes any of them."""
    choice = {"id": "m", "question": "Which animal says moo?\nAnswer choices: (A) cat (B) cow (C) fish", "gold": "B",
              "domain": None, "source": "m.json", "row": 0}
    row = plan_work([choice], AnnotateConfig(), "t", "multiple_choice")[0]
    verdict = judge(_generated(row, "Cows moo.\nThe answer is cow."), "multiple_choice", "drop", set())
    assert (verdict.outcome, verdict.record.answer, verdict.record.correct) == ("kept", "B", True)
    unreadable = judge(_generated(row, "Cows moo.\nThe answer is a horse."), "multiple_choice", "drop", set())
    assert (unreadable.outcome, unreadable.reason) == ("rejected", "unreadable_answer")
    capital = {"id": "c", "question": "What is the capital of France?", "gold": "Paris",
               "accepted": ["Paris", "City of Paris"], "domain": None, "source": "c.json", "row": 0}
    row = plan_work([capital], AnnotateConfig(), "t", "text")[0]
    verdict = judge(_generated(row, "Its capital is its largest city.\nThe answer is the City of Paris."), "text",
                    "drop", set())
    assert (verdict.outcome, verdict.record.correct) == ("kept", True)


def test_a_question_listed_twice_is_annotated_once():
    records = _records(2)
    repeat = {**records[0], "row": 7}
    unique, repeats = unique_questions([records[0], records[1], repeat])
    assert unique == records
    assert repeats == [{"outcome": "rejected", "reason": "duplicate_question", "source": "mine.jsonl", "row": 7,
                        "field": "question", "raw": "same question as row 0"}]


def test_store_commits_atomically_drops_orphans_and_retries_transient_rows(tmp_path):
    rows = [_generated(r, "2 - 1 = 1.\nThe answer is 1.") for r in plan_work(_records(2), AnnotateConfig(), "t", "numeric")]
    store = ShardStore(tmp_path)
    verdicts = [judge(rows[0], "numeric", "aside", set()), Verdict("rejected", "timeout", "no reply")]
    store.commit(rows, verdicts)
    assert store.done == {rows[0]["id"]}  # the timed-out row stays to do
    # a run killed between the Parquet rename and the ledger rename leaves an orphan part
    orphan = tmp_path / "corpus" / "part-000002-deadbeef.parquet"
    orphan.write_bytes((next((tmp_path / "corpus").glob("*.parquet"))).read_bytes())
    (tmp_path / "ledger" / "part-000003-cafe.jsonl.tmp").write_text("{half a line")
    again = ShardStore(tmp_path)
    assert again.recovered_orphans == 1 and not orphan.exists()
    assert not list((tmp_path / "ledger").glob("*.tmp"))
    assert again.done == {rows[0]["id"]} and len(again.seen) == 1
    again.commit([rows[1]], [judge(rows[1], "numeric", "keep", set())])
    assert again.done == {r["id"] for r in rows}
    table = pq.read_table(tmp_path / "corpus")
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in rows)


# --------------------------------------------------------------------------- the real default teacher


@pytest.fixture(scope="module")
def teacher():
    return TransformersTeacher(num_threads=2)


def _demo_question(i):
    return json.loads(DEMO.read_text().splitlines()[i])["question"]


@pytest.mark.real_model
def test_transformers_teacher_batches_and_seeds_rows_independently(teacher):
    greedy = [GenerationRequest(render_messages(_demo_question(i), 1, "cot", "numeric"), 0.0, 1.0, 0, 24)
              for i in range(3)]
    sampled = GenerationRequest(render_messages(_demo_question(3), 3, "cot", "numeric"), 1.0, 0.95, 123, 12)
    batch = teacher.generate([*greedy, sampled])
    assert len(batch) == 4
    for c in batch:
        assert c.finish_reason in ("stop", "length") and c.text.strip()
        assert c.prompt_tokens > 150 and 0 < c.completion_tokens <= 24
    assert batch[3].completion_tokens <= 12
    # a sampled row is the same alone as in a batch: its draws come from its own seeded generator
    alone = teacher.generate([sampled])[0]
    assert alone.text == batch[3].text
    assert teacher.generate([GenerationRequest(sampled.messages, 1.0, 0.95, 124, 12)])[0].text != alone.text


def _cfg(tmp_path, **kw) -> AnnotateConfig:
    base = dict(questions=str(DEMO), output_dir=str(tmp_path / "out"), levels=[1], max_new_tokens=40,
                batch_size=4, cpus_per_worker=2.0)
    return AnnotateConfig(**{**base, **kw})


def _stats(cfg: AnnotateConfig) -> dict:
    """run_annotate's stats, also when the run kept nothing (NothingKept carries them): a tiny teacher
    at a few dozen tokens often keeps nothing, and these tests check counts, not the corpus size."""
    try:
        return run_annotate(cfg)
    except NothingKept as err:
        return err.stats


def _corpus(out: Path) -> list[dict]:
    parts = sorted((out / "corpus").glob("*.parquet"))
    return [row for p in parts for row in pq.read_table(p).to_pylist()]


def _ledger(out: Path) -> dict[str, dict]:
    return {e["id"]: e for p in sorted((out / "ledger").glob("*.jsonl"))
            for e in map(json.loads, p.read_text().splitlines())}


@pytest.mark.ray
@pytest.mark.real_model
def test_annotate_demo_questions_end_to_end(ray_cluster, tmp_path):
    questions = tmp_path / "questions.jsonl"
    lines = DEMO.read_text().splitlines()[:3] + ['{"question": "   ", "answer": "4"}']
    questions.write_text("\n".join(lines) + "\n")
    # near-greedy sampling: the two samples of a question almost always say the same thing
    cfg = _cfg(tmp_path, questions=str(questions), n_samples=2, temperature=0.05)
    stats = run_annotate(cfg)
    out = Path(cfg.output_dir)

    assert stats["questions_in"] == 4 and stats["bad_questions"] == 1 and stats["rows_in"] == 6
    dropped = stats["dropped_by_reason"]
    assert dropped["empty_question"] == 1
    # every planned row is kept or dropped for one reason (aside rows are dropped as wrong_answer)
    assert stats["kept"] + sum(dropped.values()) - dropped["empty_question"] == 6
    assert stats["written_aside"] == dropped.get("wrong_answer", 0)
    assert dropped.get("duplicate_rationale", 0) >= 1
    assert stats["tokens"]["completion"] > 0 and stats["this_run"]["tokens_per_s"] > 0

    corpus = _corpus(out)
    assert len(corpus) == stats["kept"]
    for row in corpus:
        record = AnnotatedRecord.from_dict(row)
        assert record.teacher == "SmolLM2-135M-Instruct" and record.level == 1 and record.format == "cot"
        assert record.template_version == get_template(1, "cot").version("numeric") and record.sampling["temperature"] == 0.05
        assert record.correct is True and record.rationale and record.completion_tokens <= 40
    rationales = [(r["question_id"], r["rationale"]) for r in corpus]
    assert len(rationales) == len(set(rationales))
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == sum(dropped.values())  # aside rows are listed too, under wrong_answer
    assert all(r["reason"] for r in rejected)
    assert json.loads((out / "stats.json").read_text()) == stats
    assert (out / "resolved_config.yaml").is_file()

    # the same config again: nothing to generate, same corpus
    again = run_annotate(cfg)
    assert again["this_run"]["rows_generated"] == 0 and again["this_run"]["rows_skipped_as_done"] == 6
    assert sorted(r["id"] for r in _corpus(out)) == sorted(r["id"] for r in corpus)
    assert again["kept"] == stats["kept"]


ONE_MB_QUESTION = "How many apples are left? " + "An apple is red and round. " * 38_000  # 1.0 MB


@pytest.mark.ray
@pytest.mark.real_model
def test_a_1mb_question_is_one_rejected_row_and_the_others_are_annotated(ray_cluster, tmp_path):
    """Issue 23: a 1 MB question made the teacher allocate 32 GB and the job died with nothing
    committed. Its prompt (in the teacher's tokens) + max_new_tokens exceeds the context: it is one
    prompt_too_long row in rejected.jsonl, never sent to the engine, and the others are annotated."""
    assert len(ONE_MB_QUESTION.encode()) > 1_000_000
    questions = tmp_path / "questions.jsonl"
    lines = DEMO.read_text().splitlines()[:2] + [json.dumps({"question": ONE_MB_QUESTION, "answer": "3"})]
    questions.write_text("\n".join(lines) + "\n")
    cfg = _cfg(tmp_path, questions=str(questions), max_new_tokens=48, wrong="keep")
    stats = _stats(cfg)  # the two small questions may both fail to parse at 48 tokens; still no crash
    assert stats["rows_in"] == 3 and stats["rows_done"] == 3 and stats["this_run"]["rows_generated"] == 2
    assert stats["dropped_by_reason"]["prompt_too_long"] == 1
    rejected = [json.loads(line) for line in (Path(cfg.output_dir) / "rejected.jsonl").read_text().splitlines()]
    too_long = [r for r in rejected if r["reason"] == "prompt_too_long"]
    assert len(too_long) == 1 and too_long[0]["question"] == ONE_MB_QUESTION
    assert too_long[0]["prompt_tokens"] > 200_000 and too_long[0]["completion_tokens"] is None
    assert too_long[0]["detail"] == f"prompt {too_long[0]['prompt_tokens']} tokens + max_new_tokens 48"


@pytest.mark.real_model
def test_a_mapping_to_a_missing_column_fails_the_run_with_the_rejection_summary(tmp_path):
    """Issue 23: mapping.question naming a column the file lacks rejected 14 of 14 rows and exited 0."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ray_cotd.cli", "annotate", str(REPO / "jobs/configs/local/annotate.yaml"),
                           "mapping.question=prompt", f"output_dir={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (f"ray-cotd annotate: error: annotate kept nothing: 0 rows kept of 0 planned from 14 question "
                           f"rows (14 unusable); not kept: missing_field 14 (every row with its reason: "
                           f"{out / 'rejected.jsonl'})\n")
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 14
    assert json.loads((out / "stats.json").read_text())["kept"] == 0


def test_a_teacher_path_that_does_not_exist_is_one_line_before_ray_starts(tmp_path):
    """Issue 23: a teacher path that does not exist failed after 17-27 s with a 186-line Ray traceback.
    The CLI and the job both print one line and exit 2, and no Ray instance is started."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    config = str(REPO / "jobs/configs/local/annotate.yaml")
    for argv, prefix in ((["-m", "ray_cotd.cli", "annotate"], "ray-cotd annotate: error: "),
                         ([str(REPO / "jobs/annotate.py")], "annotate failed: ")):
        proc = subprocess.run([sys.executable, *argv, config, "teacher.source=/nonexistent/teacher",
                               f"output_dir={tmp_path / 'out'}"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.splitlines()[-1] == prefix + "model path not found: /nonexistent/teacher", proc.stderr
        assert "Traceback" not in proc.stderr and "Ray" not in proc.stdout + proc.stderr


@pytest.mark.ray
@pytest.mark.real_model
def test_annotate_real_svamp_questions(ray_cluster, tmp_path, shared_data):
    cfg = _cfg(tmp_path, questions=str(shared_data / "svamp" / "train_answer_only.json"),
               mapping={"preset": "answer_only"}, domain="svamp", limit=3, formats=["cot", "symbolic"])
    stats = _stats(cfg)  # at 40 tokens every reply may be cut off (kept 0 happens)
    assert stats["rows_in"] == 6 and stats["rows_done"] == 6 and stats["answer_type"] == "numeric"
    ledger = _ledger(Path(cfg.output_dir))
    assert {e["format"] for e in ledger.values()} == {"cot", "symbolic"}
    assert all(r["domain"] == "svamp" for r in _corpus(Path(cfg.output_dir)))


# --------------------------------------------------------------------------- OpenAI-compatible HTTP


def _serve(handler_cls) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def _model_server(teacher, stall_word=None, release=None):
    """/v1/chat/completions answered by the real default model; questions containing stall_word
    get no reply until the `release` event is set."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions" or body.get("model") != "smol":
                self.send_response(404)
                self.end_headers()
                self.wfile.write(b'{"error": "no such model"}')
                return
            if stall_word and stall_word in body["messages"][-1]["content"]:
                release.wait()
            request = GenerationRequest(body["messages"], body["temperature"], body["top_p"], body["seed"],
                                        body["max_tokens"])
            with lock:
                c = teacher.generate([request])[0]
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                                  "finish_reason": c.finish_reason}],
                     "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}}
            data = json.dumps(reply).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client already timed out

    return _serve(Handler)


@pytest.mark.real_model
def test_openai_teacher_against_a_local_server_of_the_real_model(teacher):
    server, url = _model_server(teacher)
    try:
        http = OpenAITeacher(OpenAIEngineSpec(base_url=url, model="smol", max_concurrency=2))
        requests_ = [GenerationRequest(render_messages(_demo_question(i), 1, "cot", "numeric"), 0.0, 1.0, 0, 20)
                     for i in range(2)]
        got = http.generate(requests_)
        assert got == [teacher.generate([r])[0] for r in requests_]  # the model's own words, via HTTP
        wrong_model = OpenAITeacher(OpenAIEngineSpec(base_url=url, model="gpt-9", max_retries=3))
        with pytest.raises(EngineRequestError, match="HTTP 404.*no such model.*openai.base_url"):
            wrong_model.complete(requests_[0])
    finally:
        server.shutdown()


def test_openai_teacher_retries_429_and_5xx_from_a_real_socket():
    statuses = [429, 503, 200, 400, 404]
    seen = []

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status = statuses.pop(0)
            seen.append(status)
            body = (b'{"choices": [{"message": {"content": "1 + 1 = 2.\\nThe answer is 2."}, "finish_reason": "stop"}]}'
                    if status == 200 else b'{"error": "nope"}')
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server, url = _serve(Flaky)
    try:
        http = OpenAITeacher(OpenAIEngineSpec(base_url=url, model="m", max_retries=3, backoff_s=0.01))
        request = GenerationRequest([{"role": "user", "content": "1 + 1?"}], 0.0, 1.0, 0, 8)
        assert http.complete(request) == Completion("1 + 1 = 2.\nThe answer is 2.", "stop", None, None)
        refused = http.complete(request)  # about this request (a prompt over the context): one rejected row
        assert refused.finish_reason == "refused" and refused.error.startswith("HTTP 400")
        with pytest.raises(EngineRequestError, match="HTTP 404"):  # about the run: it stops
            http.complete(request)
        assert seen == [429, 503, 200, 400, 404]
    finally:
        server.shutdown()


@pytest.mark.ray
@pytest.mark.real_model
def test_annotate_through_the_openai_engine_with_a_stalling_endpoint(ray_cluster, tmp_path, teacher):
    # demo question 4 mentions a bus: that request stalls; the others (8 tokens each, one at a time on the
    # real model) answer well within timeout_s. Each run waits out the stalled request's timeout_s once.
    release = threading.Event()
    server, url = _model_server(teacher, stall_word="bus", release=release)
    try:
        lines = DEMO.read_text().splitlines()[2:5]
        questions = tmp_path / "q.jsonl"
        questions.write_text("\n".join(lines) + "\n")
        cfg = _cfg(tmp_path, questions=str(questions), engine="openai", max_new_tokens=8, cpus_per_worker=0.5,
                   openai={"base_url": url, "model": "smol", "timeout_s": 8.0, "max_retries": 0})
        # 8 tokens hold no rationale and answer: nothing is kept, which fails the run with the summary
        with pytest.raises(NothingKept, match=r"^annotate kept nothing: 0 rows kept of 3 planned .*timeout 1") as err:
            run_annotate(cfg)
        stats = err.value.stats
        assert stats["rows_in"] == 3 and stats["rows_done"] == 3
        assert stats["dropped_by_reason"]["timeout"] == 1
        ledger = _ledger(Path(cfg.output_dir))
        timed_out = [e for e in ledger.values() if e["reason"] == "timeout"]
        assert "bus" in timed_out[0]["question"] and "no reply within 8.0s (after 1 attempt)" in timed_out[0]["detail"]
        others = [e for e in ledger.values() if e["reason"] != "timeout"]
        assert all(e["completion_tokens"] for e in others)  # usage came back from the server
        # a timeout is transient: the next run asks again (and the endpoint is still stalling)
        with pytest.raises(NothingKept) as err:
            run_annotate(cfg)
        again = err.value.stats
        assert again["this_run"]["rows_generated"] == 1 and again["dropped_by_reason"]["timeout"] == 1
        # a 4xx (here: a model the server does not have) stops the run with the endpoint's words
        wrong = _cfg(tmp_path, questions=str(questions), engine="openai", output_dir=str(tmp_path / "wrong"),
                     cpus_per_worker=0.5, openai={"base_url": url, "model": "gpt-9"})
        with pytest.raises(Exception, match=r"HTTP 404 .*no such model"):
            run_annotate(wrong)
        assert not _ledger(tmp_path / "wrong")
    finally:
        release.set()
        server.shutdown()


# --------------------------------------------------------------------------- kill and resume


@pytest.mark.ray
@pytest.mark.real_model
def test_a_second_run_is_refused_and_a_killed_run_resumes_to_exactly_the_rows_of_a_clean_run(ray_cluster, tmp_path):
    settings = dict(questions=str(DEMO), levels=[1], max_new_tokens=32, batch_size=2, limit=8, cpus_per_worker=2.0)
    killed = tmp_path / "killed"
    config = tmp_path / "annotate.yaml"
    config.write_text(yaml.safe_dump({**settings, "output_dir": str(killed)}))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}
    proc = subprocess.Popen([sys.executable, "-m", "ray_cotd.teacher.annotate", str(config)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not (killed / LOCK_NAME).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        # issue 23: a second run into the same directory duplicated every row; now it is refused at once
        second = subprocess.run([sys.executable, "-m", "ray_cotd.cli", "annotate", str(config)], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.startswith(f"ray-cotd annotate: error: output_dir {killed} is in use by annotate run "
                                        f"pid {proc.pid} on host "), second.stderr
        assert "Traceback" not in second.stderr
        while not list((killed / "ledger").glob("part-*.jsonl")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed_at_kill = len(_ledger(killed))
    assert 0 < committed_at_kill < 8
    assert not (killed / "stats.json").exists()
    assert (killed / LOCK_NAME).exists()  # SIGKILL left its lock behind: stale, it must not block the resume

    resumed = run_annotate(AnnotateConfig(**settings, output_dir=str(killed)))
    assert resumed["this_run"]["rows_skipped_as_done"] == committed_at_kill
    assert resumed["this_run"]["rows_generated"] == 8 - committed_at_kill
    clean = run_annotate(AnnotateConfig(**settings, output_dir=str(tmp_path / "clean")))

    killed_corpus, clean_corpus = _corpus(killed), _corpus(tmp_path / "clean")
    assert len({r["id"] for r in killed_corpus}) == len(killed_corpus)  # none duplicated
    assert {r["id"] for r in killed_corpus} == {r["id"] for r in clean_corpus}  # none lost
    killed_ledger, clean_ledger = _ledger(killed), _ledger(tmp_path / "clean")
    assert set(killed_ledger) == set(clean_ledger) and len(killed_ledger) == 8
    assert {k: e["reason"] for k, e in killed_ledger.items()} == {k: e["reason"] for k, e in clean_ledger.items()}
    for key in ("kept", "written_aside", "dropped_by_reason", "rows_done"):
        assert resumed[key] == clean[key]
