"""Case services: admitting an application, the automatic check, the list projection."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from domain import push
from domain.access import require_role
from domain.amounts import compute_amount, parse_amount_rule
from domain.enterprises import get_enterprise, known_facts
from domain.errors import Conflict, InvalidInput, NotFound
from domain.library import get_item, get_version
from domain.rules import Verdict, evaluate, parse_rule
from models.case import (
    ApplicationInput,
    ApplicationRequest,
    CaseRecord,
    CaseState,
    CheckResult,
    application_case_id,
)
from models.enterprise import BankAccount, Enterprise
from models.policy import Category, StageLimit, VersionStatus
from models.reference import Actor, Role
from models.types import utcnow


async def admit_application(
    session: AsyncSession, actor: Actor, request: ApplicationRequest, today: date
) -> ApplicationInput:
    """Check that this firm may apply to this item now; return the workflow input."""
    require_role(actor, Role.ENTERPRISE)
    assert actor.enterprise_uscc is not None
    item = await get_item(session, request.item_code)
    if item.published_version is None:
        raise InvalidInput.field("item_code", f"{request.item_code} is not published")
    version = await get_version(session, item.code, item.published_version)
    if version.status != VersionStatus.PUBLISHED:
        raise InvalidInput.field("item_code", f"{request.item_code} is {version.status}")
    if version.category != Category.APPLICATION:
        raise InvalidInput.field(
            "item_code", f"{request.item_code} is a {version.category} item: firms do not apply"
        )
    if not version.valid_from <= today <= version.valid_to:
        raise InvalidInput.field("item_code", f"{request.item_code} is not open on {today}")
    # A firm applying for a policy pushed to it is the push's success.
    await push.record_action(session, actor.enterprise_uscc, item.code, "applied")
    return ApplicationInput(
        case_id=application_case_id(item.code, request.period, actor.enterprise_uscc),
        item_code=item.code,
        version=version.version,
        period=request.period,
        uscc=actor.enterprise_uscc,
        applicant=actor.name,
        materials=request.materials,
    )


async def check_application(
    session: AsyncSession, application: ApplicationInput, today: date
) -> CheckResult:
    """The automatic completeness and eligibility check, against the version applied to."""
    version = await get_version(session, application.item_code, application.version)
    enterprise = await get_enterprise(session, application.uscc)
    facts = await known_facts(session, application.uscc)
    evaluation = evaluate(parse_rule(version.eligibility), facts, today)
    amount = compute_amount(parse_amount_rule(version.amount_rule), facts)
    eligible = evaluation.verdict is not Verdict.NOT_ELIGIBLE
    return CheckResult(
        verdict=evaluation.verdict,
        conditions=evaluation.conditions,
        amount_fen=amount.amount_fen if eligible else None,
        amount_explanation=amount.explanation,
        stages=[StageLimit.model_validate(s) for s in version.stages],
        region_code=enterprise.region_code,
    )


async def default_payee(session: AsyncSession, uscc: str) -> tuple[Enterprise, BankAccount]:
    enterprise = await get_enterprise(session, uscc)
    account = await session.scalar(
        select(BankAccount)
        .where(BankAccount.uscc == uscc)
        .order_by(col(BankAccount.is_default).desc(), col(BankAccount.id).desc())
        .limit(1)
    )
    if account is None:
        raise Conflict(f"enterprise {uscc} has no bank account on file")
    return enterprise, account


async def project(session: AsyncSession, state: CaseState) -> None:
    """Upsert the list projection of a case from its workflow state."""
    record = await session.get(CaseRecord, state.case_id)
    if record is None:
        category = state.case_id.split("/", 1)[0]
        region_code = (await get_enterprise(session, state.uscc)).region_code
        record = CaseRecord(
            case_id=state.case_id,
            category=category,
            item_code=state.item_code,
            version=state.version,
            period=state.period,
            uscc=state.uscc,
            region_code=region_code,
            stage=state.stage.value,
        )
        session.add(record)
    record.stage = state.stage.value
    record.waiting_for_role = state.waiting_for_role
    record.waiting_for_department = state.waiting_for_department
    record.due_at = state.due_at
    record.overdue = state.overdue
    record.approved_amount_fen = state.approved_amount_fen
    record.paid_amount_fen = state.paid_amount_fen
    record.updated_at = utcnow()
    await session.flush()


async def inbox(
    session: AsyncSession, actor: Actor, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    """Cases waiting on the caller's unit, soonest deadline first."""
    require_role(actor, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    query = select(CaseRecord).where(
        col(CaseRecord.waiting_for_department) == actor.department_code
    )
    return await _page(session, query, offset, limit, soonest_first=True)


async def cases_of_enterprise(
    session: AsyncSession, actor: Actor, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    require_role(actor, Role.ENTERPRISE)
    query = select(CaseRecord).where(col(CaseRecord.uscc) == actor.enterprise_uscc)
    return await _page(session, query, offset, limit, soonest_first=False)


async def _page(
    session: AsyncSession,
    query: SelectOfScalar[CaseRecord],
    offset: int,
    limit: int,
    *,
    soonest_first: bool,
) -> tuple[int, list[CaseRecord]]:
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    order = (
        [col(CaseRecord.due_at).is_(None), col(CaseRecord.due_at), col(CaseRecord.case_id)]
        if soonest_first
        else [col(CaseRecord.created_at).desc()]
    )
    rows = await session.scalars(query.order_by(*order).offset(offset).limit(limit))
    return int(total or 0), list(rows)


async def get_record(session: AsyncSession, case_id: str) -> CaseRecord:
    record = await session.get(CaseRecord, case_id)
    if record is None:
        raise NotFound(f"case {case_id} not found")
    return record


async def awaiting_budget(session: AsyncSession, item_code: str) -> list[str]:
    rows = await session.scalars(
        select(CaseRecord.case_id).where(
            col(CaseRecord.item_code) == item_code, col(CaseRecord.stage) == "awaiting_budget"
        )
    )
    return list(rows)
