"""Policy library services: drafting, submission, review outcomes and eligibility.

Published versions never change: editing a published item drafts a new version, and
cases refer to the version they were decided under.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, computed_field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.access import require_department_staff, require_item_firm_reader
from domain.eligibility import assess
from domain.engine.amounts import amount_rule_to_json, parse_amount_rule
from domain.engine.rules import InvalidRule, parse_rule, rule_to_json
from domain.errors import Conflict, FieldError, InvalidInput, NotFound
from domain.policy.versions import (
    NotPublished,
    commitment_terms,
    recognition_terms,
    version_in_force,
)
from domain.registry.enterprises import get_enterprise
from models.eligibility import ConditionResult, Verdict
from models.money import yuan_text
from models.period import PeriodScheme
from models.policy import (
    FINANCE_STAGES,
    Category,
    ChangeEventPublic,
    DocumentPublic,
    DraftUpdate,
    ItemContent,
    ItemCreate,
    ItemDetail,
    ItemSummary,
    PolicyChangeEvent,
    PolicyDocument,
    PolicyItem,
    PolicyItemVersion,
    StageWarning,
    VersionPublic,
    VersionStatus,
)
from models.policy_change import PolicyChangeInput
from models.reference import Actor, Department, DepartmentKind, Region, Role
from models.review import ReviewChecks
from models.types import utcnow

# Content fields by the column that stores them (the terms are kept as JSON).
_TERMS_COLUMNS = {
    "recognition": "recognition_terms",
    "commitment": "commitment_terms",
    "review": "review_checks",
}
CONTENT_COLUMNS = {field: _TERMS_COLUMNS.get(field, field) for field in ItemContent.model_fields}
# A change to any of these is reviewed by finance too. Recognition terms count: a
# straight-through item skips finance's check of each list, and they decide who is paid
# without confirming an account.
# Commitment terms count too: they set the prepayment, the settlement and the recovery.
# So do the review checks and the exclusivity group: they decide what is paid twice.
MONEY_FIELDS = (
    "amount_rule",
    "annual_quota_fen",
    "recognition_terms",
    "commitment_terms",
    "review_checks",
    "exclusivity_group",
)


def change_workflow_id(item_code: str, version: int) -> str:
    return f"policy-change/{item_code}/v{version}"


# ----- reading ----------------------------------------------------------------------


async def get_item(session: AsyncSession, code: str) -> PolicyItem:
    item = await session.get(PolicyItem, code)
    if item is None:
        raise NotFound(f"policy item {code} not found")
    return item


async def get_version(session: AsyncSession, code: str, version: int) -> PolicyItemVersion:
    row = await session.scalar(
        select(PolicyItemVersion).where(
            PolicyItemVersion.item_code == code, PolicyItemVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"version {version} of policy item {code} not found")
    return row


async def list_items(
    session: AsyncSession,
    actor: Actor,
    *,
    category: Category | None,
    department_code: str | None,
    region_code: str | None,
    status: VersionStatus | None,
    q: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[ItemSummary]]:
    """Items with their current version (the published one, else the latest)."""
    current = sa.func.coalesce(PolicyItem.published_version, PolicyItem.latest_version)
    query = select(PolicyItem, PolicyItemVersion).join(
        PolicyItemVersion,
        sa.and_(
            col(PolicyItemVersion.item_code) == col(PolicyItem.code),
            col(PolicyItemVersion.version) == current,
        ),
    )
    if actor.role is Role.ENTERPRISE:
        query = query.where(PolicyItemVersion.status == VersionStatus.PUBLISHED)
    if category:
        query = query.where(PolicyItemVersion.category == category)
    if department_code:
        query = query.where(PolicyItem.department_code == department_code)
    if region_code:
        query = query.where(PolicyItem.region_code == region_code)
    if status:
        query = query.where(PolicyItemVersion.status == status)
    if q:
        query = query.where(
            sa.or_(
                col(PolicyItemVersion.title).contains(q),
                col(PolicyItemVersion.summary).contains(q),
                col(PolicyItem.code).contains(q),
            )
        )
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.execute(query.order_by(col(PolicyItem.code)).offset(offset).limit(limit))
    return int(total or 0), [_summary(item, version) for item, version in rows]


def _summary(item: PolicyItem, version: PolicyItemVersion) -> ItemSummary:
    return ItemSummary(
        code=item.code,
        title=version.title,
        category=version.category,
        department_code=item.department_code,
        region_code=item.region_code,
        status=version.status,
        latest_version=item.latest_version,
        published_version=item.published_version,
        annual_quota_fen=version.annual_quota_fen,
        period_scheme=version.period_scheme,
        valid_from=version.valid_from,
        valid_to=version.valid_to,
    )


def version_public(v: PolicyItemVersion) -> VersionPublic:
    public = VersionPublic.model_validate(v, from_attributes=True)
    if v.category == Category.RECOGNITION:
        public.recognition = recognition_terms(v)
    elif v.category == Category.COMMITMENT:
        public.commitment = commitment_terms(v)
    if v.review_checks is not None:
        public.review = ReviewChecks.model_validate(v.review_checks)
    return public


async def item_detail(session: AsyncSession, actor: Actor, code: str) -> ItemDetail:
    item = await get_item(session, code)
    document = await session.get(PolicyDocument, item.document_id)
    assert document is not None
    versions = list(
        await session.scalars(
            select(PolicyItemVersion)
            .where(PolicyItemVersion.item_code == code)
            .order_by(col(PolicyItemVersion.version))
        )
    )
    events: list[PolicyChangeEvent] = []
    if actor.role is Role.ENTERPRISE:
        versions = [v for v in versions if v.status == VersionStatus.PUBLISHED]
        if not versions:
            raise NotFound(f"policy item {code} not found")
    else:
        events = list(
            await session.scalars(
                select(PolicyChangeEvent)
                .where(PolicyChangeEvent.item_code == code)
                .order_by(col(PolicyChangeEvent.id))
            )
        )
    return ItemDetail(
        code=item.code,
        department_code=item.department_code,
        region_code=item.region_code,
        document=DocumentPublic.model_validate(document, from_attributes=True),
        latest_version=item.latest_version,
        published_version=item.published_version,
        versions=[version_public(v) for v in versions],
        history=[ChangeEventPublic.model_validate(e, from_attributes=True) for e in events],
    )


# ----- drafting ---------------------------------------------------------------------


async def _validated_content(session: AsyncSession, content: ItemContent) -> dict[str, Any]:
    """Parse both rules and check the stage units; return column values."""
    errors: list[FieldError] = []
    eligibility: Any = None
    amount: Any = None
    try:
        eligibility = rule_to_json(parse_rule(content.eligibility, "eligibility"))
    except InvalidRule as exc:
        errors += [FieldError(e.path, e.message) for e in exc.errors]
    try:
        amount = amount_rule_to_json(parse_amount_rule(content.amount_rule, "amount_rule"))
    except InvalidRule as exc:
        errors += [FieldError(e.path, e.message) for e in exc.errors]
    for i, stage in enumerate(content.stages):
        dept = await session.get(Department, stage.department_code)
        wanted = DepartmentKind.FINANCE if stage.stage in FINANCE_STAGES else DepartmentKind.POLICY
        if dept is None:
            errors.append(
                FieldError(
                    f"stages[{i}].department_code", f"unknown department {stage.department_code}"
                )
            )
        elif dept.kind != wanted:
            errors.append(
                FieldError(
                    f"stages[{i}].department_code",
                    f"stage {stage.stage.value} needs a {wanted.value} department",
                )
            )
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    dumped = content.model_dump(mode="json", include=set(CONTENT_COLUMNS))
    values = {CONTENT_COLUMNS[field]: value for field, value in dumped.items()}
    values.update(
        eligibility=eligibility,
        amount_rule=amount,
        valid_from=content.valid_from,
        valid_to=content.valid_to,
        category=content.category,
    )
    return values


async def _record(
    session: AsyncSession,
    item_code: str,
    version: int,
    action: str,
    actor: Actor,
    reason: str = "",
    details: Any = None,
    at: datetime | None = None,
) -> None:
    session.add(
        PolicyChangeEvent(
            item_code=item_code,
            version=version,
            action=action,
            actor=actor.name,
            actor_role=actor.role.value,
            reason=reason,
            details=details,
            at=at or utcnow(),
        )
    )


async def create_item(session: AsyncSession, actor: Actor, body: ItemCreate) -> ItemDetail:
    require_department_staff(actor, body.department_code)
    if await session.get(PolicyItem, body.code) is not None:
        raise Conflict(f"policy item {body.code} exists already", [FieldError("code", "exists")])
    if await session.get(Region, body.region_code) is None:
        raise InvalidInput.field("region_code", f"unknown region {body.region_code}")
    values = await _validated_content(session, body)
    document = await session.scalar(
        select(PolicyDocument).where(PolicyDocument.doc_number == body.document.doc_number)
    )
    if document is None:
        document = PolicyDocument(**body.document.model_dump())
        session.add(document)
        await session.flush()
    assert document.id is not None
    session.add(
        PolicyItem(
            code=body.code,
            document_id=document.id,
            department_code=body.department_code,
            region_code=body.region_code,
        )
    )
    await session.flush()
    session.add(
        PolicyItemVersion(
            item_code=body.code,
            version=1,
            status=VersionStatus.DRAFT,
            author=actor.name,
            change_reason=body.change_reason,
            **values,
        )
    )
    await _record(session, body.code, 1, "created", actor, body.change_reason)
    await session.flush()
    return await item_detail(session, actor, body.code)


async def update_draft(
    session: AsyncSession, actor: Actor, code: str, body: DraftUpdate
) -> VersionPublic:
    """Edit the open draft, or open a new draft version from the latest one."""
    item = await get_item(session, code)
    require_department_staff(actor, item.department_code)
    latest = await get_version(session, code, item.latest_version)
    values = await _validated_content(session, body)
    fixed = await _published_scheme(session, code)
    if fixed is not None and values["period_scheme"] != fixed:
        raise InvalidInput.field(
            "period_scheme",
            f"{code} has paid by {fixed.value} periods since it was published; "
            "a different rhythm needs a new item",
        )
    if latest.status == VersionStatus.SUBMITTED:
        raise Conflict(f"version {latest.version} of {code} is under review; wait for its outcome")
    if latest.status == VersionStatus.DRAFT:
        changed = _changed(latest, values)
        for column in CONTENT_COLUMNS.values():
            setattr(latest, column, values[column])
        latest.change_reason = body.change_reason
        await _record(
            session, code, latest.version, "edited", actor, body.change_reason, {"fields": changed}
        )
        await session.flush()
        return version_public(latest)
    changed = _changed(latest, values)
    if not changed:
        raise InvalidInput.field("body", "nothing differs from the latest version")
    item.latest_version += 1
    draft = PolicyItemVersion(
        item_code=code,
        version=item.latest_version,
        status=VersionStatus.DRAFT,
        author=actor.name,
        change_reason=body.change_reason,
        **values,
    )
    session.add(draft)
    await _record(
        session,
        code,
        draft.version,
        "drafted",
        actor,
        body.change_reason,
        {"from_version": latest.version, "fields": changed},
    )
    await session.flush()
    return version_public(draft)


def _changed(row: PolicyItemVersion, values: dict[str, Any]) -> list[str]:
    """The content fields (by their names in the request) whose values differ."""
    return [f for f, column in CONTENT_COLUMNS.items() if getattr(row, column) != values[column]]


async def _published_scheme(session: AsyncSession, code: str) -> PeriodScheme | None:
    """The period scheme of an item that has ever been published (then it never changes)."""
    scheme = await session.scalar(
        select(PolicyItemVersion.period_scheme)
        .where(
            PolicyItemVersion.item_code == code,
            col(PolicyItemVersion.status).in_(
                [
                    VersionStatus.PUBLISHED,
                    VersionStatus.SUPERSEDED,
                    VersionStatus.SUSPENDED,
                    VersionStatus.EXPIRED,
                ]
            ),
        )
        .limit(1)
    )
    return None if scheme is None else PeriodScheme(scheme)


async def _finance_department(session: AsyncSession, region_code: str) -> str:
    region = await session.get(Region, region_code)
    while region is not None:
        code = await session.scalar(
            select(Department.code).where(
                Department.region_code == region.code, Department.kind == DepartmentKind.FINANCE
            )
        )
        if code is not None:
            return code
        region = await session.get(Region, region.parent_code) if region.parent_code else None
    raise Conflict(f"no finance department serves region {region_code}")


async def submit_version(
    session: AsyncSession,
    actor: Actor,
    code: str,
    version: int,
    *,
    head_review_days: int,
    finance_review_days: int,
) -> PolicyChangeInput:
    """Freeze a draft for review. The caller starts the workflow after commit."""
    item = await get_item(session, code)
    require_department_staff(actor, item.department_code)
    row = await get_version(session, code, version)
    if row.status == VersionStatus.SUBMITTED:
        # A retried submission: hand back the same input so the caller can make sure
        # the review workflow runs (starting it again is a no-op).
        return await _change_input(session, item, row, head_review_days, finance_review_days)
    if row.status != VersionStatus.DRAFT:
        raise Conflict(f"version {version} of {code} is {row.status}, not a draft")
    money_changed = True
    if item.published_version is not None:
        published = await get_version(session, code, item.published_version)
        money_changed = any(getattr(published, f) != getattr(row, f) for f in MONEY_FIELDS)
    row.status = VersionStatus.SUBMITTED
    row.submitted_at = utcnow()
    row.money_changed = money_changed
    row.review_workflow_id = change_workflow_id(code, version)
    await _record(
        session,
        code,
        version,
        "submitted",
        actor,
        row.change_reason,
        {"money_changed": money_changed},
    )
    await session.flush()
    return await _change_input(session, item, row, head_review_days, finance_review_days)


async def _change_input(
    session: AsyncSession,
    item: PolicyItem,
    row: PolicyItemVersion,
    head_review_days: int,
    finance_review_days: int,
) -> PolicyChangeInput:
    return PolicyChangeInput(
        item_code=item.code,
        version=row.version,
        title=row.title,
        author=row.author,
        department_code=item.department_code,
        region_code=item.region_code,
        finance_department_code=await _finance_department(session, item.region_code),
        money_changed=row.money_changed,
        head_review_days=head_review_days,
        finance_review_days=finance_review_days,
    )


async def suspend_item(
    session: AsyncSession, actor: Actor, code: str, reason: str
) -> VersionPublic:
    item = await get_item(session, code)
    require_department_staff(actor, item.department_code)
    try:
        row = await version_in_force(session, code)
    except NotPublished:
        raise Conflict(f"policy item {code} has no published version to suspend") from None
    row.status = VersionStatus.SUSPENDED
    await _record(session, code, row.version, "suspended", actor, reason)
    await session.flush()
    return version_public(row)


# ----- review outcomes (called from activities) -----------------------------------


async def record_review(
    session: AsyncSession,
    code: str,
    version: int,
    stage: str,
    approved: bool,
    actor: Actor,
    comment: str,
    subject: str,
) -> None:
    await _record(
        session,
        code,
        version,
        "approved" if approved else "rejected",
        actor,
        comment,
        {"stage": stage},
    )
    await session.execute(
        sa.update(StageWarning)
        .where(col(StageWarning.subject) == subject, col(StageWarning.resolved_at).is_(None))
        .values(resolved_at=utcnow())
    )
    if not approved:
        row = await get_version(session, code, version)
        if row.status == VersionStatus.SUBMITTED:
            row.status = VersionStatus.DRAFT  # back to the author to rework
    await session.flush()


async def publish_version(session: AsyncSession, code: str, version: int) -> None:
    """Make a reviewed version the one in force; idempotent for activity retries."""
    item = await get_item(session, code)
    row = await get_version(session, code, version)
    if row.status == VersionStatus.PUBLISHED:
        return
    if row.status != VersionStatus.SUBMITTED:
        raise Conflict(f"version {version} of {code} is {row.status}, cannot publish")
    if item.published_version is not None and item.published_version != version:
        previous = await get_version(session, code, item.published_version)
        if previous.status in (VersionStatus.PUBLISHED, VersionStatus.SUSPENDED):
            previous.status = VersionStatus.SUPERSEDED
    row.status = VersionStatus.PUBLISHED
    row.published_at = utcnow()
    item.published_version = version
    session.add(
        PolicyChangeEvent(
            item_code=code,
            version=version,
            action="published",
            actor="system",
            actor_role="system",
            reason="审批通过，自动发布",
        )
    )
    await session.flush()


async def expire_lapsed_versions(session: AsyncSession, today: date) -> list[str]:
    """Mark versions in force whose validity window has closed as expired."""
    lapsed = await session.scalars(
        select(PolicyItemVersion).where(
            col(PolicyItemVersion.status).in_([VersionStatus.PUBLISHED, VersionStatus.SUSPENDED]),
            col(PolicyItemVersion.valid_to) < today,
        )
    )
    expired = []
    for row in lapsed:
        row.status = VersionStatus.EXPIRED
        session.add(
            PolicyChangeEvent(
                item_code=row.item_code,
                version=row.version,
                action="expired",
                actor="system",
                actor_role="system",
                reason=f"有效期至{row.valid_to.isoformat()}，已到期",
            )
        )
        expired.append(f"{row.item_code}/v{row.version}")
    await session.flush()
    return expired


# ----- eligibility -----------------------------------------------------------------


class EligibilityReport(BaseModel):
    item_code: str
    version: int
    uscc: str
    enterprise_name: str
    as_of: date
    verdict: Verdict
    conditions: list[ConditionResult]
    amount_fen: int | None
    amount_explanation: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount_yuan(self) -> str | None:
        return yuan_text(self.amount_fen)


async def evaluate_eligibility(
    session: AsyncSession, actor: Actor, code: str, uscc: str, as_of: date, version: int | None
) -> EligibilityReport:
    await require_item_firm_reader(session, actor, code, uscc)
    item = await get_item(session, code)
    wanted = version or item.published_version or item.latest_version
    if actor.role is Role.ENTERPRISE and wanted != item.published_version:
        raise NotFound(f"policy item {code} has no published version {wanted}")
    # 409 for a stored rule that cannot be evaluated; an invalid stored fact reads as
    # unknown (reason `invalid`).
    assessment = await assess(session, code, uscc, as_of, wanted)
    enterprise = await get_enterprise(session, uscc)
    return EligibilityReport(
        item_code=code,
        version=assessment.version,
        uscc=uscc,
        enterprise_name=enterprise.name,
        as_of=as_of,
        verdict=assessment.verdict,
        conditions=assessment.conditions,
        amount_fen=assessment.amount_fen,
        amount_explanation=(
            "不符合条件，不计算金额" if assessment.ruled_out else assessment.amount_explanation
        ),
    )
