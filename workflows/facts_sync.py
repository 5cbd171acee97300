"""The scheduled sync of firms' figures from the public data platform (横向对接)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.facts import FactSyncActivities
    from domain.registry.sync import FEED_ID, SyncReport
    from models.matching import MatchRequest, MatchScope
    from workflows.matching import MatchWorkflow, match_workflow_id
    from workflows.options import DATA_PLATFORM_FEED

SCHEDULE_ID = "data-platform-facts-sync"
PAGES_PER_RUN = 200


class FactSyncInput(BaseModel):
    feed: str = FEED_ID
    # What earlier runs of this sync stored (carried over by continue-as-new).
    so_far: SyncReport = SyncReport()
    # The re-match's receipt polls (MatchRequest's default when None).
    receipt_polls_s: list[float] | None = Field(default=None, max_length=10)


@workflow.defn
class FactSyncWorkflow:
    """Reads the data platform's change feed from where the last sync stopped until it
    has nothing more, one page per activity (each stored with the cursor after it);
    then, if any figure changed, starts the run that re-matches the firms it changed
    (MatchWorkflow, scope firms: left running when the sync ends). Returns what it
    stored and that run's id. No updates or queries."""

    @workflow.run
    async def run(self, request: FactSyncInput) -> SyncReport:
        total = request.so_far.model_copy(deep=True)
        for _ in range(PAGES_PER_RUN):
            page = await workflow.execute_activity_method(
                FactSyncActivities.sync_facts_page, request.feed, **DATA_PLATFORM_FEED
            )
            total.add(page)
            if not page.has_more:
                break
        else:
            workflow.continue_as_new(
                FactSyncInput(
                    feed=request.feed, so_far=total, receipt_polls_s=request.receipt_polls_s
                )
            )
        if total.changed and total.changed_since is not None:
            rematch = MatchRequest(scope=MatchScope.FIRMS, changed_since=total.changed_since)
            if request.receipt_polls_s is not None:
                rematch.receipt_polls_s = request.receipt_polls_s
            handle = await workflow.start_child_workflow(
                MatchWorkflow.run,
                rematch,
                id=match_workflow_id(rematch, ""),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
            total.match_run = handle.id
        return total
