"""jobs/: every entrypoint documents its `ray job submit` line, parses its config first and fails fast.

The failing-config tests run each job as a subprocess with the venv's python, exactly as a Ray job
runs it; no Ray is started because the config error comes before anything imports Ray.
"""

from __future__ import annotations

import ast
import importlib.util
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from ray_cotd.config import ConfigError, load_stage_config

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
JOB_FILES = sorted(p for p in JOBS.glob("*.py") if not p.name.startswith("_"))
STAGES = ["annotate", "evaluate", "pipeline", "serve", "train", "tune"]


def _submit_line(job: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(job.read_text())) or ""
    lines = [line.strip() for line in doc.splitlines() if line.strip().startswith("ray job submit")]
    assert len(lines) == 1, f"{job.name}: expected exactly one `ray job submit` line in the docstring, got {lines}"
    return shlex.split(lines[0])


def _load_common():
    spec = importlib.util.spec_from_file_location("jobs_common", JOBS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_job_per_stage():
    assert [p.stem for p in JOB_FILES] == STAGES


@pytest.mark.parametrize("job", JOB_FILES, ids=lambda p: p.stem)
def test_docstring_submit_line_runs_this_job_with_a_config_that_loads(job):
    argv = _submit_line(job)
    sep = argv.index("--")
    options, command = argv[:sep], argv[sep + 1 :]
    assert options[options.index("--working-dir") + 1] == "."
    runtime_env = REPO / options[options.index("--runtime-env") + 1]
    assert runtime_env.is_file()
    assert command[:2] == ["python", f"jobs/{job.name}"], command
    config, overrides = command[2], command[3:]
    assert (REPO / config).is_file(), config
    cfg = load_stage_config(job.stem, REPO / config, overrides)
    for override in overrides:  # the overrides in the line take effect
        key, value = override.split("=", 1)
        assert str(getattr(cfg, key)) == value


@pytest.mark.parametrize("job", JOB_FILES, ids=lambda p: p.stem)
def test_bad_config_key_fails_fast_with_the_error(job):
    config = _submit_line(job)[_submit_line(job).index("--") + 3]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(job), str(REPO / config), "no_such_key=1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown key no_such_key" in proc.stderr
    assert config in proc.stderr  # the error names the file
    assert elapsed < 10, f"{job.name} took {elapsed:.1f} s to reject its config"


def test_typo_inside_the_yaml_names_file_and_key(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text(yaml.safe_dump({"objective": "cascod", "max_step": 3}))
    proc = subprocess.run(
        [sys.executable, str(JOBS / "train.py"), str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert str(bad) in last and "max_step" in last and "max_steps" in last  # names the valid key too


def test_run_stage_hands_the_overridden_config_to_the_stage():
    common = _load_common()
    seen = []
    code = common.run_stage(
        "train", seen.append, [str(JOBS / "configs" / "local" / "train.yaml"), "max_steps=3", "lora_r=4"]
    )
    assert code == 0
    (cfg,) = seen
    assert (cfg.max_steps, cfg.lora_r, cfg.objective) == (3, 4, "cascod")


def test_run_stage_does_not_call_the_stage_on_a_bad_config(capsys):
    common = _load_common()
    called = []
    code = common.run_stage("tune", called.append, [str(JOBS / "configs" / "local" / "tune.yaml"), "num_samples=many"])
    assert code == common.CONFIG_ERROR_EXIT and not called
    assert "num_samples" in capsys.readouterr().err


def test_runtime_env_file_is_a_valid_runtime_env():
    from ray.runtime_env import RuntimeEnv  # validates known keys and their types; starts nothing

    data = yaml.safe_load((JOBS / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**data)
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert "working_dir" not in data  # `ray job submit --working-dir .` sets it; a second one would conflict


@pytest.mark.parametrize(
    "path, stage",
    [(p, "pipeline") for p in sorted((JOBS / "configs").glob("*.yaml"))]
    + [(p, p.stem) for p in sorted((JOBS / "configs").glob("*/*.yaml"))],
    ids=lambda x: str(x.relative_to(JOBS)) if isinstance(x, Path) else x,
)
def test_every_example_config_loads(path, stage):
    try:
        load_stage_config(stage, path)
    except ConfigError as err:
        pytest.fail(f"{path}: {err}")


def test_quickstart_distils_from_correct_rationales_of_the_embedded_model():
    cfg = load_stage_config("pipeline", JOBS / "configs" / "quickstart.yaml")
    assert (REPO / cfg.annotate.questions).is_file()
    assert cfg.annotate.teacher.source == cfg.train.student.source == "default"
    assert cfg.annotate.engine == "vllm" and cfg.evaluate.backend == "vllm" and not cfg.train.use_gpu
    # rejection sampling: several samples per training question, only the right ones kept
    assert cfg.annotate.n_samples > 1 and cfg.annotate.temperature > 0 and cfg.annotate.wrong == "drop"
    assert cfg.annotate.holdout == "train"  # the pipeline gives it train's split
    assert cfg.train.objective == "cascod" and cfg.train.peft == "lora" and cfg.train.max_steps <= 100
    assert cfg.evaluate.baselines == ["untrained"]
    # the evaluated questions are exactly the ones train held out
    (test_set,) = cfg.evaluate.test_sets
    assert test_set.holdout == "test"
    assert (cfg.evaluate.holdout_fraction, cfg.evaluate.split_seed) == (cfg.train.holdout_fraction, cfg.train.split_seed)


def test_local_stage_configs_chain_into_each_other():
    configs = {s: load_stage_config(s, JOBS / "configs" / "local" / f"{s}.yaml") for s in STAGES if s != "pipeline"}
    annotate, train, evaluate, tune, serve = (configs[s] for s in ("annotate", "train", "evaluate", "tune", "serve"))
    # absolute: a job's cwd is a throwaway copy of the working dir
    for path in (annotate.output_dir, train.output_dir, evaluate.output_dir, tune.output_dir):
        assert Path(path).is_absolute(), path
    # ray_cotd.teacher.annotate writes its Parquet shards to output_dir/corpus
    assert train.corpus == tune.train.corpus == str(Path(annotate.output_dir) / "corpus")
    student_dir = str(Path(train.output_dir) / "student")  # ray_cotd.student.train writes output_dir/student
    assert [s.adapter for s in evaluate.students] == [student_dir]
    assert serve.student.adapter == student_dir


def test_cluster_stage_configs_chain_into_each_other():
    cluster = JOBS / "configs" / "cluster"
    annotate, train, evaluate, tune, serve = (
        load_stage_config(s, cluster / f"{s}.yaml") for s in ("annotate", "train", "evaluate", "tune", "serve")
    )
    # a corpus holds one level (train reads all its rows); tune's level 3 is that corpus
    assert annotate.levels == [3]
    assert tune.level_corpora["3"] == train.corpus == str(Path(annotate.output_dir) / "corpus")
    assert sorted(map(int, tune.level_corpora)) == sorted(tune.search_levels)
    assert evaluate.students[0].adapter == str(Path(train.output_dir) / "student")
    assert train.merge_adapters and serve.student.source == str(Path(train.output_dir) / "merged")
    assert evaluate.baseline_model.source == train.student.source == tune.train.student.source
    # multi-node Train checkpoints must be reachable from every node: a URI, not a node path
    assert train.storage_path.startswith("s3://") and tune.train.storage_path.startswith("s3://")
    (ind, ood) = evaluate.test_sets
    assert ind.path == annotate.questions and ind.holdout == "test"
    assert (evaluate.holdout_fraction, evaluate.split_seed) == (train.holdout_fraction, train.split_seed)
    assert ood.split == "OOD"


def test_a_stage_that_fails_on_bad_input_prints_one_line_and_fails_the_job(capsys):
    """Issue 23: an annotation that keeps nothing (or any bad-input error found while the stage runs)
    exits non-zero with one line, not 0 and not a bare traceback."""
    from ray_cotd.teacher.annotate import NothingKept

    common = _load_common()
    stats = {"kept": 0}

    def annotate(cfg):
        raise NothingKept("annotate kept nothing: 0 rows kept of 14 planned; not kept: missing_field 14", stats)

    code = common.run_stage("annotate", annotate, [str(JOBS / "configs" / "local" / "annotate.yaml")])
    assert code == common.STAGE_ERROR_EXIT != 0
    err = capsys.readouterr().err
    assert err == "annotate failed: annotate kept nothing: 0 rows kept of 14 planned; not kept: missing_field 14\n"


SECRETS = [".env", "config/.env.production", "deploy/tls.pem", "deploy/tls.key", "id_rsa", "home/id_ed25519.pub",
           ".aws/credentials", "gcp/credentials.json", "gcp/my-credentials-prod.json", "keys/store.p12", ".netrc",
           "ray_cotd/.env", ".git/config"]
CODE = ["ray_cotd/__init__.py", "jobs/annotate.py", "docs/operations.md", "ray_cotd/keys.py"]


def test_the_job_upload_leaves_secrets_out(tmp_path):
    """Issue 23: `--working-dir .` uploaded everything .gitignore did not list, a .env or key file too.
    Zipped with Ray's own packaging code and jobs/runtime_env.yaml's excludes, as `ray job submit` does."""
    from ray._private.runtime_env.packaging import create_package

    tree = tmp_path / "checkout"
    for name in SECRETS + CODE:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x\n")
    excludes = yaml.safe_load((JOBS / "runtime_env.yaml").read_text())["excludes"]
    create_package(str(tree), tmp_path / "upload.zip", include_gitignore=True, excludes=excludes)
    shipped = sorted(n for n in zipfile.ZipFile(tmp_path / "upload.zip").namelist() if not n.endswith("/"))
    assert shipped == sorted(CODE)


def test_the_image_build_context_leaves_the_same_secrets_out():
    """.dockerignore matches from the context root, so each runtime_env secret pattern appears with **/."""
    excludes = yaml.safe_load((JOBS / "runtime_env.yaml").read_text())["excludes"]
    secrets = excludes[excludes.index(".git/"):]
    docker = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ".git/" in docker
    assert [p for p in secrets if p != ".git/" and f"**/{p}" not in docker] == []
