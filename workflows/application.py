"""Application cases (申报即兑付): apply at any time, reviews under time limits, payment."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.policy import PolicyLibraryActivities
    from core.temporal_errors import ErrorType
    from models import search_attributes as sa_keys
    from models.cases import (
        ApplicationInput,
        CaseStage,
        CaseState,
        CheckResult,
        DecisionRequest,
        ResubmitRequest,
        ReviewAction,
        ReviewEntry,
        StageDeadlineMissed,
        TimelineEntry,
        WithdrawRequest,
        budget_year,
    )
    from models.eligibility import Outcome, Verdict
    from models.policy import Category, Stage, StageLimit
    from models.policy_change import DeadlineRequest
    from models.reference import Actor, Role
    from models.review import ClearanceRequest, ReviewRequest
    from workflows.disbursement import (
        CANCELLABLE,
        Disbursement,
        Withdrawn,
        failure_reason,
    )
    from workflows.options import ACK_AFTER_PROJECTION, DATABASE, REVIEW_ENTRY
    from workflows.refusals import check_review, invalid_input
    from workflows.review import SMART_REVIEW, CaseReview

REVIEW_STAGES = (CaseStage.DEPARTMENT_REVIEW, CaseStage.FINANCE_REVIEW)
REVIEWER_ROLES = {
    CaseStage.DEPARTMENT_REVIEW: (Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD),
    CaseStage.FINANCE_REVIEW: (Role.FINANCE_CASEWORKER,),
}
# Before any payment instruction exists, the firm may withdraw.
APPLICATION_WITHDRAWABLE = CANCELLABLE | {*REVIEW_STAGES, CaseStage.CORRECTION}


@workflow.defn
class ApplicationWorkflow:
    """One firm's application to one item for one period.

    Stages: check (automatic eligibility and amount), department_review,
    finance_review, then the disbursement tail (workflows/disbursement.py):
    awaiting_budget (only while the quota cannot cover it), payment (one child
    PaymentWorkflow per instalment), then paid; or rejected, withdrawn (by the firm)
    or cancelled (by finance). A reviewer may return the case for correction (补正);
    the firm's `resubmit` sends it back to that stage. A payment the bank returns (退票)
    waits in account_correction until the firm confirms its corrected account, then
    pays again under the next instalment.
    Updates: `decide` (approve, possibly with a lower amount; reject; return; or pay a
    failed payment again), `resubmit`, `confirm_account`, `withdraw`. Signal:
    `budget_added`. Query: `state`. A review past its working-day limit raises one
    overdue warning to its unit and head, and keeps waiting.
    """

    @workflow.init
    def __init__(self, input: ApplicationInput) -> None:
        self._input = input
        self.case_id, self.item_code = input.case_id, input.item_code
        self.uscc, self.period = input.uscc, input.period
        self._stage = CaseStage.CHECK
        self._check: CheckResult | None = None
        self._computed: int | None = None  # by the automatic check, if it could
        self.approved: int | None = None  # empty until someone approves
        self._to_verify: list[str] = []
        self._due_at: datetime | None = None
        self._overdue = False
        self._corrections: list[str] = []
        self._timeline: list[TimelineEntry] = []
        self._decision: DecisionRequest | None = None
        self._resubmission: ResubmitRequest | None = None
        self._tail = Disbursement(self)
        self._smart = CaseReview(self)
        # Updates return once the main loop has acted on them (see _settle).
        self._received = 0
        self._settled = 0

    @workflow.run
    async def run(self, input: ApplicationInput) -> CaseState:
        try:
            return await self._proceed(input)
        except Withdrawn:
            return await self._finish(await self._tail.close())

    async def _proceed(self, input: ApplicationInput) -> CaseState:
        try:
            check = await workflow.execute_activity_method(
                CaseActivities.check_application, input, **DATABASE
            )
        except ActivityError as exc:  # e.g. the period is already claimed by another case
            self.log("system", "rejected", f"无法受理：{failure_reason(exc)}")
            return await self._finish(CaseStage.REJECTED)
        self._check, self._computed = check, check.amount_fen
        workflow.upsert_search_attributes([sa_keys.REGION.value_set(check.region_code)])
        self.log("system", "checked", f"{check.verdict.value}; {check.amount_explanation}")
        if check.verdict is Verdict.NOT_ELIGIBLE:
            failed = [c.description for c in check.conditions if c.outcome is Outcome.FAIL]
            self.log("system", "rejected", "；".join(failed) or check.amount_explanation)
            return await self._finish(CaseStage.REJECTED)
        if check.amount_fen == 0:
            self.log("system", "rejected", f"按规则计算金额为零：{check.amount_explanation}")
            return await self._finish(CaseStage.REJECTED)
        # What the check could not decide goes to the reviewer, marked; never a rejection.
        self._to_verify = [
            f"需人工核实：{c.description}" for c in check.conditions if c.outcome is Outcome.UNKNOWN
        ]
        if check.failure:
            self._to_verify.insert(0, check.failure)
        if check.amount_fen is None:
            self._to_verify.append("金额无法自动计算：审核通过时请核定金额")
        if workflow.patched(SMART_REVIEW):
            self._to_verify += await self._smart.run(
                ReviewRequest(
                    case_id=self.case_id,
                    category=Category.APPLICATION.value,
                    item_code=self.item_code,
                    version=input.version,
                    period=self.period,
                    uscc=self.uscc,
                    amount_fen=check.amount_fen,
                    project=input.project,
                    declared=input.declared,
                    point=CaseStage.CHECK.value,
                )
            )

        index = 0
        while index < len(REVIEW_STAGES):
            request = await self._review(REVIEW_STAGES[index])
            decision = request.decision
            self.log(request.actor.name, decision.action.value, decision.reason)
            await self._smart.uphold(decision, request.actor.name)
            if decision.action is ReviewAction.APPROVE:
                if decision.amount_fen is not None:
                    self.approved = decision.amount_fen
                elif self.approved is None:
                    self.approved = self._computed
                index += 1
            elif decision.action is ReviewAction.REJECT:
                return await self._finish(CaseStage.REJECTED)
            else:
                await self._await_correction(decision.corrections)

        await self._tail.disburse(budget_year(input))
        return await self._finish(CaseStage.PAID)

    # ----- stages -----------------------------------------------------------------

    async def _review(self, stage: CaseStage) -> DecisionRequest:
        self._decision = None
        limit = self._limit(stage)
        if workflow.patched(REVIEW_ENTRY):
            await self.enter(stage, review_days=limit.working_days)
        else:
            self._due_at = await self._deadline(workflow.now(), limit.working_days)
            await self.enter(stage)
        assert self._due_at is not None
        try:
            await self._tail.wait_for(
                lambda: self._decision is not None,
                within=max(self._due_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            await self._raise_overdue(stage, limit.department_code)
            await self._tail.wait_for(lambda: self._decision is not None)
        assert self._decision is not None
        return self._decision

    async def _raise_overdue(self, stage: CaseStage, department_code: str) -> None:
        assert self._due_at is not None
        self._overdue = True
        workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(True)])
        self.log("system", "overdue", f"办理时限 {self._due_at.isoformat()}")
        await workflow.execute_activity_method(
            CaseActivities.raise_case_overdue,
            StageDeadlineMissed(
                case_id=self.case_id,
                item_code=self.item_code,
                stage=stage,
                department_code=department_code,
                due_at=self._due_at,
            ),
            **DATABASE,
        )
        await self._project()

    async def _await_correction(self, corrections: list[str]) -> None:
        self._corrections, self._resubmission = corrections, None
        await self.enter(CaseStage.CORRECTION)
        await self._tail.wait_for(lambda: self._resubmission is not None)
        assert self._resubmission is not None
        self._input.materials.update(self._resubmission.resubmission.materials)
        self.log(self._resubmission.actor.name, "resubmitted", self._resubmission.resubmission.note)
        self._corrections = []

    # ----- what the disbursement tail borrows (CaseHost) ---------------------------

    @property
    def stage(self) -> CaseStage:
        return self._stage

    async def enter(self, stage: CaseStage, review_days: int | None = None) -> None:
        """Enter `stage`; a review entered with `review_days` gets its deadline from the
        activity that projects it."""
        self._stage, self._overdue = stage, False
        if stage not in REVIEW_STAGES or review_days is not None:
            self._due_at = None  # only a review runs against a deadline
        _role, unit = self._waiting_for()
        workflow.upsert_search_attributes(
            [
                sa_keys.STAGE.value_set(stage.value),
                sa_keys.OVERDUE.value_set(False),
                sa_keys.DEPARTMENT.value_set(unit) if unit else sa_keys.DEPARTMENT.value_unset(),
            ]
        )
        # Only the updates received before the projection are answered: one that arrives
        # while it is written has not been acted on yet, and waits for the next round.
        received = self._received if workflow.patched(ACK_AFTER_PROJECTION) else None
        if review_days is None:
            await self._project()
        else:
            await self._project_review(review_days)
        # A case started before this rule answers as it always did (replay).
        self._settled = self._received if received is None else max(self._settled, received)

    def log(self, actor: str, action: str, detail: str = "") -> None:
        self._timeline.append(
            TimelineEntry(
                at=workflow.now(), stage=self._stage, actor=actor, action=action, detail=detail
            )
        )

    def finance_department(self) -> str:
        return self._limit(CaseStage.FINANCE_REVIEW).department_code

    # ----- helpers -----------------------------------------------------------------

    def _limit(self, stage: CaseStage) -> StageLimit:
        assert self._check is not None
        wanted = Stage(stage.value)
        return next(s for s in self._check.stages if s.stage is wanted)

    def _waiting_for(self) -> tuple[str | None, str | None]:
        """(role, unit) that must act now, or (None, None) when nobody must."""
        if self._check is None:
            return None, None
        if self._stage in REVIEW_STAGES:
            roles = "/".join(r.value for r in REVIEWER_ROLES[self._stage])
            return roles, self._limit(self._stage).department_code
        if self._stage is CaseStage.CORRECTION:
            return Role.ENTERPRISE.value, None
        return self._tail.waiting_for(self._stage) or (None, None)

    async def _project(self) -> None:
        """Refresh the list projection; a projection that cannot be written must not
        stop the case (lists lag until the next stage writes it)."""
        try:
            await workflow.execute_activity_method(
                CaseActivities.project_case, self.state(), **DATABASE
            )
        except ActivityError as exc:
            self.log("system", "projection_failed", failure_reason(exc))

    async def _project_review(self, working_days: int) -> None:
        """Project the case entering a review, with the review's deadline. If the
        projection cannot be written, the deadline is still computed on its own: the
        case must not wait without one."""
        entry = ReviewEntry(state=self.state(), start=workflow.now(), working_days=working_days)
        try:
            self._due_at = await workflow.execute_activity_method(
                CaseActivities.enter_review, entry, **DATABASE
            )
        except ActivityError as exc:
            self.log("system", "projection_failed", failure_reason(exc))
            self._due_at = await self._deadline(entry.start, working_days)

    async def _deadline(self, start: datetime, working_days: int) -> datetime:
        return await workflow.execute_activity_method(
            PolicyLibraryActivities.working_deadline,
            DeadlineRequest(start=start, working_days=working_days),
            **DATABASE,
        )

    async def _finish(self, stage: CaseStage) -> CaseState:
        await self.enter(stage)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    # ----- updates, signal, query ---------------------------------------------------

    @workflow.update
    async def decide(self, request: DecisionRequest) -> CaseState:
        if self._stage is CaseStage.PAYMENT_FAILED:
            self._tail.retry_decision = request
        else:
            self._decision = request
        return await self._settle()

    @decide.validator
    def validate_decide(self, request: DecisionRequest) -> None:
        self._refuse_while_busy()
        failed_payment = self._stage is CaseStage.PAYMENT_FAILED
        taken = self._tail.retry_decision if failed_payment else self._decision
        if not (self._stage in REVIEW_STAGES or failed_payment) or taken is not None:
            raise ApplicationError(
                f"stage {self._stage.value} takes no review decision", type=ErrorType.WRONG_STAGE
            )
        actor, decision = request.actor, request.decision
        roles = REVIEWER_ROLES.get(self._stage, (Role.FINANCE_CASEWORKER,))
        _role, department = self._waiting_for()
        if actor.role not in roles or actor.department_code != department:
            raise ApplicationError(
                f"stage {self._stage.value} is decided by department {department}",
                type=ErrorType.FORBIDDEN,
            )
        if failed_payment:
            self._tail.validate_retry(request)
        ceiling = self.approved if self.approved is not None else self._computed
        check_review(decision, ceiling)
        self._smart.validate_decision(decision, ceiling)
        if decision.action is ReviewAction.RETURN and not decision.corrections:
            raise invalid_input("return needs the list of corrections", "corrections")

    @workflow.update
    async def clear_finding(self, request: ClearanceRequest) -> CaseState:
        await self._smart.clear(request)
        await self._project()
        return self.state()

    @clear_finding.validator
    def validate_clear_finding(self, request: ClearanceRequest) -> None:
        self._smart.validate_clear(request, self._may_review)

    def _may_review(self, actor: Actor) -> bool:
        """A reviewer of either review stage of this case (department or finance)."""
        if self._check is None:
            return False
        return any(
            actor.role in REVIEWER_ROLES[stage]
            and actor.department_code == self._limit(stage).department_code
            for stage in REVIEW_STAGES
        )

    @workflow.update
    async def resubmit(self, request: ResubmitRequest) -> CaseState:
        self._resubmission = request
        return await self._settle()

    @resubmit.validator
    def validate_resubmit(self, request: ResubmitRequest) -> None:
        self._refuse_while_busy()
        if self._stage is not CaseStage.CORRECTION or self._resubmission is not None:
            raise ApplicationError(
                "the case is not waiting for a correction", type=ErrorType.WRONG_STAGE
            )
        if request.actor.role is not Role.ENTERPRISE or request.actor.enterprise_uscc != self.uscc:
            raise ApplicationError("only the applicant firm resubmits", type=ErrorType.FORBIDDEN)

    @workflow.update
    async def confirm_account(self, actor: Actor) -> CaseState:
        self._tail.account_confirmation = actor
        return await self._settle()

    @confirm_account.validator
    def validate_confirm_account(self, actor: Actor) -> None:
        self._refuse_while_busy()
        self._tail.validate_confirm_account(actor)

    @workflow.update
    async def withdraw(self, request: WithdrawRequest) -> CaseState:
        self._tail.withdrawal = request
        return await self._settle()

    @withdraw.validator
    def validate_withdraw(self, request: WithdrawRequest) -> None:
        self._refuse_while_busy()
        finance = self.finance_department() if self._check else None
        self._tail.validate_withdraw(request, APPLICATION_WITHDRAWABLE, finance)

    def _refuse_while_busy(self) -> None:
        """One accepted update at a time: the next waits until the case has moved on."""
        if self._received > self._settled:
            raise ApplicationError("the case is changing; try again", type=ErrorType.WRONG_STAGE)

    @workflow.signal
    def budget_added(self) -> None:
        self._tail.budget_added = True

    async def _settle(self) -> CaseState:
        self._received += 1
        wanted = self._received
        await workflow.wait_condition(lambda: self._settled >= wanted)
        return self.state()

    @workflow.query
    def state(self) -> CaseState:
        waiting_role, waiting_department = self._waiting_for()
        return CaseState(
            case_id=self.case_id,
            item_code=self.item_code,
            version=self._input.version,
            period=self.period,
            uscc=self.uscc,
            stage=self._stage,
            waiting_for_role=waiting_role,
            waiting_for_department=waiting_department,
            due_at=self._due_at,
            overdue=self._overdue,
            verdict=self._check.verdict if self._check else None,
            computed_amount_fen=self._computed,
            approved_amount_fen=self.approved,
            paid_amount_fen=self._tail.paid,
            instalment=self._tail.instalment,
            corrections=list(self._corrections),
            timeline=list(self._timeline),
            conditions=list(self._check.conditions) if self._check else [],
            to_verify=list(self._to_verify),
            failure_reason=self._tail.failure,
            evidence=list(self._smart.evidence),
            findings=self._smart.findings,
        )
