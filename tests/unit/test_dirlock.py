"""The output-directory lock (ray_cotd.dirlock): a live holder refuses a second run and is named;
a holder killed with SIGKILL leaves a stale lock that the next run takes over. No Ray, no model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from ray_cotd.config import ConfigError
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


def test_a_stale_lock_of_a_gone_pid_is_taken_over_and_another_hosts_lock_is_not(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(),
                                                  "stage": "annotate", "started": "2026-01-01T00:00:00+00:00"}))
    with hold(tmp_path, "annotate"):
        pass
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-host", "stage": "annotate",
                                                  "started": "2026-01-01T00:00:00+00:00"}))
    with pytest.raises(DirectoryInUse, match="pid 1 on host another-host.*another host: its liveness cannot"):
        with hold(tmp_path, "annotate"):
            pass
    (tmp_path / LOCK_NAME).write_text("{half a lin")  # killed while writing its lock: no holder named
    with hold(tmp_path, "annotate"):
        pass
