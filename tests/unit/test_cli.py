"""The `ray-cotd` command line: subcommands, config errors as one clear line, resolved config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ray_cotd import cli
from ray_cotd.data.answers import ANSWER_TYPES
from ray_cotd.data.readers import MAPPING_PRESETS


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


def test_pipeline_verbose_flag_is_the_verbose_key(capsys, empty_yaml):
    assert cli.main(["pipeline", "--print-config", empty_yaml]) == 0
    assert "verbose: false" in capsys.readouterr().out
    assert cli.main(["pipeline", "--print-config", "--verbose", empty_yaml]) == 0
    assert "verbose: true" in capsys.readouterr().out


def test_help_config_lists_keys_with_docs(capsys):
    assert cli.main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "alpha: float = 0.3  # CasCoD answer-loss weight" in out


def test_missing_config_file_argument(capsys):
    assert cli.main(["annotate"]) == 2
    assert "needs a CONFIG file" in capsys.readouterr().err


def test_every_stage_has_a_runner_and_a_config():
    from ray_cotd.config import STAGE_CONFIGS
    from ray_cotd.names import STAGES

    assert list(cli.STAGE_RUNNERS) == list(STAGES) == list(STAGE_CONFIGS)
    assert cli.resolve_runner("tune") is cli.tune


def test_broken_import_inside_a_stage_is_not_hidden(monkeypatch, empty_yaml):
    def broken(cfg):
        import ray_cotd.no_such_module  # noqa: F401

    monkeypatch.setitem(cli.STAGE_RUNNERS, "tune", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["tune", empty_yaml])


def test_help_and_inspect_start_without_torch_or_ray():
    code = ("import sys; from ray_cotd import cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("preset", list(MAPPING_PRESETS))
def test_inspect_accepts_every_preset_the_readers_define(preset):
    assert cli.build_parser().parse_args(["inspect", "x.json", "--preset", preset]).preset == preset


@pytest.mark.parametrize("answer_type", list(ANSWER_TYPES))
def test_inspect_accepts_every_answer_type(answer_type):
    args = cli.build_parser().parse_args(["inspect", "x.json", "--answer-type", answer_type])
    assert args.answer_type == answer_type


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


def test_inspect_with_the_answer_only_preset_reads_golds_from_output(shared_data, capsys):
    """Issue 23: `inspect --preset answer_only` was refused although documented."""
    path = shared_data / "svamp" / "train_answer_only.json"
    assert cli.main(["inspect", str(path), "--preset", "answer_only", "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["mapping"] == {"question": "instruction", "gold": "output"}
    assert report["records"] == report["rows"] == 700 and report["answer_type"] == "numeric"


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


def test_an_http_teacher_with_a_wrong_model_is_one_clear_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    """A 404 from the teacher endpoint (wrong model or URL) used to surface mid-run as a Ray traceback."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NoSuchModel(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"error": {"message": "The model `gpt-9` does not exist."}}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoSuchModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    import ray_cotd.teacher.annotate

    monkeypatch.setattr(ray_cotd.teacher.annotate, "connect", lambda: pytest.fail("Ray started before the check"))
    config = tmp_path / "annotate.yaml"
    config.write_text("")
    try:
        code = cli.main(["annotate", str(config), "engine=openai", f"openai.base_url=http://127.0.0.1:{server.server_port}/v1",
                         "openai.model=gpt-9", f"questions={questions}", f"output_dir={tmp_path / 'out'}"])
    finally:
        server.shutdown()
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("ray-cotd annotate: error: teacher endpoint") and "HTTP 404" in err
    assert "gpt-9` does not exist" in err and "openai.model" in err
