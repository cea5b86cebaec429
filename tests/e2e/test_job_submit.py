"""End to end: the quickstart pipeline submitted with `ray job submit` to a local head node.

The head is started with cluster/local_head.sh on 127.0.0.1 (free ports, its own temp dir and
token), the pipeline is submitted from the repository root exactly as docs/operations.md says,
the test waits for SUCCEEDED, checks the run directory, and stops the head with `ray stop`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ray_cotd.config import load_stage_config

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.e2e, pytest.mark.real_model]


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export "):
            for key, _, value in (part.partition("=") for part in shlex.split(line[len("export "):])):
                env[key] = value
    return env


@pytest.fixture(scope="module")
def local_head(tmp_path_factory):
    import ray

    if ray.is_initialized():  # this session's cluster: `ray stop` below ends every Ray process
        ray.shutdown()
    state = tmp_path_factory.mktemp("head")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_BIN": str(VENV_BIN / "ray")}
    stop = ["bash", "cluster/local_head.sh", "stop", "--dir", str(state)]
    try:
        started = subprocess.run(
            ["bash", "cluster/local_head.sh", "start", "--dir", str(state), "--num-cpus", "2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
        )
        assert started.returncode == 0, started.stderr
        client_env = {**env, **_parse_exports(started.stdout)}
        assert client_env.get("RAY_API_SERVER_ADDRESS", "").startswith("http://127.0.0.1:"), started.stdout
    except BaseException:  # a head that failed or timed out half-way must not outlive the test session
        subprocess.run(stop, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        raise
    yield client_env
    stopped = subprocess.run(stop, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr


def test_bad_config_fails_the_job_within_seconds(local_head, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: /tmp/x\nannotate: {questionz: q.jsonl}\n")
    result = subprocess.run(
        ["ray", "job", "submit", "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml",
         "--", "python", "jobs/pipeline.py", str(bad)],
        cwd=REPO, env=local_head, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "annotate.questionz" in out and "valid keys under annotate" in out


# The main job's pipeline at a size for the suite: the same stages, engines and wiring, a few questions
# and steps (the full run takes ~15 minutes; its rows and steps are what this shrinks). Wrong
# rationales are kept so that a handful of questions still gives rows to train on.
SMALLER = [
    "annotate.limit=12", "annotate.n_samples=2", "annotate.max_new_tokens=48", "annotate.wrong=keep",
    "train.max_steps=2", "train.checkpoint_every=2",
    "evaluate.test_sets=[{path: ray_cotd/assets/word_problems.jsonl, name: word_problems, answer_type: numeric,"
    " holdout: test, limit: 6}]",
    "evaluate.max_rationale_tokens=24",
    # the student as a LoRA request on the baseline's engine: one engine start instead of two (the main job
    # merges it, the CPU default; a merged student on vLLM is test_vllm.py's evaluate test)
    "evaluate.vllm.lora=request",
]


def test_quickstart_pipeline_via_ray_job_submit(local_head, tmp_path):
    run_dir = tmp_path / "quickstart"
    result = subprocess.run(
        ["ray", "job", "submit", "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml",
         "--", "python", "jobs/pipeline.py", "jobs/configs/quickstart.yaml", f"run_dir={run_dir}", *SMALLER],
        cwd=REPO, env=local_head, capture_output=True, text=True, timeout=1500,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "succeeded" in log.lower(), log[-3000:]

    cfg = load_stage_config("pipeline", run_dir / "resolved_config.yaml")
    assert cfg.run_dir == str(run_dir)
    for stage in ("annotate", "train", "evaluate", "serve"):
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage and (run_dir / stage / "resolved_config.yaml").is_file()
    stats = json.loads((run_dir / "annotate" / "stats.json").read_text())
    assert stats["kept"] > 0
    train_manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert train_manifest["inputs"][0]["manifest"] == str(run_dir / "annotate" / "manifest.json")
    assert (Path(train_manifest["outputs"][0]) / "adapter_config.json").is_file()
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert report  # the evaluate stage wrote its report; its contents are checked in test_evaluate
    assert list((run_dir / "evaluate").rglob("*.png")), "the report plot is missing"
    answer = json.loads((run_dir / "serve" / "answer.json").read_text())
    assert answer["response"]["rationale"] is not None and "answer" in answer["response"]
