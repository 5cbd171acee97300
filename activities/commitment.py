"""Activities of commitment cases: the check, the evidence beside the firm's figures,
the settlement, the recovery order with the budget system, and the firm's notices."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import business_errors
from adapters.budget_system import (
    BudgetSystemClient,
    BudgetSystemRefused,
    BudgetSystemUnavailable,
    recovery_key,
)
from core.db import reader_of
from core.temporal_errors import ErrorType
from core.workdays import SHANGHAI
from domain import notices
from domain.commitment import admission, recovery
from domain.commitment.settlement import settle
from domain.money import budget
from domain.money.interest import instalment_plan
from domain.notices import texts
from domain.notices.texts import Text
from domain.registry.enterprises import get_enterprise
from models.budget import LedgerKind
from models.budget_system import RecoveryNotice
from models.commitment import (
    CommitmentCheck,
    CommitmentInput,
    CommitmentNotice,
    CommitmentNoticeKind,
    EvidenceLine,
    EvidenceRequest,
    PlannedInstalment,
    PlanRequest,
    RecoveryCheck,
    RecoveryClose,
    RecoveryDefault,
    RecoveryOpening,
    RecoveryStatus,
    RecoveryView,
    Settlement,
    SettlementInput,
    WaiverRecord,
)
from models.money import format_yuan

log = structlog.get_logger()


class CommitmentActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], budget_system: BudgetSystemClient
    ) -> None:
        self._sessionmaker = sessionmaker
        self._reader = reader_of(sessionmaker)
        self._budget_system = budget_system

    @activity.defn
    async def check_commitment(self, commitment: CommitmentInput) -> CommitmentCheck:
        """Hold the case's claim, then check eligibility and the committed amount."""
        today = datetime.now(SHANGHAI).date()
        with business_errors():
            async with self._sessionmaker.begin() as session:
                return await admission.check_commitment(session, commitment, today)

    @activity.defn
    async def gather_evidence(self, request: EvidenceRequest) -> list[EvidenceLine]:
        async with self._reader() as session:
            return await admission.evidence(session, request)

    @activity.defn
    async def record_prepayment(self, settlement: SettlementInput) -> None:
        """The ledger notes that instalment 1 is a prepayment, and of what commitment."""
        async with self._sessionmaker.begin() as session:
            await budget.record_memo(
                session,
                settlement.case_id,
                1,
                LedgerKind.PREPAYMENT,
                item_code=settlement.item_code,
                year=settlement.year,
                amount_fen=settlement.prepaid_fen,
                details={"committed_fen": settlement.committed_fen},
            )

    @activity.defn
    async def settle(self, request: SettlementInput) -> Settlement:
        """The final amount from achieved against committed targets (nothing, when no
        completion came in time), recorded in the ledger against the prepayment."""
        if request.achieved is None:
            result = Settlement(
                committed_fen=request.committed_fen,
                share_bp=0,
                final_fen=0,
                targets=[],
                explanation="未在完成期限（含宽限期）内提交完工材料，视为未履行承诺，"
                "最终金额为零，已预付资金全额追回",
            )
        else:
            result = settle(
                request.terms, request.committed, request.achieved, request.committed_fen
            )
        async with self._sessionmaker.begin() as session:
            await budget.record_memo(
                session,
                request.case_id,
                0,
                LedgerKind.SETTLEMENT,
                item_code=request.item_code,
                year=request.year,
                amount_fen=result.final_fen,
                details={"prepaid_fen": request.prepaid_fen, "share_bp": result.share_bp},
            )
        return result

    @activity.defn
    async def open_recovery(self, opening: RecoveryOpening) -> RecoveryView:
        """Record the order, register it with the budget system (idempotent on its key),
        and send the firm its notice with the amount, the reason and the deadline."""
        async with self._sessionmaker.begin() as session:
            await recovery.open_order(session, opening)
            payer = await get_enterprise(session, opening.uscc)
        notice = RecoveryNotice(
            idempotency_key=recovery_key(opening.case_id),
            quota_code=f"{opening.item_code}/{opening.year}",
            payer_name=payer.name,
            payer_uscc=opening.uscc,
            amount_fen=opening.principal_fen,
            due_on=opening.due_on,
            purpose=opening.purpose[:256],
        )
        try:
            registered = await self._budget_system.register_recovery(notice)
        except BudgetSystemUnavailable as exc:
            raise ApplicationError(str(exc), type=ErrorType.BUDGET_SYSTEM_UNAVAILABLE) from exc
        except BudgetSystemRefused as exc:
            # Retried until someone fixes the cause: an order must reach the system.
            raise ApplicationError(f"预算系统拒绝登记追回（{exc.reason}）") from exc
        async with self._sessionmaker.begin() as session:
            await recovery.set_payment_code(session, opening.case_id, registered.payment_code)
            await notices.notify_enterprise(
                session,
                uscc=opening.uscc,
                subject=opening.case_id,
                text=texts.recovery_notice(
                    opening.purpose,
                    opening.principal_fen,
                    opening.reason,
                    opening.due_on.isoformat(),
                    registered.payment_code,
                    str(opening.daily_interest_rate),
                ),
                dedupe_key=f"recovery/{opening.case_id}/notice",
            )
            return await recovery.view(session, opening.case_id, opening.due_on)

    @activity.defn
    async def collect_recovery(self, check: RecoveryCheck) -> RecoveryView:
        """Take the budget system's receipts of money back into the order, then say where
        it stands on the workflow's day (interest counted to then)."""
        key = recovery_key(check.case_id)
        try:
            status = await self._budget_system.recovery(key)
        except BudgetSystemUnavailable as exc:
            raise ApplicationError(str(exc), type=ErrorType.BUDGET_SYSTEM_UNAVAILABLE) from exc
        with business_errors():
            async with self._sessionmaker.begin() as session:
                if status is not None:
                    new = await recovery.record_receipts(session, check.case_id, status.receipts)
                    if new:
                        log.info("recovery.repaid", case_id=check.case_id, receipts=new)
                return await recovery.view(session, check.case_id, check.as_of)

    @activity.defn
    async def grant_plan(self, request: PlanRequest) -> list[PlannedInstalment]:
        plan = instalment_plan(request.principal_fen, request.instalments, request.first_due)
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await recovery.grant_plan(session, request.case_id, plan)
                order = await recovery.get_order(session, request.case_id)
                return recovery.plan_of(order)

    @activity.defn
    async def waive(self, waiver: WaiverRecord) -> None:
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await recovery.waive(
                    session, waiver.case_id, waiver.amount_fen, waiver.on, waiver.reference
                )

    @activity.defn
    async def record_default(self, default: RecoveryDefault) -> None:
        """Unpaid past deadline and grace: the order is in default, the firm carries the
        credit-penalty fact, and the department's head and finance are warned."""
        async with self._sessionmaker.begin() as session:
            await recovery.set_status(session, default.case_id, RecoveryStatus.DEFAULTED)
            await recovery.record_default(session, default.uscc, default.on)
            text = texts.recovery_default_warning(
                default.item_code, default.uscc, default.outstanding_fen
            )
            for unit in (default.department_code, default.finance_department_code):
                await notices.raise_stage_warning(
                    session,
                    subject=default.case_id,
                    stage="recovery",
                    department_code=unit,
                    due_at=default.due_at,
                    text=text,
                )
            await notices.notify_enterprise(
                session,
                uscc=default.uscc,
                subject=default.case_id,
                text=texts.recovery_defaulted(default.title, default.outstanding_fen),
                dedupe_key=f"recovery/{default.case_id}/default",
            )
        log.warning("recovery.defaulted", case_id=default.case_id)

    @activity.defn
    async def close_recovery(self, closing: RecoveryClose) -> None:
        """Nothing is outstanding: the order is settled here and at the budget system."""
        try:
            await self._budget_system.close_recovery(recovery_key(closing.case_id), closing.how)
        except BudgetSystemUnavailable as exc:
            raise ApplicationError(str(exc), type=ErrorType.BUDGET_SYSTEM_UNAVAILABLE) from exc
        async with self._sessionmaker.begin() as session:
            await recovery.set_status(session, closing.case_id, RecoveryStatus.SETTLED)
            await notices.notify_enterprise(
                session,
                uscc=closing.uscc,
                subject=closing.case_id,
                text=texts.recovery_closed(closing.title, closing.how),
                dedupe_key=f"recovery/{closing.case_id}/closed",
            )

    @activity.defn
    async def notify(self, notice: CommitmentNotice) -> None:
        """A notice to the firm, once per key."""
        async with self._sessionmaker.begin() as session:
            await notices.notify_enterprise(
                session,
                uscc=notice.uscc,
                subject=notice.case_id,
                text=_text(notice),
                dedupe_key=f"commitment/{notice.case_id}/{notice.key}",
            )


def _text(notice: CommitmentNotice) -> Text:
    day = notice.day.isoformat() if notice.day else ""
    match notice.kind:
        case CommitmentNoticeKind.APPROVED:
            return texts.commitment_approved(notice.title, notice.amount_fen)
        case CommitmentNoticeKind.PREPAID:
            return texts.commitment_prepaid(notice.title, notice.amount_fen, day)
        case CommitmentNoticeKind.REMINDER:
            return texts.commitment_reminder(notice.title, day, notice.days)
        case CommitmentNoticeKind.EXTENSION:
            return texts.commitment_extension(notice.title, notice.approved, day, notice.text)
        case CommitmentNoticeKind.SETTLED:
            return texts.commitment_settled(
                notice.title, notice.text, notice.amount_fen, notice.other_fen
            )
        case CommitmentNoticeKind.PLAN:
            return texts.recovery_plan(
                notice.title, [(p.due_on.isoformat(), p.amount_fen) for p in notice.plan]
            )
    return texts.recovery_closed(notice.title, notice.text or format_yuan(notice.amount_fen))
