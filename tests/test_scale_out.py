"""Scale out: two workers and two API processes share the dev server and PostgreSQL;
one worker is killed outright mid-run and never comes back, and the other finishes
every case, each paid exactly once (bench/application_chaos.py --workers 2)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.database import backends, migrated_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif("postgresql" not in backends(), reason="needs the PostgreSQL server")
async def test_a_worker_killed_for_good_leaves_its_cases_to_the_other(tmp_path: Path) -> None:
    async with migrated_database("postgresql", tmp_path) as url:
        command = [
            *[sys.executable, "bench/application_chaos.py", "--cases", "12", "--kills", "1"],
            *["--seed", "11", "--workers", "2", "--api-processes", "2"],
            *["--database-url", url],
        ]
        completed = await asyncio.to_thread(
            subprocess.run,
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
    lines = completed.stdout.strip().splitlines()
    assert lines, completed.stderr[-3000:]
    assert lines[-1] == (
        "cases=12 paid_once=12 double_paid=0 lost=0 overspent_fen=0 unreconciled=0"
    ), completed.stderr[-3000:]
    assert "workers=2 api_processes=2" in completed.stdout
    assert "worker_kills=1" in completed.stdout
    assert completed.returncode == 0, completed.stderr[-3000:]
