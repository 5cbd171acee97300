"""Recognition cases and batch reads: what a case reads of its snapshot entry when it
starts, the firm's account confirmation, a batch's progress and its list of firms."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain import access
from domain.cases.payee import verified_account
from domain.errors import NotFound
from domain.matching import push
from domain.matching.match_library import condition_views
from domain.policy.versions import recognition_terms
from domain.recognition.batches import SYSTEM, get_batch, list_total
from models.cases import CaseRecord, CaseStage
from models.eligibility import Outcome
from models.facts import FACT_KINDS
from models.policy import PolicyItemVersion, Stage, StageLimit
from models.recognition import (
    AccountChange,
    BatchPhase,
    BatchProgress,
    BatchSource,
    BatchSummary,
    CaseOpening,
    EntryStatus,
    EntryView,
    RecognitionBatch,
    RecognitionEntry,
    StageMoney,
    VerificationStep,
)
from models.reference import Actor
from models.registry import BankAccount, Enterprise
from models.types import utcnow

SOURCES = {BatchSource.LIBRARY: "政策匹配库", BatchSource.UPLOAD: "部门上传名单"}


async def get_entry(session: AsyncSession, case_id: str) -> RecognitionEntry:
    entry = await session.scalar(
        select(RecognitionEntry).where(col(RecognitionEntry.case_id) == case_id)
    )
    if entry is None:
        raise NotFound(f"no batch entry for case {case_id}")
    return entry


async def open_case(session: AsyncSession, case_id: str) -> CaseOpening:
    entry = await get_entry(session, case_id)
    batch = await get_batch(session, entry.batch_id)
    version = await session.scalar(
        select(PolicyItemVersion).where(
            col(PolicyItemVersion.item_code) == batch.item_code,
            col(PolicyItemVersion.version) == batch.version,
        )
    )
    assert version is not None
    stages = {s.stage: s for s in (StageLimit.model_validate(x) for x in version.stages)}
    steps = [
        VerificationStep(
            at=batch.identified_at or batch.started_at,
            actor=SYSTEM,
            action="identified",
            detail=f"批次 {batch.batch_id}（{SOURCES[BatchSource(batch.source)]}）数据比对认定",
        )
    ]
    if entry.department_by and entry.department_at:
        steps.append(
            VerificationStep(
                at=entry.department_at,
                actor=entry.department_by,
                action="department_verified",
                detail=_covered("部门", batch.batch_id, entry),
            )
        )
    if entry.finance_by and entry.finance_at:
        steps.append(
            VerificationStep(
                at=entry.finance_at,
                actor=entry.finance_by,
                action="finance_verified",
                detail=_covered("财政", batch.batch_id, entry),
            )
        )
    to_verify = list(entry.flags or [])
    if entry.status == EntryStatus.INDIVIDUAL_REVIEW:
        views = condition_views(version.eligibility, entry.outcomes)
        to_verify += [f"需人工核实：{v.description}" for v in views if v.outcome is Outcome.UNKNOWN]
        if entry.amount_fen is None:
            to_verify.append("金额无法自动计算：审核通过时请核定金额")
    return CaseOpening(
        title=version.title,
        amount_fen=entry.amount_fen,
        amount_explanation=entry.amount_explanation,
        region_code=entry.region_code,
        budget_year=batch.budget_year,
        entitled_at=entry.entitled_at,
        department_code=batch.department_code,
        finance_department_code=batch.finance_department_code,
        department_working_days=stages[Stage.DEPARTMENT_REVIEW].working_days,
        finance_working_days=stages[Stage.FINANCE_REVIEW].working_days,
        terms=recognition_terms(version),
        account_verified=await verified_account(session, entry.uscc),
        steps=steps,
        to_verify=to_verify,
    )


def _covered(level: str, batch_id: str, entry: RecognitionEntry) -> str:
    if entry.status == EntryStatus.INDIVIDUAL_REVIEW:
        return f"{level}核定批次 {batch_id}：转个案审核（{entry.reason}）"
    if entry.department_by == SYSTEM:
        return f"直通：{level}核定由系统自动完成（批次 {batch_id}）"
    return f"{level}按名单核定批次 {batch_id}"


async def record_account(session: AsyncSession, change: AccountChange) -> None:
    """The firm confirmed its receiving account, or gave a corrected one (which becomes
    its default); a pushed policy it confirms counts as confirmed."""
    if change.account is not None:
        account = change.account
        existing = await session.scalar(
            select(BankAccount).where(
                col(BankAccount.uscc) == change.uscc,
                col(BankAccount.account_number) == account.account_number,
            )
        )
        await session.execute(
            sa.update(BankAccount)
            .where(col(BankAccount.uscc) == change.uscc)
            .values(is_default=False)
        )
        if existing is None:
            session.add(
                BankAccount(
                    uscc=change.uscc,
                    bank_name=account.bank_name,
                    account_name=account.account_name,
                    account_number=account.account_number,
                    is_default=True,
                )
            )
        else:
            existing.bank_name, existing.account_name = account.bank_name, account.account_name
            existing.is_default = True
    await push.record_action(session, change.uscc, change.item_code, "confirmed")
    await session.flush()


# ----- reads ----------------------------------------------------------------------------

WAITING_FOR_FIRM = (CaseStage.CONFIRMATION,)
# Past the reservation and not yet paid: the money is set aside.
RESERVED = (
    CaseStage.CONFIRMATION,
    CaseStage.PAYMENT,
    CaseStage.ACCOUNT_CORRECTION,
    CaseStage.PAYMENT_FAILED,
)


async def progress(session: AsyncSession, batch_id: str) -> BatchProgress:
    """Where a batch stands: its snapshot and verification, and its cases by stage
    (from the case projection, which lags the cases by at most a moment)."""
    batch = await get_batch(session, batch_id)
    counts = dict(
        (EntryStatus(s), int(n))
        for s, n in await session.execute(
            select(RecognitionEntry.status, sa.func.count())
            .where(col(RecognitionEntry.batch_id) == batch_id)
            .group_by(col(RecognitionEntry.status))
        )
    )
    started = (
        select(RecognitionEntry.case_id)
        .where(col(RecognitionEntry.batch_id) == batch_id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            CaseRecord.stage,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(CaseRecord.approved_amount_fen), 0),
            sa.func.coalesce(sa.func.sum(CaseRecord.paid_amount_fen), 0),
        )
        .where(col(CaseRecord.case_id).in_(started))
        .group_by(col(CaseRecord.stage))
    )
    by_stage: dict[str, tuple[int, int, int]] = {
        stage: (int(n), int(approved or 0), int(paid or 0)) for stage, n, approved, paid in rows
    }

    def cases(*stages: CaseStage) -> int:
        return sum(by_stage.get(s.value, (0, 0, 0))[0] for s in stages)

    return BatchProgress(
        batch_id=batch.batch_id,
        item_code=batch.item_code,
        version=batch.version,
        period=batch.period,
        source=batch.source,
        phase=batch.phase,
        straight_through=batch.straight_through,
        started_by=batch.started_by,
        started_at=batch.started_at,
        identified=batch.listed + batch.possible,
        possible=batch.possible,
        not_eligible=batch.not_eligible,
        already_claimed=batch.already_claimed,
        verified=counts.get(EntryStatus.VERIFIED, 0),
        individual_review=counts.get(EntryStatus.INDIVIDUAL_REVIEW, 0),
        dropped=counts.get(EntryStatus.DROPPED, 0),
        cases_started=sum(v[0] for v in by_stage.values()),
        waiting_for_firm=cases(*WAITING_FOR_FIRM),
        reserved=cases(*RESERVED),
        paid=cases(CaseStage.PAID),
        returned=cases(CaseStage.ACCOUNT_CORRECTION),
        declined=cases(CaseStage.DECLINED),
        expired=cases(CaseStage.EXPIRED),
        listed_total_fen=batch.listed_total_fen,
        department_verified_total_fen=await list_total(
            session, batch_id, EntryStatus.DEPARTMENT_VERIFIED
        ),
        verified_total_fen=await list_total(session, batch_id, EntryStatus.VERIFIED),
        reserved_fen=sum(by_stage.get(s.value, (0, 0, 0))[1] for s in RESERVED),
        paid_fen=sum(v[2] for v in by_stage.values()),
        by_stage=[
            StageMoney(stage=stage, cases=n, amount_fen=paid if stage == "paid" else approved)
            for stage, (n, approved, paid) in sorted(by_stage.items())
        ],
        department_decision=batch.department_decision,
        finance_decision=batch.finance_decision,
        failure=batch.failure,
    )


async def open_cases(session: AsyncSession, batch_id: str) -> int:
    """Cases of the batch not yet closed (a case not yet projected counts as open)."""
    started = select(RecognitionEntry.case_id).where(
        col(RecognitionEntry.batch_id) == batch_id,
        col(RecognitionEntry.start_round).is_not(None),
    )
    total = await session.scalar(select(sa.func.count()).select_from(started.subquery()))
    closed = await session.scalar(
        select(sa.func.count())
        .select_from(CaseRecord)
        .where(
            col(CaseRecord.case_id).in_(started),
            col(CaseRecord.stage).in_(
                [
                    CaseStage.PAID.value,
                    CaseStage.REJECTED.value,
                    CaseStage.WITHDRAWN.value,
                    CaseStage.CANCELLED.value,
                    CaseStage.DECLINED.value,
                    CaseStage.EXPIRED.value,
                ]
            ),
        )
    )
    return int(total or 0) - int(closed or 0)


async def close_batch(session: AsyncSession, batch_id: str) -> None:
    batch = await get_batch(session, batch_id)
    if batch.phase == BatchPhase.DISBURSING:
        batch.phase = BatchPhase.DONE
    if batch.closed_at is None:
        batch.closed_at = utcnow()
    batch.open_key = None


async def entries(
    session: AsyncSession,
    batch_id: str,
    status: EntryStatus | None,
    region_code: str | None,
    uscc: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[EntryView]]:
    """The firms of a batch with their evidence and verification, filtered."""
    batch = await get_batch(session, batch_id)
    where = [col(RecognitionEntry.batch_id) == batch_id]
    if status is not None:
        where.append(col(RecognitionEntry.status) == status)
    if region_code is not None:
        where.append(col(RecognitionEntry.region_code) == region_code)
    if uscc is not None:
        where.append(col(RecognitionEntry.uscc) == uscc)
    total = await session.scalar(
        select(sa.func.count()).select_from(RecognitionEntry).where(*where)
    )
    rule = await session.scalar(
        select(PolicyItemVersion.eligibility).where(
            col(PolicyItemVersion.item_code) == batch.item_code,
            col(PolicyItemVersion.version) == batch.version,
        )
    )
    rows = await session.execute(
        select(RecognitionEntry, Enterprise.name, CaseRecord.stage)
        .join(Enterprise, col(Enterprise.uscc) == col(RecognitionEntry.uscc))
        .outerjoin(CaseRecord, col(CaseRecord.case_id) == col(RecognitionEntry.case_id))
        .where(*where)
        .order_by(col(RecognitionEntry.uscc))
        .offset(offset)
        .limit(limit)
    )
    return int(total or 0), [
        EntryView(
            uscc=e.uscc,
            name=name,
            region_code=e.region_code,
            case_id=e.case_id,
            status=e.status,
            verdict=e.verdict,
            amount_fen=e.amount_fen,
            amount_explanation=e.amount_explanation,
            conditions=[v.model_dump() for v in condition_views(rule, e.outcomes)],
            facts=[_fact(kind, value) for kind, value in (e.facts or {}).items()],
            figures=e.figures,
            flags=list(e.flags or []),
            reason=e.reason,
            department_by=e.department_by,
            department_at=e.department_at,
            finance_by=e.finance_by,
            finance_at=e.finance_at,
            case_stage=stage,
        )
        for e, name, stage in rows
    ]


def _fact(kind: str, stored: list[object]) -> dict[str, object]:
    value, period, source, fetched_at = stored
    label = FACT_KINDS[kind].label if kind in FACT_KINDS else kind
    return {
        "kind": kind,
        "label": label,
        "value": value,
        "period": period,
        "source": source,
        "fetched_at": fetched_at,
    }


async def list_batches(
    session: AsyncSession,
    actor: Actor,
    item_code: str | None,
    phase: BatchPhase | None,
    offset: int,
    limit: int,
    *,
    scoped: bool = True,
) -> tuple[int, list[BatchSummary]]:
    """Batches the actor reads: auditors and admins all; staff those of their unit (as
    the item's department or as its finance). `scoped=False` where the caller has
    already allowed the actor the whole item."""
    access.require_staff_or_reader(actor)
    query = select(RecognitionBatch)
    if scoped and actor.role not in access.READ_ALL:
        query = query.where(
            sa.or_(
                col(RecognitionBatch.department_code) == actor.department_code,
                col(RecognitionBatch.finance_department_code) == actor.department_code,
            )
        )
    if item_code is not None:
        query = query.where(col(RecognitionBatch.item_code) == item_code)
    if phase is not None:
        query = query.where(col(RecognitionBatch.phase) == phase)
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(col(RecognitionBatch.started_at).desc()).offset(offset).limit(limit)
    )
    return int(total or 0), [BatchSummary.model_validate(b, from_attributes=True) for b in rows]
