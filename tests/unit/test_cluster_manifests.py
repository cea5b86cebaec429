"""cluster/: KubeRay manifests, the cluster-launcher YAML and the Dockerfile agree with each other,
with KubeRay's field names, and with the stage configs they run.

KubeRay's own CRD schemas accept unknown keys, so a misspelled field is silently dropped by the
API server; cluster/schemas/kuberay_v1_strict.yaml rejects it (see its header for its source).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from ray_cotd.config import ServeConfig, load_stage_config
from ray_cotd.configbase import from_dict

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
MANIFESTS = sorted(CLUSTER.glob("ray*.yaml"))
IMAGE_ROOT = "/app"  # cluster/Dockerfile: WORKDIR /app, jobs/ copied to /app/jobs
GPU = "nvidia.com/gpu"


def _load(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1, f"{path.name}: one resource per file"
    return docs[0]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {p.name: _load(p) for p in MANIFESTS}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = yaml.safe_load((CLUSTER / "schemas" / "kuberay_v1_strict.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def launcher() -> dict:
    return _load(CLUSTER / "launcher-aws.yaml")


def _pinned_ray_version() -> str:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if re.match(r"ray\[", d)]
    return ray_dep.split("==")[1]


def _cluster_spec(resource: dict, manifests: dict) -> dict:
    """The RayClusterSpec a resource runs on: inline, or the RayCluster its clusterSelector names."""
    spec = resource["spec"]
    if resource["kind"] == "RayCluster":
        return spec
    if resource["kind"] == "RayService":
        return spec["rayClusterConfig"]
    if "rayClusterSpec" in spec:
        return spec["rayClusterSpec"]
    name = spec["clusterSelector"]["ray.io/cluster"]
    (cluster,) = [m for m in manifests.values() if m["kind"] == "RayCluster" and m["metadata"]["name"] == name]
    return cluster["spec"]


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _worker_groups(spec: dict) -> list[dict]:
    """Per worker group: GPUs and CPUs one pod offers Ray, and how many pods it may have."""
    groups = []
    for group in spec.get("workerGroupSpecs", []):
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        groups.append({
            "name": group["groupName"],
            "gpus": int(limits.get(GPU, 0)),
            "cpus": _cpus(limits["cpu"]),
            "max_pods": group["maxReplicas"],
        })
    return groups


def _gpu_slots(groups: list[dict], gpus_per_actor: float, cpus_per_actor: float) -> int:
    """How many actors of this shape fit on the groups at full scale (GPU pods only)."""
    slots = 0
    for g in groups:
        if g["gpus"] >= gpus_per_actor > 0 and g["cpus"] >= cpus_per_actor:
            per_pod = min(int(g["gpus"] // gpus_per_actor), int(g["cpus"] // max(cpus_per_actor, 1e-9)))
            slots += per_pod * g["max_pods"]
    return slots


def _entrypoint_job(entrypoint: str) -> tuple[Path, str, Path, list[str]]:
    python, job, config, *overrides = shlex.split(entrypoint)
    assert python == "python"
    assert job.startswith(f"{IMAGE_ROOT}/jobs/") and config.startswith(f"{IMAGE_ROOT}/jobs/configs/")
    job_path = REPO / Path(job).relative_to(IMAGE_ROOT)
    return job_path, job_path.stem, REPO / Path(config).relative_to(IMAGE_ROOT), overrides


def _check_stage_fits(stage: str, cfg, groups: list[dict], where: str) -> None:
    """The GPUs and CPUs a stage asks for exist in the cluster it runs on."""
    if stage == "annotate" and cfg.engine == "vllm":
        per_replica = cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size
        assert max(g["gpus"] for g in groups) >= per_replica, (
            f"{where}: tensor_parallel_size x pipeline_parallel_size = {per_replica} GPUs must fit one pod"
        )
        assert _gpu_slots(groups, per_replica, cfg.cpus_per_worker) >= cfg.num_workers, where
    if stage == "train" and cfg.use_gpu:
        assert _gpu_slots(groups, 1, cfg.cpus_per_worker) >= cfg.num_workers, (
            f"{where}: {cfg.num_workers} GPU workers with {cfg.cpus_per_worker} CPUs each do not fit"
        )
    if stage == "evaluate" and cfg.gpus_per_worker > 0:
        assert _gpu_slots(groups, cfg.gpus_per_worker, cfg.cpus_per_worker) >= cfg.num_workers, where
    if stage == "tune" and cfg.train.use_gpu:
        # one trial = its driver (1 CPU) + train.num_workers GPU workers
        need = cfg.max_concurrent_trials * cfg.train.num_workers
        assert _gpu_slots(groups, 1, cfg.train.cpus_per_worker + 1) >= need, where
    if stage == "serve" and cfg.num_gpus > 0:
        assert _gpu_slots(groups, cfg.num_gpus, cfg.num_cpus) >= cfg.max_replicas, where


# ---- shape and schema ----

def test_every_manifest_is_kuberay_v1(manifests):
    kinds = {name: m["kind"] for name, m in manifests.items()}
    assert {m["apiVersion"] for m in manifests.values()} == {"ray.io/v1"}
    assert kinds["raycluster.yaml"] == "RayCluster" and kinds["rayservice.yaml"] == "RayService"
    stages = {name.removeprefix("rayjob-").removesuffix(".yaml") for name, k in kinds.items() if k == "RayJob"}
    assert stages == {"annotate", "train", "evaluate", "tune", "pipeline"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_under_the_strict_schema(path, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_load(path))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "manifest, edit, field",
    [
        ("rayjob-pipeline.yaml", lambda m: m["spec"].__setitem__("shutdownAfterJobFinish", True), "shutdownAfterJobFinish"),
        ("rayservice.yaml", lambda m: m["spec"].__setitem__("rayClusterSpec", m["spec"]["rayClusterConfig"]), "rayClusterSpec"),
        ("raycluster.yaml", lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("maxReplica", 3), "maxReplica"),
        (
            "raycluster.yaml",
            lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("resource", {}),
            "resource",
        ),
    ],
    ids=["rayjob", "rayservice", "worker-group", "container"],
)
def test_strict_schema_rejects_misspelled_fields(manifests, validator, manifest, edit, field):
    broken = copy.deepcopy(manifests[manifest])
    edit(broken)
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any(field in m and "not allowed" in m for m in messages), messages


def test_strict_schema_rejects_a_wrong_kind_of_value(manifests, validator):
    broken = copy.deepcopy(manifests["rayjob-train.yaml"])
    broken["spec"]["submissionMode"] = "K8sJob"
    assert not validator.is_valid(broken)


# ---- RayJob rules the CRD states only in prose or CEL ----

@pytest.mark.parametrize("name", [p.name for p in MANIFESTS if p.name.startswith("rayjob-")])
def test_rayjob_rules(manifests, name):
    spec = manifests[name]["spec"]
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), "exactly one of rayClusterSpec, clusterSelector"
    if spec.get("ttlSecondsAfterFinished", 0) > 0:
        assert spec.get("shutdownAfterJobFinishes") is True, "ttlSecondsAfterFinished needs shutdownAfterJobFinishes"
    assert isinstance(spec["runtimeEnvYAML"], str), "runtimeEnvYAML is a YAML string, not a mapping"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict)
    # the code is in the image: a local working_dir would point at the submitter pod's filesystem
    assert "working_dir" not in runtime_env


@pytest.mark.parametrize("name", [p.name for p in MANIFESTS if p.name.startswith("rayjob-")])
def test_rayjob_entrypoint_runs_an_existing_job_with_a_config_that_loads(manifests, name):
    job, stage, config, overrides = _entrypoint_job(manifests[name]["spec"]["entrypoint"])
    assert job.is_file(), job
    assert name == f"rayjob-{stage}.yaml"
    assert config.is_file(), config
    load_stage_config(stage, config, overrides)


# ---- versions and images ----

def test_ray_version_is_one_everywhere(manifests, launcher):
    import ray

    pinned = _pinned_ray_version()
    assert ray.__version__ == pinned == "2.60.0"
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={pinned}" in dockerfile
    images = {launcher["docker"]["image"]}
    for name, m in manifests.items():
        spec = _cluster_spec(m, manifests)
        assert spec["rayVersion"] == pinned, name
        images |= {c["image"] for c in _containers(spec)}
    assert len(images) == 1, f"one image for every pod and node, got {images}"
    (image,) = images
    assert image.rsplit(":", 1)[1].count(f"ray{pinned}") == 1, f"the image tag must name ray {pinned}: {image}"


def test_dockerfile_puts_the_jobs_where_the_entrypoints_expect_them():
    lines = [line.split() for line in (CLUSTER / "Dockerfile").read_text().splitlines() if line.strip()]
    assert ["WORKDIR", IMAGE_ROOT] in lines
    assert ["COPY", "jobs", "jobs"] in lines and ["COPY", "ray_cotd", "ray_cotd"] in lines
    assert any(line[:1] == ["FROM"] for line in lines)
    text = (CLUSTER / "Dockerfile").read_text()
    assert "--extras vllm" in text  # the vllm extra (ray[llm]) is what the GPU teacher needs
    assert re.search(r"CUDA_IMAGE=nvidia/cuda:\S+", text)


# ---- resources agree with the configs they run ----

@pytest.mark.parametrize("name", [p.name for p in MANIFESTS if p.name.startswith("rayjob-")])
def test_rayjob_cluster_fits_its_config(manifests, name):
    _, stage, config, overrides = _entrypoint_job(manifests[name]["spec"]["entrypoint"])
    cfg = load_stage_config(stage, config, overrides)
    groups = _worker_groups(_cluster_spec(manifests[name], manifests))
    if stage == "pipeline":
        for section in ("annotate", "train", "evaluate", "serve"):
            _check_stage_fits(section, getattr(cfg, section), groups, f"{name} {section}")
    else:
        _check_stage_fits(stage, cfg, groups, name)


def test_tensor_parallel_teacher_needs_the_multi_gpu_group(manifests):
    """A negative control for the fit check: tp 8 does not fit 4-GPU teacher pods."""
    cfg = load_stage_config("annotate", REPO / "jobs/configs/cluster/annotate.yaml", ["vllm.tensor_parallel_size=8"])
    groups = _worker_groups(manifests["raycluster.yaml"]["spec"])
    with pytest.raises(AssertionError, match="must fit one pod"):
        _check_stage_fits("annotate", cfg, groups, "raycluster.yaml")


def test_every_cluster_uses_token_auth(manifests):
    for name, m in manifests.items():
        assert _cluster_spec(m, manifests)["authOptions"] == {"mode": "token"}, name


def test_head_runs_no_tasks(manifests):
    for name, m in manifests.items():
        assert _cluster_spec(m, manifests)["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", name


# ---- RayService ----

@pytest.fixture(scope="module")
def serve_config_v2(manifests) -> dict:
    text = manifests["rayservice.yaml"]["spec"]["serveConfigV2"]
    assert isinstance(text, str), "serveConfigV2 is a YAML string"
    return yaml.safe_load(text)


def test_serve_config_v2_is_a_valid_serve_config(serve_config_v2):
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config_v2)
    # Serve's schema allows unknown keys; ours must not have any
    for app in serve_config_v2["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields), set(app) - set(ServeApplicationSchema.model_fields)


def test_serve_app_matches_the_serve_run_config_and_the_stage_config(serve_config_v2):
    (app,) = serve_config_v2["applications"]
    (reference,) = _load(CLUSTER / "serve_config.yaml")["applications"]
    assert app["import_path"] == reference["import_path"] == "ray_cotd.serve:build_app"
    args = from_dict(ServeConfig, app["args"], where="args")  # what build_app does with them
    stage = load_stage_config("serve", REPO / "jobs/configs/cluster/serve.yaml")
    assert app["name"] == stage.app_name
    assert serve_config_v2["http_options"]["port"] == stage.port
    differing = {
        key for key in ServeConfig.__dataclass_fields__
        if key not in ("host", "port") and getattr(args, key) != getattr(stage, key)
    }
    assert not differing, f"rayservice.yaml args and jobs/configs/cluster/serve.yaml differ in {differing}"


def test_rayservice_cluster_fits_the_app_and_has_its_token(manifests, serve_config_v2):
    (app,) = serve_config_v2["applications"]
    cfg = from_dict(ServeConfig, app["args"], where="args")
    spec = manifests["rayservice.yaml"]["spec"]["rayClusterConfig"]
    _check_stage_fits("serve", cfg, _worker_groups(spec), "rayservice.yaml")
    if cfg.auth_token_env:  # build_app refuses to start when the variable is unset
        for container in _containers(spec):
            (env,) = [e for e in container["env"] if e["name"] == cfg.auth_token_env]
            assert "secretKeyRef" in env["valueFrom"] and not env["valueFrom"]["secretKeyRef"].get("optional")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_serve_configs_listen_beyond_loopback_only_with_a_token(serve_config_v2):
    """Issue 23: cluster/serve_config.yaml bound 0.0.0.0 with no token. A Serve config that
    listens on other interfaces names the env var of a bearer token, which build_app requires."""
    configs = {"serve_config.yaml": _load(CLUSTER / "serve_config.yaml"), "rayservice.yaml": serve_config_v2}
    for name, config in configs.items():
        host = config.get("http_options", {}).get("host", "127.0.0.1")  # Serve's default host
        for app in config["applications"]:
            token_env = from_dict(ServeConfig, app["args"], where="args").auth_token_env
            assert host in LOOPBACK or token_env, f"{name}: listens on {host} without auth_token_env"


# ---- cluster launcher ----

def test_launcher_validates_against_rays_schema(launcher):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)
    assert launcher["provider"]["type"] == "aws"
    assert launcher["head_node_type"] in launcher["available_node_types"]


def test_launcher_schema_check_catches_a_typo(launcher):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["student"]["max_worker"] = 8
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_launcher_nodes_fit_the_gpu_profile(launcher):
    cfg = load_stage_config("pipeline", REPO / "jobs/configs/gpu_cluster.yaml")
    groups = [
        {"name": name, "gpus": t["resources"].get("GPU", 0), "cpus": t["resources"].get("CPU", 0),
         "max_pods": t.get("max_workers", 0)}
        for name, t in launcher["available_node_types"].items() if name != launcher["head_node_type"]
    ]
    for section in ("annotate", "train", "evaluate", "serve"):
        _check_stage_fits(section, getattr(cfg, section), groups, f"launcher-aws.yaml {section}")
    assert launcher["max_workers"] >= sum(g["max_pods"] for g in groups)


# ---- local head script ----

def test_local_head_script_parses_and_stops_with_ray_stop():
    script = CLUSTER / "local_head.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    commands = [line.strip() for line in script.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
    assert any('"${RAY[@]}" stop' in line for line in commands)
    assert not any(re.search(r"\b(kill|pkill|killall)\b", line) for line in commands), "stop must use `ray stop`"
    assert any("--temp-dir=" in line for line in commands)
