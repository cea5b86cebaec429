"""The Ray worker set-up hook: patches applied once a module is imported, never importing it itself."""

from __future__ import annotations

import asyncio
import sys
import types

from ray_cotd import worker_hooks


def test_a_patch_runs_when_its_module_is_first_imported(tmp_path, monkeypatch):
    (tmp_path / "hook_target_mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    finder = worker_hooks._PatchOnImport("hook_target_mod", lambda module: seen.append(module.VALUE))
    sys.meta_path.insert(0, finder)
    try:
        assert seen == [] and "hook_target_mod" not in sys.modules  # nothing imported by the hook itself
        import hook_target_mod  # noqa: F401

        assert seen == [1] and finder not in sys.meta_path  # patched once, then out of the way
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        sys.modules.pop("hook_target_mod", None)


def _shut_down(patched: bool) -> tuple[list[str], bool]:
    """An AsyncLLM stand-in whose shutdown kills the engine core under the task reading its output."""
    logged: list[str] = []

    class AsyncLLM:
        def shutdown(self, timeout=None):
            self.core.set_exception(RuntimeError("engine core died"))

    if patched:
        worker_hooks._cancel_output_handler_first(types.SimpleNamespace(AsyncLLM=AsyncLLM))

    async def main() -> asyncio.Task:
        engine = AsyncLLM()
        engine.core = asyncio.get_running_loop().create_future()

        async def output_handler():
            try:
                await engine.core
            except Exception:
                logged.append("AsyncLLM output_handler failed.")  # vLLM logs this with a traceback

        engine.output_handler = asyncio.get_running_loop().create_task(output_handler())
        await asyncio.sleep(0)  # the reader waits on the core
        engine.shutdown()
        for _ in range(3):
            await asyncio.sleep(0)
        return engine.output_handler

    return logged, asyncio.run(main()).cancelled()


def test_async_llm_shutdown_cancels_the_output_reader_before_stopping_the_engine():
    """vLLM's order (engine core first) lets the reader fail on the dead core and log a traceback."""
    assert _shut_down(patched=False) == (["AsyncLLM output_handler failed."], False)
    assert _shut_down(patched=True) == ([], True)


_TRACKER_SCRIPT = """
import multiprocessing, os, signal, sys, time
from multiprocessing import resource_tracker
from ray_cotd import worker_hooks


def child():  # a spawned process (vLLM's engine core) registers with the tracker it inherited
    resource_tracker.register("/rcotd-child", "shared_memory")


if __name__ == "__main__":
    if sys.argv[1] == "patched":
        worker_hooks._quiet_resource_tracker()
    tracker = resource_tracker._resource_tracker
    resource_tracker.register("/rcotd-a", "shared_memory")
    resource_tracker.register("/rcotd-b", "shared_memory")
    spawned = multiprocessing.get_context("spawn").Process(target=child)
    spawned.start()
    spawned.join()
    time.sleep(0.3)
    os.kill(tracker._pid, signal.SIGKILL)  # Ray kills a worker's children when the worker exits
    time.sleep(0.3)
    if sys.argv[2] == "getfd":
        resource_tracker.getfd()  # starting a process relaunches the tracker, without a register
    else:
        resource_tracker.register("/rcotd-c", "shared_memory")  # a fresh tracker, started meanwhile
        resource_tracker.unregister("/rcotd-c", "shared_memory")
    for name in ("/rcotd-a", "/rcotd-child", "/rcotd-b"):
        resource_tracker.unregister(name, "shared_memory")  # their owners unlinked these segments
"""


def test_unregistering_after_the_tracker_was_killed_prints_no_traceback(tmp_path):
    """The race behind a "KeyError: '/psm_...'" traceback at the end of a vLLM annotation run: names
    registered with a tracker Ray killed, unregistered through the fresh one that never saw them."""
    import subprocess

    script = tmp_path / "tracker.py"
    script.write_text(_TRACKER_SCRIPT)
    for relaunch in ("register", "getfd"):
        runs = {mode: subprocess.run([sys.executable, str(script), mode, relaunch], capture_output=True, text=True,
                                     timeout=60) for mode in ("unpatched", "patched")}
        assert all(r.returncode == 0 for r in runs.values()), {m: r.stderr for m, r in runs.items()}
        assert "KeyError: '/rcotd-a'" in runs["unpatched"].stderr  # what the patch is for, reproduced
        assert "KeyError: '/rcotd-child'" in runs["unpatched"].stderr
        patched = runs["patched"].stderr
        assert "Traceback" not in patched and "KeyError" not in patched, (relaunch, patched)
