"""Matching runs (政策匹配) and the pushes they lead to (政策快享)."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.matching import MatchingActivities
    from models.matching import MatchRequest, MatchScope, MatchSummary, PushSummary
    from workflows.options import DATABASE_BATCH, MATCHING, MESSAGE_CHANNEL, MESSAGE_RECEIPTS

SCHEDULE_ID = "match-nightly"
BATCH = 1000


class MatchOutcome(BaseModel):
    match: MatchSummary
    push: PushSummary
    sent: int
    awaiting_receipt: int


def match_workflow_id(request: MatchRequest, tag: str) -> str:
    """Item runs are keyed by the version published, firm runs by the import's time,
    full runs by the day or trigger (`tag`)."""
    if request.scope is MatchScope.ITEM:
        return f"match/item/{request.item_code}/{tag}"
    if request.scope is MatchScope.FIRMS:
        assert request.changed_since is not None
        return f"match/firms/{request.changed_since.isoformat()}"
    return f"match/full/{tag}"


@workflow.defn
class MatchWorkflow:
    """Match, store the library rows of the scope, plan the pushes the new matches
    call for, send them, then poll the channel for delivery receipts a few times
    (`receipt_polls_s`); receipts still missing are collected by the next run."""

    @workflow.run
    async def run(self, request: MatchRequest) -> MatchOutcome:
        summary = await workflow.execute_activity_method(
            MatchingActivities.run_match, request, **MATCHING
        )
        planned = await workflow.execute_activity_method(
            MatchingActivities.plan_pushes, **DATABASE_BATCH
        )
        sent = 0
        while True:
            batch = await workflow.execute_activity_method(
                MatchingActivities.send_pushes, BATCH, **MESSAGE_CHANNEL
            )
            sent += batch
            if batch < BATCH:
                break
        waiting = 0
        for delay in request.receipt_polls_s:
            await workflow.sleep(delay)
            waiting = await workflow.execute_activity_method(
                MatchingActivities.collect_receipts, BATCH, **MESSAGE_RECEIPTS
            )
            if not waiting:
                break
        return MatchOutcome(match=summary, push=planned, sent=sent, awaiting_receipt=waiting)
