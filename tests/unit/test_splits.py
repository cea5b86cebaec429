"""The seeded holdout split: fixed by question text, independent of file, order and level."""

from __future__ import annotations

import random

import pytest

from ray_cotd.data.errors import DataError
from ray_cotd.data.readers import read_rows
from ray_cotd.data.splits import holdout_split, split_name, without_questions


def _questions(n: int) -> list[dict]:
    return [{"question": f"Invented question number {i}: how many pens are left?", "n": i} for i in range(n)]


def test_split_is_order_independent_and_whitespace_blind():
    rows = _questions(300)
    train, test = holdout_split(rows, seed=3)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    respaced = [{**r, "question": "  " + r["question"].replace(" ", "\n ")} for r in shuffled]
    train2, test2 = holdout_split(respaced, seed=3)
    assert {r["n"] for r in test} == {r["n"] for r in test2}
    assert {r["n"] for r in train} == {r["n"] for r in train2}
    assert [r["n"] for r in train] == sorted(r["n"] for r in train)  # input order kept


def test_split_partitions_and_follows_the_fraction():
    rows = _questions(2000)
    train, test = holdout_split(rows, test_fraction=0.2, seed=0)
    assert len(train) + len(test) == 2000
    assert not {r["n"] for r in train} & {r["n"] for r in test}
    assert 340 <= len(test) <= 460  # 400 expected; binomial sd is about 18
    assert all(split_name(r["question"], 0, 0.2) == "test" for r in test)


def test_seed_changes_the_split_and_fraction_is_monotone():
    rows = _questions(500)
    _, test0 = holdout_split(rows, seed=0)
    _, test1 = holdout_split(rows, seed=1)
    assert {r["n"] for r in test0} != {r["n"] for r in test1}
    _, small = holdout_split(rows, test_fraction=0.1, seed=0)
    assert {r["n"] for r in small} <= {r["n"] for r in test0}  # same draw, lower threshold


def test_split_name_is_pinned():
    # Fixed across processes and releases: a changed hash would move test rows into train.
    assert [split_name(f"q{i}", 0, 0.5) for i in range(6)] == PINNED_NAMES


# By hand: the first hex digit of `printf '0\x1fq{i}' | sha256sum` is b 8 0 6 b 0; below 8 means
# a draw below 0.5, i.e. "test".
PINNED_NAMES = ["train", "train", "test", "test", "train", "test"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(DataError, match="field 'test_fraction'"):
        holdout_split(_questions(3), test_fraction=fraction)


def test_row_without_question_is_named():
    with pytest.raises(DataError, match="row index 1, field 'question'"):
        holdout_split([{"question": "q"}, {"instruction": "q"}])


def test_without_questions_drops_leaked_rows():
    train = [{"question": "Is ice cold?"}, {"question": "Is fire hot?"}]
    test = [{"instruction": " Is  fire hot? "}]
    assert without_questions(train, test, exclude_key="instruction") == [{"question": "Is ice cold?"}]


def test_real_svamp_same_question_same_side_across_levels(shared_data):
    level1 = read_rows(shared_data / "svamp" / "train_chatgpt_level1.json")
    level3 = read_rows(shared_data / "svamp" / "train_llama_level3.json")
    _, test1 = holdout_split(level1, key="instruction")
    train3, _ = holdout_split(level3, key="instruction")
    assert 100 <= len(test1) <= 180
    test_questions = {" ".join(r["instruction"].split()) for r in test1}
    assert not test_questions & {" ".join(r["instruction"].split()) for r in train3}


def test_real_strategyqa_human_file_holds_the_test_questions(shared_data):
    human = read_rows(shared_data / "strategyqa" / "train_human.json")
    test = read_rows(shared_data / "strategyqa" / "test.json")
    kept = without_questions(human, test, key="instruction")
    assert (len(human), len(kept)) == (2290, 2000)


def test_test_set_offset_and_limit_carve_disjoint_rows_of_the_holdout(tmp_path):
    """Selection rows (offset) and test rows (limit) of one hold-out split never share a question."""
    import json

    from ray_cotd.config import ConfigError, TestSetSpec
    from ray_cotd.configbase import from_dict
    from ray_cotd.evaluate import prepare_test_set

    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": r["question"], "answer": str(r["n"])}) + "\n"
                            for r in _questions(200)))

    def rows(**kw):
        spec = TestSetSpec(path=str(path), answer_type="numeric", holdout="test", **kw)
        return [r["question"] for r in prepare_test_set(spec, holdout_fraction=0.2, split_seed=0).records]

    everything = rows()
    test, select = rows(limit=10), rows(offset=10)
    assert test == everything[:10] and select == everything[10:] and not set(test) & set(select)
    assert rows(offset=10, limit=5) == everything[10:15]
    with pytest.raises(DataError, match="offset=1000"):
        rows(offset=1000)
    with pytest.raises(ConfigError, match="offset"):
        from_dict(TestSetSpec, {"path": "x", "offset": -1})
