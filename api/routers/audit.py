"""Auditors' routes (审计局, 纪委; admins too): the trail, one case as one story with its
decoded histories, a replay of its workflows on the current code, exports as verifiable
bundles, policy changes across the library, and the cross-check of ledger, payment
workflows and budget system. Cases are found with `GET /api/v1/cases` (every filter an
auditor needs) and batches with `GET /api/v1/recognition-batches`.

Reading a decoded history (it holds full bank account numbers) and exporting are
themselves in the trail, written in the request's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select
from temporalio.client import Client

from api.access import access
from api.audit_trail import about, origin
from api.case_filters import CaseFiltersDep
from api.deps import (
    CurrentUser,
    SessionDep,
    TemporalDep,
)
from api.pagination import Page, PageDep
from api.params import CreditCode, IsoDateTime, ItemCode, Period
from core.codec import EncryptionCodec
from core.workdays import SHANGHAI
from domain import cases
from domain.access import Rule
from domain.audit import bundle, crosscheck, find, histories, story, trail
from domain.cases import projection
from domain.errors import InvalidInput
from domain.registry.enterprises import get_enterprise
from models.audit import (
    AuditEventPublic,
    AuditKind,
    CaseStory,
    Crosscheck,
    FullAccount,
    PolicyChangeLine,
    ReplayReport,
)
from models.policy import Category
from models.reference import Actor
from models.registry import BankAccount
from workflows.all import ALL_WORKFLOWS

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

CASE = "/cases/{category}/{item_code}/{period}/{uscc}"
Attempt = Annotated[
    int | None,
    Query(ge=1, le=1000, description="the attempt (a case reopened); default: the latest"),
]


async def _case_id(
    request: Request,
    session: SessionDep,
    category: Category,
    item_code: ItemCode,
    period: Period,
    uscc: CreditCode,
    attempt: Attempt = None,
) -> str:
    """The case the path names (its latest attempt unless one is asked for); the trail
    records it as what the request is about."""
    if attempt is None:
        case_id = await cases.current_case_id(session, item_code, period, uscc, category)
    else:
        base = f"{category.value}/{item_code}/{period}/{uscc}"
        case_id = base if attempt == 1 else f"{base}/{attempt}"
    about(request, case_id)
    return case_id


CaseId = Annotated[str, Depends(_case_id)]


def _codec(request: Request) -> EncryptionCodec:
    codec: EncryptionCodec = request.app.state.codec
    return codec


def _budget(request: Request) -> story.BudgetRecords:
    budget: story.BudgetRecords = request.app.state.budget
    return budget


@router.get(
    CASE,
    response_model=CaseStory,
    summary="审计：一个案件的完整经过（时间线、证据、政策版本、台账、预算系统记录、请求来源、流程历史）",
    **access(Rule.AUDIT),
)
async def case_story(
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    case_id: CaseId,
    histories_: Annotated[
        bool,
        Query(
            alias="histories",
            description="include the decoded Temporal histories (they hold full bank "
            "account numbers; the read is logged)",
        ),
    ] = True,
) -> CaseStory:
    told = await story.tell(
        session,
        temporal,
        _codec(request),
        _budget(request),
        case_id,
        with_histories=histories_,
    )
    if histories_:
        await _log(
            request,
            AuditKind.SENSITIVE_READ,
            user,
            case_id,
            {"what": "decoded histories", "workflows": [w.workflow_id for w in told.workflows]},
        )
    return told


@router.get(
    CASE + "/replay",
    response_model=ReplayReport,
    summary="审计：用当前代码重放案件的全部流程历史，逐一报告是否一致",
    **access(Rule.AUDIT),
)
async def replay_case(
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    case_id: CaseId,
) -> ReplayReport:
    await projection.get_record(session, case_id)  # 404 for a case that does not exist
    family = await histories.family(temporal, case_id)
    report = await histories.replay(family, ALL_WORKFLOWS, temporal.data_converter)
    await _log(
        request,
        AuditKind.REPLAY,
        user,
        case_id,
        {"replayed": report.replayed, "identical": report.identical},
    )
    return report


BUNDLE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"application/zip": {}},
        "description": "审计包（zip：manifest.json、report.html、案件与流程历史）；"
        "X-Manifest-SHA256 头为其清单的 SHA-256",
    }
}


@router.get(
    CASE + "/bundle",
    response_class=Response,
    responses=BUNDLE_RESPONSES,
    summary="审计：导出一个案件的审计包",
    **access(Rule.AUDIT),
)
async def case_bundle(
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    case_id: CaseId,
) -> Response:
    return await _export(request, session, temporal, user, [case_id], {"case_id": case_id})


@router.get(
    "/bundle",
    response_class=Response,
    responses=BUNDLE_RESPONSES,
    summary="审计：按条件导出一组案件的审计包（最多 500 件）",
    **access(Rule.AUDIT),
)
async def filtered_bundle(
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    filters: CaseFiltersDep,
) -> Response:
    total, rows = await projection.list_cases(session, user, filters, 0, bundle.MAX_BUNDLE_CASES)
    if total > bundle.MAX_BUNDLE_CASES:
        raise InvalidInput.field(
            "filters",
            f"条件匹配 {total} 件，超过单个审计包上限 {bundle.MAX_BUNDLE_CASES} 件；请缩小范围",
        )
    if total == 0:
        raise InvalidInput.field("filters", "条件未匹配任何案件")
    query = filters.model_dump(mode="json", exclude_none=True)
    return await _export(request, session, temporal, user, [r.case_id for r in rows], query)


async def _export(
    request: Request,
    session: AsyncSession,
    temporal: Client,
    user: Actor,
    case_ids: list[str],
    query: dict[str, object],
) -> Response:
    codec, budget = _codec(request), _budget(request)
    stories = [
        await story.tell(session, temporal, codec, budget, case_id, with_histories=True)
        for case_id in case_ids
    ]
    now = datetime.now(SHANGHAI)
    data, manifest = bundle.build(stories, user.name, query, now)
    digest = bundle.manifest_sha256(manifest)
    await _log(
        request,
        AuditKind.EXPORT,
        user,
        case_ids[0] if len(case_ids) == 1 else None,
        {"cases": case_ids, "query": query, "manifest_sha256": digest, "bytes": len(data)},
    )
    name = f"zhida-audit-{now:%Y%m%dT%H%M%S}.zip"
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Manifest-SHA256": digest,
        },
    )


@router.get(
    "/enterprises/{uscc}/accounts",
    response_model=list[FullAccount],
    summary="审计：查看企业银行账号全文（每次查看均记入审计日志）",
    **access(Rule.AUDIT),
)
async def full_accounts(
    request: Request, session: SessionDep, user: CurrentUser, uscc: CreditCode
) -> list[FullAccount]:
    await get_enterprise(session, uscc)  # 404 for a firm that does not exist
    rows = await session.scalars(
        select(BankAccount).where(col(BankAccount.uscc) == uscc).order_by(col(BankAccount.id))
    )
    accounts = [FullAccount.model_validate(a, from_attributes=True) for a in rows]
    await _log(
        request,
        AuditKind.SENSITIVE_READ,
        user,
        uscc,
        {"what": "full bank account numbers", "accounts": [a.id for a in accounts]},
    )
    return accounts


@router.get(
    "/trail",
    response_model=Page[AuditEventPublic],
    summary="审计：操作与敏感读取记录（谁、何时、从何处、对什么）",
    **access(Rule.AUDIT),
)
async def audit_trail(
    session: SessionDep,
    page: PageDep,
    kind: AuditKind | None = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=200, description="a case id")] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
) -> Page[AuditEventPublic]:
    since, until = _range(since, until)
    filters = trail.TrailFilters(kind=kind, actor=actor, subject=subject, since=since, until=until)
    total, items = await trail.events(session, filters, page.offset, page.limit)
    return Page.of(total, page, items)


@router.get(
    "/policy-changes",
    response_model=Page[PolicyChangeLine],
    summary="审计：政策条目的全部变更记录（起草、提交、审核、发布、暂停）",
    **access(Rule.AUDIT),
)
async def policy_changes(
    session: SessionDep,
    page: PageDep,
    item: Annotated[str | None, Query(max_length=40)] = None,
    department: Annotated[str | None, Query(max_length=32)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
) -> Page[PolicyChangeLine]:
    since, until = _range(since, until)
    total, items = await find.policy_changes(
        session,
        item_code=item,
        department=department,
        actor=actor,
        action=action,
        since=since,
        until=until,
        offset=page.offset,
        limit=page.limit,
    )
    return Page.of(total, page, items)


@router.get(
    "/crosscheck",
    response_model=Crosscheck,
    summary="审计：台账指令、支付流程与预算系统记录三方核对",
    **access(Rule.AUDIT),
)
async def cross_check(
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    item: Annotated[str | None, Query(max_length=40, description="one item only")] = None,
) -> Crosscheck:
    return await crosscheck.crosscheck(session, temporal, _budget(request), item)


async def _log(
    request: Request,
    kind: AuditKind,
    user: Actor,
    subject: str | None,
    details: dict[str, object],
) -> None:
    """Log a sensitive read, replay or export in a short write transaction of its own,
    before the answer leaves: one that cannot be logged is not served. (The story itself
    is read in the request's read-only transaction, which holds no write lock while it
    waits on Temporal.)"""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker.begin() as session:
        await trail.record(session, kind, user, origin(request), subject, details)


def _range(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    since, until = _aware(since, "since"), _aware(until, "until")
    if since is not None and until is not None and since > until:
        raise InvalidInput.field("until", "不能早于 since")
    return since, until


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput.field(field, "须带时区，例如 2026-11-01T00:00:00+08:00")
    return value
