"""The main job's word problems: generated with computed answers, and the packaged asset is exactly
what the generator writes."""

from __future__ import annotations

import json
import re

from ray_cotd.data.wordproblems import ASSET, KINDS, N_PROBLEMS, SEED, generate


def test_the_asset_is_the_generator_output():
    rows = [json.loads(line) for line in ASSET.read_text(encoding="utf-8").splitlines()]
    assert rows == generate(N_PROBLEMS, SEED)


def test_problems_are_distinct_every_kind_in_turn_and_answers_are_computed():
    problems = generate(80, seed=1)
    assert len({p["question"] for p in problems}) == 80
    assert [p["kind"] for p in problems[: len(KINDS)]] == list(KINDS)
    for p in problems:
        numbers = [int(n) for n in re.findall(r"\d+", p["question"])]
        answer = int(p["answer"])
        if p["kind"] == "add":
            assert answer == numbers[0] + numbers[1]
        elif p["kind"] in ("take_away", "compare"):
            assert answer == numbers[0] - numbers[1] > 0
        elif p["kind"] in ("groups", "price", "per_day"):
            assert answer == numbers[0] * numbers[1]
        elif p["kind"] == "share":
            assert answer * numbers[1] == numbers[0]
        elif p["kind"] == "two_steps":
            assert answer == numbers[0] + numbers[1] - numbers[2] > 0
    assert generate(80, seed=1) == problems and generate(80, seed=2) != problems
