"""Activities of the case workflows that touch our database."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.policy import as_application_error
from core.workdays import SHANGHAI
from domain import notices
from domain.cases import service as cases
from domain.errors import AppError
from domain.money import budget
from models.cases import (
    ApplicationInput,
    CaseClosure,
    CaseStage,
    CaseState,
    CheckResult,
    PaymentFailure,
    Reservation,
    StageDeadlineMissed,
)
from models.types import utcnow

log = structlog.get_logger()

STAGE_NAMES = {"department_review": "部门审核", "finance_review": "财政审核"}


class CaseActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @activity.defn
    async def check_application(self, application: ApplicationInput) -> CheckResult:
        """Hold the case's claim on its period, then check eligibility and amount."""
        today = datetime.now(SHANGHAI).date()
        try:
            async with self._sessionmaker.begin() as session:
                await cases.confirm_claim(session, application)
            async with self._sessionmaker() as session:
                return await cases.check_application(session, application, today)
        except AppError as exc:
            raise as_application_error(exc) from exc

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
                message=(
                    f"{failure.item_code} 申报件支付未能发出（{failure.reason}），"
                    "请排除原因后重新支付，或撤销该件。"
                ),
                title="支付失败预警",
            )
            await notices.notify_enterprise(
                session,
                uscc=failure.uscc,
                subject=failure.case_id,
                title="资金支付未能发出",
                body=(
                    f"您的{failure.item_code}资金支付未能发出（{failure.reason}）。"
                    "如为收款账户问题，请更正账户后确认；财政部门将重新支付。"
                ),
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
                message=(
                    f"{shortage.item_code} 申报件已审核通过，但预算指标不足或未下达"
                    f"（{shortage.reason}），请追加或下达指标，或撤销该件。"
                ),
                title="预算指标不足预警",
            )
        log.warning("case.awaiting_budget", case_id=shortage.case_id, reason=shortage.reason)

    @activity.defn
    async def project_case(self, state: CaseState) -> None:
        async with self._sessionmaker.begin() as session:
            await cases.project(session, state)

    @activity.defn
    async def raise_case_overdue(self, missed: StageDeadlineMissed) -> None:
        due = missed.due_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        stage = STAGE_NAMES.get(missed.stage.value, missed.stage.value)
        async with self._sessionmaker.begin() as session:
            await notices.raise_stage_warning(
                session,
                subject=missed.case_id,
                stage=missed.stage.value,
                department_code=missed.department_code,
                due_at=missed.due_at,
                message=f"{missed.item_code} 申报件的{stage}已超过办理时限（{due}），请尽快处理。",
            )
        log.warning("case.overdue", case_id=missed.case_id, stage=missed.stage.value)

    @activity.defn
    async def reserve_budget(self, reservation: Reservation) -> None:
        try:
            async with self._sessionmaker.begin() as session:
                await budget.reserve(
                    session,
                    reservation.case_id,
                    reservation.instalment,
                    reservation.item_code,
                    reservation.year,
                    reservation.amount_fen,
                )
        except AppError as exc:
            raise as_application_error(exc) from exc
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
                    title="申报事项已撤销",
                    body=f"您申报的{closure.item_code}事项已由财政部门撤销，原因：{closure.reason}。",
                )
        log.info(
            "case.closed",
            case_id=closure.case_id,
            stage=closure.stage.value,
            released_fen=released.amount_fen if released else 0,
        )
