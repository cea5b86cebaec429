"""Run manifests and the pipeline's pre-flight checks (no Ray, no model)."""

from __future__ import annotations

import json

import pytest

from ray_cotd.config import ConfigError, load_stage_config
from ray_cotd.manifest import write_manifest
from ray_cotd.pipeline import _preflight


def test_manifest_records_config_inputs_versions_and_upstream(tmp_path):
    upstream = tmp_path / "annotate"
    cfg = load_stage_config("annotate", None, ["questions=q.jsonl"])
    write_manifest(upstream, stage="annotate", config=cfg, inputs=["q.jsonl"], outputs=[str(upstream)])
    (upstream / "corpus").mkdir()
    train_cfg = load_stage_config("train", None, [f"corpus={upstream / 'corpus'}"])
    path = write_manifest(tmp_path / "train", stage="train", config=train_cfg, inputs=[upstream / "corpus"], outputs=[])
    manifest = json.loads(path.read_text())
    assert manifest["stage"] == "train"
    assert manifest["inputs"][0]["manifest"] == str(upstream / "manifest.json")
    assert manifest["config"]["corpus"] == str(upstream / "corpus")
    assert {"ray", "torch", "transformers", "peft"} <= set(manifest["versions"])
    assert (tmp_path / "train" / "resolved_config.yaml").is_file()


def test_pipeline_preflight_names_a_missing_question_file(tmp_path):
    cfg = load_stage_config("pipeline", None, [f"annotate.questions={tmp_path / 'none.jsonl'}"])
    with pytest.raises(ConfigError, match=r"annotate.questions: file not found: .*none.jsonl"):
        _preflight(cfg)


def test_pipeline_preflight_names_a_missing_test_set(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "1+1?", "answer": "2"}\n')
    cfg = load_stage_config(
        "pipeline", None, [f"annotate.questions={questions}", "evaluate.test_sets=[{path: /no/such/test.json}]"]
    )
    with pytest.raises(ConfigError, match=r"evaluate.test_sets\[0\].path: file not found: /no/such/test.json"):
        _preflight(cfg)
