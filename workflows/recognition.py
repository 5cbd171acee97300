"""Recognition cases (免申即享): a firm identified from data is paid without applying.

One workflow per firm, item and period, started by its batch (workflows/
recognition_batch.py) once the firm's entry is verified. It reads its snapshot entry
(amount, evidence, the verifications that covered it), reserves the amount, tells the
firm, and waits for the firm to confirm or correct its receiving account, or decline;
a reminder goes out after the item's `remind_after_days` and the case expires at
`expire_after_days`. Where the item allows it, a firm whose account was verified by an
earlier payment is paid at once and told so. Then the disbursement tail pays it
(workflows/disbursement.py): payment, receipt, or 退票 → account correction → pay again.

A firm the department took off the list, or included by name, gets an individual
review first (department, then finance), as an application does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.policy import PolicyLibraryActivities
    from activities.recognition import RecognitionActivities
    from core.temporal_errors import ErrorType
    from core.workdays import SHANGHAI
    from models import search_attributes as sa_keys
    from models.cases import (
        CaseStage,
        CaseState,
        DecisionRequest,
        ReviewAction,
        StageDeadlineMissed,
        TimelineEntry,
        Withdrawal,
        WithdrawRequest,
    )
    from models.policy import Category
    from models.policy_change import DeadlineRequest
    from models.recognition import (
        CASE_WORKFLOW,
        AccountChange,
        CaseOpening,
        ConfirmationRule,
        FirmConfirmation,
        FirmDecline,
        RecognitionCaseInput,
        RecognitionNotice,
    )
    from models.reference import Actor, Role
    from models.review import ClearanceRequest, ReviewRequest
    from workflows.disbursement import CANCELLABLE, Disbursement, Withdrawn, failure_reason
    from workflows.options import ACK_AFTER_PROJECTION, DATABASE
    from workflows.refusals import check_review, invalid_input
    from workflows.review import SMART_REVIEW, CaseReview

REVIEW_STAGES = (CaseStage.DEPARTMENT_REVIEW, CaseStage.FINANCE_REVIEW)
REVIEWER_ROLES = {
    CaseStage.DEPARTMENT_REVIEW: (Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD),
    CaseStage.FINANCE_REVIEW: (Role.FINANCE_CASEWORKER,),
}
# Before any instruction exists the firm may decline (a withdrawal by the firm).
DECLINABLE = CANCELLABLE | {*REVIEW_STAGES, CaseStage.CONFIRMATION}


@workflow.defn(name=CASE_WORKFLOW)
class RecognitionCaseWorkflow:
    """Updates: `confirm` and `decline` (the firm, while it is asked to confirm),
    `decide` (individual review; or finance paying a failed payment again),
    `confirm_account` (after 退票), `withdraw` (the firm declines; finance cancels at
    the tail's stages). Signal: `budget_added`. Query: `state`."""

    @workflow.init
    def __init__(self, input: RecognitionCaseInput) -> None:
        self._input = input
        self.case_id, self.item_code = input.case_id, input.item_code
        self.uscc, self.period = input.uscc, input.period
        self._stage = CaseStage.CHECK
        self._opening: CaseOpening | None = None
        self.approved: int | None = None
        self._due_at: datetime | None = None
        self._overdue = False
        self._confirm_by: datetime | None = None
        self._timeline: list[TimelineEntry] = []
        self._moments: dict[str, datetime] = {}
        self._decision: DecisionRequest | None = None
        self._confirmation: FirmConfirmation | None = None
        self._tail = Disbursement(self)
        self._smart = CaseReview(self)
        self._to_verify: list[str] = []  # what the smart review leaves a person to check
        self._received = 0
        self._settled = 0

    @workflow.run
    async def run(self, input: RecognitionCaseInput) -> CaseState:
        try:
            return await self._proceed(input)
        except Withdrawn:
            return await self._finish(await self._tail.close(by_firm=CaseStage.DECLINED))
        except _Expired:
            return await self._finish(CaseStage.EXPIRED)

    async def _proceed(self, input: RecognitionCaseInput) -> CaseState:
        opening = await workflow.execute_activity_method(
            RecognitionActivities.open_recognition_case, input, **DATABASE
        )
        self._opening = opening
        # A firm reviewed on its own has no approved amount until someone approves.
        self.approved = None if input.individual_review else opening.amount_fen
        workflow.upsert_search_attributes([sa_keys.REGION.value_set(opening.region_code)])
        self._moments["entitled"] = opening.entitled_at
        for step in opening.steps:
            self._moments.setdefault(step.action, step.at)
            self._timeline.append(
                TimelineEntry(
                    at=step.at,
                    stage=CaseStage.CHECK,
                    actor=step.actor,
                    action=step.action,
                    detail=step.detail,
                )
            )
        if input.individual_review and workflow.patched(SMART_REVIEW):
            # A firm reviewed on its own: its facts from data, and a second duplicate check
            # (cases paid since the batch was identified count too).
            self._to_verify = await self._smart.run(
                ReviewRequest(
                    case_id=self.case_id,
                    category=Category.RECOGNITION.value,
                    item_code=self.item_code,
                    version=self._input.version,
                    period=self.period,
                    uscc=self.uscc,
                    amount_fen=opening.amount_fen,
                    point=CaseStage.DEPARTMENT_REVIEW.value,
                )
            )
        if input.individual_review:
            for stage in REVIEW_STAGES:
                request = await self._review(stage)
                decision = request.decision
                self.log(request.actor.name, decision.action.value, decision.reason)
                await self._smart.uphold(decision, request.actor.name)
                self._moments[f"{stage.value}_decided"] = workflow.now()
                if decision.action is ReviewAction.REJECT:
                    return await self._finish(CaseStage.REJECTED)
                if decision.amount_fen is not None:
                    self.approved = decision.amount_fen
                elif self.approved is None:
                    self.approved = opening.amount_fen
        assert self.approved is not None
        await self._tail.reserve(opening.budget_year)
        terms = opening.terms
        if terms.confirmation is ConfirmationRule.UNLESS_VERIFIED and opening.account_verified:
            await self._notify("identified", None)
            self.log("system", "notified", "收款账户已验证，免确认直接拨付")
        else:
            await self._await_confirmation(opening)
        await self._tail.pay(opening.budget_year)
        return await self._finish(CaseStage.PAID)

    # ----- stages -------------------------------------------------------------------

    async def _await_confirmation(self, opening: CaseOpening) -> None:
        terms = opening.terms
        started = workflow.now()
        self._confirm_by = started + timedelta(days=terms.expire_after_days)
        await self._notify("identified", self._confirm_by)
        by = self._confirm_by.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        self.log("system", "notified", f"请于 {by} 前确认收款账户，逾期视为放弃")
        await self.enter(CaseStage.CONFIRMATION)
        try:
            await self._tail.wait_for(
                lambda: self._confirmation is not None,
                within=timedelta(days=terms.remind_after_days),
            )
        except TimeoutError:
            await self._notify("reminder", self._confirm_by)
            self.log("system", "reminded")
            try:
                await self._tail.wait_for(
                    lambda: self._confirmation is not None,
                    within=max(self._confirm_by - workflow.now(), timedelta(0)),
                )
            except TimeoutError:
                await self._notify("expired", None)
                await self._tail.end(CaseStage.EXPIRED, "system", "逾期未确认收款账户")
                raise _Expired from None
        confirmation = self._confirmation
        assert confirmation is not None
        await workflow.execute_activity_method(
            RecognitionActivities.record_account,
            AccountChange(
                case_id=self.case_id,
                uscc=self.uscc,
                item_code=self.item_code,
                account=confirmation.account,
                actor=confirmation.actor.name,
            ),
            **DATABASE,
        )
        corrected = confirmation.account is not None
        self.log(
            confirmation.actor.name,
            "confirmed",
            "已更正收款账户" if corrected else "确认预留收款账户",
        )
        self._moments["confirmed"] = workflow.now()

    async def _review(self, stage: CaseStage) -> DecisionRequest:
        assert self._opening is not None
        self._decision = None
        department, days = self._unit(stage)
        self._due_at = await workflow.execute_activity_method(
            PolicyLibraryActivities.working_deadline,
            DeadlineRequest(start=workflow.now(), working_days=days),
            **DATABASE,
        )
        await self.enter(stage)
        try:
            await self._tail.wait_for(
                lambda: self._decision is not None,
                within=max(self._due_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            self._overdue = True
            workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(True)])
            due = self._due_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
            self.log("system", "overdue", f"办理时限 {due}")
            await workflow.execute_activity_method(
                CaseActivities.raise_case_overdue,
                StageDeadlineMissed(
                    case_id=self.case_id,
                    item_code=self.item_code,
                    stage=stage,
                    department_code=department,
                    due_at=self._due_at,
                ),
                **DATABASE,
            )
            await self._project()
            await self._tail.wait_for(lambda: self._decision is not None)
        assert self._decision is not None
        return self._decision

    async def _notify(self, kind: str, deadline: datetime | None) -> None:
        await workflow.execute_activity_method(
            RecognitionActivities.notify_firm,
            RecognitionNotice(
                case_id=self.case_id,
                uscc=self.uscc,
                item_code=self.item_code,
                version=self._input.version,
                period=self.period,
                kind=kind,
                amount_fen=self.approved,
                deadline=deadline,
            ),
            **DATABASE,
        )

    # ----- what the disbursement tail borrows (CaseHost) ---------------------------

    @property
    def stage(self) -> CaseStage:
        return self._stage

    async def enter(self, stage: CaseStage) -> None:
        self._stage, self._overdue = stage, False
        if stage not in REVIEW_STAGES:
            self._due_at = None
        if stage is CaseStage.PAYMENT:
            self._moments.setdefault("instructed", workflow.now())
        if stage is CaseStage.PAID and self._tail.paid_at is not None:
            self._moments["paid"] = self._tail.paid_at
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
        await self._project()
        # A case started before this rule answers as it always did (replay).
        self._settled = self._received if received is None else max(self._settled, received)

    def log(self, actor: str, action: str, detail: str = "") -> None:
        self._timeline.append(
            TimelineEntry(
                at=workflow.now(), stage=self._stage, actor=actor, action=action, detail=detail
            )
        )

    def finance_department(self) -> str:
        assert self._opening is not None
        return self._opening.finance_department_code

    # ----- helpers -----------------------------------------------------------------

    def _unit(self, stage: CaseStage) -> tuple[str, int]:
        opening = self._opening
        assert opening is not None
        if stage is CaseStage.DEPARTMENT_REVIEW:
            return opening.department_code, opening.department_working_days
        return opening.finance_department_code, opening.finance_working_days

    def _waiting_for(self) -> tuple[str | None, str | None]:
        if self._opening is None:
            return None, None
        if self._stage in REVIEW_STAGES:
            roles = "/".join(r.value for r in REVIEWER_ROLES[self._stage])
            return roles, self._unit(self._stage)[0]
        if self._stage is CaseStage.CONFIRMATION:
            return Role.ENTERPRISE.value, None
        return self._tail.waiting_for(self._stage) or (None, None)

    async def _project(self) -> None:
        try:
            await workflow.execute_activity_method(
                CaseActivities.project_case, self.state(), **DATABASE
            )
        except ActivityError as exc:
            self.log("system", "projection_failed", failure_reason(exc))

    async def _finish(self, stage: CaseStage) -> CaseState:
        await self.enter(stage)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    # ----- updates, signal, query ---------------------------------------------------

    @workflow.update
    async def confirm(self, request: FirmConfirmation) -> CaseState:
        self._confirmation = request
        return await self._settle()

    @confirm.validator
    def validate_confirm(self, request: FirmConfirmation) -> None:
        self._refuse_while_busy()
        self._require_firm(request.actor)
        if self._stage is not CaseStage.CONFIRMATION or self._confirmation is not None:
            raise ApplicationError(
                "the case is not waiting for the firm's confirmation", type=ErrorType.WRONG_STAGE
            )

    @workflow.update
    async def decline(self, request: FirmDecline) -> CaseState:
        self._tail.withdrawal = WithdrawRequest(
            actor=request.actor, withdrawal=Withdrawal(reason=request.reason)
        )
        return await self._settle()

    @decline.validator
    def validate_decline(self, request: FirmDecline) -> None:
        self._refuse_while_busy()
        self._require_firm(request.actor)
        self._tail.validate_withdraw(
            WithdrawRequest(actor=request.actor, withdrawal=Withdrawal(reason=request.reason)),
            DECLINABLE,
            None,
        )

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
            return
        if decision.action is ReviewAction.RETURN:
            raise invalid_input(
                "a recognition case is not returned to the firm: approve or reject", "action"
            )
        computed = self._opening.amount_fen if self._opening else None
        ceiling = self.approved if self.approved is not None else computed
        check_review(decision, ceiling)
        self._smart.validate_decision(decision, ceiling)

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
        if self._opening is None:
            return False
        units = {
            CaseStage.DEPARTMENT_REVIEW: self._opening.department_code,
            CaseStage.FINANCE_REVIEW: self._opening.finance_department_code,
        }
        return any(
            actor.role in REVIEWER_ROLES[stage] and actor.department_code == unit
            for stage, unit in units.items()
        )

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
        finance = self.finance_department() if self._opening else None
        self._tail.validate_withdraw(request, DECLINABLE, finance)

    def _require_firm(self, actor: Actor) -> None:
        if actor.role is not Role.ENTERPRISE or actor.enterprise_uscc != self.uscc:
            raise ApplicationError("only the firm itself does this", type=ErrorType.FORBIDDEN)

    def _refuse_while_busy(self) -> None:
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
        opening = self._opening
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
            verdict=None,
            computed_amount_fen=opening.amount_fen if opening else None,
            approved_amount_fen=self.approved,
            paid_amount_fen=self._tail.paid,
            instalment=self._tail.instalment,
            corrections=[],
            timeline=list(self._timeline),
            to_verify=[*(opening.to_verify if opening else []), *self._to_verify],
            failure_reason=self._tail.failure,
            evidence=list(self._smart.evidence),
            findings=self._smart.findings,
            batch_id=self._input.batch_id,
            confirm_by=self._confirm_by if self._stage is CaseStage.CONFIRMATION else None,
            moments=dict(self._moments),
        )


class _Expired(Exception):
    """The firm did not confirm in time: the case has closed as expired."""
