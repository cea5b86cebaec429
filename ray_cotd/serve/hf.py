"""The Hugging Face backend of a Serve replica: one `Generator` behind Serve's dynamic batcher.

Everything HF-specific about serving is here: the replica holds one `ray_cotd.lm.generate.Generator`
(so a served answer is the evaluated answer, stage 2 reusing stage 1's KV cache), concurrent
requests are collected by `@serve.batch` and decoded as one left-padded `two_stage` call per
distinct limits, and a stream decodes token by token in a worker thread. It implements the API's
`Backend` protocol (`reason`, `stream`); another backend (e.g. vLLM's engine, which batches on
its own) sits beside it behind the same protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from typing import Union

import torch

from ray_cotd.config import ServeConfig
from ray_cotd.lm.generate import GenerationLimits, Generator, TwoStageResult

Item = tuple[str, GenerationLimits]


class HFBackend:
    """`reason` through a batcher over `_generate_batch`; `stream` through a pump thread.

    batch: wraps `_generate_batch` into a per-request coroutine (Serve's `serve.batch` in a
    replica, see `replica_backend`).
    """

    def __init__(self, generator: Generator, batch: Callable) -> None:
        self.generator = generator
        self._batched = batch(self._generate_batch)

    async def reason(self, question: str, limits: GenerationLimits) -> TwoStageResult:
        out = await self._batched((question, limits))
        if isinstance(out, BaseException):
            raise out
        return out

    async def _generate_batch(self, items: list[Item]) -> list[Union[TwoStageResult, Exception]]:
        """One `two_stage` call per distinct limits in the batch (usually one); failures stay per group."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, limits) in enumerate(items):
            groups.setdefault(dataclasses.astuple(limits), []).append(i)
        out: dict[int, Union[TwoStageResult, Exception]] = {}
        for idxs in groups.values():
            questions = [items[i][0] for i in idxs]
            try:
                # A thread keeps the replica's event loop free to take the next batch's requests.
                results = await asyncio.to_thread(self.generator.two_stage, questions, items[idxs[0]][1])
            except Exception as err:  # reported per request as a 503 by the API
                results = [err] * len(idxs)
            out.update(zip(idxs, results))
        return [out[i] for i in range(len(items))]

    async def stream(self, question: str, limits: GenerationLimits) -> AsyncIterator[Union[str, TwoStageResult]]:
        """Stage-1 text chunks as the student writes them, then the finished TwoStageResult.

        The decoding runs in a worker thread (one token step at a time) and hands items to the
        event loop; a client that goes away sets `stop`, so the thread quits at the next token.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        end = object()

        def pump() -> None:
            try:
                rationale = self.generator.stream_rationale(question, limits)
                for chunk in rationale:
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, rationale.finish())
            except Exception as err:  # raised again on the event loop side
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, end)

        loop.run_in_executor(None, pump)
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

    return HFBackend(Generator.from_spec(cfg.student), batch)


__all__ = ["HFBackend", "replica_backend"]
