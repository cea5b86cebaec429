"""The Ray shell: the Serve replica, the bound application, and `ray-cotd serve`.

`StudentService` is one replica: it builds the model backend (`hf.replica_backend`) and serves
`create_api` over it through `serve.ingress`. `app_from_config` turns a `ServeConfig` into a bound
Serve application; `build_app` is the same for `serve run` / `serve deploy` YAML
(`import_path: ray_cotd.serve:build_app`); `run_serve` is what `ray-cotd serve CONFIG` calls.
Replicas, autoscaling, concurrency, resources and the HTTP proxy are Serve's own settings, filled
from the config by `deployment_options` and `run_serve`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any, Optional

from fastapi import FastAPI

from ray_cotd.config import ConfigError, ServeConfig
from ray_cotd.configbase import from_dict, to_dict
from ray_cotd.ray_session import connect
from ray_cotd.serve import hf, vllm
from ray_cotd.serve.api import Backend, create_api

DEPLOYMENT_NAME = "StudentServer"
# ServeConfig.backend -> what builds a replica's model host (names.GENERATION_BACKENDS).
REPLICA_BACKENDS: dict[str, Callable[[ServeConfig], Backend]] = {
    "hf": hf.replica_backend,
    "vllm": vllm.replica_backend,
}


class StudentService:
    """One Serve replica: the model backend and the API over it.

    Deployed through `app_from_config`, which wraps this class with `serve.ingress()` (the app is
    built per replica by `__serve_build_asgi_app__`, so routes can reach this instance's backend).
    """

    def __init__(self, cfg_data: dict, token_sha256: Optional[str]) -> None:
        self.cfg: ServeConfig = from_dict(ServeConfig, cfg_data)
        self.token_sha256 = token_sha256
        self.backend = REPLICA_BACKENDS[self.cfg.backend](self.cfg)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.cfg, self.backend, token_sha256=self.token_sha256)


def token_digest(cfg: ServeConfig) -> str | None:
    """sha256 of the bearer token named by `cfg.auth_token_env`, read where the app is built.

    Only the digest travels to the replicas (and into Serve's stored deployment args), never the
    token. A named variable that is unset or empty is a ConfigError: auth silently off is worse.
    """
    if not cfg.auth_token_env:
        return None
    token = os.environ.get(cfg.auth_token_env, "").strip()
    if not token:
        raise ConfigError(f"auth_token_env: environment variable {cfg.auth_token_env} is unset or empty")
    return hashlib.sha256(token.encode()).hexdigest()


def deployment_options(cfg: ServeConfig) -> dict:
    """Serve deployment options from the config: replicas or autoscaling, concurrency, resources."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    }
    if cfg.max_replicas > cfg.num_replicas:
        options["autoscaling_config"] = {
            "min_replicas": cfg.num_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = cfg.num_replicas
    return options


def app_from_config(cfg: ServeConfig) -> Any:
    """A bound Serve application (pass to `serve.run`) serving `cfg.student`."""
    from ray import serve  # Ray call: the deployment

    deployment = serve.deployment(serve.ingress()(StudentService), **deployment_options(cfg))
    return deployment.bind(to_dict(cfg), token_digest(cfg))


def build_app(args: dict) -> Any:
    """Serve app builder for YAML `import_path: ray_cotd.serve:build_app`; `args` are ServeConfig keys."""
    return app_from_config(from_dict(ServeConfig, dict(args or {}), where="args"))


def run_serve(cfg: ServeConfig, *, blocking: bool = True) -> str:
    """Start Serve on cfg.host:cfg.port, deploy the student and return the base URL.

    blocking=True (the CLI) serves until Ctrl-C, then shuts Serve down. Uses the running Ray
    session, or joins the cluster RAY_ADDRESS names, or starts a local one (ray_session.connect).
    """
    from ray import serve

    from ray_cotd.lm.model import resolve_source, warn_if_objective_unrecorded

    # Fail here on a bad path rather than in every replica; also converts a GGUF once, not per replica.
    resolve_source(cfg.student)
    warn_if_objective_unrecorded(cfg.student)  # said once, in the terminal, not in each replica's log
    if cfg.backend == "vllm":  # a student vLLM cannot run, or an engine that cannot start, fails here
        from ray_cotd.lm.vllm import prepare_student

        prepare_student(cfg.student, cfg.vllm)  # merges a LoRA student (on CPU) once here, not in every replica
    token_digest(cfg)
    connect()  # [ray]
    # Serve's own timeout is a backstop above ours, so a normal timeout is our 503 with a reason.
    serve.start(http_options={"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s + 30})
    serve.run(app_from_config(cfg), name=cfg.app_name, route_prefix="/", blocking=False)
    url = f"http://{cfg.host}:{cfg.port}"
    if blocking:
        print(f"serving {cfg.model_name} at {url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url


__all__ = [
    "DEPLOYMENT_NAME",
    "StudentService",
    "app_from_config",
    "build_app",
    "deployment_options",
    "run_serve",
    "token_digest",
]
