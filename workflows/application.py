"""Application cases (申报即兑付): apply at any time, reviews under time limits, payment."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.policy_library import PolicyLibraryActivities
    from domain.rules import Verdict
    from models import search_attributes as sa_keys
    from models.case import (
        ApplicationInput,
        CaseClosure,
        CaseStage,
        CaseState,
        CheckResult,
        DecisionRequest,
        PaymentInput,
        Reservation,
        ResubmitRequest,
        ReviewAction,
        StageDeadlineMissed,
        TimelineEntry,
        WithdrawRequest,
    )
    from models.policy import Stage, StageLimit
    from models.policy_change import DeadlineRequest
    from models.reference import Actor, Role
    from workflows.payment import PaymentWorkflow

DB = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=["Conflict", "NotFound", "InvalidInput", "QuotaExhausted"],
    ),
)
REVIEW_STAGES = (CaseStage.DEPARTMENT_REVIEW, CaseStage.FINANCE_REVIEW)
REVIEWER_ROLES = {
    CaseStage.DEPARTMENT_REVIEW: (Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD),
    CaseStage.FINANCE_REVIEW: (Role.FINANCE_CASEWORKER,),
}
BUDGET_RETRY = timedelta(days=1)
# Before any payment instruction exists, the firm may withdraw; finance may cancel a
# case that cannot be paid (no quota, or an account the firm never corrects).
WITHDRAWABLE = frozenset(
    {
        CaseStage.DEPARTMENT_REVIEW,
        CaseStage.FINANCE_REVIEW,
        CaseStage.CORRECTION,
        CaseStage.AWAITING_BUDGET,
        CaseStage.ACCOUNT_CORRECTION,
    }
)
CANCELLABLE = frozenset({CaseStage.AWAITING_BUDGET, CaseStage.ACCOUNT_CORRECTION})


class _Withdrawn(Exception):
    """Unwinds the run to its close-down when a withdrawal has been accepted."""


@workflow.defn
class ApplicationWorkflow:
    """One firm's application to one item for one period.

    Stages: check (automatic eligibility and amount), department_review,
    finance_review, awaiting_budget (only while the quota cannot cover it), payment
    (one child PaymentWorkflow per instalment), then paid; or rejected, withdrawn
    (by the firm) or cancelled (by finance). A reviewer may return the case for
    correction (补正); the firm's `resubmit` sends it back to that stage. A payment
    the bank returns (退票) waits in account_correction until the firm confirms its
    corrected account, then pays again under the next instalment.
    Updates: `decide` (approve, possibly with a lower amount; reject; return),
    `resubmit`, `confirm_account`, `withdraw`. Signal: `budget_added`. Query:
    `state`. A review past its working-day limit raises one overdue warning to its
    unit and head, and keeps waiting.
    """

    @workflow.init
    def __init__(self, input: ApplicationInput) -> None:
        self._input = input
        self._stage = CaseStage.CHECK
        self._check: CheckResult | None = None
        self._approved: int | None = None
        self._paid = 0
        self._instalment = 1
        self._due_at: datetime | None = None
        self._overdue = False
        self._corrections: list[str] = []
        self._timeline: list[TimelineEntry] = []
        self._decision: DecisionRequest | None = None
        self._resubmission: ResubmitRequest | None = None
        self._account_confirmation: Actor | None = None
        self._withdrawal: WithdrawRequest | None = None
        self._budget_added = False
        # Updates return once the main loop has acted on them (see _settle).
        self._received = 0
        self._settled = 0

    @workflow.run
    async def run(self, input: ApplicationInput) -> CaseState:
        try:
            return await self._proceed(input)
        except _Withdrawn:
            return await self._close()

    async def _proceed(self, input: ApplicationInput) -> CaseState:
        check = await workflow.execute_activity_method(
            CaseActivities.check_application, input, **DB
        )
        self._check = check
        workflow.upsert_search_attributes([sa_keys.REGION.value_set(check.region_code)])
        self._log("system", "checked", f"{check.verdict.value}; {check.amount_explanation}")
        if check.verdict is Verdict.NOT_ELIGIBLE or not check.amount_fen:
            failed = [c.description for c in check.conditions if c.outcome.value == "fail"]
            self._log("system", "rejected", "；".join(failed) or check.amount_explanation)
            return await self._finish(CaseStage.REJECTED)
        self._approved = check.amount_fen

        index = 0
        while index < len(REVIEW_STAGES):
            request = await self._review(REVIEW_STAGES[index])
            decision = request.decision
            self._log(request.actor.name, decision.action.value, decision.reason)
            if decision.action is ReviewAction.APPROVE:
                if decision.amount_fen is not None:
                    self._approved = decision.amount_fen
                index += 1
            elif decision.action is ReviewAction.REJECT:
                return await self._finish(CaseStage.REJECTED)
            else:
                await self._await_correction(decision.corrections)

        year = int(input.period[:4])
        await self._reserve_budget(year)
        await self._pay(year)
        return await self._finish(CaseStage.PAID)

    # ----- stages -----------------------------------------------------------------

    async def _review(self, stage: CaseStage) -> DecisionRequest:
        self._decision = None
        limit = self._limit(stage)
        self._due_at = await workflow.execute_activity_method(
            PolicyLibraryActivities.working_deadline,
            DeadlineRequest(start=workflow.now(), working_days=limit.working_days),
            **DB,
        )
        await self._enter(stage)
        try:
            await self._wait_for(
                lambda: self._decision is not None,
                within=max(self._due_at - workflow.now(), timedelta(0)),
            )
        except TimeoutError:
            await self._raise_overdue(stage, limit.department_code)
            await self._wait_for(lambda: self._decision is not None)
        assert self._decision is not None
        return self._decision

    async def _raise_overdue(self, stage: CaseStage, department_code: str) -> None:
        assert self._due_at is not None
        self._overdue = True
        workflow.upsert_search_attributes([sa_keys.OVERDUE.value_set(True)])
        self._log("system", "overdue", f"办理时限 {self._due_at.isoformat()}")
        await workflow.execute_activity_method(
            CaseActivities.raise_case_overdue,
            StageDeadlineMissed(
                case_id=self._input.case_id,
                item_code=self._input.item_code,
                stage=stage,
                department_code=department_code,
                due_at=self._due_at,
            ),
            **DB,
        )
        await self._project()

    async def _await_correction(self, corrections: list[str]) -> None:
        self._corrections, self._resubmission, self._due_at = corrections, None, None
        await self._enter(CaseStage.CORRECTION)
        await self._wait_for(lambda: self._resubmission is not None)
        assert self._resubmission is not None
        self._input.materials.update(self._resubmission.resubmission.materials)
        self._log(
            self._resubmission.actor.name, "resubmitted", self._resubmission.resubmission.note
        )
        self._corrections = []

    async def _reserve_budget(self, year: int) -> None:
        assert self._approved is not None
        reservation = Reservation(
            case_id=self._input.case_id,
            instalment=self._instalment,
            item_code=self._input.item_code,
            year=year,
            amount_fen=self._approved,
        )
        while True:
            try:
                await workflow.execute_activity_method(
                    CaseActivities.reserve_budget, reservation, **DB
                )
                self._log("system", "reserved", f"{self._approved} 分")
                if self._withdrawal is not None:  # accepted while the reservation ran
                    raise _Withdrawn
                return
            except ActivityError as exc:
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type == "QuotaExhausted"):
                    raise
            if self._stage is not CaseStage.AWAITING_BUDGET:
                self._due_at = None
                self._log("system", "awaiting_budget", "预算指标不足，待追加指标后自动继续")
                await self._enter(CaseStage.AWAITING_BUDGET)
            self._budget_added = False
            with contextlib.suppress(TimeoutError):  # retry daily even without a signal
                await self._wait_for(lambda: self._budget_added, within=BUDGET_RETRY)

    async def _pay(self, year: int) -> None:
        assert self._approved is not None
        while True:
            await self._enter(CaseStage.PAYMENT)
            result = await workflow.execute_child_workflow(
                PaymentWorkflow.run,
                PaymentInput(
                    case_id=self._input.case_id,
                    item_code=self._input.item_code,
                    year=year,
                    uscc=self._input.uscc,
                    amount_fen=self._approved,
                    instalment=self._instalment,
                    purpose=f"{self._input.item_code} {self._input.period} 惠企资金",
                ),
                id=f"{self._input.case_id}/payment/{self._instalment}",
            )
            if result.state == "paid":
                self._paid = self._approved
                detail = f"凭证 {result.voucher_no}，银行流水 {result.bank_serial}"
                self._log("budget_system", "paid", detail)
                return
            detail = f"凭证 {result.voucher_no}：{result.return_reason}"
            self._log("budget_system", "returned", detail)
            # The returned instalment's reservation now stands under the next one.
            self._instalment += 1
            self._account_confirmation = None
            await self._enter(CaseStage.ACCOUNT_CORRECTION)
            await self._wait_for(lambda: self._account_confirmation is not None)
            assert self._account_confirmation is not None
            self._log(self._account_confirmation.name, "account_confirmed")

    async def _close(self) -> CaseState:
        """Withdrawn or cancelled: give back any reservation, then end."""
        assert self._withdrawal is not None
        actor, reason = self._withdrawal.actor, self._withdrawal.withdrawal.reason
        stage = CaseStage.WITHDRAWN if actor.role is Role.ENTERPRISE else CaseStage.CANCELLED
        self._log(actor.name, stage.value, reason)
        await workflow.execute_activity_method(
            CaseActivities.close_case,
            CaseClosure(
                case_id=self._input.case_id,
                item_code=self._input.item_code,
                uscc=self._input.uscc,
                instalment=self._instalment,
                stage=stage,
                actor=actor.name,
                reason=reason,
            ),
            **DB,
        )
        return await self._finish(stage)

    async def _wait_for(
        self, condition: Callable[[], bool], within: timedelta | None = None
    ) -> None:
        """Wait for `condition`, unless a withdrawal is accepted first."""
        await workflow.wait_condition(
            lambda: condition() or self._withdrawal is not None, timeout=within
        )
        if self._withdrawal is not None:
            raise _Withdrawn

    def _limit(self, stage: CaseStage) -> StageLimit:
        assert self._check is not None
        wanted = Stage(stage.value)
        return next(s for s in self._check.stages if s.stage is wanted)

    async def _enter(self, stage: CaseStage) -> None:
        self._stage, self._overdue = stage, False
        workflow.upsert_search_attributes(
            [sa_keys.STAGE.value_set(stage.value), sa_keys.OVERDUE.value_set(False)]
        )
        await self._project()
        self._settled = self._received

    async def _project(self) -> None:
        await workflow.execute_activity_method(CaseActivities.project_case, self.state(), **DB)

    async def _finish(self, stage: CaseStage) -> CaseState:
        self._due_at = None
        await self._enter(stage)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    def _log(self, actor: str, action: str, detail: str = "") -> None:
        self._timeline.append(
            TimelineEntry(
                at=workflow.now(), stage=self._stage, actor=actor, action=action, detail=detail
            )
        )

    # ----- updates, signal, query ---------------------------------------------------

    @workflow.update
    async def decide(self, request: DecisionRequest) -> CaseState:
        self._decision = request
        return await self._settle()

    @decide.validator
    def validate_decide(self, request: DecisionRequest) -> None:
        self._refuse_while_busy()
        if self._stage not in REVIEW_STAGES or self._decision is not None:
            raise ApplicationError(
                f"stage {self._stage.value} takes no review decision", type="WrongStage"
            )
        actor, decision = request.actor, request.decision
        department = self._limit(self._stage).department_code
        if actor.role not in REVIEWER_ROLES[self._stage] or actor.department_code != department:
            raise ApplicationError(
                f"stage {self._stage.value} is decided by department {department}", type="Forbidden"
            )
        if decision.action is ReviewAction.APPROVE:
            if decision.amount_fen is not None and self._approved is not None:
                if decision.amount_fen > self._approved:
                    raise ApplicationError(
                        f"amount_fen may not exceed {self._approved}", type="InvalidInput"
                    )
                if decision.amount_fen < self._approved and not decision.reason:
                    raise ApplicationError("a reduced amount needs a reason", type="InvalidInput")
        elif not decision.reason:
            raise ApplicationError(f"{decision.action.value} needs a reason", type="InvalidInput")
        if decision.action is ReviewAction.RETURN and not decision.corrections:
            raise ApplicationError("return needs the list of corrections", type="InvalidInput")

    @workflow.update
    async def resubmit(self, request: ResubmitRequest) -> CaseState:
        self._resubmission = request
        return await self._settle()

    @resubmit.validator
    def validate_resubmit(self, request: ResubmitRequest) -> None:
        self._refuse_while_busy()
        if self._stage is not CaseStage.CORRECTION or self._resubmission is not None:
            raise ApplicationError("the case is not waiting for a correction", type="WrongStage")
        if (
            request.actor.role is not Role.ENTERPRISE
            or request.actor.enterprise_uscc != self._input.uscc
        ):
            raise ApplicationError("only the applicant firm resubmits", type="Forbidden")

    @workflow.update
    async def confirm_account(self, actor: Actor) -> CaseState:
        self._account_confirmation = actor
        return await self._settle()

    @confirm_account.validator
    def validate_confirm_account(self, actor: Actor) -> None:
        self._refuse_while_busy()
        if actor.role is not Role.ENTERPRISE or actor.enterprise_uscc != self._input.uscc:
            raise ApplicationError("only the firm confirms its own account", type="Forbidden")
        if self._stage is not CaseStage.ACCOUNT_CORRECTION:
            raise ApplicationError("no returned payment is waiting", type="WrongStage")

    @workflow.update
    async def withdraw(self, request: WithdrawRequest) -> CaseState:
        self._withdrawal = request
        return await self._settle()

    @withdraw.validator
    def validate_withdraw(self, request: WithdrawRequest) -> None:
        self._refuse_while_busy()
        actor = request.actor
        if actor.role is Role.ENTERPRISE:
            if actor.enterprise_uscc != self._input.uscc:
                raise ApplicationError("only the applicant firm withdraws", type="Forbidden")
            allowed = WITHDRAWABLE
        else:
            finance = self._limit(CaseStage.FINANCE_REVIEW).department_code if self._check else None
            if actor.role is not Role.FINANCE_CASEWORKER or actor.department_code != finance:
                raise ApplicationError(
                    f"a case is cancelled by finance department {finance}", type="Forbidden"
                )
            if not request.withdrawal.reason:
                raise ApplicationError("cancellation needs a reason", type="InvalidInput")
            allowed = CANCELLABLE
        if self._stage not in allowed:
            raise ApplicationError(
                f"a case at stage {self._stage.value} cannot be "
                + ("withdrawn" if actor.role is Role.ENTERPRISE else "cancelled"),
                type="WrongStage",
            )

    def _refuse_while_busy(self) -> None:
        """One accepted update at a time: the next waits until the case has moved on."""
        if self._received > self._settled:
            raise ApplicationError("the case is changing; try again", type="WrongStage")

    @workflow.signal
    def budget_added(self) -> None:
        self._budget_added = True

    async def _settle(self) -> CaseState:
        self._received += 1
        wanted = self._received
        await workflow.wait_condition(lambda: self._settled >= wanted)
        return self.state()

    @workflow.query
    def state(self) -> CaseState:
        waiting_role: str | None = None
        waiting_department: str | None = None
        if self._stage in REVIEW_STAGES and self._check is not None:
            waiting_role = "/".join(r.value for r in REVIEWER_ROLES[self._stage])
            waiting_department = self._limit(self._stage).department_code
        elif self._stage in (CaseStage.CORRECTION, CaseStage.ACCOUNT_CORRECTION):
            waiting_role = Role.ENTERPRISE.value
        return CaseState(
            case_id=self._input.case_id,
            item_code=self._input.item_code,
            version=self._input.version,
            period=self._input.period,
            uscc=self._input.uscc,
            stage=self._stage,
            waiting_for_role=waiting_role,
            waiting_for_department=waiting_department,
            due_at=self._due_at,
            overdue=self._overdue,
            verdict=self._check.verdict if self._check else None,
            computed_amount_fen=self._check.amount_fen if self._check else None,
            approved_amount_fen=self._approved,
            paid_amount_fen=self._paid,
            instalment=self._instalment,
            corrections=list(self._corrections),
            timeline=list(self._timeline),
        )
