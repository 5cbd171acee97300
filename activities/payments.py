"""Activities of the payment workflow: the budget system and the ledger."""

from __future__ import annotations

from datetime import date

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import business_errors
from activities.execution import execution_key
from adapters.budget_system import (
    BudgetSystemClient,
    BudgetSystemRefused,
    BudgetSystemUnavailable,
    payment_key,
)
from core.db import reader_of
from core.temporal_errors import ErrorType
from core.workdays import SHANGHAI
from domain import cases, notices
from domain.commitment import recovery
from domain.money import budget
from domain.notices import texts
from models.budget_system import InstructionState, PaymentInstruction
from models.payments import PaymentOutcome, PaymentRequest, PaymentRetry
from models.types import utcnow

log = structlog.get_logger()
OFFSET_SERIAL = "offset"  # the receipt of an instalment that went wholly to a debt


class PaymentActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], budget_system: BudgetSystemClient
    ) -> None:
        self._sessionmaker = sessionmaker
        self._reader = reader_of(sessionmaker)
        self._budget_system = budget_system

    @activity.defn
    async def send_instruction(self, request: PaymentRequest) -> str:
        """Instruct the payment (idempotent on the key) and record it; returns the voucher."""
        key = payment_key(request.case_id, request.instalment)
        # The day the server scheduled this attempt: the workflow's day (the clock of a
        # time-skipping test server too), which a debt's interest is counted to.
        today = activity.info().current_attempt_scheduled_time.astimezone(SHANGHAI).date()
        try:
            with business_errors():  # e.g. no account on file
                async with self._reader() as session:
                    enterprise, account = await cases.default_payee(session, request.uscc)
                    owes = await recovery.may_offset(session, request.uscc, request.case_id, today)
            withheld = await self._offset(request, today) if owes else 0
            if withheld == request.amount_fen:  # all of it settled a debt: nothing to send
                return await self._paid_by_offset(request, key)
            instruction = PaymentInstruction(
                idempotency_key=key,
                quota_code=f"{request.item_code}/{request.year}",
                payee_name=account.account_name or enterprise.name,
                payee_account=account.account_number,
                payee_bank=account.bank_name,
                amount_fen=request.amount_fen - withheld,
                purpose=request.purpose,
            )
        except ValidationError as exc:  # an account or amount the system would refuse
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ApplicationError(
                f"支付指令无效：{problems}", type=ErrorType.INVALID_INSTRUCTION, non_retryable=True
            ) from exc
        try:
            status = await self._budget_system.instruct(instruction)
        except BudgetSystemUnavailable as exc:
            raise ApplicationError(str(exc), type=ErrorType.BUDGET_SYSTEM_UNAVAILABLE) from exc
        except BudgetSystemRefused as exc:
            raise ApplicationError(
                f"预算系统拒绝支付指令（{exc.reason}）",
                type=ErrorType.BUDGET_SYSTEM_REFUSED,
                non_retryable=True,
            ) from exc
        # From here on the instruction exists: never fail the payment for good (the case
        # would offer to pay again); a ledger problem retries until it is fixed.
        async with self._sessionmaker.begin() as session:
            await budget.record_instruction(
                session,
                request.case_id,
                request.instalment,
                key,
                status.voucher_no,
                payee_account=instruction.payee_account,
                amount_fen=instruction.amount_fen,
            )
        log.info("payment.instructed", case_id=request.case_id, instalment=request.instalment)
        return status.voucher_no

    async def _offset(self, request: PaymentRequest, today: date) -> int:
        """Withhold what the firm owes on overdue recovery orders (追回抵扣) from this
        payment, once per instalment (a retry withholds the same), telling the firm.
        Called when `recovery.may_offset` said the firm may owe something."""
        async with self._sessionmaker.begin() as session:
            taken = await recovery.offset_against(
                session,
                uscc=request.uscc,
                paying_case_id=request.case_id,
                instalment=request.instalment,
                item_code=request.item_code,
                year=request.year,
                amount_fen=request.amount_fen,
                today=today,
            )
            for order, amount in taken:
                await notices.notify_enterprise(
                    session,
                    uscc=request.uscc,
                    subject=order.case_id,
                    text=texts.recovery_offset(order.item_code, amount, request.purpose),
                    dedupe_key=f"offset/{request.case_id}/{request.instalment}/{order.case_id}",
                )
        if taken:
            log.info("payment.offset", case_id=request.case_id, instalment=request.instalment)
        return sum(amount for _order, amount in taken)

    async def _paid_by_offset(self, request: PaymentRequest, key: str) -> str:
        """The whole instalment went to the firm's debt: no instruction, and the
        reservation is consumed as paid (the debt's quota regained it)."""
        voucher = f"OFFSET-{key}"
        async with self._sessionmaker.begin() as session:
            await budget.consume(
                session,
                request.case_id,
                request.instalment,
                voucher_no=voucher,
                bank_serial=OFFSET_SERIAL,
            )
        return voucher

    @activity.defn
    async def prepare_retry(self, retry: PaymentRetry) -> int:
        """Before a failed instalment is paid again: the instalment to pay now. If the
        budget system knows the failed one after all (a refusal we misread, a reply lost),
        it is paid under the same key and nothing moves; otherwise its reservation moves
        to the next instalment, which pays under a new key."""
        key = payment_key(retry.case_id, retry.instalment)
        try:
            known = await self._budget_system.status(key)
        except BudgetSystemUnavailable as exc:
            raise ApplicationError(str(exc), type=ErrorType.BUDGET_SYSTEM_UNAVAILABLE) from exc
        if known is not None:
            log.warning("payment.retry_known", case_id=retry.case_id, instalment=retry.instalment)
            return retry.instalment
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await budget.move_reservation(
                    session, retry.case_id, retry.instalment, retry.instalment + 1, retry.amount_fen
                )
        return retry.instalment + 1

    @activity.defn
    async def await_settlement(self, request: PaymentRequest) -> PaymentOutcome:
        """Poll the instruction; a not-yet-settled one fails retryably (the retry policy
        is the polling schedule, and it survives any crash)."""
        key = payment_key(request.case_id, request.instalment)
        try:
            status = await self._budget_system.status(key)
        except BudgetSystemUnavailable as exc:
            raise ApplicationError(str(exc), type=ErrorType.BUDGET_SYSTEM_UNAVAILABLE) from exc
        if status is None:
            async with self._reader() as session:
                voucher = await budget.offset_receipt(session, request.case_id, request.instalment)
            if voucher is not None:  # paid in full by offset: nothing was instructed
                return PaymentOutcome(state="paid", voucher_no=voucher, bank_serial=OFFSET_SERIAL)
            raise ApplicationError(
                f"{key} unknown to the budget system", type=ErrorType.INSTRUCTION_MISSING
            )
        if status.state is InstructionState.ACCEPTED:
            raise ApplicationError(f"{key} not settled yet", type=ErrorType.NOT_SETTLED)
        if status.state is InstructionState.PAID:
            assert status.bank_serial is not None
            return PaymentOutcome(
                state="paid",
                voucher_no=status.voucher_no,
                bank_serial=status.bank_serial,
                paid_at=status.paid_at,
            )
        return PaymentOutcome(
            state="returned", voucher_no=status.voucher_no, return_reason=status.return_reason
        )

    @activity.defn
    async def record_receipt(self, request: PaymentRequest, outcome: PaymentOutcome) -> None:
        """The money arrived: the reservation becomes paid, and the account it went into
        is verified (a later case of the firm may pay it without asking)."""
        assert outcome.bank_serial is not None
        async with self._sessionmaker.begin() as session:
            await budget.consume(
                session,
                request.case_id,
                request.instalment,
                voucher_no=outcome.voucher_no,
                bank_serial=outcome.bank_serial,
            )
            if outcome.bank_serial == OFFSET_SERIAL:
                return  # no money reached an account: none is verified
            await cases.record_paid_account(
                session,
                request.uscc,
                request.case_id,
                request.instalment,
                utcnow(),  # when we took the receipt (the bank's own time may be naive)
            )
        log.info("payment.paid", case_id=request.case_id, instalment=request.instalment)

    @activity.defn
    async def record_returned_payment(
        self, request: PaymentRequest, outcome: PaymentOutcome
    ) -> None:
        """退票: move the reservation to the next instalment and ask the firm to fix its account."""
        reason = outcome.return_reason or "退票"
        async with self._sessionmaker.begin() as session:
            await budget.record_return(
                session, request.case_id, request.instalment, request.instalment + 1, reason
            )
            await cases.record_returned_account(
                session, request.uscc, request.case_id, request.instalment
            )
            await notices.notify_enterprise(
                session,
                uscc=request.uscc,
                subject=request.case_id,
                text=texts.payment_returned(request.purpose, reason),
                dedupe_key=execution_key(),
            )
        log.warning("payment.returned", case_id=request.case_id, instalment=request.instalment)
