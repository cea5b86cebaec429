"""What the terminal shows: ray-cotd's own lines and one progress bar per stage; the frameworks' logs
go to a file.

    with Console(run_dir / "framework.log") as console:     # Console(None): change nothing (--verbose)
        with console.stage(1, 4, "annotate ..."):           # a banner; loggers made since are routed too
            ...

In quiet mode (a log file given), until the `with` ends:
- **Python loggers** (ray, ray.data, ray.train, ray.serve, transformers, vllm, ...): every handler
  that writes to the terminal is replaced by one that writes to the file; records at ERROR and
  above are also printed to the terminal. Loggers are swept on entry and at each stage's start
  and end, so one a stage creates is caught by the next sweep.
- **Python warnings**: from ray-cotd's own code to the terminal as usual, all others to the file.
- **Ray workers' output** (`log_to_driver`) and the cluster's error messages (`(raylet) ...`):
  Ray's driver-side `print_worker_logs` (private, ray is pinned), which both go through, is
  replaced by one that writes every line to the file with its `(actor pid=N)` prefix, and turns
  the train loop's `[train] step N/M ...` lines (rank 0, `step_line`) into one progress bar.
- **Progress bars**: Ray Data's and transformers' are off in this process; stages draw their own.
Exceptions are not touched: they reach the terminal whole, followed by where the log file is.

Off a terminal (`ray job submit`, a pipe), in either mode: a stage's progress bar writes a line
every LOG_BAR_INTERVAL_S at most, and Ray Data's own bars are off while evaluate and annotate count
their rows (`ray_data_bars_on_a_terminal_only`).

Not caught: what Ray's C++ core writes to this process's stderr itself (a `core_worker.cc` line
when an actor's constructor arguments live in the object store), and what a Ray worker writes to
its own log files under the Ray session directory (`/tmp/ray/session_latest/logs`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

PACKAGE_DIR = str(Path(__file__).resolve().parent)
_STEP = re.compile(r"\[train\] step (\d+)/(\d+)(?: (.*))?$")


def step_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    """The train loop's progress line, `[train] step 3/40 loss=0.25 ...`, which quiet mode reads back."""
    return f"[train] step {step}/{total} " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def parse_step_line(line: str) -> tuple[int, int, dict[str, str]] | None:
    """(step, total, {metric: text}) of a `step_line`, found anywhere at the end of `line`; else None."""
    match = _STEP.search(line)
    if match is None:
        return None
    values = dict(part.split("=", 1) for part in (match.group(3) or "").split() if "=" in part)
    return int(match.group(1)), int(match.group(2)), values


# Off a terminal (`ray job submit`, a pipe, a log file) a bar line is written this often at most.
LOG_BAR_INTERVAL_S = 30.0


def progress_bar(total: int, desc: str, unit: str) -> Any:
    """The one progress-bar style of every stage (tqdm on stderr); off a terminal, a line every
    LOG_BAR_INTERVAL_S at most, so a job's log is not a wall of updates."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if tty else LOG_BAR_INTERVAL_S)


@contextlib.contextmanager
def ray_data_bars_on_a_terminal_only() -> Iterator[None]:
    """Ray Data's own progress bars off for the block when stderr is no terminal: in a job's log they
    print a block of lines every few seconds, for work the stage's own progress_bar counts already.
    On a terminal they stay as they are."""
    if sys.stderr.isatty():
        yield
        return
    import ray.data

    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = before


def _is_terminal_handler(handler: logging.Handler) -> bool:
    """A handler writing to the terminal: to a std stream (or what replaces it now), or to an object
    that is no io stream at all, a wrapper that finds sys.stderr when it writes (MLflow's)."""
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    stream = handler.stream
    return stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) or not isinstance(stream, io.IOBase)


class Console:
    """Quiet terminal for one run (see the module doc); `Console(None)` leaves everything as it is."""

    def __init__(self, log_file: str | Path | None) -> None:
        self.log_file = Path(log_file) if log_file is not None else None
        self.file: TextIO | None = None
        self._saved: dict[str, tuple[list[logging.Handler], bool]] = {}  # logger -> handlers, propagate
        self._restore: list[Any] = []  # undo callables for the progress-bar and warning settings
        self._bar: Any = None

    @property
    def quiet(self) -> bool:
        return self.log_file is not None

    # -- entering and leaving ----------------------------------------------------------------

    def __enter__(self) -> Console:
        if self.log_file is None:
            return self
        import ray._private.worker as ray_worker  # [ray] private: where worker output is printed
        import ray.data  # imported first, so that their loggers exist for the sweep
        import ray.train  # noqa: F401
        from transformers.utils import logging as hf_logging

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.log_file.open("a", encoding="utf-8", buffering=1)
        self.file.write(f"\n===== ray-cotd {dt.datetime.now().isoformat(timespec='seconds')} =====\n")
        self.to_file = logging.StreamHandler(self.file)
        self.to_file.setLevel(logging.INFO)
        self.to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.to_terminal = logging.StreamHandler(sys.stderr)
        self.to_terminal.setLevel(logging.ERROR)
        self.to_terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

        shown = warnings.showwarning
        warnings.showwarning = self._show_warning
        self._restore.append(lambda: setattr(warnings, "showwarning", shown))
        self._shown_before = shown
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        context.enable_progress_bars = False
        self._restore.append(lambda: setattr(context, "enable_progress_bars", bars))
        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            self._restore.append(hf_logging.enable_progress_bar)
        printer = ray_worker.print_worker_logs  # [ray] looked up by name on every batch of lines
        ray_worker.print_worker_logs = self._worker_output
        self._restore.append(lambda: setattr(ray_worker, "print_worker_logs", printer))
        self.sweep()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.log_file is None:
            return
        self._close_bar()
        for name, (handlers, propagate) in self._saved.items():
            logger = logging.getLogger(name or None)
            for handler in list(logger.handlers):
                if handler in (self.to_file, self.to_terminal):
                    logger.removeHandler(handler)
            for handler in handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.propagate = propagate
        for undo in reversed(self._restore):
            undo()
        assert self.file is not None
        self.file.close()
        if exc_type is not None:
            print(f"(the frameworks' logs of this run: {self.log_file})", file=sys.stderr, flush=True)

    # -- stages ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, step: int, total: int, text: str) -> Iterator[None]:
        """A stage's banner; loggers are swept before and after it."""
        print(f"\n=== [{step}/{total}] {text} ===", flush=True)
        self.sweep()
        try:
            yield
        finally:
            self._close_bar()
            self.sweep()

    def sweep(self) -> None:
        """Route every logger's terminal handlers to the file."""
        if self.log_file is None:
            return
        loggers = [("", logging.getLogger())] + sorted(
            (name, logger) for name, logger in logging.Logger.manager.loggerDict.items()
            if isinstance(logger, logging.Logger))
        for name, logger in loggers:
            ours = (self.to_file, self.to_terminal)
            terminal = [h for h in logger.handlers if _is_terminal_handler(h) and h not in ours]
            if not terminal and not (name == "" and self.to_file not in logger.handlers):
                continue
            self._saved.setdefault(name, (list(logger.handlers), logger.propagate))
            for handler in terminal:
                logger.removeHandler(handler)
            if not self._reaches_ours(logger):
                logger.addHandler(self.to_file)
                logger.addHandler(self.to_terminal)

    def _reaches_ours(self, logger: logging.Logger) -> bool:
        """Whether a record of `logger` already reaches our handlers through a parent."""
        node: Any = logger
        while node is not None:
            if self.to_file in node.handlers:
                return True
            if not node.propagate:
                return False
            node = node.parent
        return False

    # -- Ray workers' output -------------------------------------------------------------

    def _worker_output(self, data: dict[str, Any], print_file: Any = None, ignore_prefix: bool = False) -> None:
        """One batch of a Ray worker's stdout or stderr lines (Ray's log batch dict) -> the file.
        Called as Ray calls `print_worker_logs`; where Ray would print (print_file) is ignored."""
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who + ' ' if who else ''}pid={data.get('pid')}{', err' if data.get('is_err') else ''})"
        assert self.file is not None
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # as Ray's printer does: its events, not its status dumps
            import ray._private.worker as ray_worker  # [ray] private

            lines = list(ray_worker.filter_autoscaler_events(lines))
        for line in lines:
            self.file.write(f"{prefix} {line}\n")
            step = parse_step_line(line)
            if step is not None:
                self._train_progress(*step)

    def _train_progress(self, step: int, total: int, values: dict[str, str]) -> None:
        if self._bar is None:
            self._bar = progress_bar(total, "train", "step")
        self._bar.n = step
        if "loss" in values:
            self._bar.set_postfix_str(f"loss={values['loss']}", refresh=False)
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- warnings --------------------------------------------------------------------------

    def _show_warning(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                      line: str | None = None) -> None:
        if str(Path(filename).resolve()).startswith(PACKAGE_DIR):  # ray-cotd's own: the user should see it
            self._shown_before(message, category, filename, lineno, file, line)
        elif self.file is not None:
            self.file.write(warnings.formatwarning(message, category, filename, lineno, line))


__all__ = ["Console", "parse_step_line", "progress_bar", "step_line"]
