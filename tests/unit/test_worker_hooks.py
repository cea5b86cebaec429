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
