"""Temporal Schedules the platform relies on, created idempotently at start-up. What
each one starts comes from workflows/starts.py; when, from here."""

from __future__ import annotations

import contextlib

from temporalio.client import Client, Schedule, ScheduleAlreadyRunningError, ScheduleSpec

from workflows import facts_sync, harvest, library_expiry, matching
from workflows.starts import (
    facts_sync_action,
    library_expiry_action,
    nightly_match_action,
    policy_harvest_action,
)


async def ensure_schedules(client: Client, task_queue: str) -> None:
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            library_expiry.SCHEDULE_ID,
            Schedule(
                action=library_expiry_action(task_queue),
                spec=ScheduleSpec(cron_expressions=["10 0 * * *"], time_zone_name="Asia/Shanghai"),
            ),
        )
    # Every published item against every firm, nightly, after the day's imports.
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            matching.SCHEDULE_ID,
            Schedule(
                action=nightly_match_action(task_queue),
                spec=ScheduleSpec(cron_expressions=["30 1 * * *"], time_zone_name="Asia/Shanghai"),
            ),
        )
    # New and changed policy documents from the government portals, every hour; a run
    # still going when the next is due is left to finish (the default overlap: skip).
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            harvest.SCHEDULE_ID,
            Schedule(
                action=policy_harvest_action(task_queue),
                spec=ScheduleSpec(cron_expressions=["5 * * * *"], time_zone_name="Asia/Shanghai"),
            ),
        )
    # Firms' figures changed on the public data platform, every quarter hour, each page
    # stored with its cursor; the firms it changed are re-matched.
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            facts_sync.SCHEDULE_ID,
            Schedule(
                action=facts_sync_action(task_queue),
                spec=ScheduleSpec(
                    cron_expressions=["*/15 * * * *"], time_zone_name="Asia/Shanghai"
                ),
            ),
        )
