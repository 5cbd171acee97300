"""A recognition batch: identify, verify as a list, start one case per firm, follow them.

The workflow carries the batch id and a cursor, never the firms: the snapshot lives in
the database (domain/recognition). It identifies the batch (a no-op for an upload,
identified when it was sent), starts the straight-through firms' cases at once (start
round 1), waits for the department's and finance's verification of the rest, each
against its working-day limit (an overdue warning to the unit, and it keeps waiting),
starts the verified firms' cases (round 2), then follows the cases until every one has
closed.

Cases are child workflows with ids from their business key and the ABANDON parent-close
policy: they outlive the batch's runs, and starting one that exists (a resumed batch)
finds it instead. They start a page at a time, at most `CONCURRENT_STARTS` at once; after
a page the run continues as new when its history has grown past `history_limit` events,
so a batch of 100,000 firms stays far below Temporal's limits of 51,200 events and 2 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.policy import PolicyLibraryActivities
    from activities.recognition import RecognitionActivities
    from core.temporal_errors import ErrorType
    from models import search_attributes as sa_keys
    from models.cases import CaseStage, StageDeadlineMissed
    from models.policy import Category
    from models.policy_change import DeadlineRequest
    from models.recognition import (
        BATCH_WORKFLOW,
        BatchFailure,
        BatchInput,
        BatchOpening,
        BatchPhase,
        BatchProgress,
        BatchState,
        CasePageRequest,
        RecognitionCaseInput,
        VerificationRecord,
        VerificationRequest,
    )
    from models.reference import Role
    from workflows.disbursement import failure_reason
    from workflows.options import DATABASE, RECOGNITION_SNAPSHOT
    from workflows.recognition import RecognitionCaseWorkflow
    from workflows.refusals import invalid_input

CONCURRENT_STARTS = 50
FOLLOWING = 3  # BatchInput.round once every case has started
VERIFYING = {
    BatchPhase.DEPARTMENT_VERIFICATION: CaseStage.DEPARTMENT_REVIEW,
    BatchPhase.FINANCE_VERIFICATION: CaseStage.FINANCE_REVIEW,
}


@workflow.defn(name=BATCH_WORKFLOW)
class RecognitionBatchWorkflow:
    """Update: `verify` (the department, then finance). Query: `state`."""

    @workflow.init
    def __init__(self, input: BatchInput) -> None:
        self._input = input
        self._opening: BatchOpening | None = None
        self._phase = input.phase
        self._started = input.started
        self._due_at: datetime | None = None
        self._overdue = False
        self._progress: BatchProgress | None = None
        self._busy = False

    @workflow.run
    async def run(self, input: BatchInput) -> BatchProgress:
        try:
            opening = await workflow.execute_activity_method(
                RecognitionActivities.identify_batch, input.batch_id, **RECOGNITION_SNAPSHOT
            )
        except ActivityError as exc:
            # Nothing was frozen: the batch fails with its reason and frees the period.
            await workflow.execute_activity_method(
                RecognitionActivities.abandon_batch,
                BatchFailure(batch_id=input.batch_id, reason=failure_reason(exc)),
                **DATABASE,
            )
            raise
        self._opening, self._phase = opening, opening.phase
        if input.round < FOLLOWING:
            if input.round <= 1 and opening.straight_through:
                await self._start_round(1)
            while self._phase in VERIFYING:
                await self._await_verification(self._phase)
            await self._start_round(2)
            self._phase = await workflow.execute_activity_method(
                RecognitionActivities.finish_starting, input.batch_id, **DATABASE
            )
        self._set_stage()
        return await self._follow()

    # ----- verification --------------------------------------------------------------

    async def _await_verification(self, phase: BatchPhase) -> None:
        opening = self._opening
        assert opening is not None
        finance = phase is BatchPhase.FINANCE_VERIFICATION
        unit = opening.finance_department_code if finance else opening.department_code
        days = opening.finance_working_days if finance else opening.department_working_days
        self._due_at = await workflow.execute_activity_method(
            PolicyLibraryActivities.working_deadline,
            DeadlineRequest(start=workflow.now(), working_days=days),
            **DATABASE,
        )
        self._overdue = False
        self._set_stage()
        try:
            await workflow.wait_condition(
                lambda: self._phase is not phase,
                timeout=max(self._due_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            self._overdue = True
            workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(True)])
            await workflow.execute_activity_method(
                CaseActivities.raise_case_overdue,
                StageDeadlineMissed(
                    case_id=opening.batch_id,
                    item_code=opening.item_code,
                    stage=VERIFYING[phase],
                    department_code=unit,
                    due_at=self._due_at,
                ),
                **DATABASE,
            )
            await workflow.wait_condition(lambda: self._phase is not phase)
        self._due_at, self._overdue = None, False
        workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(False)])

    @workflow.update
    async def verify(self, request: VerificationRequest) -> BatchProgress:
        self._busy = True
        try:
            record = VerificationRecord(
                batch_id=self._input.batch_id,
                actor=request.actor.name,
                at=workflow.now(),
                department=request.department,
                finance=request.finance,
            )
            try:
                phase = await workflow.execute_activity_method(
                    RecognitionActivities.apply_verification, record, **DATABASE
                )
            except ActivityError as exc:
                raise ApplicationError(failure_reason(exc), type=ErrorType.WRONG_STAGE) from None
            self._progress = await workflow.execute_activity_method(
                RecognitionActivities.batch_progress, self._input.batch_id, **DATABASE
            )
            self._phase = phase
            return self._progress
        finally:
            self._busy = False

    @verify.validator
    def validate_verify(self, request: VerificationRequest) -> None:
        opening = self._opening
        if self._busy or opening is None:
            raise ApplicationError("the batch is changing; try again", type=ErrorType.WRONG_STAGE)
        actor = request.actor
        if (request.department is None) == (request.finance is None):
            raise invalid_input("send the department's or finance's verification", "body")
        roles: tuple[Role, ...]
        if request.department is not None:
            wanted, unit = BatchPhase.DEPARTMENT_VERIFICATION, opening.department_code
            roles = (Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD)
        else:
            wanted, unit = BatchPhase.FINANCE_VERIFICATION, opening.finance_department_code
            roles = (Role.FINANCE_CASEWORKER,)
        if self._phase is not wanted:
            raise ApplicationError(
                f"the batch is at {self._phase.value}, not {wanted.value}",
                type=ErrorType.WRONG_STAGE,
            )
        if actor.role not in roles or actor.department_code != unit:
            raise ApplicationError(
                f"{wanted.value} is done by department {unit}", type=ErrorType.FORBIDDEN
            )

    # ----- starting the cases ---------------------------------------------------------

    async def _start_round(self, start_round: int) -> None:
        input = self._input
        after = input.after_uscc if input.round == start_round else ""
        while True:
            page = await workflow.execute_activity_method(
                RecognitionActivities.case_page,
                CasePageRequest(
                    batch_id=input.batch_id,
                    start_round=start_round,
                    after_uscc=after,
                    limit=input.page_size,
                ),
                **DATABASE,
            )
            if not page.cases:
                return
            for start in range(0, len(page.cases), CONCURRENT_STARTS):
                chunk = page.cases[start : start + CONCURRENT_STARTS]
                await asyncio.gather(*(self._start_case(case) for case in chunk))
            self._started += len(page.cases)
            after = page.last_uscc
            info = workflow.info()
            if (
                info.get_current_history_length() > input.history_limit
                or info.is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    input.model_copy(
                        update={
                            "round": start_round,
                            "after_uscc": after,
                            "started": self._started,
                            "phase": self._phase,
                        }
                    )
                )

    async def _start_case(self, case: RecognitionCaseInput) -> None:
        # A case started by an earlier run of this batch is the same case.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                RecognitionCaseWorkflow.run,
                case,
                id=case.case_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa_keys.KIND, "case"),
                        SearchAttributePair(sa_keys.CATEGORY, Category.RECOGNITION.value),
                        SearchAttributePair(sa_keys.ITEM_CODE, case.item_code),
                        SearchAttributePair(sa_keys.STAGE, CaseStage.CHECK.value),
                        SearchAttributePair(sa_keys.BATCH, case.batch_id),
                    ]
                ),
            )

    # ----- following the cases ------------------------------------------------------------

    async def _follow(self) -> BatchProgress:
        input = self._input
        while True:
            self._progress = await workflow.execute_activity_method(
                RecognitionActivities.batch_progress, input.batch_id, **DATABASE
            )
            still_open = await workflow.execute_activity_method(
                RecognitionActivities.open_batch_cases, input.batch_id, **DATABASE
            )
            if still_open == 0:
                break
            await workflow.sleep(timedelta(seconds=input.follow_every_s))
            if workflow.info().get_current_history_length() > input.history_limit:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    input.model_copy(
                        update={"round": FOLLOWING, "started": self._started, "phase": self._phase}
                    )
                )
        await workflow.execute_activity_method(
            RecognitionActivities.close_batch, input.batch_id, **DATABASE
        )
        self._phase = BatchPhase.DONE
        self._set_stage()
        self._progress = await workflow.execute_activity_method(
            RecognitionActivities.batch_progress, input.batch_id, **DATABASE
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._progress

    # ----- helpers -----------------------------------------------------------------------

    def _set_stage(self) -> None:
        opening = self._opening
        assert opening is not None
        unit = None
        if self._phase is BatchPhase.DEPARTMENT_VERIFICATION:
            unit = opening.department_code
        elif self._phase is BatchPhase.FINANCE_VERIFICATION:
            unit = opening.finance_department_code
        workflow.upsert_search_attributes(
            [
                sa_keys.STAGE.value_set(self._phase.value),
                sa_keys.DEPARTMENT.value_set(unit) if unit else sa_keys.DEPARTMENT.value_unset(),
            ]
        )

    @workflow.query
    def state(self) -> BatchState:
        return BatchState(
            batch_id=self._input.batch_id,
            phase=self._phase,
            cases_started=self._started,
            due_at=self._due_at,
            overdue=self._overdue,
            progress=self._progress,
        )
