"""studies/gpu_run.py at smoke scale on the CPU: the study's core (item 1's arms, item 2's levels) in
one process with Ray made unimportable, 2 steps per run and 2 questions per set, writing the runner's
run layout and tables; a second start redoes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU_RUN = REPO / "studies" / "gpu_run.py"


def test_gpu_run_smoke_without_ray(shared_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "noray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("ray is not installed here")\n')
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    argv = [sys.executable, str(GPU_RUN), "--scale", "smoke", "--device", "cpu", "--steps", "2", "--limit", "2",
            "--data", str(shared_data), "--out", str(out)]
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for arm in ("answer_only", "cascod_da_lora", "prada"):  # smoke's arms of item 1
        summary = json.loads((out / "objectives" / arm / "seed0" / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["device"] == "cpu"
        assert (out / "objectives" / arm / "seed0" / "student" / "student.json").is_file()
        report = json.loads((out / "objectives" / arm / "evaluate" / "report.json").read_text())
        assert {t["name"]: t["n"] for t in report["test_sets"]} == {"strategyqa": 2, "commonsenseqa": 2}
    prada = json.loads((out / "objectives" / "prada" / "seed0" / "student" / "student.json").read_text())
    assert prada["peft"] == "lora+ptuning" and prada["num_virtual_tokens"] > 0
    prada_cfg = (out / "objectives" / "prada" / "seed0" / "resolved_config.yaml").read_text()
    assert "lambda_schedule: dann" in prada_cfg and "corpora/prada.json" in prada_cfg
    granularity = json.loads((out / "granularity" / "evaluate" / "report.json").read_text())
    assert {r["system"] for r in granularity["results"]} == {"std_cot-L6", "cascod-L6"}
    tables = (out / "tables.md").read_text()
    assert "## 1. Objectives" in tables and "## 2. Granularity" in tables
    assert "commonsenseqa (OOD, n=2, constrained)" in tables  # constrained choices beside free accuracy
    assert (out / "study_objectives.png").is_file() and (out / "study_granularity.png").is_file()

    again = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[gpu_run] trained" not in again.stdout and "[gpu_run] evaluated" not in again.stdout
    assert again.stdout.count("(done)") >= 5 + 5  # 5 train runs, 4 + 2 evaluate runs: all skipped


@pytest.mark.parametrize("flag", ["--only tune"])
def test_gpu_run_refuses_what_needs_ray(flag: str, shared_data: Path) -> None:
    proc = subprocess.run([sys.executable, str(GPU_RUN), *flag.split(), "--data", str(shared_data)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Ray Tune" in proc.stderr
