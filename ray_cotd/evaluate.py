"""`ray-cotd evaluate`: score students and baselines on IND/OOD test sets; `ray-cotd report`.

    run_evaluate(cfg)
      1. prepare (no model runs yet): read every test set, check its mapped fields and that every
         gold reads as the set's answer type (given, or inferred from the golds: a gold that does
         not fit the inferred type is compared as text, and the report says how many did), apply
         the fixed hold-out split, resolve every model source. Bad input raises here, naming file,
         row and field.
      2. generate (Ray Data): one row per (system, test set, question); an actor pool whose actors
         hold Generators (ray_cotd.lm.generate) answers them in batches.
      3. faithfulness (two-stage only, in the same actors and batches): each question is answered
         again from the rationale of the next question of its set in its batch; the share of
         answers that change is reported beside accuracy. One pass, so one model load or vLLM
         engine start per actor, not two.
         Every answer is appended to OUTPUT_DIR/generated.jsonl as it comes back (GeneratedLog), so
         a run that is stopped or crashes resumes where it was: the next start with the same
         generation settings and model files reuses those answers and generates only the rest. The
         log is removed once the report is written.
      4. score and report (driver, plain functions): every answer scored by ray_cotd.scoring.score
         (the data layer's parser, as tune validation scores), one ray_cotd.scoring.Prediction per
         question, accuracy with Wilson 95% CIs, predictions/<system>/<set>.jsonl, report.json,
         report.md, accuracy.png (and faithfulness.png).

A "system" is a student, or a baseline on `baseline_model`: "untrained" (zero-shot, same prompt
as the students) or "few_shot" (demonstrations from assets/few_shot.json matching the set's answer
type). Unparseable outputs count as wrong and stay in the predictions with their parse_error.

`run_report(run_dirs, output_dir)` rebuilds the report of one or several earlier runs from their
report.json files, without generating anything.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from ray_cotd import dirlock
from ray_cotd.config import ConfigError, EvaluateConfig, ModelSpec, TestSetSpec, VLLMEngineSpec, save_resolved
from ray_cotd.configbase import to_dict
from ray_cotd.console import progress_bar, ray_data_bars_on_a_terminal_only
from ray_cotd.data.answers import ANSWER_TYPES, fit_answer_type, normalize_answer
from ray_cotd.data.choices import parse_choices
from ray_cotd.data.errors import DataError
from ray_cotd.data.readers import BadRow, read_questions, write_bad_rows
from ray_cotd.data.schema import stable_id
from ray_cotd.data.splits import SPLIT_KEY, HoldoutSplit, select_test_rows
from ray_cotd.lm.format import STAGE2_PREFIX, encode, student_prompt_ids
from ray_cotd.lm.generate import GenerationLimits, Generator
from ray_cotd.lm.model import (
    STUDENT_META,
    StudentRecordWarning,
    answers_through_label_task,
    check_model,
    context_length,
    load_model_and_tokenizer,
    load_prompt_encoder,
    load_tokenizer,
    read_student_meta,
    unrecorded_objective_warning,
)
from ray_cotd.metrics import accuracy, answer_change_rate, error_bars
from ray_cotd.names import BASELINES  # BASELINES: name -> whether its prompt carries few-shot demos
from ray_cotd.scoring import PROMPT_TOO_LONG, Prediction, read_predictions, score, scored_type, write_predictions
from ray_cotd.tracking import stage_run

SPLITS = ("IND", "OOD")


@dataclass(frozen=True)
class System:
    """One thing being scored: a student or a baseline, a model and whether it is prompted few-shot."""

    name: str
    kind: str  # "student" | "baseline"
    model: ModelSpec
    few_shot: bool


@dataclass
class EvalSet:
    """A prepared test set: its rows (question records) and the answer type its golds read as.

    answer_type_from: "config" (test_sets[].answer_type, every gold checked against it) or "golds"
    (inferred by data.answers.fit_answer_type). not_fitting: rows scored here whose gold does not
    read as answer_type (only when inferred); each record's "answer_type" is what it is scored as:
    the set's, or "text" for those rows.
    """

    name: str
    split: str
    path: str
    answer_type: str
    holdout: str
    records: list[dict[str, Any]]
    answer_type_from: str = "config"
    not_fitting: int = 0
    bad: list[BadRow] = field(default_factory=list)  # rows not scored (on_bad_row: skip), with why


# -- preparation: everything that can fail on bad input, before any model runs -----------------


def prepare_test_set(spec: TestSetSpec, *, holdout_fraction: float, split_seed: int,
                     on_bad_row: str = "raise") -> EvalSet:
    """Read and check one test set. A bad row (a mapped field missing or not text, no gold, a gold
    that is not of the given answer_type, options that name no gold, ...) raises DataError naming
    file, row and field, or with on_bad_row="skip" is left out and kept in EvalSet.bad with its
    reason. A file that cannot be read, or a set with no good row left, raises either way."""
    if not spec.path:
        raise ConfigError("test_sets[].path: empty")
    mapping = spec.mapping.field_mapping()
    skip = on_bad_row == "skip"
    result = read_questions(spec.path, mapping, on_bad="collect" if skip else "raise")
    gold_field = result.mapping.gold or result.mapping.answer if result.mapping else None
    if gold_field is None and result.mapping is not None:
        raise DataError("the field mapping names no gold (or answer) column", path=spec.path, field="gold")
    bad = list(result.bad)

    def reject(record: dict[str, Any], reason: str, message: str) -> None:
        if not skip:
            raise DataError(message, path=spec.path, row=record["row"], field=gold_field)
        bad.append(BadRow(spec.path, record["row"], gold_field, reason, {"question": record["question"],
                                                                         "gold": record["gold"]}))

    records = []
    for record in result.records:
        if record["gold"] is None:
            reject(record, "no_gold", "no gold answer (empty)")
        else:
            records.append(record)
    # Inferred, the set's type is the one most golds read as (never text without a word when most
    # have a type: issue 19's ARC set of "(C)" and "(2)" golds was text); a gold that does not fit
    # it is compared as text, counted and reported. Given, every gold must read as it.
    answer_type = spec.answer_type or fit_answer_type(r["gold"] for r in records).answer_type
    typed = []
    for record in records:
        record["answer_type"] = scored_type(record["gold"], answer_type)
        if record["answer_type"] != answer_type and spec.answer_type is not None:
            reject(record, f"gold_not_{answer_type}", f"gold {record['gold']!r} is not a {answer_type} answer "
                                                      "(answer_type)")
        else:
            typed.append(record)
    records = select_test_rows(typed, holdout=spec.holdout, test_fraction=holdout_fraction, seed=split_seed,
                               offset=spec.offset, limit=spec.limit)
    first = f"row {bad[0].row}, field {bad[0].field!r}: {bad[0].reason}" if bad else ""
    if not records:
        raise DataError(f"no rows to evaluate (holdout={spec.holdout}, offset={spec.offset}, limit={spec.limit}"
                        + (f"; {len(bad)} bad rows left out, the first: {first}" if bad else "") + ")", path=spec.path)
    if bad:
        warnings.warn(f"{spec.path}: {len(bad)} bad rows left out (first: {first}); they are listed in the "
                      "output's bad_rows.jsonl", stacklevel=2)
    not_fitting = sum(1 for r in records if r["answer_type"] != answer_type)
    if not_fitting:
        warnings.warn(f"{spec.path}: scored as {answer_type} (inferred from the golds); {not_fitting} of "
                      f"{len(records)} golds are not {answer_type} answers and are compared as text", stacklevel=2)
    return EvalSet(spec.set_name(), spec.split, spec.path, answer_type, spec.holdout, records,
                   answer_type_from="config" if spec.answer_type else "golds", not_fitting=not_fitting, bad=bad)


def _student_name(spec: ModelSpec) -> str:
    if spec.adapter:
        return Path(spec.adapter).name
    return "default-student" if spec.source == "default" else Path(spec.source).name


def student_record(spec: ModelSpec, split: HoldoutSplit, *, test_side: bool) -> dict[str, Any] | None:
    """What a student's directory (its adapter, else a local source) records of its training, checked
    against this evaluation: the hold-out split it was trained beside and its objective. None for a
    model with no local directory (a hub id, "default").

    Raises ConfigError naming the directory and both splits when `test_side` (a test set scores
    `holdout: test`) and the student was trained beside another split: under it some of those test
    rows were training rows. A directory that records no split or no objective (no student.json, or
    one written before they were recorded) is read with a StudentRecordWarning naming what is assumed.
    """
    directory = next((Path(d) for d in (spec.adapter, spec.source) if d and Path(d).is_dir()), None)
    if directory is None:
        return None
    meta = read_student_meta(directory) or {}
    record: dict[str, Any] = {"student_dir": str(directory), "objective": meta.get("objective"), SPLIT_KEY: None}
    if message := unrecorded_objective_warning(directory, meta.get("objective")):
        warnings.warn(message, StudentRecordWarning, stacklevel=2)
    if SPLIT_KEY in meta:
        trained = HoldoutSplit.from_dict(meta[SPLIT_KEY], path=directory / STUDENT_META)
        record[SPLIT_KEY] = trained.as_dict()
        if test_side and trained != split:
            raise ConfigError(
                f"students: {directory} was trained beside the hold-out split ({trained}) but holdout: test would "
                f"score it on the test side of another ({split}), some of whose rows it trained on. Set split_seed "
                "and holdout_fraction to the student's, or score it on a set it never saw (holdout: all)")
    elif test_side:
        warnings.warn(f"{directory} records no hold-out split in {STUDENT_META} (made before splits were recorded): "
                      f"assumed trained beside this evaluation's ({split}); its holdout: test rows are not checked",
                      StudentRecordWarning, stacklevel=2)
    return record


def build_systems(cfg: EvaluateConfig) -> list[System]:
    names = cfg.student_names or [_student_name(s) for s in cfg.students]
    systems = [System(n, "student", s, False) for n, s in zip(names, cfg.students)]
    systems += [System(b, "baseline", cfg.baseline_model, BASELINES[b]) for b in cfg.baselines]
    seen = [s.name for s in systems]
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    if dupes:
        raise ConfigError(f"student_names: duplicate system names {dupes}; name the students explicitly")
    return systems


def load_few_shot(path: str | None = None) -> dict[str, list[tuple[str, str, str]]]:
    """answer type -> (question, rationale, answer) demonstrations."""
    if path is None:
        text = resources.files("ray_cotd").joinpath("assets/few_shot.json").read_text(encoding="utf-8")
        source = "ray_cotd/assets/few_shot.json"
    else:
        text, source = Path(path).read_text(encoding="utf-8"), path
    data = json.loads(text)
    demos = {}
    for answer_type in ANSWER_TYPES:
        items = data.get(answer_type, [])
        for i, item in enumerate(items):
            missing = [k for k in ("question", "rationale", "answer") if not isinstance(item.get(k), str)]
            if missing:
                raise DataError("few-shot item lacks a text field", path=source, row=f"{answer_type}[{i}]",
                                field=missing[0])
        demos[answer_type] = [(it["question"], it["rationale"], it["answer"]) for it in items]
    return demos


def fit_prompts(questions: list[tuple[System, EvalSet, int, dict[str, Any]]], cfg: EvaluateConfig,
                demos: dict[str, list[tuple[str, str, str]]]) -> dict[int, int]:
    """Index (into `questions`: (system, set, position, record)) -> prompt tokens of every question
    whose generation cannot fit its system's context, in tokens: the stage-1 prompt as the student is
    fed it (its chat template, few-shot demonstrations, label-task prefix and P-Tuning virtual tokens,
    as Generator.prompt_ids builds it) + max_rationale_tokens + the answer marker + max_answer_tokens,
    against lm.model.context_length (the engine's vllm.max_model_len on the vLLM backend).

    Such a question is not generated: one 1 MB question made evaluation allocate 32 GB and die
    (issue 23). It is scored wrong with parse_error PROMPT_TOO_LONG instead (too_long_prediction).
    """
    room = cfg.max_rationale_tokens + cfg.max_answer_tokens
    per_system: dict[str, tuple[Any, int | None, int, bool]] = {}
    too_long = {}
    for i, (system, ts, _, record) in enumerate(questions):
        if system.name not in per_system:
            tokenizer, encoder = load_tokenizer(system.model), load_prompt_encoder(system.model)
            virtual = encoder.config.num_virtual_tokens if encoder is not None else 0
            extra = room + len(encode(tokenizer, STAGE2_PREFIX)) + virtual
            limit = context_length(system.model, cfg.vllm.max_model_len if cfg.backend == "vllm" else None)
            per_system[system.name] = (tokenizer, limit, extra, answers_through_label_task(system.model))
        tokenizer, limit, extra, label_task = per_system[system.name]
        if limit is None:  # the model's config names no context length: nothing to check against
            continue
        few_shot = demos.get(ts.answer_type) if system.few_shot else None
        tokens = len(student_prompt_ids(tokenizer, record["question"], few_shot=few_shot or None,
                                        label_task=label_task))
        if tokens + extra > limit:
            too_long[i] = tokens
    return too_long


def too_long_prediction(system: System, ts: EvalSet, position: int, record: dict[str, Any],
                        prompt_tokens: int) -> Prediction:
    """The Prediction of a question fit_prompts kept from the model: no text, scored wrong."""
    return Prediction(
        system=system.name, test_set=ts.name, split=ts.split, position=position, row=record["row"], id=record["id"],
        question=record["question"], gold=record["gold"], rationale="", answer_text="", predicted=None,
        correct=False, parse_error=PROMPT_TOO_LONG, rationale_stop=PROMPT_TOO_LONG, prompt_tokens=prompt_tokens,
        rationale_tokens=0, answer_tokens=0, stage1_s=0.0, stage2_s=0.0,
    )


# -- scoring (ray_cotd.scoring.score) and summaries: plain functions -----------------------------


def question_choices(record: dict[str, Any]) -> list[str] | None:
    """The labels of the options a multiple-choice question lists in its text ("A: ...", "(B) ...",
    "(1) ..."; ray_cotd.data.choices), which stage 2 can be constrained to; None for other questions."""
    if record.get("answer_type") != "multiple_choice":
        return None
    options = parse_choices(record["question"])
    return list(options) if options else None


def constrained_score(pick: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """Prediction's constrained fields: the choice picked at the answer position and whether it is
    the gold (both None when the question lists no choices)."""
    if pick is None:
        return {"constrained_predicted": None, "constrained_correct": None}
    return {"constrained_predicted": pick,
            "constrained_correct": normalize_answer(pick, "multiple_choice") == normalize_answer(record["gold"],
                                                                                                  "multiple_choice")}


def summarize(predictions: list[Prediction], systems: list[str], sets: list[EvalSet]) -> list[dict[str, Any]]:
    """One result per (system, test set): accuracy with CI, unparseable count, faithfulness."""
    results = []
    for system in systems:
        for ts in sets:
            rows = [p for p in predictions if p.system == system and p.test_set == ts.name]
            if not rows:
                continue
            swapped = [p for p in rows if p.answer_changed is not None]
            results.append({
                "system": system,
                "test_set": ts.name,
                "split": ts.split,
                "answer_type": ts.answer_type,
                "accuracy": accuracy([p.correct for p in rows]).to_dict(),
                "unparseable": sum(1 for p in rows if p.parse_error is not None),
                # constrained to the choices the question lists, on the rows that list them (else None)
                "constrained_accuracy": (accuracy([p.constrained_correct for p in constrained]).to_dict()
                                         if (constrained := [p for p in rows if p.constrained_correct is not None])
                                         else None),
                "faithfulness": (
                    answer_change_rate([p.predicted for p in swapped], [p.swapped_predicted for p in swapped]).to_dict()
                    if len(swapped) >= 2 else None
                ),
                "mean_rationale_tokens": sum(p.rationale_tokens for p in rows) / len(rows),
                "mean_answer_tokens": sum(p.answer_tokens for p in rows) / len(rows),
                "predictions": f"predictions/{system}/{ts.name}.jsonl",
            })
    return results


def split_summary(predictions: list[Prediction], systems: list[str]) -> dict[str, dict[str, Any]]:
    """system -> split -> accuracy pooled over every row of that split's test sets."""
    out: dict[str, dict[str, Any]] = {}
    for system in systems:
        out[system] = {}
        for split in SPLITS:
            flags = [p.correct for p in predictions if p.system == system and p.split == split]
            if flags:
                out[system][split] = accuracy(flags).to_dict()
    return out


def with_swap(p: Prediction, g: dict[str, Any], answer_type: str, donor_position: Callable[[int], int]) -> Prediction:
    """`p` with its faithfulness swap, scored as `p` was (`answer_type`): GenerateActor answered it
    again from the rationale of row g["swapped_from_index"] (at donor_position(row) in its set).
    `p` itself when it was not swapped."""
    donor = int(g.get("swapped_from_index", -1))
    if donor < 0:
        return p
    again = score(g["swapped_answer_text"], p.gold, answer_type, question=p.question)
    return replace(p, swapped_from=donor_position(donor), swapped_predicted=again["predicted"],
                   answer_changed=again["predicted"] != p.predicted)


# -- resume: the answers generated so far ------------------------------------------------------


GENERATED_LOG = "generated.jsonl"
BAD_ROWS = "bad_rows.jsonl"  # test rows left out as bad input (on_bad_row: skip), with file, row, field, reason


def model_fingerprint(spec: ModelSpec) -> list[list[Any]]:
    """[name, size, mtime_ns] of the local files a model spec loads (its source and adapter, a file
    or a directory's top level): a student retrained into the same directory gets another one."""
    found = []
    for location in (spec.source, spec.adapter):
        path = Path(location) if location else None
        if path is None or not path.exists():
            continue
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        found += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return found


def system_key(system: System) -> str:
    """What a system's answers depend on: its name, model spec, the spec's files and few-shot or not
    (computed once per system: the files are stat'ed here)."""
    return stable_id(system.name, json.dumps(asdict(system.model), sort_keys=True),
                     json.dumps(model_fingerprint(system.model)), str(system.few_shot))


def answer_key(system: str, row: dict[str, Any]) -> str:
    """What one generated answer depends on besides the run's settings: its system's key, and the
    generate row's test set, question and choices."""
    return stable_id(system, row["test_set"], row["question"], row["choices"])


def generation_settings(cfg: EvaluateConfig, demos: dict) -> str:
    """A key of the settings every answer of a run is generated under; another key, another run."""
    settings = {"mode": cfg.mode, "max_rationale_tokens": cfg.max_rationale_tokens,
                "max_answer_tokens": cfg.max_answer_tokens, "backend": cfg.backend,
                "vllm": asdict(cfg.vllm), "faithfulness": cfg.faithfulness, "demos": demos}
    if cfg.backend == "vllm":
        settings["lora_merged"] = lora_merged(cfg)
    return stable_id(json.dumps(settings, sort_keys=True))


def lora_merged(cfg: EvaluateConfig) -> bool | None:
    """On vLLM, whether LoRA students run from merged weights (what vllm.lora "auto" chose on this
    machine); None on the HF backend, which applies the adapter."""
    if cfg.backend != "vllm":
        return None
    from ray_cotd.lm.vllm import merges_lora

    return merges_lora(cfg.vllm)


def _plain(value: Any) -> Any:
    """A numpy scalar (Ray Data may hand them back) as the Python value JSON can write."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class GeneratedLog:
    """OUTPUT_DIR/generated.jsonl: a header line with the run's settings key, then one line per
    answer generated, {"key": answer_key, "result": GenerateActor's result}. A line cut short by a
    crash is skipped; a log written under other settings is started afresh. A faithfulness swap is
    kept as the donor's key, so it survives a changed row order (another limit or offset)."""

    def __init__(self, path: Path, settings: str) -> None:
        self.path, self.settings = path, settings
        self.file: Any = None

    def load(self) -> dict[str, dict[str, Any]]:
        """key -> result of every answer logged under these settings ({} without a usable log)."""
        if not self.path.is_file():
            return {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if header.get("settings") != self.settings:
            print(f"[evaluate] {self.path} was written under other generation settings or models: not reused",
                  flush=True)
            self.path.unlink()
            return {}
        done = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:  # the last line of a run that was killed while writing it
                continue
            done[entry["key"]] = entry["result"]
        return done

    def open(self) -> None:
        fresh = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a", encoding="utf-8")
        if fresh:
            self.file.write(json.dumps({"settings": self.settings}) + "\n")
        elif not self.path.read_bytes().endswith(b"\n"):
            self.file.write("\n")  # after a line cut short, start a new one
        self.file.flush()

    def append(self, key: str, result: dict[str, Any], donor_key: str | None) -> None:
        entry = {k: v for k, v in result.items() if k not in ("index", "swapped_from_index")}
        self.file.write(json.dumps({"key": key, "result": {**entry, "swapped_from_key": donor_key}},
                                   default=_plain) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


# -- the Ray shell ------------------------------------------------------------------------------


class GenerateActor:
    """Ray Data actor: holds one loaded model per distinct ModelSpec and a Generator per
    (system, few-shot answer type); answers a pandas batch of rows of any systems and sets.

    Each row carries an "index" that comes back with its result (Ray Data returns rows in no
    particular order), and its "test_set". With `faithfulness` (two-stage only), once a batch's
    questions are answered, each one of a (system, test set) with two or more rows in the batch is
    answered again from the rationale of the next such row (the last from the first's): its result's
    "swapped_from_index" is that row's index and "swapped_answer_text" the new answer (else -1 and
    ""), and "swap_s" its share of the swap's wall time. The swap runs in the same actor as the
    answers, so no second model load or engine start. Batches made by `batches_by_set` never split
    a set so that a question is left alone: every question of a set of two or more is swapped.
    A batch whose only column is "batch" holds such batches as JSON, one per row (how Ray Data
    feeds them: `_run_actor_pool`).
    """

    def __init__(self, systems: list[dict], mode: str, limits: dict, demos: dict, threads: int, use_gpu: bool,
                 backend: str = "hf", vllm: dict | None = None, faithfulness: bool = False) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.backend = backend
        self.vllm_engines: Any = None
        if backend == "vllm":  # engines per lm.vllm.VLLMEngines: merged LoRA students on CPU, LoRA requests on GPU
            from ray_cotd.lm.vllm import VLLMEngines

            self.vllm_engines = VLLMEngines(VLLMEngineSpec(**(vllm or {})),
                                            [ModelSpec(**s["model"]) for s in systems])
        self.device = "cuda" if use_gpu else "cpu"
        self.systems = {s["name"]: s for s in systems}
        self.mode = mode
        self.faithfulness = faithfulness and mode == "two_stage"
        self.limits = GenerationLimits(**limits)
        self.demos = demos
        self.models: dict[str, tuple[Any, Any, Any]] = {}  # model, tokenizer, prompt encoder or None
        self.generators: dict[tuple[str, str | None], Any] = {}

    def close(self) -> None:
        """Stop the vLLM engines now (an in-process engine holds its memory until stopped, or until
        another starts in this process); a caller that goes on in this process calls it."""
        if self.vllm_engines is not None:
            self.vllm_engines.close()

    def generator(self, system: str, answer_type: str) -> Any:
        info = self.systems[system]
        demo_type = answer_type if info["few_shot"] else None
        if self.vllm_engines is not None:  # it keeps the generators of the engines it holds
            demos = [tuple(d) for d in self.demos.get(demo_type, [])] if demo_type else None
            return self.vllm_engines.generator(ModelSpec(**info["model"]), few_shot=demos or None)
        key = (system, demo_type)
        if key not in self.generators:
            model_key = json.dumps(info["model"], sort_keys=True)
            if model_key not in self.models:
                spec = ModelSpec(**info["model"])
                model, tokenizer = load_model_and_tokenizer(spec)
                encoder = load_prompt_encoder(spec)  # a P-Tuning student's virtual tokens, as in training
                self.models[model_key] = (model.to(self.device), tokenizer,
                                          encoder.to(self.device) if encoder is not None else None)
            model, tokenizer, encoder = self.models[model_key]
            demos = [tuple(d) for d in self.demos.get(demo_type, [])] if demo_type else None
            self.generators[key] = Generator(model, tokenizer, few_shot=demos or None, prompt_encoder=encoder)
        return self.generators[key]

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        if list(batch.columns) == ["batch"]:
            # answer() and not self(): Ray Data runs __call__ on one thread of its own, and calling
            # through it again from that thread waits for itself forever
            return pd.concat([self.answer(pd.DataFrame(json.loads(b))) for b in batch["batch"]], ignore_index=True)
        return self.answer(batch)

    def answer(self, batch: Any) -> Any:
        """The results of one batch of rows (a pandas DataFrame), as a DataFrame."""
        import pandas as pd

        out: dict[int, dict[str, Any]] = {}
        for (system, answer_type), group in batch.groupby(["system", "answer_type"], sort=False):
            gen = self.generator(system, answer_type)
            questions = list(group["question"])
            if self.mode == "two_stage":
                choices = [json.loads(c) for c in group["choices"]] if "choices" in group else None
                results = gen.two_stage(questions, self.limits, choices)
            else:
                results = gen.one_stage(questions, self.limits)
            for index, result in zip(group["index"], results):
                out[index] = {"index": index, **asdict(result), "swapped_from_index": -1, "swapped_answer_text": "",
                              "swap_s": 0.0}
            if self.faithfulness:
                for _, same_set in group.groupby("test_set", sort=False):
                    self.swap_rationales(gen, list(same_set["index"]), list(same_set["question"]), out)
        return pd.DataFrame(list(out.values()))

    def swap_rationales(self, gen: Any, indices: list[int], questions: list[str], out: dict[int, dict]) -> None:
        """Answer each question again from the next one's rationale (cyclic); write it into `out`."""
        if len(indices) < 2:  # a question alone in its batch has no other rationale here: not swapped
            return
        donors = indices[1:] + indices[:1]
        started = time.perf_counter()
        swapped = gen.answer_from_rationales(questions, [out[d]["rationale"] for d in donors], self.limits)
        share = (time.perf_counter() - started) / len(indices)
        for index, donor, result in zip(indices, donors, swapped):
            out[index].update(swapped_from_index=int(donor), swapped_answer_text=result.answer_text, swap_s=share)


def actor_kwargs(cfg: EvaluateConfig, systems: list[System], demos: dict) -> dict[str, Any]:
    """GenerateActor's constructor arguments for `cfg` (plain data: they travel to Ray actors)."""
    limits = GenerationLimits(max_rationale_tokens=cfg.max_rationale_tokens, max_answer_tokens=cfg.max_answer_tokens)
    return {
        "systems": [{"name": s.name, "model": asdict(s.model), "few_shot": s.few_shot} for s in systems],
        "mode": cfg.mode,
        "limits": asdict(limits),
        "demos": {k: [list(d) for d in v] for k, v in demos.items()},
        "threads": int(cfg.cpus_per_worker),
        "use_gpu": cfg.gpus_per_worker > 0,
        "backend": cfg.backend,
        "vllm": asdict(cfg.vllm),
        "faithfulness": cfg.faithfulness,
    }


def batches_by_set(rows: list[dict], size: int) -> list[list[dict]]:
    """`rows` (in order) cut into GenerateActor batches of up to `size` rows of one system and test
    set each; a last piece of one row joins the batch before it (size + 1 rows), so that every
    question of a set of two or more has another rationale in its batch to be answered from."""
    batches: list[list[dict]] = []
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and (rows[end]["system"], rows[end]["test_set"]) == (rows[start]["system"],
                                                                               rows[start]["test_set"]):
            continue
        group = rows[start:end]  # one (system, test set)
        pieces = [group[i : i + size] for i in range(0, len(group), size)]
        if len(pieces) > 1 and len(pieces[-1]) == 1:
            pieces[-2:] = [pieces[-2] + pieces[-1]]
        batches.extend(pieces)
        start = end
    return batches


# generate(rows, cfg, systems, demos, desc, on_result) -> one GenerateActor result per row, in row order;
# on_result(result) is called for each as it comes back (GeneratedLog writes it)
GenerateFn = Callable[[list[dict], EvaluateConfig, list[System], dict, str, Callable[[dict], None]], list[dict]]


def _run_actor_pool(rows: list[dict], cfg: EvaluateConfig, systems: list[System], demos: dict,
                    desc: str = "evaluate", on_result: Callable[[dict], None] = lambda result: None) -> list[dict]:
    """One Ray Data pass of GenerateActor over `rows` (row i has "index": i); the results in row order,
    counted on a progress bar and handed to `on_result` as they come back."""
    import ray.data

    from ray_cotd.ray_session import connect

    if not rows:  # every question was too long for its model (fit_prompts)
        return []
    # The job's session (ray_session.connect), not the bare ray.init Ray Data would make: that one
    # starts a cluster without the job's runtime env, so its actors would run without the worker
    # hook (ray_cotd.worker_hooks) and without the address that Train's cleanup relies on.
    connect()  # [ray]
    ds = ray.data.from_items([{"batch": json.dumps(b)} for b in batches_by_set(rows, cfg.batch_size)])
    ds = ds.map_batches(
        GenerateActor,
        fn_constructor_kwargs=actor_kwargs(cfg, systems, demos),
        batch_size=1,  # one batches_by_set batch per call
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker,
    )
    by_index = {}
    with ray_data_bars_on_a_terminal_only(), progress_bar(len(rows), desc, "answer") as bar:
        for result in ds.iter_rows():
            by_index[int(result["index"])] = result
            on_result(result)
            bar.update(1)
    missing = [row for row in rows if row["index"] not in by_index]
    if missing:
        raise RuntimeError(f"{len(missing)} rows came back without a generation (first: {missing[0]})")
    return [by_index[row["index"]] for row in rows]


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate every system on every test set; write the report; return report.json's content.
    With `mlflow: true`, one MLflow run holds the config, the accuracies, the report and its plots."""
    with stage_run(cfg.mlflow, cfg.mlflow_uri, cfg.output_dir, "evaluate", parent_run_id=cfg.mlflow_parent_run_id,
                   params=to_dict(cfg)) as run:
        report = evaluate_systems(cfg)
        run.log_metrics(report_metrics(report))
        out_dir = Path(cfg.output_dir)
        for name in ("report.md", "report.json", "accuracy.png", "faithfulness.png", "unparseable.jsonl", BAD_ROWS):
            run.log_artifact(out_dir / name)
        run.log_artifact(out_dir / "predictions", "predictions")
    return report


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat MLflow metrics: accuracy/<system>/<set> (and its CI bounds and
    the pooled all_IND / all_OOD), faithfulness/<system>/<set>."""
    metrics: dict[str, float] = {}
    for r in report["results"]:
        cells = {"accuracy": r["accuracy"], "faithfulness": r["faithfulness"]}
        for kind, rate in cells.items():
            if rate is not None:
                key = f"{kind}/{r['system']}/{r['test_set']}"
                metrics.update({key: rate["rate"], f"{key}/ci_low": rate["ci_low"], f"{key}/ci_high": rate["ci_high"]})
    for system, splits in report["splits"].items():
        for split, rate in splits.items():
            metrics[f"accuracy/{system}/all_{split}"] = rate["rate"]
    return metrics


def evaluate_systems(cfg: EvaluateConfig, generate: GenerateFn = _run_actor_pool) -> dict[str, Any]:
    """run_evaluate without tracking: prepare, generate, score, write the report; report.json's content.
    `generate` runs GenerateActor over rows: a Ray Data actor pool by default (studies/gpu_run.py passes
    one that calls it in its own process)."""
    if not cfg.test_sets:
        raise ConfigError("test_sets: give at least one test set")
    # 1. prepare: all bad input fails here, before any model generates
    sets = [prepare_test_set(ts, holdout_fraction=cfg.holdout_fraction, split_seed=cfg.split_seed,
                             on_bad_row=cfg.on_bad_row) for ts in cfg.test_sets]
    set_names = [ts.name for ts in sets]
    if len(set(set_names)) != len(set_names):
        raise ConfigError(f"test_sets: duplicate names {set_names}; set test_sets[].name")
    systems = build_systems(cfg)
    for system in systems:
        check_model(system.model)
    # a student is scored on a split's test side only under the split it was trained beside
    split, test_side = HoldoutSplit(cfg.split_seed, cfg.holdout_fraction), any(ts.holdout == "test" for ts in sets)
    student_records = {s.name: student_record(s.model, split, test_side=test_side)
                       for s in systems if s.kind == "student"}
    if cfg.backend == "vllm":  # a student vLLM cannot run, or an engine that cannot start, fails here
        from ray_cotd.lm.vllm import prepare_student

        for system in systems:
            prepare_student(system.model, cfg.vllm)  # merges a LoRA student once here, not in every actor
    demos = load_few_shot(cfg.few_shot_file)
    for ts in sets:
        if any(s.few_shot for s in systems) and not demos.get(ts.answer_type):
            raise DataError(f"no few-shot demonstrations for answer type {ts.answer_type!r}",
                            path=cfg.few_shot_file or "ray_cotd/assets/few_shot.json", field=ts.answer_type)
    out_dir = Path(cfg.output_dir)
    with dirlock.hold(out_dir, "evaluate"):  # one run per output directory: its answer log is the run's own
        save_resolved(cfg, out_dir)
        return _generate_and_report(cfg, generate, sets, systems, demos, student_records, out_dir)


def _generate_and_report(cfg: EvaluateConfig, generate: GenerateFn, sets: list[EvalSet], systems: list[System],
                         demos: dict, student_records: dict[str, dict | None], out_dir: Path) -> dict[str, Any]:
    """evaluate_systems' steps 2-4, on prepared sets and checked systems, holding out_dir."""
    # 2. generate: one row per (system, test set, question), in this order
    questions = [(system, ts, position, record) for system in systems for ts in sets
                 for position, record in enumerate(ts.records)]
    too_long = fit_prompts(questions, cfg, demos)  # never generated: scored wrong as prompt_too_long
    fitting = [q for i, q in enumerate(questions) if i not in too_long]
    rows = [{"index": i, "system": system.name, "test_set": ts.name, "answer_type": ts.answer_type,
             "question": record["question"], "choices": json.dumps(question_choices(record))}
            for i, (system, ts, _, record) in enumerate(questions)]
    system_keys = {s.name: system_key(s) for s in systems}
    keys = [answer_key(system_keys[row["system"]], row) for row in rows]
    log = GeneratedLog(out_dir / GENERATED_LOG, generation_settings(cfg, demos))
    done = log.load()  # answers of an earlier start of this run that stopped before its report
    todo = [row for row in rows if row["index"] not in too_long and keys[row["index"]] not in done]
    reused_n = len(rows) - len(too_long) - len(todo)
    if reused_n:
        print(f"[evaluate] resuming: {reused_n} answers from an earlier start, {len(todo)} to generate", flush=True)

    def logged(result: dict) -> None:
        donor = int(result.get("swapped_from_index", -1))
        log.append(keys[int(result["index"])], result, keys[donor] if donor >= 0 else None)

    started = time.perf_counter()
    log.open()
    try:
        fresh = {int(g["index"]): g for g in generate(todo, cfg, systems, demos, "evaluate", logged)}
    finally:
        log.close()
    generate_s = time.perf_counter() - started
    index_of = {key: i for i, key in enumerate(keys) if i not in too_long}
    generated = [fresh[i] if i in fresh else reused(done[keys[i]], i, index_of)
                 for i in range(len(questions)) if i not in too_long]
    predictions = [
        with_swap(Prediction(
            system=system.name, test_set=ts.name, split=ts.split, position=position, row=record["row"],
            id=record["id"], question=record["question"], gold=record["gold"], rationale=g["rationale"],
            answer_text=g["answer_text"],
            **score(g["answer_text"], record["gold"], record["answer_type"], question=record["question"],
                    accepted=record.get("accepted", ())),
            rationale_stop=g["rationale_stop"], prompt_tokens=int(g["prompt_tokens"]),
            rationale_tokens=int(g["rationale_tokens"]), answer_tokens=int(g["answer_tokens"]),
            stage1_s=float(g["stage1_s"]), stage2_s=float(g["stage2_s"]),
            **constrained_score(g["constrained_answer"], record),
        ), g, record["answer_type"], lambda row: questions[row][2])
        for (system, ts, position, record), g in zip(fitting, generated)
    ]
    if too_long:  # back in question order, so each predictions file keeps its set's order
        place = {(s.name, ts.name, position): i for i, (s, ts, position, _) in enumerate(questions)}
        predictions = sorted(predictions + [too_long_prediction(*questions[i], n) for i, n in too_long.items()],
                             key=lambda p: place[(p.system, p.test_set, p.position)])

    # 4. score and report (3, the faithfulness swaps, ran inside generate)
    system_names = [s.name for s in systems]
    for system in system_names:
        for ts in sets:
            write_predictions(out_dir / "predictions" / system / f"{ts.name}.jsonl",
                              [p for p in predictions if p.system == system and p.test_set == ts.name])
    # unparseable outputs are wrong answers, kept in the predictions; this file gathers them for reading
    write_predictions(out_dir / "unparseable.jsonl", [p for p in predictions if p.parse_error is not None])
    (out_dir / BAD_ROWS).unlink(missing_ok=True)  # this run's, not an earlier one's
    if any(ts.bad for ts in sets):
        write_bad_rows([b for ts in sets for b in ts.bad], out_dir / BAD_ROWS)
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dirs": [str(out_dir)],
        "mode": cfg.mode,
        "limits": {"max_rationale_tokens": cfg.max_rationale_tokens, "max_answer_tokens": cfg.max_answer_tokens},
        # how the answers were generated: the backend, and on vLLM whether LoRA students ran merged
        "generation": {"backend": cfg.backend, "lora_merged": lora_merged(cfg)},
        "systems": [{"name": s.name, "kind": s.kind, "model": asdict(s.model), "few_shot": s.few_shot,
                     SPLIT_KEY: (student_records.get(s.name) or {}).get(SPLIT_KEY)} for s in systems],
        "test_sets": [{"name": ts.name, "split": ts.split, "path": ts.path, "answer_type": ts.answer_type,
                       "answer_type_from": ts.answer_type_from, "golds_not_fitting": ts.not_fitting,
                       "holdout": ts.holdout, "n": len(ts.records), "bad_rows": len(ts.bad)} for ts in sets],
        "results": summarize(predictions, system_names, sets),
        "splits": split_summary(predictions, system_names),
        "throughput": {"questions": len(rows), "generated": len(todo), "reused": reused_n,
                       "generate_s": generate_s,  # this start's generation, of `generated` questions
                       "questions_per_s": len(todo) / generate_s if generate_s > 0 and todo else None,
                       # actor time spent answering from swapped rationales (inside generate_s)
                       "faithfulness_s": sum(float(g.get("swap_s", 0.0)) for g in generated),
                       "prompt_too_long": len(too_long)},
    }
    write_report(report, out_dir)
    log.remove()  # the report holds every answer now
    return report


def reused(result: dict[str, Any], index: int, index_of: dict[str, int]) -> dict[str, Any]:
    """A logged result as GenerateActor returned it for row `index` of this run (its swap donor found
    by key; a donor not among this run's questions makes it unswapped)."""
    donor = index_of.get(result.get("swapped_from_key") or "", -1)
    entry = {k: v for k, v in result.items() if k != "swapped_from_key"}
    if donor < 0:
        entry.update(swapped_from_index=-1, swapped_answer_text="")
    return {**entry, "index": index, "swapped_from_index": donor}


# -- the report ---------------------------------------------------------------------------------


def _pct(r: dict | None) -> str:
    if r is None:
        return "–"
    return f"{100 * r['rate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] ({r['k']}/{r['n']})"


def answer_type_note(ts: dict[str, Any]) -> str:
    """How a test set was scored, for the report: its type, where the type came from, and how many
    golds did not fit it (compared as text)."""
    origin = {"config": "set in the config", "golds": "inferred from the golds"}.get(ts.get("answer_type_from", ""))
    note = f"{ts['name']} {ts['answer_type']}" + (f" ({origin})" if origin else "")
    if ts.get("golds_not_fitting"):
        note += (f", {ts['golds_not_fitting']} of {ts['n']} golds are not {ts['answer_type']} answers and were "
                 "compared as text")
    return note


def markdown_table(report: dict) -> str:
    """Accuracy (and rationale-swap change rate) per test set, one column per system."""
    systems = [s["name"] for s in report["systems"]]
    cell = {(r["system"], r["test_set"]): r for r in report["results"]}
    lines = [
        "# Evaluation report",
        "",
        f"Mode: {report['mode']}{generated_on(report.get('generation'))}. Accuracy with Wilson 95% CI (correct/n); "
        "unparseable outputs count as wrong.",
        "",
        "| test set | split | type | " + " | ".join(systems) + " |",
        "|---|---|---|" + "---|" * len(systems),
    ]
    for ts in report["test_sets"]:
        row = [_pct(cell[(s, ts["name"])]["accuracy"]) if (s, ts["name"]) in cell else "–" for s in systems]
        lines.append(f"| {ts['name']} | {ts['split']} | {ts['answer_type']} | " + " | ".join(row) + " |")
    for split in SPLITS:
        pooled = [_pct(report["splits"].get(s, {}).get(split)) for s in systems]
        if any(p != "–" for p in pooled):
            lines.append(f"| **all {split}** | {split} | | " + " | ".join(pooled) + " |")
    lines += ["", "Answer types: " + "; ".join(answer_type_note(ts) for ts in report["test_sets"]) + "."]
    skipped = [ts for ts in report["test_sets"] if ts.get("bad_rows")]
    if skipped:
        lines += ["", "Bad input rows left out (before the hold-out split and limits; listed with their reasons in "
                      "bad_rows.jsonl): " + "; ".join(
            f"{ts['name']} {ts['bad_rows']} rows" for ts in skipped) + "."]
    constrained = [r for r in report["results"] if r.get("constrained_accuracy") is not None]
    if constrained:
        lines += [
            "",
            "Constrained to the question's choices: of the options the question lists, the one the student "
            "scores highest at the answer position (free accuracy above lets it write any answer).",
            "",
            "| test set | " + " | ".join(systems) + " |",
            "|---|" + "---|" * len(systems),
        ]
        for ts in report["test_sets"]:
            row = [_pct(cell[(s, ts["name"])].get("constrained_accuracy")) if (s, ts["name"]) in cell else "–"
                   for s in systems]
            if any(r != "–" for r in row):
                lines.append(f"| {ts['name']} | " + " | ".join(row) + " |")
    faith = [r for r in report["results"] if r["faithfulness"] is not None]
    if faith:
        lines += [
            "",
            "Rationale faithfulness: share of answers that change when the rationale is swapped for another "
            "question's (higher = the answer depends on the rationale).",
            "",
            "| test set | " + " | ".join(systems) + " |",
            "|---|" + "---|" * len(systems),
        ]
        for ts in report["test_sets"]:
            row = [_pct(cell[(s, ts["name"])]["faithfulness"]) if (s, ts["name"]) in cell else "–" for s in systems]
            lines.append(f"| {ts['name']} | " + " | ".join(row) + " |")
    lines += ["", "Unparseable outputs: " + ", ".join(
        f"{r['system']}/{r['test_set']} {r['unparseable']}" for r in report["results"]), ""]
    return "\n".join(lines)


def plot_rates(report: dict, metric: str, path: Path, title: str) -> None:
    """Grouped bars: x = test sets (IND first), one bar per system, Wilson CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s["name"] for s in report["systems"]]
    sets = sorted(report["test_sets"], key=lambda t: SPLITS.index(t["split"]))
    cell = {(r["system"], r["test_set"]): r[metric] for r in report["results"]}
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(sets) * max(1, len(systems)) ** 0.5 + 2), 4))
    for i, system in enumerate(systems):
        placed = [(j, cell[(system, ts["name"])]) for j, ts in enumerate(sets) if (system, ts["name"]) in cell]
        xs = [j - 0.4 + width * (i + 0.5) for j, _ in placed]
        ys = [r["rate"] for _, r in placed]
        bars = ax.bar(xs, ys, width, yerr=error_bars([r for _, r in placed]), capsize=3, label=system)
        ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(sets)), [f"{t['name']}\n({t['split']}, n={t['n']})" for t in sets], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(title)
    ax.legend(fontsize=8)
    ax.set_title(f"{title} (95% Wilson CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def generated_on(generation: dict | None) -> str:
    """", on vLLM (LoRA merged)" for the report's first line; "" where a report does not say."""
    if not generation:
        return ""
    merged = generation.get("lora_merged")
    lora = "" if merged is None else (" (LoRA students merged)" if merged else " (LoRA as requests)")
    return f", on {generation['backend']}{lora}"


def write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out_dir / "report.md").write_text(markdown_table(report))
    plot_rates(report, "accuracy", out_dir / "accuracy.png", "accuracy")
    if any(r["faithfulness"] is not None for r in report["results"]):
        faith = {**report, "results": [r for r in report["results"] if r["faithfulness"] is not None]}
        plot_rates(faith, "faithfulness", out_dir / "faithfulness.png", "answers changed by rationale swap")


def run_report(run_dirs: list[str | Path], output_dir: str | Path) -> dict[str, Any]:
    """Compare earlier evaluation runs side by side from their report.json, without generating.

    With several runs, system names become "<run dir name>/<system>". Test sets are matched by name.
    """
    if not run_dirs:
        raise ConfigError("run_report: give at least one run directory")
    reports = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "report.json"
        if not path.is_file():
            raise DataError("not an evaluation run directory (no report.json)", path=run_dir)
        reports.append((Path(run_dir), json.loads(path.read_text(encoding="utf-8"))))
    prefix = len(reports) > 1
    dir_names = [d.name for d, _ in reports]
    if prefix and len(set(dir_names)) != len(dir_names):
        dir_names = [str(d) for d, _ in reports]

    def rename(run_name: str, system: str) -> str:
        return f"{run_name}/{system}" if prefix else system

    merged: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dirs": [str(d) for d, _ in reports],
        "mode": ", ".join(sorted({r["mode"] for _, r in reports})),
        "systems": [], "test_sets": [], "results": [], "splits": {},
    }
    seen_sets: dict[str, dict] = {}
    for run_name, (run_dir, report) in zip(dir_names, reports):
        for s in report["systems"]:
            merged["systems"].append({**s, "name": rename(run_name, s["name"])})
        for ts in report["test_sets"]:
            seen_sets.setdefault(ts["name"], ts)
        for r in report["results"]:
            merged["results"].append({**r, "system": rename(run_name, r["system"]),
                                      "predictions": str(run_dir / r["predictions"])})
        for system, splits in report["splits"].items():
            merged["splits"][rename(run_name, system)] = splits
    merged["test_sets"] = list(seen_sets.values())
    write_report(merged, Path(output_dir))
    return merged


def load_predictions(run_dir: str | Path) -> list[Prediction]:
    """Every saved prediction of a run (all systems and sets)."""
    return [p for path in sorted(Path(run_dir).glob("predictions/*/*.jsonl")) for p in read_predictions(path)]


__all__ = [
    "BASELINES",
    "GenerateActor",
    "Prediction",
    "System",
    "EvalSet",
    "StudentRecordWarning",
    "build_systems",
    "load_few_shot",
    "load_predictions",
    "fit_prompts",
    "markdown_table",
    "prepare_test_set",
    "evaluate_systems",
    "report_metrics",
    "run_evaluate",
    "run_report",
    "score",
    "student_record",
    "summarize",
    "too_long_prediction",
]
