"""One- and two-stage generation: the one routine evaluation, tuning and serving all use.

Two-stage (CasCoD inference) for a batch of questions:

    stage 1: prompt_text(question)  -> rationale ids; stop at EOS or at the answer marker
    stage 2: prompt + rationale ids + encode(STAGE2_PREFIX) -> answer; stop at EOS, a newline
             or the period that ends the answer

Stage 2 reuses stage 1's KV cache instead of re-encoding the prompt and rationale. With a
left-padded batch the rows' rationales end at different columns, so the cache is realigned
(`_realign_cache`): every row's kept prefix is gathered to end at the same column, which gives the
row exactly the left padding that a fresh stage-2 batch would give it. RoPE positions are baked into
the cached keys and new positions come from the attention mask's cumsum, so moving columns changes
no position. `two_stage_naive` is the reference (stage 2 prefills everything again); the ids of both
are compared token for token in tests/integration/test_inference_real.py.

The decoding loop is our own (a few lines around `model(...)`, greedy or temperature/top-p
sampling) rather than `model.generate`: it gives per-row stop rules on decoded text, step-by-step
streaming and the cache hand-over without reaching into generate's internals.

A call processes its questions as one batch; callers (Ray Data batches, Serve's @serve.batch)
choose the batch size. Stage timings are the wall time of that batch.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ray_cotd.config import ModelSpec
from ray_cotd.data.answers import ANSWER_MARKER, ParsedOutput, ParseFailure, split_output
from ray_cotd.lm.format import STAGE2_PREFIX, answer_value_text, encode, student_prompt_ids
from ray_cotd.lm.model import answers_through_label_task, load_model_and_tokenizer, load_prompt_encoder
from ray_cotd.lm.prompt_encoder import PromptEncoder, embed_inputs

# Stage 1 stops at the marker, with or without the newline the student format puts before it.
_MARKER_RE = re.compile(r"\n?" + re.escape(ANSWER_MARKER))
_MARKER_TAIL = "\n" + ANSWER_MARKER  # a length stop may end inside it: "...\nThe answ"


@dataclass
class GenerationLimits:
    """Token limits and decoding. Greedy by default; do_sample uses temperature and top_p, seeded."""

    max_rationale_tokens: int = 192
    max_answer_tokens: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_rationale_tokens < 1 or self.max_answer_tokens < 1:
            raise ValueError("max_rationale_tokens and max_answer_tokens must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class TwoStageResult:
    """One question's generation.

    answer_text: the raw stage-2 text after the marker (e.g. " 145."); answer: the answer parsed from
    it with split_output (None when unreadable; typed parsing is the caller's, see parse_answer).
    prompt_tokens / rationale_tokens / answer_tokens: token counts of the prompt, the kept rationale
    and the generated answer. stage1_s / stage2_s: wall time of the batch the question ran in.
    rationale_stop: why stage 1 ended: "eos", "marker" or "length" (truncated rationale); "given"
    when stage 2 ran on a given rationale, "label_task" for a student that answers through its
    label task with no rationale (step_by_step).
    constrained_answer: with the question's choices given, the choice the model scores highest at
    the answer position (the first stage-2 step's logits, no extra forward pass); else None.
    """

    question: str
    rationale: str
    answer_text: str
    answer: str | None
    prompt_tokens: int
    rationale_tokens: int
    answer_tokens: int
    stage1_s: float
    stage2_s: float
    rationale_stop: str = "eos"
    constrained_answer: str | None = None


def parse_answer(answer_text: str, answer_type: str | None = None) -> ParsedOutput | ParseFailure:
    """Parse stage-2 text (what follows the marker) with the data layer's one parser."""
    return split_output(ANSWER_MARKER + " " + answer_text.strip(), answer_type=answer_type)


def answer_end(text: str) -> int | None:
    """Where the answer in stage-2 text ends (exclusive), or None while it may still go on.

    It ends before a newline, or after a period that is not a decimal point: "True." ends at once;
    "145." waits one more token, since "145.5" may follow.
    """
    for i, ch in enumerate(text):
        if ch == "\n":
            return i
        if ch != ".":
            continue
        if i + 1 < len(text):
            if not text[i + 1].isdigit():
                return i + 1
        elif i == 0 or not text[i - 1].isdigit():
            return i + 1
    return None


def rationale_cut(text: str, offsets: list[int], length_stop: bool) -> int | None:
    """How many generated tokens are rationale, or None when stage 1 should go on.

    text: decoded stage-1 text so far, offsets[j]: where token j starts in it. The rationale ends
    before the token holding the start of the marker (with its newline). On a length stop, a tail
    that may be the marker's beginning ("\\nThe ans", "The answ") is cut as well.
    """
    match = _MARKER_RE.search(text)
    if match is not None:
        return bisect.bisect_right(offsets, match.start()) - 1
    if not length_stop:
        return None
    for size in range(min(len(_MARKER_TAIL), len(text)), 0, -1):
        tail = text[-size:]
        if _MARKER_TAIL.startswith(tail) or ANSWER_MARKER.startswith(tail):
            return bisect.bisect_right(offsets, len(text) - size) - 1
    return len(offsets)


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) drawn from last-position logits (B, V): softmax(logits / temperature),
    restricted to the top_p nucleus (the smallest head whose mass reaches top_p, the token that
    crosses it included), sampled with `rng`. The one sampler of the project: the student's
    decoding loop and the transformers teacher (one seeded generator per row) both call it."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)


def eos_token_ids(generation_config: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The ids that end a generation: the model's generation-config EOS ids and the tokenizer's.
    The one end-of-sequence rule of the project (student decoding on HF and vLLM, the transformers
    teacher)."""
    eos = generation_config.eos_token_id if generation_config is not None else None
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    return frozenset(i for i in ids if i is not None)


def _choose(logits: torch.Tensor, limits: GenerationLimits, rng: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V): greedy, or sample_tokens."""
    if not limits.do_sample:
        return logits.argmax(-1)
    return sample_tokens(logits, limits.temperature, limits.top_p, rng)


@dataclass
class _Row:
    """Decoding state of one batch row."""

    prefix: list[int]  # ids fed before decoding (prompt, or prompt + rationale + marker)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    offsets: list[int] = field(default_factory=list)
    keep: int | None = None  # generated tokens kept once the row is done; None while running
    stop: str = ""


class StageRules:
    """When each stage stops and what it keeps: the rules every backend applies, token by token.

    HF decoding calls them after each step; the vLLM backend replays them over the ids vLLM
    returned (greedy tokens do not depend on where decoding stopped, so both keep the same ids).
    Each rule sets row.keep (generated tokens kept) and row.stop once the row is done.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_ids: frozenset[int]) -> None:
        self.tokenizer, self.eos_ids = tokenizer, eos_ids
        self._pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """Decoded text of one token (cached; stop rules look at ASCII markers only, so a split
        multi-byte character showing as U+FFFD here does not matter)."""
        if token not in self._pieces:
            self._pieces[token] = "" if token in self.eos_ids else self.tokenizer.decode([token])
        return self._pieces[token]

    def push(self, row: _Row, token: int) -> None:
        """Append one generated token to a running row."""
        row.offsets.append(len(row.text))
        row.generated.append(token)
        row.text += self.piece(token)

    def stage1(self, row: _Row, token: int, length_stop: bool) -> None:
        """Rationale: ends at EOS or before the marker; a length stop also cuts a marker's start."""
        if token in self.eos_ids:
            row.keep, row.stop = len(row.generated) - 1, "eos"
        else:
            cut = rationale_cut(row.text, row.offsets, length_stop)
            if cut is None:
                return
            row.keep, row.stop = cut, "marker" if _MARKER_RE.search(row.text) else "length"
        # the student format strips the rationale: trailing whitespace tokens never precede the marker
        while row.keep > 0 and not self.piece(row.generated[row.keep - 1]).strip():
            row.keep -= 1

    def stage2(self, row: _Row, token: int, length_stop: bool) -> None:
        """Answer: ends at EOS, or where answer_end says the answer is complete."""
        if token in self.eos_ids:
            row.keep, row.stop = len(row.generated) - 1, "eos"
        elif answer_end(row.text) is not None:
            row.keep, row.stop = len(row.generated), "end"
        elif length_stop:
            row.keep, row.stop = len(row.generated), "length"

    def one_stage(self, row: _Row, token: int, length_stop: bool) -> None:
        """One pass: ends at EOS or once the answer after the marker is complete."""
        if token in self.eos_ids:
            row.keep, row.stop = len(row.generated) - 1, "eos"
            return
        match = _MARKER_RE.search(row.text)
        if match is not None and answer_end(row.text[match.end():]) is not None:
            row.keep, row.stop = len(row.generated), "end"
        elif length_stop:
            row.keep, row.stop = len(row.generated), "length"

    def ready_rationale(self, row: _Row) -> str:
        """Stage-1 text that can no longer change, for streaming: the tokens before any tail that may
        still become the marker, without trailing whitespace (stripped at the end) or a half-decoded
        character; once the row is done, the final rationale."""
        if row.keep is not None:
            return self.tokenizer.decode(row.generated[: row.keep], skip_special_tokens=True).strip()
        ready = rationale_cut(row.text, row.offsets, length_stop=True)
        text = self.tokenizer.decode(row.generated[:ready], skip_special_tokens=True)
        return text.lstrip().rstrip("\ufffd").rstrip()

    def replay(self, row: _Row, tokens: list[int], max_new: int, rule: Callable[[_Row, int, bool], None]) -> _Row:
        """Apply `rule` to tokens an engine already generated, as step-wise decoding would have:
        the row ends at the first token where the rule says so. The engine's last token counts as a
        length stop (it stopped there, at max_new or at a stop string of its own)."""
        for i, token in enumerate(tokens):
            self.push(row, token)
            rule(row, token, i + 1 >= max_new or i + 1 == len(tokens))
            if row.keep is not None:
                break
        if row.keep is None:  # no tokens at all
            row.keep, row.stop = 0, "length"
        return row

    def result(self, question: str, rationale: str, answer_ids: list[int], *, prompt_tokens: int,
               rationale_tokens: int, answer_tokens: int, stage1_s: float, stage2_s: float,
               rationale_stop: str, constrained_answer: str | None = None) -> TwoStageResult:
        """The TwoStageResult of a question whose answer ids are known (see make_result)."""
        return make_result(question, rationale, self.tokenizer.decode(answer_ids, skip_special_tokens=True),
                           prompt_tokens=prompt_tokens, rationale_tokens=rationale_tokens,
                           answer_tokens=answer_tokens, stage1_s=stage1_s, stage2_s=stage2_s,
                           rationale_stop=rationale_stop, constrained_answer=constrained_answer)

    def given(self, question: str, rationale: str, row: _Row, marker_tokens: int, seconds: float) -> TwoStageResult:
        """The result of stage 2 run on a given rationale (row.prefix = prompt + rationale + marker)."""
        return self.result(question, rationale.strip(), row.generated[: row.keep],
                           prompt_tokens=len(row.prefix) - marker_tokens, rationale_tokens=0,
                           answer_tokens=len(row.generated), stage1_s=0.0, stage2_s=seconds, rationale_stop="given")

    def option_plan(self, choices: list[str] | None) -> tuple[list[int], list[int]] | None:
        """Where the choices' answer segments part ways, and with which tokens.

        Every choice's segment (" C." / " 3.") is tokenized; the choices share a common start (none
        for " A"/" B", a bare space where digits are single tokens: " ", "3"). Returns (that common
        prefix, each choice's token right after it); the student's scores for those tokens at that
        position decide. None without choices, or when two choices cannot be told apart there.
        """
        if not choices:
            return None
        seqs = [encode(self.tokenizer, answer_value_text(c)) for c in choices]
        common = 0
        while all(len(q) > common + 1 for q in seqs) and len({q[common] for q in seqs}) == 1:
            common += 1
        tokens = [q[common] for q in seqs]
        return (seqs[0][:common], tokens) if len(set(tokens)) == len(tokens) else None


def make_result(question: str, rationale: str, answer_text: str, *, prompt_tokens: int, rationale_tokens: int,
                answer_tokens: int, stage1_s: float, stage2_s: float, rationale_stop: str,
                constrained_answer: str | None = None) -> TwoStageResult:
    """A TwoStageResult from stage-2 text: cut where the answer ends (answer_end), parsed with the
    data layer's parser; `answer` is None when nothing readable is there."""
    end = answer_end(answer_text)
    answer_text = answer_text[:end] if end is not None else answer_text
    parsed = parse_answer(answer_text)
    return TwoStageResult(
        question=question, rationale=rationale, answer_text=answer_text,
        answer=parsed.answer if isinstance(parsed, ParsedOutput) else None,
        prompt_tokens=prompt_tokens, rationale_tokens=rationale_tokens, answer_tokens=answer_tokens,
        stage1_s=stage1_s, stage2_s=stage2_s, rationale_stop=rationale_stop, constrained_answer=constrained_answer,
    )


def split_one_stage(tokenizer: PreTrainedTokenizerBase, question: str, row: _Row, seconds: float) -> TwoStageResult:
    """Split one pass's text at the marker; with no marker, all of it is rationale, no answer."""
    ids = row.generated[: row.keep]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    match = _MARKER_RE.search(text)
    if match is None:
        rationale, answer_text, n_rationale = text.strip(), "", len(ids)
    else:
        rationale, answer_text = text[: match.start()].strip(), text[match.end():]
        n_rationale = bisect.bisect_right(row.offsets, match.start()) - 1
    return make_result(question, rationale, answer_text, prompt_tokens=len(row.prefix),
                       rationale_tokens=n_rationale, answer_tokens=len(ids) - n_rationale, stage1_s=seconds,
                       stage2_s=0.0, rationale_stop="marker" if match is not None else row.stop)


class _Decoder:
    """Step-wise batched decoding over left-padded rows with a DynamicCache.

    `cache` may already hold the first `cached` columns of the left-padded batch (stage 2 with
    reuse); only the rest is prefilled. `done(row, token, length_stop)` sets row.keep/row.stop.
    """

    def __init__(self, gen: Generator, rows: list[_Row], limits: GenerationLimits, rng: torch.Generator, max_new: int,
                 done: Callable[[_Row, int, bool], None], cache: DynamicCache | None = None, cached: int = 0) -> None:
        self.gen, self.rows, self.limits, self.rng, self.max_new, self.done = gen, rows, limits, rng, max_new, done
        width = max(len(r.prefix) for r in rows)
        self.pads = [width - len(r.prefix) for r in rows]
        self.input_ids = torch.tensor([[gen.pad_id] * p + r.prefix for p, r in zip(self.pads, rows)], device=gen.device)
        self.mask = torch.tensor([[0] * p + [1] * len(r.prefix) for p, r in zip(self.pads, rows)], device=gen.device)
        self.cache = cache if cache is not None else DynamicCache(config=gen.model.config)
        self.cached = cached
        self.steps = 0

    def positions(self) -> torch.Tensor:
        return (self.mask.cumsum(-1) - 1).clamp(min=0)

    def advance(self) -> bool:
        """Run one forward step; False once every row is done."""
        if self.steps == 0:
            feed = self.input_ids[:, self.cached:]
        else:
            feed = self.last[:, None]
        position_ids = self.positions()[:, -feed.shape[1]:]
        inputs = {"input_ids": feed}
        if self.steps == 0 and self.gen.prompt_encoder is not None:
            inputs = {"inputs_embeds": self.gen.embed_prefill(feed, self.pads, self.cached)}
        out = self.gen.model(**inputs, attention_mask=self.mask, position_ids=position_ids,
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.last_logits = out.logits[:, -1, :]  # (B, V), kept for tests and diagnostics
        tokens = _choose(self.last_logits, self.limits, self.rng)
        self.steps += 1
        self.last = tokens
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        length_stop = self.steps >= self.max_new
        for row, token in zip(self.rows, tokens.tolist()):
            if row.keep is not None:
                continue
            self.gen.rules.push(row, token)
            self.done(row, token, length_stop)
        return any(r.keep is None for r in self.rows)

    def run(self) -> None:
        while self.advance():
            pass


class Generator:
    """A model + tokenizer that answers questions in the student format (see module doc).

    few_shot: (question, rationale, answer) demonstrations put before every question (the few-shot
    baseline); None for trained students.
    label_task: the student answers through its label task ("[label] Q" -> answer, no rationale
    stage), as step_by_step students were trained; from_spec reads it from student.json.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 few_shot: list[tuple[str, str, str]] | None = None, prompt_encoder: PromptEncoder | None = None,
                 label_task: bool = False) -> None:
        if isinstance(model, PeftModel) and model.peft_config[model.active_adapter].is_prompt_learning:
            # PEFT prepends virtual tokens on every forward call, which breaks step-wise decoding
            # with a cache. ray-cotd's own P-Tuning students (prompt_encoder) are supported: their
            # virtual tokens are placeholders at the start of the prompt, embedded at prefill.
            raise ValueError("peft prompt-learning adapters are not supported; train P-Tuning with ray-cotd "
                             "(its prompt encoder is passed as prompt_encoder=)")
        self.model = model.eval()
        self.prompt_encoder = prompt_encoder.eval() if prompt_encoder is not None else None
        self.n_virtual = prompt_encoder.config.num_virtual_tokens if prompt_encoder is not None else 0
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.few_shot = few_shot
        self.label_task = label_task
        self.eos_ids = eos_token_ids(model.generation_config, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.stage2_ids = encode(tokenizer, STAGE2_PREFIX)
        self.rules = StageRules(tokenizer, self.eos_ids)

    @classmethod
    def from_spec(cls, spec: ModelSpec, few_shot: list[tuple[str, str, str]] | None = None) -> Generator:
        model, tokenizer = load_model_and_tokenizer(spec)
        return cls(model, tokenizer, few_shot=few_shot, prompt_encoder=load_prompt_encoder(spec),
                   label_task=answers_through_label_task(spec))

    def prompt_ids(self, question: str) -> list[int]:
        """Prompt ids, after num_virtual_tokens placeholders for a P-Tuning student (the training layout)."""
        ids = student_prompt_ids(self.tokenizer, question, few_shot=self.few_shot, label_task=self.label_task)
        return [self.pad_id] * self.n_virtual + ids

    def embed_prefill(self, feed: torch.Tensor, pads: list[int], start: int) -> torch.Tensor:
        """inputs_embeds for a prefill window whose first column is `start` of the left-padded batch:
        token embeddings, with each row's virtual placeholders (columns pads[i] .. pads[i]+V-1)
        replaced by the prompt encoder's output, as in training (prompt_encoder.embed_inputs)."""
        columns = torch.arange(start, start + feed.shape[1], device=feed.device)
        virtual_index = columns[None, :] - torch.tensor(pads, device=feed.device)[:, None]
        virtual_index = torch.where((virtual_index >= 0) & (virtual_index < self.n_virtual), virtual_index, -1)
        return embed_inputs(self.model.get_input_embeddings(), feed, virtual_index, self.prompt_encoder)

    # -- stages ------------------------------------------------------------------------------

    def _stage1(self, questions: list[str], limits: GenerationLimits, rng: torch.Generator) -> _Decoder:
        rows = [_Row(self.prompt_ids(q)) for q in questions]
        return _Decoder(self, rows, limits, rng, limits.max_rationale_tokens, self.rules.stage1)

    def _stage2(self, stage1: _Decoder, limits: GenerationLimits, rng: torch.Generator, reuse: bool) -> _Decoder:
        kept = [r.prefix + r.generated[: r.keep] for r in stage1.rows]
        rows = [_Row(k + self.stage2_ids) for k in kept]
        if not reuse:
            return _Decoder(self, rows, limits, rng, limits.max_answer_tokens, self.rules.stage2)
        # Cache the first len(kept)-1 tokens of every row: the cache holds every stage-1 column but
        # the last one sampled (never fed back), so a row that ran to the end lacks its last token.
        # Keeping one token per row uncached makes that uniform; it is prefilled with the marker.
        lengths = [len(k) - 1 for k in kept]
        starts = stage1.pads
        cached = _realign_cache(stage1.cache, starts, lengths)
        return _Decoder(self, rows, limits, rng, limits.max_answer_tokens, self.rules.stage2,
                        cache=stage1.cache, cached=cached)

    def _run_stage2(self, s2: _Decoder, choices: list[list[str] | None]) -> list[str | None]:
        """Decode stage 2 to the end; return each row's constrained pick: of its choices, the one
        whose deciding token (StageRules.option_plan) scores highest where the choices part ways.
        When the free answer starts with the choices' common prefix, as a student answering in its
        trained format does, those are logits the free decoding computes anyway; otherwise one more
        forward step on prompt + common prefix decides."""
        plans = [self.rules.option_plan(c) for c in choices]
        picks: list[str | None] = [None] * len(choices)
        pending = {i for i, plan in enumerate(plans) if plan is not None}
        steps, more = 0, True
        while more:
            more = s2.advance()
            steps += 1
            for i in [i for i in pending if len(plans[i][0]) + 1 == steps]:
                prefix, tokens = plans[i]
                if s2.rows[i].generated[: len(prefix)] == prefix:
                    picks[i] = choices[i][int(s2.last_logits[i, tokens].argmax())]
                    pending.discard(i)
        if pending:  # the free answer left the common prefix, or ended before the deciding position
            rows = sorted(pending)
            step = _Decoder(self, [_Row(s2.rows[i].prefix + plans[i][0]) for i in rows], s2.limits, s2.rng, 1,
                            self.rules.stage2)
            step.advance()
            for j, i in enumerate(rows):
                picks[i] = choices[i][int(step.last_logits[j, plans[i][1]].argmax())]
        return picks

    def _results(self, questions: list[str], s1: _Decoder, s2: _Decoder, t1: float, t2: float,
                 picks: list[str | None]) -> list[TwoStageResult]:
        return [
            self.rules.result(q, self.tokenizer.decode(r1.generated[: r1.keep], skip_special_tokens=True).strip(),
                              r2.generated[: r2.keep], prompt_tokens=len(r1.prefix), rationale_tokens=r1.keep,
                              answer_tokens=len(r2.generated), stage1_s=t1, stage2_s=t2, rationale_stop=r1.stop,
                              constrained_answer=pick)
            for q, r1, r2, pick in zip(questions, s1.rows, s2.rows, picks)
        ]

    def _two_stage(self, questions: list[str], limits: GenerationLimits | None, reuse: bool,
                   choices: list[list[str] | None] | None) -> list[TwoStageResult]:
        if not questions:
            return []
        limits = limits or GenerationLimits()
        choices = choices or [None] * len(questions)
        if len(choices) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(choices)} choice lists")
        if self.label_task:
            return self._label_task(questions, limits, choices)
        rng = torch.Generator(device=self.device).manual_seed(limits.seed)
        with torch.inference_mode():
            t0 = time.perf_counter()
            s1 = self._stage1(questions, limits, rng)
            s1.run()
            t1 = time.perf_counter()
            s2 = self._stage2(s1, limits, rng, reuse=reuse)
            picks = self._run_stage2(s2, choices)
            t2 = time.perf_counter()
        return self._results(questions, s1, s2, t1 - t0, t2 - t1, picks)

    def _label_task(self, questions: list[str], limits: GenerationLimits,
                    choices: list[list[str] | None]) -> list[TwoStageResult]:
        """A label-task student (step_by_step): its "[label] Q" prompt, then the marker and the
        answer, exactly the ids of its training label task; no rationale stage."""
        rng = torch.Generator(device=self.device).manual_seed(limits.seed)
        rows = [_Row(self.prompt_ids(q) + self.stage2_ids) for q in questions]
        with torch.inference_mode():
            t0 = time.perf_counter()
            s2 = _Decoder(self, rows, limits, rng, limits.max_answer_tokens, self.rules.stage2)
            picks = self._run_stage2(s2, choices)
            seconds = time.perf_counter() - t0
        return [
            self.rules.result(q, "", row.generated[: row.keep], prompt_tokens=len(row.prefix) - len(self.stage2_ids),
                              rationale_tokens=0, answer_tokens=len(row.generated), stage1_s=0.0, stage2_s=seconds,
                              rationale_stop="label_task", constrained_answer=pick)
            for q, row, pick in zip(questions, rows, picks)
        ]

    def two_stage(self, questions: list[str], limits: GenerationLimits | None = None,
                  choices: list[list[str] | None] | None = None) -> list[TwoStageResult]:
        """Rationale, then answer from question + rationale, stage 2 reusing stage 1's KV cache.

        choices: per question, its answer options as the answer would read (["A", "B", ...]) or
        None; each result's constrained_answer is then the option the student scores highest.
        """
        return self._two_stage(questions, limits, True, choices)

    def two_stage_naive(self, questions: list[str], limits: GenerationLimits | None = None,
                        choices: list[list[str] | None] | None = None) -> list[TwoStageResult]:
        """The reference: the same two stages, stage 2 re-encoding prompt + rationale from scratch."""
        return self._two_stage(questions, limits, False, choices)

    def answer_from_rationales(
        self, questions: list[str], rationales: list[str], limits: GenerationLimits | None = None
    ) -> list[TwoStageResult]:
        """Stage 2 only, on given rationale texts (the faithfulness check swaps them)."""
        if len(questions) != len(rationales):
            raise ValueError(f"{len(questions)} questions but {len(rationales)} rationales")
        if not questions:
            return []
        limits = limits or GenerationLimits()
        rng = torch.Generator(device=self.device).manual_seed(limits.seed)
        rows = [_Row(self.prompt_ids(q) + encode(self.tokenizer, r.strip()) + self.stage2_ids)
                for q, r in zip(questions, rationales)]
        with torch.inference_mode():
            t0 = time.perf_counter()
            s2 = _Decoder(self, rows, limits, rng, limits.max_answer_tokens, self.rules.stage2)
            s2.run()
            t2 = time.perf_counter() - t0
        return [self.rules.given(q, r, row, len(self.stage2_ids), t2) for q, r, row in zip(questions, rationales, rows)]

    def one_stage(self, questions: list[str], limits: GenerationLimits | None = None) -> list[TwoStageResult]:
        """One pass: the student writes rationale and answer itself; split with split_output.

        It may run max_rationale_tokens + max_answer_tokens tokens and stops at EOS or at the end of
        the answer after the marker. With no marker, the whole text is the rationale and answer is None.
        """
        if not questions:
            return []
        limits = limits or GenerationLimits()
        rng = torch.Generator(device=self.device).manual_seed(limits.seed)

        rows = [_Row(self.prompt_ids(q)) for q in questions]
        with torch.inference_mode():
            t0 = time.perf_counter()
            dec = _Decoder(self, rows, limits, rng, limits.max_rationale_tokens + limits.max_answer_tokens,
                           self.rules.one_stage)
            dec.run()
            t1 = time.perf_counter() - t0
        return [split_one_stage(self.tokenizer, q, row, t1) for q, row in zip(questions, rows)]

    def stream_rationale(self, question: str, limits: GenerationLimits | None = None) -> RationaleStream:
        """Stage 1 as text chunks, then the answer: iterate, then call finish().

            stream = generator.stream_rationale(question, limits)
            for chunk in stream:          # rationale text, never any part of the marker
                send(chunk)
            result = stream.finish()      # stage 2 on the kept cache -> TwoStageResult

        "".join(chunks) == result.rationale. finish() before the end of iteration drains stage 1
        first; the result is exactly two_stage([question], limits)[0] apart from timings.
        """
        return RationaleStream(self, question, limits or GenerationLimits())


class RationaleStream(Iterator[str]):
    """Iterator over stage-1 text chunks of one question; `finish()` runs stage 2 (see
    Generator.stream_rationale)."""

    def __init__(self, gen: Generator, question: str, limits: GenerationLimits) -> None:
        self.gen, self.question, self.limits = gen, question, limits
        self.rng = torch.Generator(device=gen.device).manual_seed(limits.seed)
        # a label-task student has no rationale to stream: its stage 1 is an empty, finished row
        self.stage1 = gen._stage1([question], limits, self.rng) if not gen.label_task else None
        self.sent = 0  # characters of the rationale already yielded
        self.started = time.perf_counter()
        self.stage1_s: float | None = None
        self.result: TwoStageResult | None = None

    def __next__(self) -> str:
        if self.stage1 is None:
            raise StopIteration
        row = self.stage1.rows[0]
        while True:
            if row.keep is None:
                with torch.inference_mode():
                    self.stage1.advance()
                if row.keep is not None:
                    self.stage1_s = time.perf_counter() - self.started
            chunk = self.gen.rules.ready_rationale(row)[self.sent:]
            if chunk:
                self.sent += len(chunk)
                return chunk
            if row.keep is not None:
                raise StopIteration

    def finish(self) -> TwoStageResult:
        if self.result is None and self.stage1 is None:
            self.result = self.gen.two_stage([self.question], self.limits)[0]
        if self.result is None:
            for _ in self:
                pass
            t1 = time.perf_counter()
            with torch.inference_mode():
                s2 = self.gen._stage2(self.stage1, self.limits, self.rng, reuse=True)
                s2.run()
            t2 = time.perf_counter() - t1
            self.result = self.gen._results([self.question], self.stage1, s2, self.stage1_s or 0.0, t2, [None])[0]
        return self.result


def _realign_cache(cache: DynamicCache, starts: list[int], lengths: list[int]) -> int:
    """Gather each row's cached prefix so that all rows end at the same column; returns its width.

    Row i's tokens sit at stage-1 columns [starts[i], starts[i] + lengths[i]); afterwards at
    [W - lengths[i], W) with W = max(lengths), i.e. left-padded exactly like a fresh batch of those
    rows. The pad columns hold copies of real entries (finite values) and are masked out.
    Keys/values are (B, H, T, D) per layer.
    """
    width = max(lengths)
    index = torch.tensor([
        [max(start + length - width + j, start) for j in range(width)] for start, length in zip(starts, lengths)
    ])
    for layer in cache.layers:
        if layer.is_sliding:
            raise ValueError("KV reuse needs a full (non-sliding-window) cache; use two_stage_naive")
        b, h, _, d = layer.keys.shape
        gather = index[:, None, :, None].expand(b, h, width, d).to(layer.keys.device)
        layer.keys = layer.keys.gather(2, gather)
        layer.values = layer.values.gather(2, gather)
    return width


__all__ = [
    "STAGE2_PREFIX",
    "GenerationLimits",
    "Generator",
    "RationaleStream",
    "StageRules",
    "TwoStageResult",
    "answer_end",
    "eos_token_ids",
    "make_result",
    "parse_answer",
    "rationale_cut",
    "sample_tokens",
    "split_one_stage",
]
