"""Application cases (申报即兑付): apply at any time, reviews under time limits, payment."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.payments import PaymentActivities
    from activities.policy import PolicyLibraryActivities
    from models import search_attributes as sa_keys
    from models.cases import (
        ApplicationInput,
        CaseClosure,
        CaseStage,
        CaseState,
        CheckResult,
        DecisionRequest,
        PaymentFailure,
        PaymentInput,
        PaymentRetry,
        Reservation,
        ResubmitRequest,
        ReviewAction,
        StageDeadlineMissed,
        TimelineEntry,
        WithdrawRequest,
        budget_year,
    )
    from models.eligibility import Outcome, Verdict
    from models.policy import Stage, StageLimit
    from models.policy_change import DeadlineRequest
    from models.reference import Actor, Role
    from workflows.payment import PaymentWorkflow

DB = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=[
            "Conflict",
            "DuplicateCase",
            "NotFound",
            "InvalidInput",
            "QuotaExhausted",
            "QuotaNotSet",
        ],
    ),
)
NO_BUDGET = ("QuotaExhausted", "QuotaNotSet")
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
        CaseStage.PAYMENT_FAILED,
    }
)
CANCELLABLE = frozenset(
    {CaseStage.AWAITING_BUDGET, CaseStage.ACCOUNT_CORRECTION, CaseStage.PAYMENT_FAILED}
)


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
        self._computed: int | None = None  # by the automatic check, if it could
        self._approved: int | None = None  # empty until someone approves
        self._to_verify: list[str] = []
        self._failure: str | None = None
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
        try:
            check = await workflow.execute_activity_method(
                CaseActivities.check_application, input, **DB
            )
        except ActivityError as exc:  # e.g. the period is already claimed by another case
            self._log("system", "rejected", f"无法受理：{_reason(exc)}")
            return await self._finish(CaseStage.REJECTED)
        self._check, self._computed = check, check.amount_fen
        workflow.upsert_search_attributes([sa_keys.REGION.value_set(check.region_code)])
        self._log("system", "checked", f"{check.verdict.value}; {check.amount_explanation}")
        if check.verdict is Verdict.NOT_ELIGIBLE:
            failed = [c.description for c in check.conditions if c.outcome is Outcome.FAIL]
            self._log("system", "rejected", "；".join(failed) or check.amount_explanation)
            return await self._finish(CaseStage.REJECTED)
        if check.amount_fen == 0:
            self._log("system", "rejected", f"按规则计算金额为零：{check.amount_explanation}")
            return await self._finish(CaseStage.REJECTED)
        # What the check could not decide goes to the reviewer, marked; never a rejection.
        self._to_verify = [
            f"需人工核实：{c.description}" for c in check.conditions if c.outcome is Outcome.UNKNOWN
        ]
        if check.failure:
            self._to_verify.insert(0, check.failure)
        if check.amount_fen is None:
            self._to_verify.append("金额无法自动计算：审核通过时请核定金额")

        index = 0
        while index < len(REVIEW_STAGES):
            request = await self._review(REVIEW_STAGES[index])
            decision = request.decision
            self._log(request.actor.name, decision.action.value, decision.reason)
            if decision.action is ReviewAction.APPROVE:
                if decision.amount_fen is not None:
                    self._approved = decision.amount_fen
                elif self._approved is None:
                    self._approved = self._computed
                index += 1
            elif decision.action is ReviewAction.REJECT:
                return await self._finish(CaseStage.REJECTED)
            else:
                await self._await_correction(decision.corrections)

        year = budget_year(input)
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
                if not (isinstance(cause, ApplicationError) and cause.type in NO_BUDGET):
                    raise
                shortage = cause.message
            if self._stage is not CaseStage.AWAITING_BUDGET:
                self._due_at = None
                self._log("system", "awaiting_budget", "预算指标不足或未下达，待财政追加后自动继续")
                await self._enter(CaseStage.AWAITING_BUDGET)
                await self._warn_finance(shortage)
            self._budget_added = False
            with contextlib.suppress(TimeoutError):  # retry daily even without a signal
                await self._wait_for(lambda: self._budget_added, within=BUDGET_RETRY)

    async def _pay(self, year: int) -> None:
        assert self._approved is not None
        while True:
            await self._enter(CaseStage.PAYMENT)
            try:
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
            except ChildWorkflowError as exc:
                # The instruction could not be made (refused, or no valid payee): no money
                # moved. Finance pays again once the cause is fixed, or cancels.
                await self._await_payment_fix(_reason(exc))
                continue
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

    async def _await_payment_fix(self, reason: str) -> None:
        assert self._approved is not None
        self._failure = reason
        self._log("budget_system", "payment_failed", reason)
        self._decision, self._account_confirmation = None, None
        await workflow.execute_activity_method(
            CaseActivities.record_payment_failure, self._for_finance(reason), **DB
        )
        await self._enter(CaseStage.PAYMENT_FAILED)
        await self._wait_for(
            lambda: self._decision is not None or self._account_confirmation is not None
        )
        amount = self._approved
        if self._decision is not None:
            actor = self._decision.actor.name
            amount = self._decision.decision.amount_fen or amount
            note = self._decision.decision.reason or "原因已排除，重新支付"
        else:
            assert self._account_confirmation is not None
            actor, note = self._account_confirmation.name, "企业已更正收款账户"
        self._log(actor, "payment_retried", note)
        self._instalment = await workflow.execute_activity_method(
            PaymentActivities.prepare_retry,
            PaymentRetry(
                case_id=self._input.case_id,
                instalment=self._instalment,
                amount_fen=amount,
            ),
            **DB,
        )
        self._approved, self._failure = amount, None

    async def _warn_finance(self, detail: str) -> None:
        await workflow.execute_activity_method(
            CaseActivities.warn_awaiting_budget, self._for_finance(detail), **DB
        )

    def _for_finance(self, reason: str) -> PaymentFailure:
        """Why the case now waits for the item's finance unit."""
        return PaymentFailure(
            case_id=self._input.case_id,
            item_code=self._input.item_code,
            uscc=self._input.uscc,
            instalment=self._instalment,
            department_code=self._finance_department(),
            reason=reason,
        )

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

    def _finance_department(self) -> str:
        return self._limit(CaseStage.FINANCE_REVIEW).department_code

    def _waiting_for(self) -> tuple[str | None, str | None]:
        """(role, unit) that must act now, or (None, None) when nobody must."""
        if self._check is None:
            return None, None
        if self._stage in REVIEW_STAGES:
            roles = "/".join(r.value for r in REVIEWER_ROLES[self._stage])
            return roles, self._limit(self._stage).department_code
        if self._stage in (CaseStage.AWAITING_BUDGET, CaseStage.PAYMENT_FAILED):
            return Role.FINANCE_CASEWORKER.value, self._finance_department()
        if self._stage in (CaseStage.CORRECTION, CaseStage.ACCOUNT_CORRECTION):
            return Role.ENTERPRISE.value, None
        return None, None

    async def _enter(self, stage: CaseStage) -> None:
        self._stage, self._overdue = stage, False
        _role, unit = self._waiting_for()
        workflow.upsert_search_attributes(
            [
                sa_keys.STAGE.value_set(stage.value),
                sa_keys.OVERDUE.value_set(False),
                sa_keys.DEPARTMENT.value_set(unit) if unit else sa_keys.DEPARTMENT.value_unset(),
            ]
        )
        await self._project()
        self._settled = self._received

    async def _project(self) -> None:
        """Refresh the list projection; a projection that cannot be written must not
        stop the case (lists lag until the next stage writes it)."""
        try:
            await workflow.execute_activity_method(CaseActivities.project_case, self.state(), **DB)
        except ActivityError as exc:
            self._log("system", "projection_failed", _reason(exc))

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
        decides = self._stage in REVIEW_STAGES or self._stage is CaseStage.PAYMENT_FAILED
        if not decides or self._decision is not None:
            raise ApplicationError(
                f"stage {self._stage.value} takes no review decision", type="WrongStage"
            )
        actor, decision = request.actor, request.decision
        roles = REVIEWER_ROLES.get(self._stage, (Role.FINANCE_CASEWORKER,))
        _role, department = self._waiting_for()
        if actor.role not in roles or actor.department_code != department:
            raise ApplicationError(
                f"stage {self._stage.value} is decided by department {department}", type="Forbidden"
            )
        if self._stage is CaseStage.PAYMENT_FAILED and decision.action is not ReviewAction.APPROVE:
            raise ApplicationError(
                "a failed payment is paid again (approve) or cancelled (withdrawal)",
                type="InvalidInput",
            )
        if decision.action is ReviewAction.APPROVE:
            ceiling = self._approved if self._approved is not None else self._computed
            if decision.amount_fen is None and ceiling is None:
                raise ApplicationError(
                    "amount_fen is required: the amount could not be computed",
                    type="InvalidInput",
                )
            if decision.amount_fen is not None and ceiling is not None:
                if decision.amount_fen > ceiling:
                    raise ApplicationError(
                        f"amount_fen may not exceed {ceiling}", type="InvalidInput"
                    )
                if decision.amount_fen < ceiling and not decision.reason:
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
        if self._stage not in (CaseStage.ACCOUNT_CORRECTION, CaseStage.PAYMENT_FAILED):
            raise ApplicationError("no returned or failed payment is waiting", type="WrongStage")
        if self._account_confirmation is not None:
            raise ApplicationError("the account is confirmed already", type="WrongStage")

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
            finance = self._finance_department() if self._check else None
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
        waiting_role, waiting_department = self._waiting_for()
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
            computed_amount_fen=self._computed,
            approved_amount_fen=self._approved,
            paid_amount_fen=self._paid,
            instalment=self._instalment,
            corrections=list(self._corrections),
            timeline=list(self._timeline),
            conditions=list(self._check.conditions) if self._check else [],
            to_verify=list(self._to_verify),
            failure_reason=self._failure,
        )


def _reason(exc: ActivityError | ChildWorkflowError) -> str:
    """The innermost failure message: what went wrong, in the words of who refused."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return str(getattr(cause, "message", None) or cause)[:500]
