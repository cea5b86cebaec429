"""The `ray-cotd` command line: subcommands, config errors as one clear line, resolved config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ray_cotd import cli


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ray_cotd.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_every_subcommand_is_listed():
    out = run_cli("--help").stdout
    for name in ("annotate", "train", "evaluate", "tune", "serve", "pipeline", "inspect", "report"):
        assert name in out


def test_unknown_config_key_is_one_clear_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("corpus: c\nlearning_rate: 0.1\n")
    assert cli.main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("ray-cotd train: error:") and "learning_rate" in err and "valid keys" in err


@pytest.fixture
def empty_yaml(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    return str(path)


def test_print_config_resolves_overrides(capsys, empty_yaml):
    assert cli.main(["train", "--print-config", empty_yaml, "alpha=0.9", "objective=std_cot"]) == 0
    out = capsys.readouterr().out
    assert "alpha: 0.9" in out and "objective: std_cot" in out


def test_help_config_lists_keys_with_docs(capsys):
    assert cli.main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "alpha: float = 0.3  # CasCoD answer-loss weight" in out


def test_missing_config_file_argument(capsys):
    assert cli.main(["annotate"]) == 2
    assert "needs a CONFIG file" in capsys.readouterr().err


def test_a_stage_module_that_does_not_exist_says_not_implemented(monkeypatch, capsys, empty_yaml):
    monkeypatch.setitem(cli.STAGE_RUNNERS, "tune", ("ray_cotd.no_such_stage", "run"))
    assert cli.main(["tune", empty_yaml]) == 2
    assert "`ray-cotd tune` is not implemented yet" in capsys.readouterr().err


def test_broken_import_inside_a_stage_is_not_hidden(monkeypatch, empty_yaml):
    monkeypatch.setitem(cli.STAGE_RUNNERS, "tune", ("ray_cotd.config", "no_such_function"))
    with pytest.raises(AttributeError):
        cli.main(["tune", empty_yaml])


def test_inspect_on_every_shared_file_reports_rows(shared_data, capsys):
    for path in sorted(shared_data.glob("*/*.json")):
        assert cli.main(["inspect", str(path), "--json"]) == 0, path
        report = __import__("json").loads(capsys.readouterr().out)
        assert report["rows"] > 0, path


def test_inspect_agreement_with_a_gold_file(shared_data, capsys):
    level = shared_data / "svamp" / "train_chatgpt_level6.json"
    gold = shared_data / "svamp" / "train_answer_only.json"
    assert cli.main(["inspect", str(level), "--gold-file", str(gold)]) == 0
    assert "agreement with gold                 689 / 696 = 99.0%" in capsys.readouterr().out


def test_inspect_missing_file_is_one_clear_error(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_inspect_with_explicit_columns(fixtures_dir, capsys):
    path = str(fixtures_dir / "questions.csv")
    assert cli.main(["inspect", path, "--question", "instruction", "--gold", "label", "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["rows"] > 0 and report["answer_type"] == "multiple_choice"
    # inspect reports rather than stops: every row lacks the mapped column and is counted so.
    assert cli.main(["inspect", path, "--question", "prompt", "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert len(report["bad_examples"]["missing_field"]) > 0
