"""Temporal Schedules the platform relies on, created idempotently at start-up. What
each one starts comes from workflows/starts.py; when, from here (cron, Asia/Shanghai).
A run still going when the next is due is left to finish (the default overlap: skip)."""

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

SCHEDULES = (
    # Versions whose validity closed are marked expired, just after midnight.
    (library_expiry.SCHEDULE_ID, library_expiry_action, "10 0 * * *"),
    # Every published item against every firm, nightly, after the day's imports.
    (matching.SCHEDULE_ID, nightly_match_action, "30 1 * * *"),
    # New and changed policy documents from the government portals, hourly.
    (harvest.SCHEDULE_ID, policy_harvest_action, "5 * * * *"),
    # Firms' figures changed on the public data platform, then their re-match.
    (facts_sync.SCHEDULE_ID, facts_sync_action, "*/15 * * * *"),
)


async def ensure_schedules(client: Client, task_queue: str) -> None:
    for schedule_id, action, cron in SCHEDULES:
        with contextlib.suppress(ScheduleAlreadyRunningError):
            await client.create_schedule(
                schedule_id,
                Schedule(
                    action=action(task_queue),
                    spec=ScheduleSpec(cron_expressions=[cron], time_zone_name="Asia/Shanghai"),
                ),
            )
