"""A fixed, seeded train/test split by question text.

SVAMP ships no test split in the release, so train, tune and evaluate all hold out the same part
of train with `holdout_split`: a question's side depends only on its whitespace-normalized text and
the seed, never on file, level, row order or which other rows are present. The same question read
from train_chatgpt_level1.json and train_llama_level4.json lands on the same side, so a student
trained on any level never sees a question it is evaluated on.

The share of test rows is test_fraction in expectation (each question is an independent draw from
its hash), not exactly: 700 questions at 0.2 give about 140, not always 140.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from ray_cotd.data.errors import DataError
from ray_cotd.data.schema import normalize_text

SPLIT_NAMES = ("train", "test")
_HASH_BYTES = 8


def split_name(question: str, seed: int, test_fraction: float) -> Literal["train", "test"]:
    """"test" when the seeded hash of the normalized question falls below test_fraction."""
    _check_fraction(test_fraction)
    digest = hashlib.sha256(f"{seed}\x1f{normalize_text(question)}".encode()).digest()
    draw = int.from_bytes(digest[:_HASH_BYTES], "big") / 2 ** (8 * _HASH_BYTES)  # uniform in [0, 1)
    return "test" if draw < test_fraction else "train"


def holdout_split(
    records: list[dict[str, Any]],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    key: str = "question",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) rows, each in input order. key: the question column ("instruction" for raw
    release rows)."""
    _check_fraction(test_fraction)
    train, test = [], []
    for index, record in enumerate(records):
        question = record.get(key)
        if not isinstance(question, str):
            raise DataError("no question text to split on", row=index, field=key)
        (test if split_name(question, seed, test_fraction) == "test" else train).append(record)
    return train, test


def select_test_rows(
    records: list[dict[str, Any]],
    *,
    holdout: Literal["all", "test", "train"],
    test_fraction: float,
    seed: int,
    offset: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The rows a test set scores: all of them or one side of `holdout_split`, then `offset` and
    `limit`. Evaluation and the contamination check select with this, so both see the same rows."""
    if holdout != "all":
        train, test = holdout_split(records, test_fraction=test_fraction, seed=seed)
        records = test if holdout == "test" else train
    records = records[offset:]
    return records if limit is None else records[:limit]


def without_questions(
    records: list[dict[str, Any]],
    exclude: list[dict[str, Any]],
    *,
    key: str = "question",
    exclude_key: str | None = None,
) -> list[dict[str, Any]]:
    """Rows whose normalized question is not in `exclude`.

    For leaks between files: the release's strategyqa/train_human.json holds all 290 questions of
    strategyqa/test.json, so training on it must drop them first.
    """
    exclude_key = exclude_key or key
    banned = {normalize_text(row[exclude_key]) for row in exclude if isinstance(row.get(exclude_key), str)}
    return [row for row in records if normalize_text(str(row.get(key, ""))) not in banned]


# student.json key of the split a student was trained beside (TrainConfig.split_seed, holdout_fraction)
SPLIT_KEY = "holdout_split"


@dataclass(frozen=True)
class HoldoutSplit:
    """One fixed hold-out split: the seed and test share `holdout_split` draws it with. Training
    records its split in the student directory (student.json, SPLIT_KEY); evaluate scores a student
    on `holdout: test` only under that same split, since under any other some of its test rows were
    training rows. holdout_fraction 0 means the student trained on every question."""

    split_seed: int
    holdout_fraction: float

    def as_dict(self) -> dict[str, Any]:
        return {"split_seed": self.split_seed, "holdout_fraction": self.holdout_fraction}

    @classmethod
    def from_dict(cls, value: Any, *, path: Any = None) -> HoldoutSplit:
        """The split a student.json records; DataError naming the file when it is malformed."""
        if not (isinstance(value, dict) and isinstance(value.get("split_seed"), int)
                and isinstance(value.get("holdout_fraction"), (int, float))):
            raise DataError(f"{SPLIT_KEY} must be {{split_seed: int, holdout_fraction: float}}, got {value!r}",
                            path=path, field=SPLIT_KEY)
        return cls(value["split_seed"], float(value["holdout_fraction"]))

    def __str__(self) -> str:
        return f"split_seed={self.split_seed}, holdout_fraction={self.holdout_fraction}"


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}", field="test_fraction")
