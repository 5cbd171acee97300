"""The worker's opt-in cost log (workers/costs.py): each activity's statements are
counted against it, also when two run at once."""

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
import structlog
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from core.db import make_engine
from workers.costs import ActivityCosts, count_statements


class Statements:
    def __init__(self, path: Path) -> None:
        self.engine = make_engine(f"sqlite+aiosqlite:///{path}")

    @activity.defn
    async def send(self, count: int) -> None:
        """`count` statements, each in a transaction of its own, pausing between them so
        that two activities interleave."""
        for _ in range(count):
            async with self.engine.begin() as connection:
                await connection.execute(sa.text("SELECT 1"))
            await asyncio.sleep(0.01)


@workflow.defn
class TwoAtOnce:
    @workflow.run
    async def run(self) -> None:
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    "send", count, start_to_close_timeout=timedelta(seconds=30)
                )
                for count in (3, 5)
            )
        )


async def test_each_activity_is_charged_its_own_statements(
    time_skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    statements = Statements(tmp_path / "costs.db")
    count_statements(statements.engine)
    queue = f"costs-{uuid.uuid4()}"
    with structlog.testing.capture_logs() as logs:
        async with Worker(
            time_skipping.client,
            task_queue=queue,
            workflows=[TwoAtOnce],
            activities=[statements.send],
            interceptors=[ActivityCosts()],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            await time_skipping.client.execute_workflow(
                TwoAtOnce.run, id=f"costs-{uuid.uuid4()}", task_queue=queue
            )
    await statements.engine.dispose()
    costs = [entry for entry in logs if entry["event"] == "activity.cost"]
    # Each transaction is BEGIN IMMEDIATE (core/db.py) and the SELECT: two statements.
    assert sorted(entry["statements"] for entry in costs) == [6, 10]
    assert all(entry["activity"] == "send" and entry["wall_ms"] > 0 for entry in costs)
