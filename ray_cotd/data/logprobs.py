"""The teacher's top-k log-probabilities per generated token, as the corpus stores them.

Annotation with `logprobs: k` (vLLM engine: SamplingParams(logprobs=k); Ray Data LLM returns them in
its `logprobs` column) records, for every token the teacher generated (trace, final text and the
stop token alike), the k most likely tokens and their log-probabilities, in five corpus columns:

    teacher_tokens  binary   int32 little-endian, n ids: the tokens the teacher generated
    topk_ids        binary   int32 little-endian, n x k ids, row-major, best first
    topk_logprobs   binary   float16 little-endian, n x k log-probabilities, same order
    topk_k          int64    k
    teacher_vocab   string   the teacher tokenizer's vocabulary fingerprint (vocab_fingerprint)

That is 4 + 6k bytes per generated token before Parquet's compression (124 bytes at k = 20).
float16 keeps a log-probability to 3 significant digits (-12.34 is stored to within 0.004), far
below what separates the top-k entries that carry the mass. The values are vLLM's raw
log-probabilities: the model's own distribution, before temperature or top-p.

Training (TrainConfig.kd_weight, ray_cotd/student/kd.py) reads a record back with `read_topk`; a
record that disagrees with itself (a top-k row count that differs from its token count, or from
the row's completion_tokens) is a `logprobs_mismatch`. Pure functions: numpy, no torch, no Ray.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

TOKEN_DTYPE = np.dtype("<i4")
LOGPROB_DTYPE = np.dtype("<f2")
LOGPROB_COLUMNS = ("teacher_tokens", "topk_ids", "topk_logprobs", "topk_k", "teacher_vocab")
MISMATCH = "logprobs_mismatch"


def bytes_per_token(k: int) -> int:
    """Stored bytes per generated token (before compression): one int32 id, k int32 ids, k float16."""
    return TOKEN_DTYPE.itemsize + k * (TOKEN_DTYPE.itemsize + LOGPROB_DTYPE.itemsize)


@dataclass(frozen=True)
class TopK:
    """One reply's record. tokens: (n,) int32; ids: (n, k) int32, best first; logprobs: (n, k)
    float16. vocab: the fingerprint of the tokenizer the ids belong to."""

    tokens: np.ndarray
    ids: np.ndarray
    logprobs: np.ndarray
    vocab: str

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def columns(self) -> dict[str, Any]:
        """The corpus columns (LOGPROB_COLUMNS) of this record."""
        return {"teacher_tokens": self.tokens.astype(TOKEN_DTYPE).tobytes(),
                "topk_ids": self.ids.astype(TOKEN_DTYPE).tobytes(),
                "topk_logprobs": self.logprobs.astype(LOGPROB_DTYPE).tobytes(),
                "topk_k": self.k, "teacher_vocab": self.vocab}

    def first(self, k: int) -> TopK:
        """The record cut to its best k entries per token (entries are stored best first)."""
        return TopK(self.tokens, self.ids[:, :k], self.logprobs[:, :k], self.vocab)


@dataclass(frozen=True)
class LogprobFailure:
    """A record that cannot be used, and why (reason MISMATCH)."""

    detail: str
    reason: str = MISMATCH


def _entries(step: Any) -> list[tuple[int, float]]:
    """(token id, logprob) pairs of one vLLM step: {id: {"logprob": x, ...}} as Ray Data LLM hands
    it over (or an Arrow map's list of (key, value) pairs)."""
    items = step.items() if isinstance(step, dict) else step
    return [(int(key), float(value["logprob"] if isinstance(value, dict) else value)) for key, value in items]


def topk_from_vllm(tokens: list[int], steps: list[Any] | None, k: int, vocab: str) -> TopK | LogprobFailure:
    """A record from vLLM's output: the generated `tokens` and one logprob dict per token (the top
    k entries plus the sampled token when it is not among them; the k best are kept)."""
    if steps is None:
        return LogprobFailure(f"no logprobs came back for {len(tokens)} generated tokens")
    if len(steps) != len(tokens):
        return LogprobFailure(f"{len(steps)} logprob steps for {len(tokens)} generated tokens")
    ids = np.zeros((len(tokens), k), dtype=TOKEN_DTYPE)
    values = np.zeros((len(tokens), k), dtype=LOGPROB_DTYPE)
    for j, step in enumerate(steps):
        best = sorted(_entries(step), key=lambda e: -e[1])[:k]
        if len(best) < k:
            return LogprobFailure(f"token {j} has {len(best)} logprob entries, fewer than k={k}")
        ids[j] = [e[0] for e in best]
        values[j] = [e[1] for e in best]
    return TopK(np.asarray(tokens, dtype=TOKEN_DTYPE), ids, values, vocab)


def read_topk(row: dict[str, Any]) -> TopK | LogprobFailure | None:
    """The record of a corpus row; None when the row has none; LogprobFailure when its arrays do
    not agree with each other or with the row's completion_tokens."""
    if row.get("topk_ids") is None:
        return None
    k = row.get("topk_k")
    if not isinstance(k, int) or k < 1:
        return LogprobFailure(f"topk_k is {k!r}, not a positive int")
    blobs = {c: row.get(c) for c in ("teacher_tokens", "topk_ids", "topk_logprobs")}
    missing = [c for c, v in blobs.items() if not isinstance(v, (bytes, bytearray))]
    if missing:
        return LogprobFailure(f"{', '.join(missing)} missing or not binary")
    sizes = {"teacher_tokens": TOKEN_DTYPE.itemsize, "topk_ids": TOKEN_DTYPE.itemsize * k,
             "topk_logprobs": LOGPROB_DTYPE.itemsize * k}
    counts = {c: len(blobs[c]) / sizes[c] for c in blobs}
    n = counts["teacher_tokens"]
    if any(count != n for count in counts.values()) or n != int(n):
        return LogprobFailure("token counts differ: " + ", ".join(f"{c} {v:g}" for c, v in counts.items()) + f" (k={k})")
    completion = row.get("completion_tokens")
    if isinstance(completion, int) and completion != n:
        return LogprobFailure(f"{int(n)} tokens in the logprob record, {completion} completion_tokens")
    n = int(n)
    return TopK(np.frombuffer(blobs["teacher_tokens"], dtype=TOKEN_DTYPE),
                np.frombuffer(blobs["topk_ids"], dtype=TOKEN_DTYPE).reshape(n, k),
                np.frombuffer(blobs["topk_logprobs"], dtype=LOGPROB_DTYPE).reshape(n, k),
                str(row.get("teacher_vocab") or ""))


def vocab_fingerprint(tokenizer: Any) -> str:
    """"<size>:<16 hex of sha256>" over the tokenizer's token -> id map (added tokens included):
    equal fingerprints mean every id names the same token, which token-level KD needs."""
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items(), key=lambda item: (item[1], item[0])), ensure_ascii=False)
    return f"{len(vocab)}:{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]}"


def vocab_difference(teacher: Any, student: Any) -> str | None:
    """None when the two tokenizers map the same ids to the same tokens; else what differs, in words."""
    a, b = teacher.get_vocab(), student.get_vocab()
    if a == b:
        return None
    by_id_a, by_id_b = {i: t for t, i in a.items()}, {i: t for t, i in b.items()}
    differ = sorted(i for i in set(by_id_a) | set(by_id_b) if by_id_a.get(i) != by_id_b.get(i))
    first = differ[0]
    return (f"the teacher's vocabulary has {len(a)} tokens, the student's {len(b)}; {len(differ)} ids differ, "
            f"e.g. id {first}: teacher {by_id_a.get(first)!r}, student {by_id_b.get(first)!r}")


__all__ = [
    "LOGPROB_COLUMNS",
    "LOGPROB_DTYPE",
    "LogprobFailure",
    "MISMATCH",
    "TOKEN_DTYPE",
    "TopK",
    "bytes_per_token",
    "read_topk",
    "topk_from_vllm",
    "vocab_difference",
    "vocab_fingerprint",
]
