"""The teacher's top-k record (data/logprobs.py): from vLLM's output, into corpus bytes and back,
and the records that do not add up. No Ray, no model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_cotd.data.logprobs import (
    LogprobFailure,
    TopK,
    bytes_per_token,
    read_topk,
    topk_from_vllm,
    vocab_difference,
    vocab_fingerprint,
)
from ray_cotd.data.schema import AnnotatedRecord
from ray_cotd.teacher.annotate import arrow_schema


def _step(entries, sampled=None):
    """One vLLM logprob dict as Ray Data LLM hands it over: {id: {"logprob", "rank", "decoded_token"}}."""
    out = {i: {"logprob": lp, "rank": r + 1, "decoded_token": f"t{i}"} for r, (i, lp) in enumerate(entries)}
    if sampled is not None:  # the sampled token rides along when it is not among the top k
        out[sampled[0]] = {"logprob": sampled[1], "rank": 57, "decoded_token": "s"}
    return out


def test_the_k_best_entries_of_every_step_are_kept_best_first():
    steps = [_step([(7, -0.1), (3, -2.5)], sampled=(99, -9.0)), _step([(4, -1.2), (5, -0.4)])]
    record = topk_from_vllm([7, 99], steps, 2, "10:abc")
    assert record.ids.tolist() == [[7, 3], [5, 4]] and record.tokens.tolist() == [7, 99]
    assert record.logprobs.dtype == np.float16
    assert record.logprobs.ravel().tolist() == pytest.approx([-0.1, -2.5, -0.4, -1.2], abs=2e-3)
    arrow_pairs = [[(7, {"logprob": -0.1}), (3, {"logprob": -2.5})], [(4, {"logprob": -1.2}), (5, {"logprob": -0.4})]]
    assert topk_from_vllm([7, 99], arrow_pairs, 2, "10:abc").ids.tolist() == record.ids.tolist()  # a map's pairs


def test_vllm_lists_that_do_not_match_the_tokens_are_failures():
    assert isinstance(topk_from_vllm([1, 2], None, 2, "v"), LogprobFailure)
    short = topk_from_vllm([1, 2], [_step([(1, -0.1), (2, -1.0)])], 2, "v")
    assert short.reason == "logprobs_mismatch" and short.detail == "1 logprob steps for 2 generated tokens"
    thin = topk_from_vllm([1], [_step([(1, -0.1)])], 2, "v")
    assert thin.detail == "token 0 has 1 logprob entries, fewer than k=2"


def test_corpus_bytes_round_trip_through_parquet_at_4_plus_6k_bytes_per_token(tmp_path):
    n, k = 37, 20
    rng = np.random.default_rng(0)
    record = TopK(rng.integers(0, 49152, n).astype("<i4"), rng.integers(0, 49152, (n, k)).astype("<i4"),
                  np.sort(rng.normal(-5, 2, (n, k)), axis=1)[:, ::-1].astype("<f2"), "49152:0123456789abcdef")
    columns = record.columns()
    assert sum(len(columns[c]) for c in ("teacher_tokens", "topk_ids", "topk_logprobs")) == n * bytes_per_token(k)
    assert bytes_per_token(20) == 124
    row = AnnotatedRecord(id="a", question_id="q", question="Q?", rationale="r", answer="1", gold="1", correct=True,
                          domain=None, teacher="t", level=1, format="cot", template_version="v1", sample_index=0,
                          completion_tokens=n, **columns).to_dict()
    pq.write_table(pa.Table.from_pylist([row], schema=arrow_schema()), tmp_path / "part.parquet")
    back = read_topk(pq.read_table(tmp_path / "part.parquet").to_pylist()[0])
    assert np.array_equal(back.tokens, record.tokens) and np.array_equal(back.ids, record.ids)
    assert np.array_equal(back.logprobs, record.logprobs) and back.vocab == record.vocab and back.k == k
    assert back.first(5).ids.shape == (n, 5) and np.array_equal(back.first(5).ids, record.ids[:, :5])


def test_a_record_whose_token_counts_differ_is_a_mismatch():
    good = TopK(np.arange(4, dtype="<i4"), np.zeros((4, 3), "<i4"), np.zeros((4, 3), "<f2"), "v").columns()
    assert read_topk({"rationale": "r"}) is None  # no record: not an error
    assert isinstance(read_topk({**good, "completion_tokens": 4}), TopK)
    cut = read_topk({**good, "topk_logprobs": good["topk_logprobs"][:-6]})
    assert cut.reason == "logprobs_mismatch" and cut.detail == \
        "token counts differ: teacher_tokens 4, topk_ids 4, topk_logprobs 3 (k=3)"
    assert read_topk({**good, "completion_tokens": 5}).detail == "4 tokens in the logprob record, 5 completion_tokens"
    assert read_topk({**good, "topk_k": 0}).detail == "topk_k is 0, not a positive int"
    assert read_topk({**good, "teacher_tokens": None}).detail == "teacher_tokens missing or not binary"


class _Vocab:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_vocabularies_are_compared_by_fingerprint_and_their_difference_named():
    a = _Vocab({"a": 0, "b": 1, "Ġthe": 2})
    assert vocab_fingerprint(a) == vocab_fingerprint(_Vocab({"Ġthe": 2, "b": 1, "a": 0}))
    assert vocab_fingerprint(a).startswith("3:") and vocab_difference(a, _Vocab(a.vocab)) is None
    b = _Vocab({"a": 0, "c": 1, "Ġthe": 2, "x": 3})
    assert vocab_fingerprint(a) != vocab_fingerprint(b)
    assert vocab_difference(a, b) == ("the teacher's vocabulary has 3 tokens, the student's 4; 2 ids differ, "
                                      "e.g. id 1: teacher 'b', student 'c'")
