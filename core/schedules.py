"""Temporal Schedules the platform relies on, created idempotently at start-up."""

from __future__ import annotations

import contextlib

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleSpec,
)

from workflows.library_expiry import SCHEDULE_ID, LibraryExpiryWorkflow


async def ensure_schedules(client: Client, task_queue: str) -> None:
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    LibraryExpiryWorkflow.run, id=SCHEDULE_ID, task_queue=task_queue
                ),
                spec=ScheduleSpec(cron_expressions=["10 0 * * *"], time_zone_name="Asia/Shanghai"),
            ),
        )
