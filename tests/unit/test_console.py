"""The quiet console: framework loggers, foreign warnings and Ray workers' lines go to the log file,
ray-cotd's own warnings and errors still reach the terminal, the train step lines drive one bar,
and leaving restores everything. No Ray cluster (Ray's printer swap is skipped without one)."""

from __future__ import annotations

import io
import logging
import sys
import warnings

from ray_cotd import console as console_module
from ray_cotd.console import Console, parse_step_line, step_line


def test_step_line_reads_back():
    line = step_line(3, 40, {"loss": 0.2506161, "lr": 1e-3})
    assert line == "[train] step 3/40 loss=0.2506 lr=0.001"
    assert parse_step_line(line) == (3, 40, {"loss": "0.2506", "lr": "0.001"})
    assert parse_step_line("(RayTrainWorker pid=9) " + line)[0] == 3
    assert parse_step_line("[train] data: 11 rows") is None


def test_framework_logs_go_to_the_file_and_come_back_after(tmp_path, capsys, recwarn):
    framework = logging.getLogger("some.framework")
    framework.propagate = False
    own = logging.StreamHandler(sys.stderr)
    framework.addHandler(own)
    framework.setLevel(logging.INFO)
    log = tmp_path / "framework.log"
    with Console(log) as console:
        framework.info("chatty start-up line")
        framework.error("a real error")
        with console.stage(1, 2, "annotate something"):
            late = logging.getLogger("made.during.a.stage")
            late.propagate = False
            late.addHandler(logging.StreamHandler(sys.stderr))
            late.warning("before the sweep")  # printed: a logger made mid-stage is caught at the stage's end
        late.warning("after the sweep")
        warnings.warn_explicit("foreign deprecation", DeprecationWarning, "/elsewhere/lib.py", 1)
        warnings.warn_explicit("our own warning", UserWarning, console_module.__file__, 1)
    out = capsys.readouterr()
    text = log.read_text()
    assert "chatty start-up line" in text and "chatty start-up line" not in out.err
    assert "a real error" in text and "ERROR some.framework: a real error" in out.err
    assert "=== [1/2] annotate something ===" in out.out
    assert "after the sweep" in text and "after the sweep" not in out.err
    assert "foreign deprecation" in text and "foreign deprecation" not in out.err
    # ours goes to whoever showed warnings before (here pytest's recorder; the terminal in a run)
    assert "our own warning" not in text and "our own warning" in [str(w.message) for w in recwarn]
    assert framework.handlers == [own] and late.handlers[0].stream is sys.stderr
    framework.info("back on the terminal")
    assert "back on the terminal" in capsys.readouterr().err


def test_worker_lines_go_to_the_file_and_step_lines_drive_the_train_bar(tmp_path, capsys):
    import ray._private.worker as ray_worker

    ray_printer = ray_worker.print_worker_logs
    log = tmp_path / "framework.log"
    with Console(log) as console:
        with console.stage(2, 3, "train"):
            # what Ray's log thread calls for every batch of worker lines (and for the raylet's messages)
            ray_worker.print_worker_logs({"pid": 42, "actor_name": "RayTrainWorker", "is_err": False, "lines": [
                "Loading weights: 100%", step_line(1, 2, {"loss": 0.7}), step_line(2, 2, {"loss": 0.3})]},
                sys.stdout)
            ray_worker.print_worker_logs({"pid": "raylet", "lines": ["Task X failed, retrying"]}, sys.stdout)
            assert console._bar is not None and console._bar.n == 2
        assert console._bar is None
    assert ray_worker.print_worker_logs is ray_printer
    text = log.read_text()
    assert "(pid=raylet) Task X failed, retrying" in text
    assert "(RayTrainWorker pid=42) Loading weights: 100%" in text
    assert "(RayTrainWorker pid=42) [train] step 2/2 loss=0.3" in text
    out = capsys.readouterr()
    assert "train" in out.err and "Loading weights" not in out.err + out.out and "Task X" not in out.err + out.out


class StderrWrapper:
    """Like MLflow's logging stream: no io object, it finds sys.stderr when it writes."""

    def write(self, text):
        sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


def test_wrappers_of_stderr_count_as_the_terminal_and_buffers_do_not(tmp_path, capsys):
    wrapped, buffered = logging.getLogger("wrapped.framework"), logging.getLogger("buffered.framework")
    for logger, stream in ((wrapped, StderrWrapper()), (buffered, io.StringIO())):
        logger.propagate = False
        logger.addHandler(logging.StreamHandler(stream))
    log = tmp_path / "framework.log"
    with Console(log):
        wrapped.warning("creating tables")
        buffered.warning("kept in memory")
    assert "creating tables" in log.read_text() and "creating tables" not in capsys.readouterr().err
    assert buffered.handlers[0].stream.getvalue() == "kept in memory\n"


def test_verbose_changes_nothing(tmp_path, capsys):
    framework = logging.getLogger("another.framework")
    handler = logging.StreamHandler(sys.stderr)
    framework.addHandler(handler)
    with Console(None) as console:
        with console.stage(1, 1, "evaluate"):
            framework.warning("shown as before")
    assert "shown as before" in capsys.readouterr().err and framework.handlers == [handler]
    assert not list(tmp_path.iterdir())


def test_an_exception_passes_through_and_names_the_log(tmp_path, capsys):
    log = tmp_path / "framework.log"
    try:
        with Console(log):
            raise RuntimeError("stage failed")
    except RuntimeError as err:
        assert str(err) == "stage failed"
    assert str(log) in capsys.readouterr().err


def test_ray_data_bars_are_off_only_off_a_terminal(monkeypatch):
    """In a job's log Ray Data's bars print blocks of lines for work the stage's own bar counts."""
    import ray.data

    from ray_cotd.console import LOG_BAR_INTERVAL_S, progress_bar, ray_data_bars_on_a_terminal_only

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with ray_data_bars_on_a_terminal_only():
        assert context.enable_progress_bars is False
    assert context.enable_progress_bars == before
    assert progress_bar(10, "x", "row").mininterval == LOG_BAR_INTERVAL_S
    monkeypatch.setattr(sys, "stderr", Terminal())
    with ray_data_bars_on_a_terminal_only():
        assert context.enable_progress_bars == before
    assert progress_bar(10, "x", "row").mininterval == 0.1
