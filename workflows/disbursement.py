"""The disbursement tail (兑付): what every case workflow does once an amount is approved.

Reserve the amount on the item's quota (waiting while the quota cannot cover it), pay it
through one `PaymentWorkflow` child per instalment, take a returned payment (退票) to
account correction and a refused instruction to finance, and give the reservation back
when the case is withdrawn or cancelled before any instruction exists.

`Disbursement` is a deterministic helper, not a workflow: a case workflow composes one,
keeps its single history and its single set of updates, and hands the tail the few
things it needs through `CaseHost`. The case's update handlers call the tail's
validators and setters (`confirm_account`, `withdraw`, a decision on a failed payment,
the `budget_added` signal), so the update names stay the same for every case kind.

The tail also holds the case's way out: a withdrawal accepted at any stage (reviews
included) unwinds the run through `wait_for` (`Withdrawn`) to `close`, which releases
whatever is reserved. A finance decision on a failed payment may lower the amount; the
tail writes it back to the host (`approved`), so that the case shows what it pays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.payments import PaymentActivities
    from core.temporal_errors import ErrorType
    from models.cases import CaseClosure, CaseStage, DecisionRequest, ReviewAction, WithdrawRequest
    from models.payments import PaymentFailure, PaymentInput, PaymentRetry, Reservation
    from models.reference import Actor, Role
    from workflows.options import DATABASE, NO_BUDGET
    from workflows.payment import PaymentWorkflow
    from workflows.refusals import invalid_input


BUDGET_RETRY = timedelta(days=1)
# The tail's stages in which no instruction stands: finance may cancel a case that
# cannot be paid (no quota, or an account the firm never corrects), and the firm may
# still withdraw. A case kind adds its own earlier stages for the firm's withdrawal.
CANCELLABLE = frozenset(
    {CaseStage.AWAITING_BUDGET, CaseStage.ACCOUNT_CORRECTION, CaseStage.PAYMENT_FAILED}
)


class Withdrawn(Exception):
    """Unwinds a case's run to its close-down once a withdrawal has been accepted."""


class CaseHost(Protocol):
    """What a case workflow lends its disbursement tail."""

    case_id: str
    item_code: str
    uscc: str
    period: str
    approved: int | None  # the amount to pay; a retried payment may lower it

    @property
    def stage(self) -> CaseStage: ...

    async def enter(self, stage: CaseStage) -> None: ...

    def log(self, actor: str, action: str, detail: str = "") -> None: ...

    def finance_department(self) -> str: ...


class Disbursement:
    def __init__(self, host: CaseHost) -> None:
        self._host = host
        self.instalment = 1
        self.paid = 0
        self.failure: str | None = None
        self.withdrawal: WithdrawRequest | None = None
        self.retry_decision: DecisionRequest | None = None
        self.account_confirmation: Actor | None = None
        self.budget_added = False
        # When the instruction for the instalment that was paid went out, and when the
        # money arrived (the bank's time where the receipt gives it).
        self.instructed_at: datetime | None = None
        self.paid_at: datetime | None = None

    # ----- the run -----------------------------------------------------------------

    async def disburse(self, year: int) -> None:
        """Reserve the approved amount, then pay it until it is in the firm's account."""
        await self.reserve(year)
        await self.pay(year)

    async def wait_for(
        self, condition: Callable[[], bool], within: timedelta | None = None
    ) -> None:
        """Wait for `condition`, unless a withdrawal is accepted first (then `Withdrawn`)."""
        await workflow.wait_condition(
            lambda: condition() or self.withdrawal is not None, timeout=within
        )
        if self.withdrawal is not None:
            raise Withdrawn

    async def close(self, by_firm: CaseStage = CaseStage.WITHDRAWN) -> CaseStage:
        """Withdrawn by the firm (or, for a case kind that says so, `by_firm`: declined)
        or cancelled by finance: give back any reservation. Returns the stage the case
        ends in."""
        assert self.withdrawal is not None
        actor, reason = self.withdrawal.actor, self.withdrawal.withdrawal.reason
        stage = by_firm if actor.role is Role.ENTERPRISE else CaseStage.CANCELLED
        return await self.end(stage, actor.name, reason)

    async def end(self, stage: CaseStage, actor: str, reason: str) -> CaseStage:
        """Close the case unpaid at `stage`, giving back any reservation it holds."""
        host = self._host
        host.log(actor, stage.value, reason)
        await workflow.execute_activity_method(
            CaseActivities.close_case,
            CaseClosure(
                case_id=host.case_id,
                item_code=host.item_code,
                uscc=host.uscc,
                instalment=self.instalment,
                stage=stage,
                actor=actor,
                reason=reason,
            ),
            **DATABASE,
        )
        return stage

    async def reserve(self, year: int) -> None:
        """Reserve the approved amount on the item's quota, waiting for budget while
        the quota cannot cover it."""
        host = self._host
        assert host.approved is not None
        reservation = Reservation(
            case_id=host.case_id,
            instalment=self.instalment,
            item_code=host.item_code,
            year=year,
            amount_fen=host.approved,
        )
        while True:
            try:
                await workflow.execute_activity_method(
                    CaseActivities.reserve_budget, reservation, **DATABASE
                )
                host.log("system", "reserved", f"{host.approved} 分")
                if self.withdrawal is not None:  # accepted while the reservation ran
                    raise Withdrawn
                return
            except ActivityError as exc:
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type in NO_BUDGET):
                    raise
                shortage = cause.message
            if host.stage is not CaseStage.AWAITING_BUDGET:
                host.log("system", "awaiting_budget", "预算指标不足或未下达，待财政追加后自动继续")
                await host.enter(CaseStage.AWAITING_BUDGET)
                await workflow.execute_activity_method(
                    CaseActivities.warn_awaiting_budget, self._for_finance(shortage), **DATABASE
                )
            self.budget_added = False
            with contextlib.suppress(TimeoutError):  # retry daily even without a signal
                await self.wait_for(lambda: self.budget_added, within=BUDGET_RETRY)

    async def pay(self, year: int) -> None:
        """Pay the reserved amount until it is in the firm's account."""
        host = self._host
        while True:
            assert host.approved is not None
            self.instructed_at = workflow.now()
            await host.enter(CaseStage.PAYMENT)
            try:
                result = await workflow.execute_child_workflow(
                    PaymentWorkflow.run,
                    PaymentInput(
                        case_id=host.case_id,
                        item_code=host.item_code,
                        year=year,
                        uscc=host.uscc,
                        amount_fen=host.approved,
                        instalment=self.instalment,
                        purpose=f"{host.item_code} {host.period} 惠企资金",
                    ),
                    id=f"{host.case_id}/payment/{self.instalment}",
                )
            except ChildWorkflowError as exc:
                # The instruction could not be made (refused, or no valid payee): no money
                # moved. Finance pays again once the cause is fixed, or cancels.
                await self._await_payment_fix(failure_reason(exc))
                continue
            if result.state == "paid":
                self.paid = host.approved
                self.paid_at = result.paid_at or workflow.now()
                detail = f"凭证 {result.voucher_no}，银行流水 {result.bank_serial}"
                host.log("budget_system", "paid", detail)
                return
            detail = f"凭证 {result.voucher_no}：{result.return_reason}"
            host.log("budget_system", "returned", detail)
            # The returned instalment's reservation now stands under the next one.
            self.instalment += 1
            self.account_confirmation = None
            await host.enter(CaseStage.ACCOUNT_CORRECTION)
            await self.wait_for(lambda: self.account_confirmation is not None)
            assert self.account_confirmation is not None
            host.log(self.account_confirmation.name, "account_confirmed")

    async def _await_payment_fix(self, reason: str) -> None:
        host = self._host
        assert host.approved is not None
        self.failure = reason
        host.log("budget_system", "payment_failed", reason)
        self.retry_decision, self.account_confirmation = None, None
        await workflow.execute_activity_method(
            CaseActivities.record_payment_failure, self._for_finance(reason), **DATABASE
        )
        await host.enter(CaseStage.PAYMENT_FAILED)
        await self.wait_for(
            lambda: self.retry_decision is not None or self.account_confirmation is not None
        )
        amount = host.approved
        if self.retry_decision is not None:
            actor = self.retry_decision.actor.name
            amount = self.retry_decision.decision.amount_fen or amount
            note = self.retry_decision.decision.reason or "原因已排除，重新支付"
        else:
            assert self.account_confirmation is not None
            actor, note = self.account_confirmation.name, "企业已更正收款账户"
        host.log(actor, "payment_retried", note)
        self.instalment = await workflow.execute_activity_method(
            PaymentActivities.prepare_retry,
            PaymentRetry(case_id=host.case_id, instalment=self.instalment, amount_fen=amount),
            **DATABASE,
        )
        host.approved, self.failure = amount, None

    def _for_finance(self, reason: str) -> PaymentFailure:
        """Why the case now waits for the item's finance unit."""
        host = self._host
        return PaymentFailure(
            case_id=host.case_id,
            item_code=host.item_code,
            uscc=host.uscc,
            instalment=self.instalment,
            department_code=host.finance_department(),
            reason=reason,
        )

    # ----- who acts, and the updates' checks ------------------------------------------

    def waiting_for(self, stage: CaseStage) -> tuple[str | None, str | None] | None:
        """(role, unit) that must act at a stage of the tail; None outside the tail."""
        if stage in (CaseStage.AWAITING_BUDGET, CaseStage.PAYMENT_FAILED):
            return Role.FINANCE_CASEWORKER.value, self._host.finance_department()
        if stage is CaseStage.ACCOUNT_CORRECTION:
            return Role.ENTERPRISE.value, None
        return None

    def validate_retry(self, request: DecisionRequest) -> None:
        """A decision on a failed payment: finance pays it again (approve)."""
        if request.decision.action is not ReviewAction.APPROVE:
            raise invalid_input(
                "a failed payment is paid again (approve) or cancelled (withdrawal)", "action"
            )

    def validate_confirm_account(self, actor: Actor) -> None:
        if actor.role is not Role.ENTERPRISE or actor.enterprise_uscc != self._host.uscc:
            raise ApplicationError(
                "only the firm confirms its own account", type=ErrorType.FORBIDDEN
            )
        if self._host.stage not in (CaseStage.ACCOUNT_CORRECTION, CaseStage.PAYMENT_FAILED):
            raise ApplicationError(
                "no returned or failed payment is waiting", type=ErrorType.WRONG_STAGE
            )
        if self.account_confirmation is not None:
            raise ApplicationError("the account is confirmed already", type=ErrorType.WRONG_STAGE)

    def validate_withdraw(
        self, request: WithdrawRequest, withdrawable: frozenset[CaseStage], finance: str | None
    ) -> None:
        """The firm withdraws at `withdrawable` stages; the item's finance unit cancels,
        with a reason, at the tail's stages where the case cannot be paid."""
        actor, stage = request.actor, self._host.stage
        if actor.role is Role.ENTERPRISE:
            if actor.enterprise_uscc != self._host.uscc:
                raise ApplicationError(
                    "only the applicant firm withdraws", type=ErrorType.FORBIDDEN
                )
            allowed = withdrawable
        else:
            if actor.role is not Role.FINANCE_CASEWORKER or actor.department_code != finance:
                raise ApplicationError(
                    f"a case is cancelled by finance department {finance}", type=ErrorType.FORBIDDEN
                )
            if not request.withdrawal.reason:
                raise invalid_input("cancellation needs a reason", "reason")
            allowed = CANCELLABLE
        if stage not in allowed:
            raise ApplicationError(
                f"a case at stage {stage.value} cannot be "
                + ("withdrawn" if actor.role is Role.ENTERPRISE else "cancelled"),
                type=ErrorType.WRONG_STAGE,
            )


def failure_reason(exc: ActivityError | ChildWorkflowError) -> str:
    """The innermost failure message: what went wrong, in the words of who refused."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return str(getattr(cause, "message", None) or cause)[:500]
