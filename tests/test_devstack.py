"""`make run` supervises what it starts: a child that dies is restarted with back-off
and logged instead of the whole stack stopping, and Ctrl-C still stops everything."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from cli.devstack import Supervisor
from core.settings import PROJECT_ROOT

PYTHON = sys.executable


def _until(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def test_a_child_that_keeps_dying_is_restarted_with_growing_back_off(tmp_path: Path) -> None:
    log_file = tmp_path / "crashy.log"
    # Each run writes when it started (CLOCK_MONOTONIC is shared by processes) and fails.
    crash = "import sys, time; print(time.monotonic(), flush=True); sys.exit(3)"
    console: list[str] = []
    supervisor = Supervisor(
        backoff_s=0.2, max_backoff_s=0.8, interval_s=0.02, announce=console.append
    )
    with structlog.testing.capture_logs() as logs:
        supervisor.start("crashy", [PYTHON, "-c", crash], dict(os.environ), log_file)
        supervisor.watch()
        try:
            _until(lambda: supervisor.restarts("crashy") >= 4)
        finally:
            supervisor.stop()
    starts = [float(line) for line in log_file.read_text().split()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    exits = [e for e in logs if e["event"] == "devstack.exited"]
    delays = [e["restart_in_s"] for e in exits[:4]]
    assert delays == [0.2, 0.4, 0.8, 0.8]  # doubling, then capped
    # Each restart came no sooner than its back-off (plus the time a Python takes to run).
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=False))
    assert all(e["returncode"] == 3 and e["process"] == "crashy" for e in exits)
    assert [e["restarts"] for e in logs if e["event"] == "devstack.started"][:3] == [0, 1, 2]
    # One console line per death, naming the child, its exit code and its log file.
    assert len(console) == len(exits)
    assert console[0].startswith("crashy exited (code 3)")
    assert "restarting in 0.2s" in console[0] and str(log_file) in console[0]


def test_a_killed_child_comes_back_and_stop_ends_every_child(tmp_path: Path) -> None:
    sleeper = [PYTHON, "-c", "import time; time.sleep(600)"]
    supervisor = Supervisor(backoff_s=0.1, interval_s=0.02)
    supervisor.start("temporal", sleeper, dict(os.environ), tmp_path / "temporal.log")
    supervisor.start("worker", sleeper, dict(os.environ), tmp_path / "worker.log")
    supervisor.watch()
    try:
        first = supervisor.pids()
        assert first["worker"] is not None and first["temporal"] is not None
        os.kill(first["worker"], signal.SIGKILL)
        _until(lambda: supervisor.pids()["worker"] not in (None, first["worker"]))
        second = supervisor.pids()
        assert second["temporal"] == first["temporal"]  # the others were left alone
        assert supervisor.restarts("worker") == 1 and supervisor.restarts("temporal") == 0
    finally:
        supervisor.stop()
    assert second["worker"] is not None and second["temporal"] is not None
    assert not _alive(second["worker"]) and not _alive(second["temporal"])
    time.sleep(0.3)  # nothing is restarted after stop
    assert supervisor.pids() == {"temporal": None, "worker": None}


def test_ctrl_c_stops_the_stack_and_its_children(tmp_path: Path) -> None:
    """The launcher's own loop, as `zhida run` uses it, in a process of its own."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from cli.devstack import Supervisor, stop_on_signals
        from core.logging import configure_logging
        from core.settings import Settings

        configure_logging(Settings(), stream=sys.stderr)
        stop_on_signals()
        supervisor = Supervisor()
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        try:
            supervisor.watch()
            for name in ("temporal", "worker", "api"):
                supervisor.start(name, sleeper, dict(os.environ), Path({str(tmp_path)!r}) / name)
            print(*supervisor.pids().values(), flush=True)
            supervisor.wait()
        except KeyboardInterrupt:
            print("stopping", flush=True)
        finally:
            supervisor.stop()
        """
    )
    launcher = subprocess.Popen(
        [PYTHON, "-c", script],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        pids = [int(pid) for pid in launcher.stdout.readline().split()]
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=30) == 0
        assert launcher.stdout.read().strip() == "stopping"
        _until(lambda: not any(_alive(pid) for pid in pids), within=5)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
