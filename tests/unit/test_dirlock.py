"""The output-directory lock (ray_cotd.dirlock): a live holder refuses a second run and is named;
a holder killed with SIGKILL leaves a stale lock that the next run takes over. No Ray, no model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ray_cotd.config import ConfigError
from ray_cotd import dirlock
from ray_cotd.dirlock import LOCK_NAME, DirectoryInUse, hold

HOLD = "import sys, time\nfrom ray_cotd.dirlock import hold\nwith hold(sys.argv[1], 'annotate'):\n" \
       "    print('held', flush=True)\n    time.sleep(600)\n"


def _holder(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holder_does_not_block(tmp_path):
    proc = _holder(tmp_path)
    try:
        lock = json.loads((tmp_path / LOCK_NAME).read_text())
        assert lock["pid"] == proc.pid and lock["host"] == socket.gethostname() and lock["stage"] == "annotate"
        with pytest.raises(DirectoryInUse) as err:
            with hold(tmp_path, "annotate"):
                pass
        message = str(err.value)
        assert f"output_dir {tmp_path} is in use by annotate run pid {proc.pid} on host" in message
        assert lock["started"] in message and str(tmp_path / LOCK_NAME) in message
        assert isinstance(err.value, ConfigError)  # the CLI prints it as one line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert (tmp_path / LOCK_NAME).exists()  # SIGKILL left the file behind: stale now
        with hold(tmp_path, "annotate") as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
        assert not (tmp_path / LOCK_NAME).exists()  # released at the end
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with hold(tmp_path, "annotate"):
            raise RuntimeError("boom")
    with hold(tmp_path, "annotate"):
        with pytest.raises(DirectoryInUse):  # the same process cannot take it twice either
            with hold(tmp_path, "annotate"):
                pass


def test_a_stale_lock_of_a_gone_pid_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(),
                                                  "stage": "annotate", "started": "2026-01-01T00:00:00+00:00"}))
    with hold(tmp_path, "annotate"):
        pass
    (tmp_path / LOCK_NAME).write_text("{half a lin")  # killed while writing its lock: no holder named
    with hold(tmp_path, "annotate"):
        pass


OTHER_HOST = {"pid": 1, "host": "another-host", "stage": "train", "started": "2026-01-01T00:00:00+00:00"}


def test_another_hosts_lock_that_keeps_beating_is_refused(tmp_path, monkeypatch):
    """A live holder on another host touches its lock (its heartbeat): refused, and named."""
    monkeypatch.setattr(dirlock, "STALE_AFTER_S", 1.5)
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps(OTHER_HOST))
    stop = threading.Event()

    def beat():
        while not stop.wait(0.2):
            os.utime(lock)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        with pytest.raises(DirectoryInUse, match=r"train run pid 1 on host another-host .*another host; it touched "
                                                 r"the lock within 1.5 s"):
            with hold(tmp_path, "train"):
                pass
    finally:
        stop.set()
        thread.join()
    assert json.loads(lock.read_text())["host"] == "another-host"  # untouched by the refused run


def test_another_hosts_lock_left_untouched_is_taken_over(tmp_path, monkeypatch, capsys):
    """A KubeRay head pod back under a new hostname: its old lock stopped beating, so the new run
    resumes its own directory after STALE_AFTER_S instead of asking for the file to be deleted."""
    monkeypatch.setattr(dirlock, "STALE_AFTER_S", 0.5)
    (tmp_path / LOCK_NAME).write_text(json.dumps(OTHER_HOST))
    with hold(tmp_path, "train") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert "[dirlock] taking over" in err and "on host another-host" in err and "not touched it for 0.5 s" in err


def test_a_holder_touches_its_lock_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(dirlock, "HEARTBEAT_S", 0.1)
    with hold(tmp_path, "train") as path:
        first = path.stat().st_mtime_ns
        time.sleep(0.5)
        assert path.stat().st_mtime_ns != first
    assert not path.exists()

def test_train_refuses_a_directory_another_run_holds_before_any_work(tmp_path):
    from ray_cotd.config import TrainConfig
    from ray_cotd.student.train import run_train

    out = tmp_path / "train"
    with hold(out, "train"):
        with pytest.raises(DirectoryInUse, match=rf"output_dir {out} is in use by train run pid {os.getpid()}"):
            run_train(TrainConfig(corpus=str(tmp_path / "no-such-corpus.json"), output_dir=str(out)))
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written: refused first
