"""The replica's HF backend without Ray or a real model: batching, isolation, threads, cancellation.

The generators here are stand-ins with the two methods the backend calls (`two_stage`,
`stream_rationale`) and a torch module as `model`, called once per decoding step like the real
decoding loop. `SteppedModel` runs a step only when the test allows it, so "stops within one
decoding step" is counted, not timed. Serve's batcher is replaced by a plain call per request; the
real one is exercised in tests/integration/test_serve.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from ray_cotd.config import ServeConfig
from ray_cotd.lm.generate import GenerationLimits, TwoStageResult
from ray_cotd.serve import HFBackend, create_api
from ray_cotd.serve.hf import Abandoned, Job

LIMITS = GenerationLimits(max_rationale_tokens=8, max_answer_tokens=4)


def result(question: str) -> TwoStageResult:
    return TwoStageResult(question=question, rationale="3 + 2 = 5.", answer_text=" 5.", answer="5", prompt_tokens=9,
                          rationale_tokens=6, answer_tokens=2, stage1_s=0.1, stage2_s=0.01, rationale_stop="marker")


def one_at_a_time(batch_fn):
    """Serve's batcher stand-in: every request is a batch of one."""

    async def call(job: Job):
        return (await batch_fn([job]))[0]

    return call


def backend_for(generator, streams: int = 4) -> HFBackend:
    return HFBackend(generator, batch=one_at_a_time, max_concurrent_streams=streams)


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


async def async_wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


class SteppedModel(torch.nn.Module):
    """A model whose forward passes (decoding steps) run only as the test allows them."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = 0  # forward calls begun (a thread is decoding)
        self.steps = 0  # forward calls completed
        self._permits = threading.Semaphore(0)

    def allow(self, steps: int) -> None:
        self._permits.release(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered += 1
        self._permits.acquire()
        self.steps += 1
        return x


class SteppedGenerator:
    """`two_stage` decodes `tokens` steps; `stream_rationale` yields one piece per step, forever.
    `ended` is set when a generation returns or raises (Abandoned included)."""

    def __init__(self, tokens: int = 1000, stream_only: bool = False) -> None:
        self.model = SteppedModel()
        self.tokens, self.stream_only = tokens, stream_only
        self.calls: list[list[str]] = []
        self.ended = threading.Event()

    def two_stage(self, questions: list[str], limits: GenerationLimits, choices=None) -> list[TwoStageResult]:
        self.calls.append(questions)
        try:
            for _ in range(0 if self.stream_only else self.tokens):
                self.model(torch.zeros(1))
            return [result(q) for q in questions]
        finally:
            self.ended.set()

    def stream_rationale(self, question: str, limits: GenerationLimits):
        generator = self

        class Pieces:
            def __iter__(self):
                return self

            def __next__(self) -> str:
                try:
                    generator.model(torch.zeros(1))
                except BaseException:
                    generator.ended.set()
                    raise
                return "word "

        return Pieces()


# ------------------------------------------------------------------------- batches, isolation


class RecordingGenerator:
    """Records every two_stage call; fails a call holding a question with "poison" or limits with
    max_answer_tokens == 3 (a whole group that cannot run)."""

    def __init__(self) -> None:
        self.model = torch.nn.Identity()
        self.calls: list[tuple[list[str], GenerationLimits]] = []

    def two_stage(self, questions: list[str], limits: GenerationLimits, choices=None) -> list[TwoStageResult]:
        self.calls.append((questions, limits))
        if limits.max_answer_tokens == 3:
            raise RuntimeError("out of memory")
        if any("poison" in q for q in questions):
            raise TypeError("the tokenizer cannot encode this text")
        return [result(q) for q in questions]


def test_a_batch_with_mixed_limits_runs_one_two_stage_call_per_limits_and_keeps_order():
    generator = RecordingGenerator()
    short, long_, failing = (GenerationLimits(max_rationale_tokens=n, max_answer_tokens=a) for n, a in
                             [(4, 2), (8, 2), (4, 3)])
    jobs = [Job("q0", short), Job("q1", long_), Job("q2", short), Job("q3", failing)]
    out = backend_for(generator).generate_batch(jobs)
    assert [len(c[0]) for c in generator.calls] == [2, 1, 1]
    assert [o.question for o in out[:3]] == ["q0", "q1", "q2"]
    assert isinstance(out[3], RuntimeError)  # only the failing group's request fails


def test_a_request_that_fails_inside_a_batch_fails_alone():
    # Issue 23: one bad chat message (a tokenizer TypeError) failed the three good requests batched with it.
    generator = RecordingGenerator()
    jobs = [Job(q, LIMITS) for q in ("q0", "poison", "q2", "q3")]
    out = backend_for(generator).generate_batch(jobs)
    assert [type(o).__name__ for o in out] == ["TwoStageResult", "TypeError", "TwoStageResult", "TwoStageResult"]
    assert [o.question for o in out if isinstance(o, TwoStageResult)] == ["q0", "q2", "q3"]
    assert [c[0] for c in generator.calls] == [["q0", "poison", "q2", "q3"], ["q0"], ["poison"], ["q2"], ["q3"]]


def test_requests_gone_before_their_batch_starts_are_left_out():
    generator = RecordingGenerator()
    jobs = [Job(q, LIMITS) for q in ("q0", "q1", "q2")]
    jobs[1].gone.set()
    out = backend_for(generator).generate_batch(jobs)
    assert [c[0] for c in generator.calls] == [["q0", "q2"]]
    assert isinstance(out[1], Abandoned) and out[2].question == "q2"
    jobs[0].gone.set()
    jobs[2].gone.set()
    assert all(isinstance(o, Abandoned) for o in backend_for(generator).generate_batch(jobs))
    assert len(generator.calls) == 1  # nothing left to generate for


# --------------------------------------------------------------------------------- threads


def test_a_short_request_is_answered_while_streams_hold_their_threads():
    """Issue 23: with 7 streams running, an 8-token /v1/reason waited 43.7 s: streams and batches
    shared asyncio's default executor (6 threads on a 2-core replica). Here 7 streams are stuck
    mid-decoding; the short request must still be answered while every one of them runs or waits."""
    generator = SteppedGenerator(stream_only=True)  # two_stage needs no step; stream steps never come
    backend = backend_for(generator, streams=4)

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(6))  # as on a 2-core replica
        streams = [backend.stream(f"stream {i}", LIMITS) for i in range(7)]
        firsts = [asyncio.create_task(anext(s)) for s in streams]
        await async_wait_until(lambda: generator.model.entered == 4)
        answer = await asyncio.wait_for(backend.reason("short", LIMITS), 5)
        assert answer.question == "short"
        assert not any(f.done() for f in firsts)  # every stream is still decoding, or waiting for a thread
        assert generator.model.entered == 4  # bounded: max_concurrent_streams threads decode streams
        for f in firsts:  # the clients leave; the stuck steps may now run, and the pumps stop
            f.cancel()
        await asyncio.gather(*firsts, return_exceptions=True)
        generator.model.allow(100)
        await async_wait_until(lambda: generator.model.steps == 4)

    asyncio.run(scenario())
    assert generator.model.entered == 4  # the 3 streams that were waiting never started decoding


# ---------------------------------------------------------------------------- cancellation


def test_a_request_whose_caller_left_stops_its_generation_within_one_step():
    # Issue 23: a disconnected request generated to the end; a timed-out one for 6-7 s more.
    generator = SteppedGenerator()
    backend = backend_for(generator)

    async def scenario() -> None:
        task = asyncio.create_task(backend.reason("q", LIMITS))
        generator.model.allow(3)
        await async_wait_until(lambda: generator.model.steps == 3)
        task.cancel()  # the client disconnected, or the API's timeout fired
        with pytest.raises(asyncio.CancelledError):
            await task
        at_cancel = generator.model.steps
        generator.model.allow(1000)
        assert await asyncio.to_thread(generator.ended.wait, 5)
        assert generator.model.steps <= at_cancel + 1  # the step in flight ends; no further step starts

    asyncio.run(scenario())


def test_a_batch_runs_on_for_the_requests_still_waiting_and_stops_when_all_are_gone():
    generator = SteppedGenerator(tokens=10)
    backend = backend_for(generator)
    jobs = [Job("left", LIMITS), Job("stayed", LIMITS)]
    out: list = []
    worker = threading.Thread(target=lambda: out.extend(backend.generate_batch(jobs)))
    worker.start()
    generator.model.allow(3)
    wait_until(lambda: generator.model.steps == 3)
    jobs[0].gone.set()
    generator.model.allow(100)
    worker.join(5)
    assert generator.model.steps == 10 and out[1].question == "stayed"

    generator = SteppedGenerator()
    backend = backend_for(generator)
    jobs = [Job("a", LIMITS), Job("b", LIMITS)]
    worker = threading.Thread(target=backend.generate_batch, args=(jobs,))
    worker.start()
    generator.model.allow(3)
    wait_until(lambda: generator.model.steps == 3)
    for job in jobs:
        job.gone.set()
    generator.model.allow(1000)
    worker.join(5)
    assert generator.ended.is_set() and generator.model.steps <= 4


def test_a_closed_stream_stops_its_thread_within_one_step():
    generator = SteppedGenerator()
    backend = backend_for(generator)

    async def scenario() -> None:
        stream = backend.stream("q", LIMITS)
        generator.model.allow(2)
        assert [await anext(stream), await anext(stream)] == ["word ", "word "]
        await stream.aclose()  # the client went away
        at_close = generator.model.steps
        generator.model.allow(1000)
        assert await asyncio.to_thread(generator.ended.wait, 5)
        assert generator.model.steps <= at_close + 1

    asyncio.run(scenario())


def test_a_timed_out_request_is_503_and_its_generation_stops():
    generator = SteppedGenerator()
    records: list[dict] = []
    app = create_api(ServeConfig(request_timeout_s=0.1), backend_for(generator), sink=records.append)
    r = TestClient(app).post("/v1/reason", json={"question": "q"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "timeout"
    assert (records[-1]["status"], records[-1]["error"]) == (503, "timeout")
    generator.model.allow(1000)
    assert generator.ended.wait(5)
    assert generator.model.steps <= 1  # the one step in flight when the timeout fired
