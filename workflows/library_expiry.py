"""Nightly upkeep of the policy library, started by a Temporal Schedule."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.policy import PolicyLibraryActivities
    from workflows.options import DATABASE_BATCH

SCHEDULE_ID = "policy-library-expiry"


@workflow.defn
class LibraryExpiryWorkflow:
    """Marks published or suspended versions whose validity window has closed as expired.

    No updates or queries; returns the `item/vN` keys it expired.
    """

    @workflow.run
    async def run(self) -> list[str]:
        return await workflow.execute_activity_method(
            PolicyLibraryActivities.expire_lapsed_versions,
            workflow.now(),
            **DATABASE_BATCH,
        )
