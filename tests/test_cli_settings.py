"""A bad ZHIDA_* value ends any command with a line naming the variable, not a
traceback (cli/config.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("ZHIDA_API_PORT", "abc", ["migrate"]),
        ("ZHIDA_API_PROCESSES", "0", ["api"]),
        ("ZHIDA_MATCH_THREADS", "-1", ["audit", "replay", "--closed-in", "2026"]),
    ],
)
def test_a_bad_setting_is_named_and_nothing_runs(
    variable: str, value: str, command: list[str], tmp_path: Path
) -> None:
    env = {**os.environ, variable: value, "ZHIDA_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"{variable}: "), done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing migrated
