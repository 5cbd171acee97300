"""Admitting a case: an application's period and its claim on it, and the automatic
check of the application.

A firm holds one claim per item and period (`CaseClaim`) while its case is open or once
it is paid; the claim is taken in the request that starts the case and confirmed by the
case itself (`confirm_claim`), and released or kept when the case ends
(`domain.cases.projection`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.access import require_role
from domain.eligibility import assess
from domain.errors import Conflict, InvalidInput, NotFound
from domain.matching import push
from domain.policy.library import get_version
from domain.policy.versions import NotInForce, NotPublished, UnevaluableVersion, version_in_force
from domain.registry.enterprises import get_enterprise
from models.cases import (
    ApplicationInput,
    ApplicationRequest,
    CaseClaim,
    CheckResult,
    ClaimState,
    application_case_id,
)
from models.commitment import CommitmentInput, commitment_case_id
from models.eligibility import Verdict
from models.period import Period, PeriodScheme, parse_period, within
from models.policy import Category, PolicyItemVersion, StageLimit
from models.recognition import recognition_case_id
from models.reference import Actor, Role

CASE_IDS = {
    Category.APPLICATION: application_case_id,
    Category.COMMITMENT: commitment_case_id,
    Category.RECOGNITION: recognition_case_id,
}


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
    version = await open_version(session, request.item_code, Category.APPLICATION, today)
    period = admissible_period(request.period, version, today)
    claim, existing = await claim_period(
        session, version.item_code, uscc, period.text, Category.APPLICATION
    )
    application = _input(claim, version.version, actor, request)
    if period.start is None and not existing:  # one-off: paid from the year it is claimed
        application.budget_year = today.year
    return Admission(application, existing=existing)


async def open_version(
    session: AsyncSession, item_code: str, category: Category, today: date
) -> PolicyItemVersion:
    """The version in force a firm may open a case of `category` under today; a 422
    naming `item_code` otherwise (the item is a field of the body, not the resource
    addressed: not a 404 or 409)."""
    try:
        version = await version_in_force(session, item_code)
    except NotPublished:
        raise InvalidInput.field("item_code", f"{item_code} is not published") from None
    except NotInForce as exc:
        raise InvalidInput.field("item_code", f"{item_code} is {exc.row.status}") from exc
    except NotFound as exc:
        raise InvalidInput.field("item_code", f"{item_code} not found") from exc
    if version.category != category:
        raise InvalidInput.field(
            "item_code", f"{item_code} is a {version.category} item, not a {category} one"
        )
    if not version.valid_from <= today <= version.valid_to:
        raise InvalidInput.field("item_code", f"{item_code} is not open on {today}")
    return version


async def claim_period(
    session: AsyncSession, item_code: str, uscc: str, period: str, category: Category
) -> tuple[CaseClaim, bool]:
    """The firm's open or paid claim on the item's period (True: it existed), or a new
    one under the next attempt (flushed, not committed: the caller starts the workflow,
    then commits)."""
    current = await active_claim(session, item_code, uscc, period)
    if current is not None:
        return current, True
    attempts = await session.scalar(
        select(sa.func.max(CaseClaim.attempt)).where(
            CaseClaim.item_code == item_code,
            CaseClaim.uscc == uscc,
            CaseClaim.period == period,
        )
    )
    attempt = int(attempts or 0) + 1
    claim = CaseClaim(
        case_id=CASE_IDS[category](item_code, period, uscc, attempt),
        category=category.value,
        item_code=item_code,
        uscc=uscc,
        period=period,
        attempt=attempt,
    )
    try:
        async with session.begin_nested():
            session.add(claim)
    except IntegrityError:  # a concurrent request claimed the period first: that case
        current = await active_claim(session, item_code, uscc, period)
        if current is None:
            raise Conflict("another request for this period is being made; retry") from None
        return current, True
    return claim, False


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
        project=request.project,
        declared=request.declared,
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


async def current_case_id(
    session: AsyncSession,
    item_code: str,
    period: str,
    uscc: str,
    category: Category = Category.APPLICATION,
) -> str:
    """The case a business key names now: its latest attempt (the first if none is
    recorded, as for application cases started before claims existed)."""
    case_id = await session.scalar(
        select(CaseClaim.case_id)
        .where(CaseClaim.item_code == item_code, CaseClaim.uscc == uscc, CaseClaim.period == period)
        .order_by(col(CaseClaim.attempt).desc())
        .limit(1)
    )
    if case_id is not None:
        return str(case_id)
    return CASE_IDS[category](item_code, period, uscc, 1)


async def confirm_claim(
    session: AsyncSession,
    application: ApplicationInput | CommitmentInput,
    category: Category = Category.APPLICATION,
) -> None:
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
                        category=category.value,
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
    """The automatic completeness and eligibility check, against the version applied to
    (`domain.eligibility.assess`). A rule or amount that cannot be evaluated (stored
    data no validator let through) does not stop the case: the check says so and a
    person decides."""
    version = await get_version(session, application.item_code, application.version)
    enterprise = await get_enterprise(session, application.uscc)
    stages = [StageLimit.model_validate(s) for s in version.stages]
    try:
        assessment = await assess(
            session, application.item_code, application.uscc, today, application.version
        )
    except UnevaluableVersion as exc:
        failure = exc.reason
    except (ValueError, ArithmeticError) as exc:
        failure = str(exc)
    else:
        return CheckResult(
            verdict=assessment.verdict,
            conditions=assessment.conditions,
            amount_fen=assessment.amount_fen,
            amount_explanation=assessment.amount_explanation,
            stages=stages,
            region_code=enterprise.region_code,
        )
    return CheckResult(
        verdict=Verdict.POSSIBLY_ELIGIBLE,
        conditions=[],
        amount_fen=None,
        amount_explanation="无法自动计算金额",
        stages=stages,
        region_code=enterprise.region_code,
        failure=f"自动核验失败，请人工审核：{failure[:300]}",
    )
