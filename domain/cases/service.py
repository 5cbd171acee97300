"""Case services: admitting an application, the automatic check, the list projection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from domain import access
from domain.access import require_role
from domain.engine.amounts import compute_amount, parse_amount_rule
from domain.engine.rules import evaluate, parse_rule
from domain.errors import Conflict, InvalidInput, NotFound
from domain.matching import push
from domain.policy.library import get_item, get_version
from domain.registry.enterprises import get_enterprise, known_facts
from models.cases import (
    UNPAID_CLOSURES,
    ApplicationInput,
    ApplicationRequest,
    CaseClaim,
    CaseRecord,
    CaseStage,
    CaseState,
    CheckResult,
    ClaimState,
    application_case_id,
)
from models.eligibility import Verdict
from models.money import MAX_FEN
from models.period import Period, PeriodScheme, parse_period, within
from models.policy import (
    Category,
    PolicyItemVersion,
    StageLimit,
    StageWarning,
    VersionStatus,
)
from models.reference import Actor, Role
from models.registry import BankAccount, Enterprise
from models.types import utcnow


@dataclass(frozen=True)
class Admission:
    """What admitting an application found: a new case to start, or the open or paid
    case the firm already has for this item and period."""

    application: ApplicationInput
    existing: bool


async def admit_application(
    session: AsyncSession, actor: Actor, request: ApplicationRequest, today: date
) -> Admission:
    """Check that this firm may apply to this item for this period now, and claim the
    period (flushed, not committed: the caller starts the workflow, then commits)."""
    require_role(actor, Role.ENTERPRISE)
    assert actor.enterprise_uscc is not None
    uscc = actor.enterprise_uscc
    try:
        item = await get_item(session, request.item_code)
    except NotFound as exc:  # a field of the body, not the resource addressed: 422, not 404
        raise InvalidInput.field("item_code", f"{request.item_code} not found") from exc
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
    period = admissible_period(request.period, version, today)
    current = await active_claim(session, item.code, uscc, period.text)
    if current is not None:
        return Admission(_input(current, version.version, actor, request), existing=True)
    attempts = await session.scalar(
        select(sa.func.max(CaseClaim.attempt)).where(
            CaseClaim.item_code == item.code,
            CaseClaim.uscc == uscc,
            CaseClaim.period == period.text,
        )
    )
    attempt = int(attempts or 0) + 1
    claim = CaseClaim(
        case_id=application_case_id(item.code, period.text, uscc, attempt),
        category=Category.APPLICATION.value,
        item_code=item.code,
        uscc=uscc,
        period=period.text,
        attempt=attempt,
    )
    try:
        async with session.begin_nested():
            session.add(claim)
    except IntegrityError:  # a concurrent request claimed the period first: that case
        current = await active_claim(session, item.code, uscc, period.text)
        if current is None:
            raise Conflict("another application for this period is being made; retry") from None
        return Admission(_input(current, version.version, actor, request), existing=True)
    application = _input(claim, version.version, actor, request)
    if period.start is None:  # one-off: paid from the quota of the year it is claimed
        application.budget_year = today.year
    return Admission(application, existing=False)


def _input(
    claim: CaseClaim, version: int, actor: Actor, request: ApplicationRequest
) -> ApplicationInput:
    return ApplicationInput(
        case_id=claim.case_id,
        item_code=claim.item_code,
        version=version,
        period=claim.period,
        uscc=claim.uscc,
        applicant=actor.name,
        materials=request.materials,
        attempt=claim.attempt,
    )


def admissible_period(text: str, version: PolicyItemVersion, today: date) -> Period:
    """The period a case for this version may be for: a real period of the item's scheme,
    inside the version's validity, and begun by `today`; else a 422 naming `period`."""
    try:
        period = parse_period(text, PeriodScheme(version.period_scheme))
    except ValueError as exc:
        raise InvalidInput.field("period", str(exc)) from None
    if not within(period, version.valid_from, version.valid_to):
        raise InvalidInput.field(
            "period",
            f"{text} is not inside the item's validity "
            f"({version.valid_from.isoformat()} to {version.valid_to.isoformat()})",
        )
    if period.start is not None and period.start > today:
        raise InvalidInput.field("period", f"{text} has not begun yet")
    return period


async def active_claim(
    session: AsyncSession, item_code: str, uscc: str, period: str
) -> CaseClaim | None:
    """The open or paid claim of a firm on an item's period, if any."""
    claim: CaseClaim | None = await session.scalar(
        select(CaseClaim).where(
            CaseClaim.item_code == item_code,
            CaseClaim.uscc == uscc,
            CaseClaim.period == period,
            CaseClaim.state != ClaimState.CLOSED,
        )
    )
    return claim


async def current_case_id(session: AsyncSession, item_code: str, period: str, uscc: str) -> str:
    """The case a business key names now: its latest attempt (the first if none is
    recorded, as for cases started before claims existed)."""
    case_id = await session.scalar(
        select(CaseClaim.case_id)
        .where(CaseClaim.item_code == item_code, CaseClaim.uscc == uscc, CaseClaim.period == period)
        .order_by(col(CaseClaim.attempt).desc())
        .limit(1)
    )
    return case_id or application_case_id(item_code, period, uscc)


async def confirm_claim(session: AsyncSession, application: ApplicationInput) -> None:
    """Make sure the running case holds its claim (the API records it in the request that
    starts the workflow; if that commit was lost, the case claims it now), and count a
    pushed policy as applied for. A period someone else holds is a Conflict."""
    claim = await session.scalar(select(CaseClaim).where(CaseClaim.case_id == application.case_id))
    if claim is None:
        try:
            async with session.begin_nested():
                session.add(
                    CaseClaim(
                        case_id=application.case_id,
                        category=Category.APPLICATION.value,
                        item_code=application.item_code,
                        uscc=application.uscc,
                        period=application.period,
                        attempt=application.attempt,
                    )
                )
        except IntegrityError:
            # The request that started this case may have committed its claim meanwhile
            # (on PostgreSQL our insert waited for it): then the claim is ours.
            mine = await session.scalar(
                select(CaseClaim.id).where(CaseClaim.case_id == application.case_id)
            )
            if mine is None:
                raise DuplicateCase(
                    f"{application.uscc} already has an open or paid case for "
                    f"{application.item_code} {application.period}"
                ) from None
    # A firm applying for a policy pushed to it is the push's success.
    await push.record_action(session, application.uscc, application.item_code, "applied")


class DuplicateCase(Conflict):
    code = "duplicate_case"
    title = "Duplicate case"


async def check_application(
    session: AsyncSession, application: ApplicationInput, today: date
) -> CheckResult:
    """The automatic completeness and eligibility check, against the version applied to.
    A rule or amount that cannot be evaluated (stored data no validator let through)
    does not stop the case: the check says so and a person decides."""
    version = await get_version(session, application.item_code, application.version)
    enterprise = await get_enterprise(session, application.uscc)
    stages = [StageLimit.model_validate(s) for s in version.stages]
    try:
        facts = await known_facts(session, application.uscc)
        evaluation = evaluate(parse_rule(version.eligibility), facts, today)
        amount = compute_amount(parse_amount_rule(version.amount_rule), facts)
    except (ValueError, ArithmeticError) as exc:
        return CheckResult(
            verdict=Verdict.POSSIBLY_ELIGIBLE,
            conditions=[],
            amount_fen=None,
            amount_explanation="无法自动计算金额",
            stages=stages,
            region_code=enterprise.region_code,
            failure=f"自动核验失败，请人工审核：{str(exc)[:300]}",
        )
    eligible = evaluation.verdict is not Verdict.NOT_ELIGIBLE
    amount_fen = amount.amount_fen if eligible else None
    if amount_fen is not None and not 0 <= amount_fen <= MAX_FEN:
        amount_fen = None
    return CheckResult(
        verdict=evaluation.verdict,
        conditions=evaluation.conditions,
        amount_fen=amount_fen,
        amount_explanation=amount.explanation,
        stages=stages,
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
    await _settle_claim(session, state)
    # A warning about a stage the case has left is resolved.
    await session.execute(
        sa.update(StageWarning)
        .where(
            col(StageWarning.subject) == state.case_id,
            col(StageWarning.stage) != state.stage.value,
            col(StageWarning.resolved_at).is_(None),
        )
        .values(resolved_at=utcnow())
    )
    await session.flush()


async def _settle_claim(session: AsyncSession, state: CaseState) -> None:
    """A paid case keeps its period for good; one closed unpaid gives it back."""
    if state.stage is CaseStage.PAID:
        wanted = ClaimState.PAID
    elif state.stage in UNPAID_CLOSURES:
        wanted = ClaimState.CLOSED
    else:
        return
    await session.execute(
        sa.update(CaseClaim)
        .where(col(CaseClaim.case_id) == state.case_id, col(CaseClaim.state) == ClaimState.OPEN)
        .values(state=wanted, closed_at=utcnow())
    )


async def inbox(
    session: AsyncSession, actor: Actor, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    """Cases waiting on the caller's unit, soonest deadline first."""
    require_role(actor, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    query = select(CaseRecord).where(
        col(CaseRecord.waiting_for_department) == actor.department_code
    )
    return await _page(session, query, offset, limit, soonest_first=True)


class CaseFilters(BaseModel):
    item_code: str | None = None
    category: str | None = None
    stage: str | None = None
    region_code: str | None = None
    period: str | None = None
    overdue: bool | None = None
    waiting_for_department: str | None = None


async def list_cases(
    session: AsyncSession, actor: Actor, filters: CaseFilters, offset: int, limit: int
) -> tuple[int, list[CaseRecord]]:
    """Cases an auditor, admin or staff member may read, filtered; newest first.
    Auditors and admins read all; a department the cases of its own items (and of items
    it acts on); finance also those of its region's items and firms (the city's
    finance: every case)."""
    require_role(
        actor,
        Role.AUDITOR,
        Role.ADMIN,
        Role.DEPARTMENT_CASEWORKER,
        Role.DEPARTMENT_HEAD,
        Role.FINANCE_CASEWORKER,
    )
    # The same scope as a single case read (domain.access decides, and says what it is).
    readable = await access.item_firm_pairs_filter(
        session,
        actor,
        item_code=col(CaseRecord.item_code),
        uscc=col(CaseRecord.uscc),
        region_code=col(CaseRecord.region_code),
    )
    query = select(CaseRecord).where(readable)
    for name, value in filters.model_dump(exclude_none=True).items():
        query = query.where(getattr(CaseRecord, name) == value)
    return await _page(session, query, offset, limit, soonest_first=False)


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
