"""The crash test in short form: a few cases, the worker killed twice, 20% of
budget-system calls failing. The full size is `python bench/application_chaos.py`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cases_are_paid_exactly_once_through_worker_crashes() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "bench/application_chaos.py",
            "--cases",
            "12",
            "--kills",
            "2",
            "--seed",
            "7",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    last = completed.stdout.strip().splitlines()[-1]
    assert last == ("cases=12 paid_once=12 double_paid=0 lost=0 overspent_fen=0 unreconciled=0"), (
        completed.stderr[-3000:]
    )
    # A crash on the way out (it happened once, SIGABRT after every case was paid) must
    # show why.
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "worker_kills=2" in completed.stdout
