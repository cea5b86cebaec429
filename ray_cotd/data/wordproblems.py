"""Arithmetic word problems of our own, generated with their gold answers: the main job's data.

The quickstart distils from the embedded 135M model into itself, so it needs questions that the
teacher sometimes answers right (rejection sampling keeps only those rationales) and that have many
siblings (the student learns the kind of reasoning, not one answer). Each kind below is a template
whose numbers, names and things are drawn from a seeded random generator; the gold answer is
computed, never written by hand. Nothing here comes from a third-party dataset.

    python -m ray_cotd.data.wordproblems            # rewrites ray_cotd/assets/word_problems.jsonl

The asset is exactly `generate(N_PROBLEMS, SEED)` (a unit test checks it), one JSON object per
line: {"question", "answer", "kind"}.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

N_PROBLEMS = 640
SEED = 20261201
ASSET = Path(__file__).resolve().parents[1] / "assets" / "word_problems.jsonl"

NAMES = ("Mia", "Tom", "Lena", "Sam", "Ava", "Ben", "Nora", "Leo", "Zoe", "Omar", "Ivy", "Raj", "Ella", "Max",
         "Yuki", "Ana", "Finn", "Sara", "Kai", "Ruth")
THINGS = ("apples", "pencils", "stickers", "marbles", "books", "cards", "shells", "coins", "stamps", "cookies",
          "balloons", "flowers", "toy cars", "buttons", "beads")
CONTAINERS = ("boxes", "bags", "jars", "baskets", "packs")


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


def _add(rng: random.Random) -> tuple[str, int]:
    name, thing = _pick(rng, NAMES), _pick(rng, THINGS)
    a, b = rng.randint(3, 40), rng.randint(2, 30)
    return f"{name} has {a} {thing}. {name} gets {b} more {thing}. How many {thing} does {name} have now?", a + b


def _take_away(rng: random.Random) -> tuple[str, int]:
    name, thing = _pick(rng, NAMES), _pick(rng, THINGS)
    b = rng.randint(2, 25)
    a = b + rng.randint(1, 30)
    return f"{name} had {a} {thing} and gave away {b} of them. How many {thing} does {name} have left?", a - b


def _groups(rng: random.Random) -> tuple[str, int]:
    name, thing, box = _pick(rng, NAMES), _pick(rng, THINGS), _pick(rng, CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    return f"{name} has {a} {box} with {b} {thing} in each. How many {thing} does {name} have in total?", a * b


def _share(rng: random.Random) -> tuple[str, int]:
    name, thing = _pick(rng, NAMES), _pick(rng, THINGS)
    friends, each = rng.randint(2, 9), rng.randint(2, 12)
    return (f"{name} shares {friends * each} {thing} equally among {friends} friends. How many {thing} does each "
            f"friend get?", each)


def _compare(rng: random.Random) -> tuple[str, int]:
    first, second = rng.sample(NAMES, 2)
    thing = _pick(rng, THINGS)
    b = rng.randint(2, 30)
    a = b + rng.randint(1, 25)
    return (f"{first} has {a} {thing} and {second} has {b} {thing}. How many more {thing} does {first} have than "
            f"{second}?", a - b)


def _two_steps(rng: random.Random) -> tuple[str, int]:
    name, thing = _pick(rng, NAMES), _pick(rng, THINGS)
    a, b = rng.randint(5, 30), rng.randint(2, 20)
    c = rng.randint(1, a + b - 1)
    return (f"{name} has {a} {thing}, buys {b} more and then gives away {c}. How many {thing} does {name} have "
            f"now?", a + b - c)


def _price(rng: random.Random) -> tuple[str, int]:
    name, thing = _pick(rng, NAMES), _pick(rng, ("notebooks", "pens", "tickets", "cakes", "plants"))
    price, count = rng.randint(2, 9), rng.randint(2, 9)
    return f"One of the {thing} costs {price} dollars. {name} buys {count} {thing}. How many dollars does {name} pay?", \
        price * count


def _per_day(rng: random.Random) -> tuple[str, int]:
    name = _pick(rng, NAMES)
    per_day, days = rng.randint(2, 12), rng.randint(2, 7)
    return f"{name} reads {per_day} pages every day. How many pages does {name} read in {days} days?", per_day * days


KINDS: dict[str, Callable[[random.Random], tuple[str, int]]] = {
    "add": _add,
    "take_away": _take_away,
    "groups": _groups,
    "share": _share,
    "compare": _compare,
    "two_steps": _two_steps,
    "price": _price,
    "per_day": _per_day,
}


def generate(n: int, seed: int) -> list[dict[str, str]]:
    """`n` distinct problems, the kinds in turn, each with its computed answer."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    problems: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(problems) < n:
        kind = kinds[len(problems) % len(kinds)]
        question, answer = KINDS[kind](rng)
        if question in seen:
            continue
        seen.add(question)
        problems.append({"question": question, "answer": str(answer), "kind": kind})
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSET)
    parser.add_argument("-n", type=int, default=N_PROBLEMS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    lines = [json.dumps(p) for p in generate(args.n, args.seed)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} problems to {args.out}")


if __name__ == "__main__":
    main()


__all__ = ["ASSET", "KINDS", "N_PROBLEMS", "SEED", "generate"]
