"""Activities of the case workflows that touch our database."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import business_errors
from activities.execution import execution_key
from core.workdays import SHANGHAI, WorkingCalendar
from domain import cases, notices
from domain.money import budget
from domain.notices import texts
from models.cases import (
    ApplicationInput,
    CaseClosure,
    CaseStage,
    CaseState,
    CheckResult,
    ReviewEntry,
    StageDeadlineMissed,
)
from models.payments import PaymentFailure, Reservation
from models.types import utcnow

log = structlog.get_logger()


class CaseActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        calendar: WorkingCalendar | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        # Working days to money are counted on it when a case's money arrives.
        self._calendar = calendar or WorkingCalendar()

    @activity.defn
    async def check_application(self, application: ApplicationInput) -> CheckResult:
        """Hold the case's claim on its period, then check eligibility and amount, in one
        transaction (the check reads a few rows: cheaper than a second transaction)."""
        today = datetime.now(SHANGHAI).date()
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await cases.confirm_claim(session, application)
                return await cases.check_application(session, application, today)

    @activity.defn
    async def record_payment_failure(self, failure: PaymentFailure) -> None:
        """An instalment could not be instructed: ledger it, warn finance, tell the firm."""
        async with self._sessionmaker.begin() as session:
            await budget.record_refusal(
                session, failure.case_id, failure.instalment, failure.reason
            )
            await notices.raise_stage_warning(
                session,
                subject=failure.case_id,
                stage=CaseStage.PAYMENT_FAILED.value,
                department_code=failure.department_code,
                due_at=utcnow(),
                text=texts.payment_failed_warning(failure.item_code, failure.reason),
            )
            await notices.notify_enterprise(
                session,
                uscc=failure.uscc,
                subject=failure.case_id,
                text=texts.payment_failed(failure.item_code, failure.reason),
                dedupe_key=execution_key(),
            )
        log.warning("case.payment_failed", case_id=failure.case_id, reason=failure.reason)

    @activity.defn
    async def warn_awaiting_budget(self, shortage: PaymentFailure) -> None:
        """The case waits for a quota: finance of the item is warned once."""
        async with self._sessionmaker.begin() as session:
            await notices.raise_stage_warning(
                session,
                subject=shortage.case_id,
                stage=CaseStage.AWAITING_BUDGET.value,
                department_code=shortage.department_code,
                due_at=utcnow(),
                text=texts.awaiting_budget_warning(shortage.item_code, shortage.reason),
            )
        log.warning("case.awaiting_budget", case_id=shortage.case_id, reason=shortage.reason)

    @activity.defn
    async def project_case(self, state: CaseState) -> None:
        async with self._sessionmaker.begin() as session:
            await cases.project(session, state, self._calendar)

    @activity.defn
    async def enter_review(self, entry: ReviewEntry) -> datetime:
        """The review's deadline on the working calendar, and the case projected with
        it: one step where there were two activities (the deadline, then the
        projection). Returns the deadline."""
        due_at = self._calendar.add_working_days(entry.start, entry.working_days)
        state = entry.state.model_copy(update={"due_at": due_at})
        async with self._sessionmaker.begin() as session:
            await cases.project(session, state, self._calendar)
        return due_at

    @activity.defn
    async def raise_case_overdue(self, missed: StageDeadlineMissed) -> None:
        async with self._sessionmaker.begin() as session:
            await notices.raise_stage_warning(
                session,
                subject=missed.case_id,
                stage=missed.stage.value,
                department_code=missed.department_code,
                due_at=missed.due_at,
                text=texts.case_overdue(
                    missed.item_code, missed.stage.value, missed.due_at, missed.case_id
                ),
            )
        log.warning("case.overdue", case_id=missed.case_id, stage=missed.stage.value)

    @activity.defn
    async def reserve_budget(self, reservation: Reservation) -> None:
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await budget.reserve(
                    session,
                    reservation.case_id,
                    reservation.instalment,
                    reservation.item_code,
                    reservation.year,
                    reservation.amount_fen,
                )
        log.info("budget.reserved", case_id=reservation.case_id, amount_fen=reservation.amount_fen)

    @activity.defn
    async def close_case(self, closure: CaseClosure) -> None:
        """Give back any reservation the case holds and, when finance cancelled it,
        tell the firm why; both or neither."""
        async with self._sessionmaker.begin() as session:
            released = await budget.release(session, closure.case_id, closure.instalment)
            if closure.stage is CaseStage.CANCELLED:
                await notices.notify_enterprise(
                    session,
                    uscc=closure.uscc,
                    subject=closure.case_id,
                    text=texts.case_cancelled(closure.item_code, closure.reason),
                    dedupe_key=execution_key(),
                )
        log.info(
            "case.closed",
            case_id=closure.case_id,
            stage=closure.stage.value,
            released_fen=released.amount_fen if released else 0,
        )
