"""Policy intake (政策归集), started by a Temporal Schedule."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.harvest import HarvestActivities
    from models.policy_feed import FEED_ID, HarvestReport
    from workflows.options import POLICY_FEED

SCHEDULE_ID = "policy-harvest"
# Pages per run before it continues as new (a first harvest of a large feed).
PAGES_PER_RUN = 200


class HarvestInput(BaseModel):
    feed: str = FEED_ID
    # What earlier runs of this harvest stored (carried over by continue-as-new).
    so_far: HarvestReport = HarvestReport()


@workflow.defn
class PolicyHarvestWorkflow:
    """Reads the policy feed from where the last harvest stopped until it has nothing
    more, one page per activity (each stored with the cursor after it), and returns
    what it stored. No updates or queries."""

    @workflow.run
    async def run(self, request: HarvestInput) -> HarvestReport:
        total = request.so_far.model_copy()
        for _ in range(PAGES_PER_RUN):
            page = await workflow.execute_activity_method(
                HarvestActivities.harvest_page, request.feed, **POLICY_FEED
            )
            total.publications += page.publications
            total.new_documents += page.new_documents
            total.new_versions += page.new_versions
            total.new_sources += page.new_sources
            total.proposals += page.proposals
            total.rejected += page.rejected
            total.alerts += page.alerts
            total.has_more = page.has_more
            if not page.has_more:
                return total
        workflow.continue_as_new(HarvestInput(feed=request.feed, so_far=total))
