"""Policy-change approval: a submitted item version on its way to publication."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.policy import PolicyLibraryActivities
    from core.temporal_errors import ErrorType
    from models import search_attributes as sa_keys
    from models.matching import MatchRequest, MatchScope
    from models.policy_change import (
        REVIEWER_ROLE,
        ChangeStage,
        DeadlineRequest,
        PolicyChangeInput,
        PolicyChangeState,
        ReviewDecision,
        ReviewOutcome,
        ReviewRecord,
        StageOverdue,
    )
    from models.reference import Actor
    from workflows.matching import MatchWorkflow, match_workflow_id
    from workflows.options import POLICY_LIBRARY
    from workflows.refusals import invalid_input


@workflow.defn
class PolicyChangeWorkflow:
    """Takes one submitted version through approval to publication.

    Stages: department_head_review, then finance_review when the amount rule or the
    quota changes, then published (or rejected: the version goes back to draft).
    Updates: `approve` and `reject` (validators refuse a wrong role, department or
    region, a stage that is not open, and the author reviewing their own change).
    Query: `state`. A stage not acted on by its working-day deadline raises a
    warning once, flags the workflow overdue and keeps waiting.
    """

    @workflow.init
    def __init__(self, input: PolicyChangeInput) -> None:
        self._input = input
        self._stage = ChangeStage.DEPARTMENT_HEAD_REVIEW
        self._due_at: datetime | None = None
        self._overdue = False
        self._pending: ReviewRecord | None = None
        self._pending_actor: Actor | None = None
        self._decisions: list[ReviewRecord] = []
        # How many decisions the main loop has carried through to the next stage;
        # an update returns only then, so its answer shows where the change now stands.
        self._settled = 0
        self._recorded = 0

    @workflow.run
    async def run(self, input: PolicyChangeInput) -> PolicyChangeState:
        stages = [(ChangeStage.DEPARTMENT_HEAD_REVIEW, input.head_review_days)]
        if input.money_changed:
            stages.append((ChangeStage.FINANCE_REVIEW, input.finance_review_days))
        for stage, days in stages:
            record = await self._review(stage, days)
            outcome = ReviewOutcome(
                item_code=input.item_code,
                version=input.version,
                stage=stage,
                approved=record.decision == "approved",
                actor=self._reviewer(),
                comment=record.comment,
                subject=workflow.info().workflow_id,
            )
            await workflow.execute_activity_method(
                PolicyLibraryActivities.record_review, outcome, **POLICY_LIBRARY
            )
            self._recorded += 1
            self._pending = self._pending_actor = None
            if not outcome.approved:
                self._finish(ChangeStage.REJECTED)
                return await self._done()
        await workflow.execute_activity_method(
            PolicyLibraryActivities.publish_version, input, **POLICY_LIBRARY
        )
        self._finish(ChangeStage.PUBLISHED)
        # Match the new version against every firm; it runs on after this change ends.
        request = MatchRequest(scope=MatchScope.ITEM, item_code=input.item_code)
        with contextlib.suppress(WorkflowAlreadyStartedError):  # the run is there already
            await workflow.start_child_workflow(
                MatchWorkflow.run,
                request,
                id=match_workflow_id(request, f"v{input.version}"),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        return await self._done()

    async def _review(self, stage: ChangeStage, working_days: int) -> ReviewRecord:
        self._stage, self._overdue = stage, False
        self._due_at = await workflow.execute_activity_method(
            PolicyLibraryActivities.working_deadline,
            DeadlineRequest(start=workflow.now(), working_days=working_days),
            **POLICY_LIBRARY,
        )
        workflow.upsert_search_attributes(
            [sa_keys.STAGE.value_set(stage.value), sa_keys.OVERDUE.value_set(False)]
        )
        self._settled = self._recorded
        try:
            await workflow.wait_condition(
                lambda: self._pending is not None,
                timeout=max(self._due_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            await self._raise_overdue(stage)
            await workflow.wait_condition(lambda: self._pending is not None)
        assert self._pending is not None
        return self._pending

    async def _raise_overdue(self, stage: ChangeStage) -> None:
        self._overdue = True
        workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(True)])
        assert self._due_at is not None
        department = (
            self._input.department_code
            if stage is ChangeStage.DEPARTMENT_HEAD_REVIEW
            else self._input.finance_department_code
        )
        await workflow.execute_activity_method(
            PolicyLibraryActivities.raise_overdue,
            StageOverdue(
                subject=workflow.info().workflow_id,
                item_code=self._input.item_code,
                version=self._input.version,
                stage=stage,
                department_code=department,
                due_at=self._due_at,
            ),
            **POLICY_LIBRARY,
        )

    def _reviewer(self) -> Actor:
        assert self._pending_actor is not None
        return self._pending_actor

    def _finish(self, stage: ChangeStage) -> None:
        self._stage, self._due_at, self._overdue = stage, None, False
        workflow.upsert_search_attributes(
            [sa_keys.STAGE.value_set(stage.value), sa_keys.OVERDUE.value_set(False)]
        )
        self._settled = self._recorded

    async def _done(self) -> PolicyChangeState:
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    # ----- updates and query ------------------------------------------------------

    @workflow.update
    async def approve(self, decision: ReviewDecision) -> PolicyChangeState:
        return await self._decide("approved", decision)

    @approve.validator
    def validate_approve(self, decision: ReviewDecision) -> None:
        self._check_reviewer(decision)

    @workflow.update
    async def reject(self, decision: ReviewDecision) -> PolicyChangeState:
        return await self._decide("rejected", decision)

    @reject.validator
    def validate_reject(self, decision: ReviewDecision) -> None:
        self._check_reviewer(decision)
        if not decision.comment.strip():
            raise invalid_input("a rejection needs a reason", "reason")

    @workflow.query
    def state(self) -> PolicyChangeState:
        role = REVIEWER_ROLE.get(self._stage)
        department = None
        if self._stage is ChangeStage.DEPARTMENT_HEAD_REVIEW:
            department = self._input.department_code
        elif self._stage is ChangeStage.FINANCE_REVIEW:
            department = self._input.finance_department_code
        return PolicyChangeState(
            item_code=self._input.item_code,
            version=self._input.version,
            stage=self._stage,
            waiting_for_role=role if self._pending is None else None,
            waiting_for_department=department if self._pending is None else None,
            due_at=self._due_at,
            overdue=self._overdue,
            decisions=list(self._decisions),
        )

    async def _decide(self, decision: str, request: ReviewDecision) -> PolicyChangeState:
        record = ReviewRecord(
            stage=self._stage,
            decision=decision,
            actor=request.actor.name,
            comment=request.comment,
            at=workflow.now(),
        )
        self._pending, self._pending_actor = record, request.actor
        self._decisions.append(record)
        count = len(self._decisions)
        await workflow.wait_condition(lambda: self._settled >= count)
        return self.state()

    def _check_reviewer(self, decision: ReviewDecision) -> None:
        role = REVIEWER_ROLE.get(self._stage)
        if role is None or self._pending is not None:
            raise ApplicationError(
                f"stage {self._stage.value} takes no decision", type=ErrorType.WRONG_STAGE
            )
        actor = decision.actor
        if actor.role is not role:
            raise ApplicationError(
                f"stage {self._stage.value} is decided by {role.value}, not {actor.role.value}",
                type=ErrorType.FORBIDDEN,
            )
        wanted = (
            self._input.department_code
            if self._stage is ChangeStage.DEPARTMENT_HEAD_REVIEW
            else self._input.finance_department_code
        )
        if actor.department_code != wanted:
            raise ApplicationError(
                f"stage {self._stage.value} is decided by department {wanted}",
                type=ErrorType.FORBIDDEN,
            )
        if actor.name == self._input.author:
            raise ApplicationError(
                "the author may not approve their own change", type=ErrorType.FORBIDDEN
            )
