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

from models.matching import MatchRequest, MatchScope
from workflows import matching
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
    # Every published item against every firm, nightly, after the day's imports.
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            matching.SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    matching.MatchWorkflow.run,
                    MatchRequest(scope=MatchScope.FULL),
                    id=matching.SCHEDULE_ID,
                    task_queue=task_queue,
                ),
                spec=ScheduleSpec(cron_expressions=["30 1 * * *"], time_zone_name="Asia/Shanghai"),
            ),
        )
