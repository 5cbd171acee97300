"""`zhida audit replay` over every workflow the test suite's dev server ran: all closed
ones replay identically on the current code. Named to run last (pytest takes files in
name order), after every end-to-end test has finished its workflows on the shared dev
server; run alone, it replays whatever the server holds (at least nothing breaks)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from core.workdays import SHANGHAI
from workflows.all import ALL_WORKFLOWS

ROOT = Path(__file__).resolve().parent.parent
OURS = {w.__temporal_workflow_definition.name for w in ALL_WORKFLOWS}  # type: ignore[attr-defined]


async def test_every_closed_workflow_of_the_suite_replays_identically(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_server.client
    closed = [w async for w in client.list_workflows("ExecutionStatus != 'Running'")]
    foreign = sorted({w.workflow_type for w in closed} - OURS)
    assert foreign == [], f"workflows the platform does not define: {foreign}"
    env = dict(os.environ)
    env.update(
        ZHIDA_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        ZHIDA_TEMPORAL_NAMESPACE=client.namespace,
        ZHIDA_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'trail.db'}",
        ZHIDA_VAR_DIR=str(tmp_path),
    )
    migrate = [sys.executable, "-m", "cli.main", "migrate"]
    await asyncio.to_thread(subprocess.run, migrate, env=env, cwd=ROOT, check=True)
    year = str(datetime.now(SHANGHAI).year)
    command = [sys.executable, "-m", "cli.main", "audit", "replay", "--closed-in", year]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(f"zhida audit replay --closed-in {year}: {last}")  # noqa: T201
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = dict(part.split("=") for part in last.split())
    # Workflows still finishing when the list was taken may have closed since.
    assert int(counts["replayed"]) >= len(closed) > 0
    assert counts["identical"] == counts["replayed"] and counts["different"] == "0"
