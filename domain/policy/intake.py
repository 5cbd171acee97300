"""Policy intake as staff use it: the harvested documents with their versions, sources
and proposed items; adopting a proposal as a library draft; and the alerts of amended
or repealed documents, which the item's department marks handled.

A proposal adopted becomes a draft like any other (`library.create_item`), which the
caseworker edits and submits through the library's approval: nothing harvested is
published without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydanticField
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.access import (
    DEPARTMENT_STAFF,
    READ_ALL,
    items_reached,
    require_department_staff,
    scope_of,
)
from domain.errors import Conflict, FieldError, InvalidInput, NotFound
from domain.policy import extraction, library
from models.money import Fen
from models.notices import Notice
from models.period import PeriodScheme, whole_periods
from models.policy import (
    FINANCE_STAGES,
    STAGES_BY_CATEGORY,
    Category,
    DocumentIn,
    ItemCreate,
    ItemDetail,
    Level,
)
from models.policy_feed import (
    AlertKind,
    Article,
    DocumentKey,
    DraftProposal,
    HarvestedDocument,
    HarvestedSource,
    HarvestedVersion,
    PolicyAlert,
)
from models.reference import Actor, Department, DepartmentKind, Region, User
from models.types import Day, utcnow

# ----- what staff read ------------------------------------------------------------------


class DocumentSummary(BaseModel):
    id: int
    issuer: str
    doc_number: str
    title: str
    level: Level
    region_code: str
    department: str
    issued_on: date
    effective_from: date | None
    expires_on: date | None
    versions: int
    amends: DocumentKey | None
    repealed_by: DocumentKey | None


class VersionView(BaseModel):
    version: int
    revision: int
    published_at: Any
    content: Any


class SourceView(BaseModel):
    portal: str
    source_url: str
    published_at: Any


class ProposedCondition(BaseModel):
    rule: Any
    quote: str = PydanticField(description="the words the condition was read from")
    sentence: str = PydanticField(default="", description="the sentence they stand in")
    confidence: float = PydanticField(description="how sure the reading is, 0 to 1")
    manual: bool = PydanticField(description="a condition no figure can check")


class ProposalView(BaseModel):
    id: int
    version: int
    article: str
    title: str
    category: Category
    period_scheme: PeriodScheme
    eligibility: Any
    conditions: list[ProposedCondition]
    amount_rule: Any
    amount_quote: str | None
    amount_confidence: float | None
    amount_note: str | None = PydanticField(
        description="the sentence that pays an amount no rule was read from"
    )
    adopted_item_code: str | None
    adopted_by: str | None


class DocumentDetail(DocumentSummary):
    versions_seen: list[VersionView]
    sources: list[SourceView]
    proposals: list[ProposalView]
    amended_by: list[DocumentKey]


class AlertView(BaseModel):
    id: int
    kind: AlertKind
    item_code: str
    department_code: str
    document: DocumentKey
    cause: DocumentKey
    message: str
    raised_at: Any
    handled_at: Any
    handled_by: str | None


def _key(document: HarvestedDocument | None) -> DocumentKey | None:
    if document is None:
        return None
    return DocumentKey(doc_number=document.doc_number, issuer=document.issuer)


async def _keys(session: AsyncSession, ids: set[int | None]) -> dict[int, DocumentKey]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.scalars(
        select(HarvestedDocument).where(col(HarvestedDocument.id).in_(wanted))
    )
    return {d.id: DocumentKey(doc_number=d.doc_number, issuer=d.issuer) for d in rows if d.id}


def _summary(document: HarvestedDocument, keys: Mapping[int, DocumentKey]) -> DocumentSummary:
    assert document.id is not None
    return DocumentSummary(
        id=document.id,
        issuer=document.issuer,
        doc_number=document.doc_number,
        title=document.title,
        level=document.level,
        region_code=document.region_code,
        department=document.department,
        issued_on=document.issued_on,
        effective_from=document.effective_from,
        expires_on=document.expires_on,
        versions=document.versions,
        amends=keys.get(document.amends_id) if document.amends_id else None,
        repealed_by=keys.get(document.repealed_by_id) if document.repealed_by_id else None,
    )


async def list_documents(
    session: AsyncSession,
    *,
    level: Level | None,
    q: str | None,
    repealed: bool | None,
    offset: int,
    limit: int,
) -> tuple[int, list[DocumentSummary]]:
    query = select(HarvestedDocument)
    if level is not None:
        query = query.where(HarvestedDocument.level == level)
    if q:
        query = query.where(
            sa.or_(
                col(HarvestedDocument.title).contains(q, autoescape=True),
                col(HarvestedDocument.doc_number).contains(q, autoescape=True),
                col(HarvestedDocument.issuer).contains(q, autoescape=True),
            )
        )
    if repealed is not None:
        repealed_by = col(HarvestedDocument.repealed_by_id)
        query = query.where(repealed_by.is_not(None) if repealed else repealed_by.is_(None))
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = list(
        await session.scalars(
            query.order_by(col(HarvestedDocument.issued_on).desc(), col(HarvestedDocument.id))
            .offset(offset)
            .limit(limit)
        )
    )
    keys = await _keys(session, {d.amends_id for d in rows} | {d.repealed_by_id for d in rows})
    return int(total or 0), [_summary(d, keys) for d in rows]


def proposal_view(row: DraftProposal) -> ProposalView:
    assert row.id is not None
    return ProposalView(
        id=row.id,
        version=row.version,
        article=row.article,
        title=row.title,
        category=Category(row.category),
        period_scheme=PeriodScheme(row.period_scheme),
        eligibility=row.eligibility,
        conditions=[ProposedCondition.model_validate(e) for e in row.evidence],
        amount_rule=row.amount_rule,
        amount_quote=row.amount_quote,
        amount_confidence=row.amount_confidence,
        amount_note=row.amount_note,
        adopted_item_code=row.adopted_item_code,
        adopted_by=row.adopted_by,
    )


async def _document(session: AsyncSession, document_id: int) -> HarvestedDocument:
    document = await session.get(HarvestedDocument, document_id)
    if document is None:
        raise NotFound(f"harvested document {document_id} not found")
    return document


async def document_detail(session: AsyncSession, document_id: int) -> DocumentDetail:
    document = await _document(session, document_id)
    versions = await session.scalars(
        select(HarvestedVersion)
        .where(HarvestedVersion.document_id == document_id)
        .order_by(col(HarvestedVersion.version))
    )
    sources = await session.scalars(
        select(HarvestedSource)
        .where(HarvestedSource.document_id == document_id)
        .order_by(col(HarvestedSource.published_at))
    )
    proposals = await session.scalars(
        select(DraftProposal)
        .where(DraftProposal.document_id == document_id)
        .order_by(col(DraftProposal.version), col(DraftProposal.id))
    )
    amending = await session.scalars(
        select(HarvestedDocument)
        .where(HarvestedDocument.amends_id == document_id)
        .order_by(col(HarvestedDocument.issued_on))
    )
    keys = await _keys(session, {document.amends_id, document.repealed_by_id})
    return DocumentDetail(
        **_summary(document, keys).model_dump(),
        versions_seen=[
            VersionView(
                version=v.version,
                revision=v.revision,
                published_at=v.published_at,
                content=v.content,
            )
            for v in versions
        ],
        sources=[
            SourceView(portal=s.portal, source_url=s.source_url, published_at=s.published_at)
            for s in sources
        ],
        proposals=[proposal_view(p) for p in proposals],
        amended_by=[k for d in amending if (k := _key(d)) is not None],
    )


# ----- proposing -----------------------------------------------------------------------


async def region_names(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(sa.select(col(Region.name), col(Region.code)))
    return {name: code for name, code in rows}


async def propose(
    session: AsyncSession, document: HarvestedDocument, version: HarvestedVersion
) -> int:
    """The items the extractor reads from one version of a document; how many."""
    assert document.id is not None
    articles = [Article.model_validate(a) for a in version.content["articles"]]
    drafts = extraction.draft_items(document.title, articles, await region_names(session))
    for draft in drafts:
        session.add(
            DraftProposal(
                document_id=document.id,
                version=version.version,
                article=draft.article[:64],
                title=draft.title[:256],
                category=draft.category.value,
                period_scheme=draft.period_scheme.value,
                eligibility=extraction.eligibility_of(draft),
                evidence=[
                    {
                        "rule": p.rule,
                        "quote": p.quote,
                        "sentence": p.sentence or p.quote,
                        "confidence": p.confidence,
                        "manual": manual,
                    }
                    for manual, found in ((False, draft.conditions), (True, draft.manual))
                    for p in found
                ],
                amount_rule=draft.amount.rule if draft.amount else None,
                amount_quote=draft.amount.sentence or draft.amount.quote if draft.amount else None,
                amount_confidence=draft.amount.confidence if draft.amount else None,
                amount_note=draft.amount_note,
            )
        )
    await session.flush()
    return len(drafts)


# ----- adopting ------------------------------------------------------------------------


class Adoption(BaseModel):
    """What a caseworker adds to a proposal to make it a library draft; any field of the
    proposal may be replaced here, or edited on the draft afterwards."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = PydanticField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    department_code: str = PydanticField(min_length=1, max_length=32)
    region_code: str = PydanticField(min_length=1, max_length=16)
    annual_quota_fen: Fen
    title: str | None = PydanticField(default=None, min_length=1, max_length=256)
    category: Category | None = None
    eligibility: Any = None
    amount_rule: Any = None
    period_scheme: PeriodScheme | None = None
    valid_from: Day | None = None
    valid_to: Day | None = None
    commitment: Any = None
    working_days: int = PydanticField(default=10, ge=1, le=60, description="每个部门环节的时限")
    finance_working_days: int = PydanticField(default=5, ge=1, le=60)


async def _finance_unit(session: AsyncSession, region_code: str) -> str:
    region: str | None = region_code
    while region is not None:
        unit = await session.scalar(
            select(Department.code).where(
                Department.region_code == region, Department.kind == DepartmentKind.FINANCE
            )
        )
        if unit is not None:
            return unit
        row = await session.get(Region, region)
        region = row.parent_code if row else None
    raise InvalidInput.field("region_code", f"no finance unit serves region {region_code}")


async def adopt(
    session: AsyncSession, actor: Actor, proposal_id: int, body: Adoption
) -> ItemDetail:
    require_department_staff(actor, body.department_code)
    proposal = await session.get(DraftProposal, proposal_id, with_for_update=True)
    if proposal is None:
        raise NotFound(f"proposal {proposal_id} not found")
    if proposal.adopted_item_code is not None:
        raise Conflict(
            f"proposal {proposal_id} was adopted already as {proposal.adopted_item_code}"
        )
    document = await _document(session, proposal.document_id)
    if document.repealed_by_id is not None:
        repealing = await _document(session, document.repealed_by_id)
        raise Conflict(
            f"{document.doc_number} was repealed by {repealing.doc_number}: "
            "nothing is drafted from a repealed document"
        )
    version = await session.scalar(
        select(HarvestedVersion).where(
            HarvestedVersion.document_id == document.id,
            HarvestedVersion.version == proposal.version,
        )
    )
    assert version is not None
    amount_rule = body.amount_rule if body.amount_rule is not None else proposal.amount_rule
    if amount_rule is None:
        raise InvalidInput.field(
            "amount_rule",
            f"no amount rule was read from the text ({proposal.amount_note or 'none'}); give one",
        )
    category = body.category or Category(proposal.category)
    finance = await _finance_unit(session, body.region_code)
    valid_from = body.valid_from or document.effective_from or document.issued_on
    valid_to = body.valid_to or document.expires_on or date(valid_from.year + 2, 12, 31)
    scheme = body.period_scheme or PeriodScheme(proposal.period_scheme)
    _check_window(valid_from, valid_to, scheme, given=body.valid_from is not None)
    text = "\n".join(f"{a['number']} {a['text']}" for a in version.content["articles"])
    payload: dict[str, Any] = {
        "code": body.code,
        "document": DocumentIn(
            doc_number=document.doc_number,
            title=document.title[:256],
            issuer=document.issuer,
            level=document.level,
            issued_on=document.issued_on,
            text=text[:200_000],
        ).model_dump(),
        "department_code": body.department_code,
        "region_code": body.region_code,
        "title": body.title or proposal.title,
        "summary": f"依据《{document.title}》（{document.doc_number}）{proposal.article}起草。"[
            :4000
        ],
        "category": category,
        "eligibility": body.eligibility if body.eligibility is not None else proposal.eligibility,
        "amount_rule": amount_rule,
        "annual_quota_fen": body.annual_quota_fen,
        "period_scheme": scheme,
        "commitment": body.commitment,
        "stages": [
            {
                "stage": stage,
                "department_code": finance if stage in FINANCE_STAGES else body.department_code,
                "working_days": (
                    body.finance_working_days if stage in FINANCE_STAGES else body.working_days
                ),
            }
            for stage in STAGES_BY_CATEGORY[category]
        ],
        "valid_from": valid_from,
        "valid_to": valid_to,
        "change_reason": (
            f"由平台解析政策文件 {document.doc_number} {proposal.article} 起草，经办人 "
            f"{actor.name} 审核采用"
        ),
    }
    try:
        create = ItemCreate.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(
            "the adopted proposal is not a valid item",
            [
                FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                for e in exc.errors()
            ],
        ) from None
    detail = await library.create_item(session, actor, create)
    proposal.adopted_item_code = body.code
    proposal.adopted_by = actor.name
    proposal.adopted_at = utcnow()
    await session.flush()
    # Drafted from a document amended since: its department checks it against the change.
    assert document.id is not None
    amending = await session.scalars(
        select(HarvestedDocument)
        .where(HarvestedDocument.amends_id == document.id)
        .order_by(col(HarvestedDocument.id))
    )
    for cause in amending:
        await alert_item(
            session, AlertKind.AMENDED, document, cause, body.code, body.department_code
        )
    return detail


def _check_window(valid_from: date, valid_to: date, scheme: PeriodScheme, given: bool) -> None:
    """The field at fault, where the item's own validators would name only the body."""
    field = "valid_to" if given or valid_to < valid_from else "valid_from"
    if valid_to < valid_from:
        raise InvalidInput.field("valid_to", f"must not be before valid_from ({valid_from})")
    if not whole_periods(scheme, valid_from, valid_to):
        raise InvalidInput.field(
            field,
            f"no whole {scheme.value} period lies between {valid_from} and {valid_to} "
            "(the document's own dates unless given): give valid_from and valid_to",
        )


# ----- alerts --------------------------------------------------------------------------

ALERT_TITLES = {
    AlertKind.AMENDED: "政策文件已修改，请核对事项",
    AlertKind.REPEALED: "政策文件已废止，请暂停或替换事项",
}


async def alert_item(
    session: AsyncSession,
    kind: AlertKind,
    changed: HarvestedDocument,
    cause: HarvestedDocument,
    item_code: str,
    department_code: str,
) -> bool:
    """Warn the item's department, once per item and cause, with a notice to its staff,
    that the item's document was amended or repealed; whether the alert is new. The item
    itself is not touched."""
    assert changed.id is not None and cause.id is not None
    exists = await session.scalar(
        select(PolicyAlert.id).where(
            PolicyAlert.kind == kind,
            PolicyAlert.item_code == item_code,
            PolicyAlert.cause_document_id == cause.id,
        )
    )
    if exists is not None:
        return False
    verb, action = (
        ("修改", "请核对事项的条件和金额是否仍与文件一致")
        if kind is AlertKind.AMENDED
        else ("废止", "请尽快暂停该事项，或按新文件提交替换版本")
    )
    message = (
        f"事项 {item_code} 的依据文件《{changed.title}》（{changed.doc_number}）"
        f"已被《{cause.title}》（{cause.doc_number}）{verb}。{action}。"
    )
    alert = PolicyAlert(
        kind=kind,
        item_code=item_code,
        department_code=department_code,
        document_id=changed.id,
        cause_document_id=cause.id,
        message=message,
    )
    session.add(alert)
    await session.flush()
    staff = await session.scalars(
        select(User.name).where(
            User.department_code == department_code, col(User.role).in_(DEPARTMENT_STAFF)
        )
    )
    for name in staff:
        session.add(
            Notice(
                recipient=name,
                title=ALERT_TITLES[kind],
                body=message,
                subject=f"policy/{item_code}",
                dedupe_key=f"policy-alert/{alert.id}",
            )
        )
    await session.flush()
    return True


async def list_alerts(
    session: AsyncSession, actor: Actor, *, open_only: bool, offset: int, limit: int
) -> tuple[int, list[AlertView]]:
    query = select(PolicyAlert)
    if actor.role not in READ_ALL:  # staff: the alerts of the items their unit reaches
        scope = await scope_of(session, actor)
        if scope.unit is None:
            return 0, []
        reached = await items_reached(session, scope)
        query = query.where(col(PolicyAlert.item_code).in_(sorted(reached)))
    if open_only:
        query = query.where(col(PolicyAlert.handled_at).is_(None))
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = list(
        await session.scalars(
            query.order_by(col(PolicyAlert.id).desc()).offset(offset).limit(limit)
        )
    )
    ids: set[int | None] = set()
    for alert in rows:
        ids |= {alert.document_id, alert.cause_document_id}
    keys = await _keys(session, ids)
    return int(total or 0), [_alert_view(a, keys) for a in rows]


def _alert_view(alert: PolicyAlert, keys: Mapping[int, DocumentKey]) -> AlertView:
    assert alert.id is not None
    return AlertView(
        id=alert.id,
        kind=alert.kind,
        item_code=alert.item_code,
        department_code=alert.department_code,
        document=keys[alert.document_id],
        cause=keys[alert.cause_document_id],
        message=alert.message,
        raised_at=alert.raised_at,
        handled_at=alert.handled_at,
        handled_by=alert.handled_by,
    )


async def handle_alert(
    session: AsyncSession, actor: Actor, item_code: str, alert_id: int
) -> AlertView:
    alert = await session.get(PolicyAlert, alert_id, with_for_update=True)
    if alert is None or alert.item_code != item_code:
        raise NotFound(f"alert {alert_id} of item {item_code} not found")
    require_department_staff(actor, alert.department_code)
    if alert.handled_at is None:
        alert.handled_at = utcnow()
        alert.handled_by = actor.name
        await session.flush()
    keys = await _keys(session, {alert.document_id, alert.cause_document_id})
    return _alert_view(alert, keys)
