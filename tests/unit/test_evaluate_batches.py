"""How evaluation batches its rows and swaps rationales for faithfulness inside a batch, with a
stand-in generator (the real model's swaps: tests/integration/test_evaluate.py and test_vllm.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ray_cotd.evaluate import GenerateActor, batches_by_set
from ray_cotd.lm.generate import TwoStageResult


def _rows(counts: dict[tuple[str, str], int]) -> list[dict]:
    keys = [key for key, n in counts.items() for _ in range(n)]
    positions = [i for n in counts.values() for i in range(n)]
    return [{"index": index, "system": system, "test_set": test_set, "answer_type": "numeric",
             "question": f"{system}/{test_set}/q{i}", "choices": "null"}
            for index, ((system, test_set), i) in enumerate(zip(keys, positions))]


@pytest.mark.parametrize("counts, size, expected", [
    ({("a", "x"): 5}, 2, [2, 3]),                   # a last piece of one joins the batch before it
    ({("a", "x"): 4}, 2, [2, 2]),
    ({("a", "x"): 3, ("a", "y"): 1, ("b", "x"): 2}, 8, [3, 1, 2]),  # never across a system or a set
    ({("a", "x"): 1}, 4, [1]),                      # a set of one has nothing to join
    ({("a", "x"): 7}, 3, [3, 4]),
])
def test_batches_keep_a_set_together_and_leave_no_question_alone(counts, size, expected):
    rows = _rows(counts)
    batches = batches_by_set(rows, size)
    assert [len(b) for b in batches] == expected
    assert [r for b in batches for r in b] == rows  # every row once, in order
    assert all(len({(r["system"], r["test_set"]) for r in b}) == 1 for b in batches)


class EchoGenerator:
    """Rationale "why:<question>"; the answer names the rationale it was given."""

    def two_stage(self, questions, limits, choices=None):
        return [self._result(q, f"why:{q}", "stage1") for q in questions]

    def answer_from_rationales(self, questions, rationales, limits):
        return [self._result(q, r, "given") for q, r in zip(questions, rationales)]

    @staticmethod
    def _result(question, rationale, stop):
        return TwoStageResult(question=question, rationale=rationale, answer_text=f"from {rationale}", answer=None,
                              prompt_tokens=1, rationale_tokens=1, answer_tokens=1, stage1_s=0.0, stage2_s=0.0,
                              rationale_stop=stop)


def _actor(faithfulness: bool, mode: str = "two_stage") -> GenerateActor:
    actor = GenerateActor(systems=[{"name": s, "model": {}, "few_shot": False} for s in ("a", "b")], mode=mode,
                          limits={}, demos={}, threads=1, use_gpu=False, faithfulness=faithfulness)
    actor.generators = {("a", None): EchoGenerator(), ("b", None): EchoGenerator()}
    return actor


def test_each_question_is_answered_again_from_the_next_ones_rationale_in_its_set():
    rows = _rows({("a", "x"): 3, ("a", "y"): 2, ("b", "x"): 1})
    out = _actor(faithfulness=True)(pd.DataFrame(rows)).set_index("index")
    assert list(out.loc[[0, 1, 2], "swapped_from_index"]) == [1, 2, 0]  # cyclic within a/x
    assert list(out.loc[[3, 4], "swapped_from_index"]) == [4, 3]       # a/y apart from a/x
    assert out.loc[5, "swapped_from_index"] == -1 and out.loc[5, "swapped_answer_text"] == ""  # alone: not swapped
    assert out.loc[0, "answer_text"] == "from why:a/x/q0"
    assert out.loc[0, "swapped_answer_text"] == "from why:a/x/q1"
    assert (out.loc[[0, 1, 2, 3, 4], "swap_s"] >= 0).all()


def test_without_faithfulness_or_in_one_stage_mode_nothing_is_swapped():
    rows = _rows({("a", "x"): 3})
    assert (_actor(faithfulness=False)(pd.DataFrame(rows))["swapped_from_index"] == -1).all()
    assert _actor(faithfulness=True, mode="one_stage").faithfulness is False


def test_ray_data_rows_holding_batches_as_json_answer_as_the_batches_themselves():
    rows = _rows({("a", "x"): 3, ("b", "x"): 2})
    packed = pd.DataFrame([{"batch": json.dumps(b)} for b in batches_by_set(rows, 8)])
    direct = pd.concat([_actor(True)(pd.DataFrame(b)) for b in batches_by_set(rows, 8)], ignore_index=True)
    pd.testing.assert_frame_equal(_actor(True)(packed).drop(columns="swap_s"), direct.drop(columns="swap_s"))


def test_a_logged_answer_is_reused_at_its_new_row_and_its_swap_found_by_key():
    from ray_cotd.evaluate import reused

    logged = {"rationale": "r", "answer_text": " 5.", "swapped_answer_text": " 6.", "swapped_from_key": "k2"}
    assert reused(logged, 7, {"k2": 3}) == {"rationale": "r", "answer_text": " 5.", "swapped_answer_text": " 6.",
                                           "index": 7, "swapped_from_index": 3}
    alone = reused(logged, 7, {})  # its donor is not among this run's questions (another limit): not swapped
    assert (alone["swapped_from_index"], alone["swapped_answer_text"]) == (-1, "")


def test_the_report_says_how_its_answers_were_generated(monkeypatch):
    from ray_cotd.config import EvaluateConfig, VLLMEngineSpec
    from ray_cotd.evaluate import generated_on, lora_merged

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert lora_merged(EvaluateConfig(backend="hf")) is None
    assert lora_merged(EvaluateConfig(backend="vllm")) is True  # auto merges on CPU
    assert lora_merged(EvaluateConfig(backend="vllm", vllm=VLLMEngineSpec(lora="request"))) is False
    assert generated_on({"backend": "vllm", "lora_merged": True}) == ", on vllm (LoRA students merged)"
    assert generated_on({"backend": "hf", "lora_merged": None}) == ", on hf"
    assert generated_on(None) == ""  # a report written before the key existed


def test_the_actor_pool_joins_the_jobs_ray_session_before_ray_data_starts_one(monkeypatch):
    """`ray-cotd evaluate` run on its own has no Ray session yet: the actor pool must start the
    job's (ray_session.connect: its runtime env carries the worker hook) before Ray Data would
    start a bare one; with no rows to answer it starts nothing."""
    import ray_cotd.ray_session
    from ray_cotd.config import EvaluateConfig
    from ray_cotd.evaluate import _run_actor_pool

    class Connected(Exception):
        pass

    def connect():
        raise Connected

    monkeypatch.setattr(ray_cotd.ray_session, "connect", connect)
    cfg = EvaluateConfig(test_sets=[{"path": "x.jsonl", "name": "x"}])
    assert _run_actor_pool([], cfg, [], {}) == []
    with pytest.raises(Connected):
        _run_actor_pool(_rows({("a", "x"): 1}), cfg, [], {})


def test_close_stops_the_actors_vllm_engines_and_is_harmless_without_them():
    # the GPU runner evaluates in the process that trains the next arm: close gives the engine's memory back
    actor = _actor(faithfulness=False)
    actor.close()  # hf: nothing to stop
    closed = []
    actor.vllm_engines = type("Engines", (), {"close": lambda self: closed.append(True)})()
    actor.close()
    assert closed == [True]
