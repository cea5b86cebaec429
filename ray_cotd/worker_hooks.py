"""Set-up of every Ray worker process of a ray-cotd job: a clean end of a run whose actors hold vLLM
engines. ray_session passes `setup` as the job's `runtime_env["worker_process_setup_hook"]` (and
jobs/runtime_env.yaml names it for `ray job submit`). Standard library only: every worker of the
job imports this module when it starts.

Two shutdown races of vLLM inside Ray actors, each logging a traceback after all the work is done:

1. vLLM's `AsyncLLM.shutdown` stops the engine core before it cancels the task that reads the
   core's output; that task then fails on the dead core and logs "AsyncLLM output_handler failed"
   with a traceback. Patched, once vllm.v1.engine.async_llm is imported, to cancel the task first.
2. When a Ray worker exits, Ray kills its child processes, Python's multiprocessing resource
   tracker among them, while the worker may still unlink vLLM's shared memory; its unregister
   calls then start a fresh tracker, which prints a KeyError traceback for every name it never
   saw (something else, such as starting a process, may also have relaunched it). Here an
   unregister goes only to the tracker its name was registered with (a name a child process
   registered: this process's first tracker), and is dropped once that tracker is dead: the
   segment is already unlinked by its owner, and a dead tracker has nothing left to clean.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

ASYNC_LLM = "vllm.v1.engine.async_llm"
_done = False


def setup() -> None:
    """The worker_process_setup_hook: both fixes, once per process."""
    global _done
    if _done:
        return
    _done = True
    _quiet_resource_tracker()
    if ASYNC_LLM in sys.modules:
        _cancel_output_handler_first(sys.modules[ASYNC_LLM])
    else:
        sys.meta_path.insert(0, _PatchOnImport(ASYNC_LLM, _cancel_output_handler_first))


def _quiet_resource_tracker() -> None:
    import os
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker  # private, on purpose: the module offers no switch
    send = tracker._send
    # The tracker process each name was registered with here; a name registered by a child process
    # (vLLM's engine core writes to the tracker it inherited) belongs to this process's first tracker.
    registered_with: dict[tuple[str, str], int | None] = {}
    first: list[int | None] = [tracker._pid]

    def _send(cmd: str, name: str, rtype: str) -> None:
        if first[0] is None:
            first[0] = tracker._pid
        if cmd != "UNREGISTER":
            send(cmd, name, rtype)
            if first[0] is None:
                first[0] = tracker._pid
            if cmd == "REGISTER":
                registered_with[(name, rtype)] = tracker._pid
            return
        # An unregister never (re)starts a tracker, as the original does: a new one does not know the
        # name. It is written to the tracker the name was registered with, or dropped.
        pid, fd = registered_with.pop((name, rtype), first[0]), tracker._fd
        if fd is None or pid != tracker._pid:
            return
        try:
            os.write(fd, f"{cmd}:{name}:{rtype}\n".encode("ascii"))
        except OSError:  # that tracker is dead: Ray killed it, and the owner unlinks its segment itself
            pass

    tracker._send = _send


def _cancel_output_handler_first(module: ModuleType) -> None:
    engine = module.AsyncLLM
    shutdown = engine.shutdown

    def shutdown_quietly(self: Any, timeout: float | None = None) -> None:
        handler = getattr(self, "output_handler", None)
        if handler is not None and not handler.done():
            handler.get_loop().call_soon_threadsafe(handler.cancel)
        shutdown(self, timeout)

    engine.shutdown = shutdown_quietly


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` right after `name` is first imported (it is not imported here)."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module, patch = spec.loader.exec_module, self.patch

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


__all__ = ["setup"]
