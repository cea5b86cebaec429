"""The Hugging Face backend of a Serve replica: one `Generator` behind Serve's dynamic batcher.

Everything HF-specific about serving is here: the replica holds one `ray_cotd.lm.generate.Generator`
(so a served answer is the evaluated answer, stage 2 reusing stage 1's KV cache), concurrent
requests are collected by `@serve.batch` and decoded as one left-padded `two_stage` call per
distinct limits, and a stream decodes token by token in a worker thread. It implements the API's
`Backend` protocol (`reason`, `stream`); another backend (e.g. vLLM's engine, which batches and
aborts requests on its own) sits beside it behind the same protocol.

Reliability (issue 23):
- Threads of its own, never asyncio's default executor: one thread for batches (Serve runs one
  batch at a time) and `max_concurrent_streams` threads for streams, so a short request is never
  queued behind long streams; more streams than that wait for a stream thread.
- A request that fails inside a batch fails alone: a failed group is retried one request at a time.
- Abandoned work stops within one decoding step: a request whose caller is gone (client
  disconnect, request timeout) is left out of a batch that has not started, and a running
  generation stops at its next step once every request it serves is gone.

Kept by hand: `StepGate`. `Generator` takes no cancellation argument, so the gate hooks the model
itself with a forward pre-hook (torch's callback before every forward, i.e. every decoding step).
It stops a whole generation; a request that leaves a batch others still wait for keeps its row to
the end of that batch (its result is dropped). Dropping single rows needs a stop check inside the
decoding loop of ray_cotd/lm/generate.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Union

import torch

from ray_cotd.config import ServeConfig
from ray_cotd.lm.generate import GenerationLimits, Generator, TwoStageResult


@dataclasses.dataclass
class Job:
    """One request in a batch; `gone` is set once its caller stops waiting (answered or left)."""

    question: str
    limits: GenerationLimits
    choices: list[str] | None = None
    gone: threading.Event = dataclasses.field(default_factory=threading.Event)


class Abandoned(Exception):
    """Every request a generation was for is gone; raised at the generation's next decoding step."""


class _Watch(threading.local):
    gone: Callable[[], bool] | None = None


class StepGate:
    """Stops the generation running in a thread at its next forward step once its requests are gone.

    One forward pre-hook on the model serves every thread: each thread registers, with `watching`,
    the condition under which the generation it runs is abandoned.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._watch = _Watch()
        model.register_forward_pre_hook(self._check)

    @contextlib.contextmanager
    def watching(self, gone: Callable[[], bool]) -> Iterator[None]:
        self._watch.gone = gone
        try:
            yield
        finally:
            self._watch.gone = None

    def _check(self, module: torch.nn.Module, args: tuple) -> None:
        if self._watch.gone is not None and self._watch.gone():
            raise Abandoned


Outcome = Union[TwoStageResult, Exception]


class HFBackend:
    """`reason` through a batcher over `generate_batch`; `stream` through a pump thread.

    batch: wraps an async batch function (list of Jobs -> list of outcomes) into a per-request
    coroutine: Serve's `serve.batch` in a replica (see `replica_backend`), a plain call in tests.
    """

    def __init__(self, generator: Generator, *, batch: Callable, max_concurrent_streams: int) -> None:
        self.generator = generator
        self._gate = StepGate(generator.model)
        self._batch_thread = ThreadPoolExecutor(1, thread_name_prefix="ray-cotd-batch")
        self._stream_threads = ThreadPoolExecutor(max_concurrent_streams, thread_name_prefix="ray-cotd-stream")
        self._batched = batch(self._generate_batch)

    async def reason(self, question: str, limits: GenerationLimits,
                     choices: list[str] | None = None) -> TwoStageResult:
        job = Job(question, limits, choices)
        try:
            out = await self._batched(job)
        finally:
            job.gone.set()  # answered, or the caller was cancelled: either way nobody waits any more
        if isinstance(out, BaseException):
            raise out
        return out

    async def _generate_batch(self, jobs: list[Job]) -> list[Outcome]:
        # The batch thread keeps the replica's event loop free to take the next batch's requests.
        return await asyncio.get_running_loop().run_in_executor(self._batch_thread, self.generate_batch, jobs)

    def generate_batch(self, jobs: list[Job]) -> list[Outcome]:
        """One `two_stage` call per distinct limits in the batch (usually one); outcomes in order."""
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(dataclasses.astuple(job.limits), []).append(i)
        out: dict[int, Outcome] = {}
        for idxs in groups.values():
            out.update(zip(idxs, self._two_stage([jobs[i] for i in idxs])))
        return [out[i] for i in range(len(jobs))]

    def _two_stage(self, jobs: list[Job]) -> list[Outcome]:
        """`two_stage` on the jobs still wanted (same limits); a failed group is retried one job at a
        time, so a bad request fails alone. Jobs that are gone get `Abandoned` (nobody reads it)."""
        out: list[Outcome] = [Abandoned() for _ in jobs]
        live = [i for i, job in enumerate(jobs) if not job.gone.is_set()]
        if not live:
            return out
        try:
            with self._gate.watching(lambda: all(jobs[i].gone.is_set() for i in live)):
                results: list[Outcome] = list(
                    self.generator.two_stage([jobs[i].question for i in live], jobs[live[0]].limits,
                                             [jobs[i].choices for i in live]))
        except Abandoned:
            return out
        except Exception as err:  # reported per request as a 503 by the API
            results = [err] if len(live) == 1 else [self._two_stage([jobs[i]])[0] for i in live]
        for i, result in zip(live, results):
            out[i] = result
        return out

    async def stream(self, question: str, limits: GenerationLimits) -> AsyncIterator[Union[str, TwoStageResult]]:
        """Stage-1 text chunks as the student writes them, then the finished TwoStageResult.

        The decoding runs in a stream thread (one token step at a time) and hands items to the
        event loop; when the iterator is closed (the client went away), `stop` is set and the
        thread stops at its next decoding step.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        end = object()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            try:
                if stop.is_set():  # the client left while this stream waited for a thread
                    return
                with self._gate.watching(stop.is_set):
                    rationale = self.generator.stream_rationale(question, limits)
                    for chunk in rationale:
                        put(chunk)
                    put(rationale.finish())
            except Abandoned:
                pass
            except Exception as err:  # raised again on the event loop side
                put(err)
            finally:
                put(end)

        loop.run_in_executor(self._stream_threads, pump)
        try:
            while (item := await queue.get()) is not end:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()


def replica_backend(cfg: ServeConfig) -> HFBackend:
    """The backend of one Serve replica: `cfg.student` loaded, Serve's batcher from the config."""
    from ray import serve  # Ray call: the batcher (only usable inside a replica)

    # Ray sets OMP_NUM_THREADS from num_cpus, but torch may have read it before; say it once more.
    torch.set_num_threads(max(1, int(cfg.num_cpus)))

    def batch(fn: Callable) -> Callable:
        # Batch size and wait come from the config, so the batcher is made per replica, not per class.
        return serve.batch(fn, max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s,
                           max_concurrent_batches=1)

    return HFBackend(Generator.from_spec(cfg.student), batch=batch, max_concurrent_streams=cfg.max_concurrent_streams)


__all__ = ["Abandoned", "HFBackend", "Job", "StepGate", "replica_backend"]
