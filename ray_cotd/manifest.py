"""Run manifests: what a stage read, what it wrote, with which versions and code.

Every stage directory under a pipeline run gets `manifest.json` beside `resolved_config.yaml`.
Inputs that are themselves stage outputs point at that stage's manifest, so a report traces back
through the student and its corpus to the teacher prompt templates that made the data.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from ray_cotd.configbase import save_resolved, to_dict

MANIFEST_NAME = "manifest.json"
_PACKAGES = ("ray-cotd", "ray", "torch", "transformers", "peft", "datasets", "optuna", "vllm")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(start: Path | None = None) -> str | None:
    """The checkout's commit (with '+dirty' when it has uncommitted changes), or None outside git."""
    cwd = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _describe(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    entry: dict[str, Any] = {"path": str(path), "exists": p.exists()}
    # The stage that produced this input: its directory, or the stage directory holding it
    # (annotate/corpus/ is an input of train; annotate/manifest.json describes it).
    for directory in ([p] if p.is_dir() else []) + [p.parent, p.parent.parent]:
        if (directory / MANIFEST_NAME).is_file():
            entry["manifest"] = str(directory / MANIFEST_NAME)
            break
    return entry


def write_manifest(
    stage_dir: str | Path,
    *,
    stage: str,
    config: Any,
    inputs: list[str | Path],
    outputs: list[str | Path],
    summary: dict | None = None,
    started: dt.datetime | None = None,
) -> Path:
    """Write `resolved_config.yaml` and `manifest.json` into `stage_dir`; return the manifest path."""
    directory = Path(stage_dir)
    directory.mkdir(parents=True, exist_ok=True)
    save_resolved(config, directory)
    now = dt.datetime.now(dt.timezone.utc)
    manifest = {
        "stage": stage,
        "started": (started or now).isoformat(),
        "finished": now.isoformat(),
        "inputs": [_describe(p) for p in inputs],
        "outputs": [str(p) for p in outputs],
        "config": to_dict(config),
        "summary": summary or {},
        "versions": package_versions(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    target = directory / MANIFEST_NAME
    target.write_text(json.dumps(manifest, indent=2, default=str))
    return target


__all__ = ["MANIFEST_NAME", "git_commit", "package_versions", "write_manifest"]
