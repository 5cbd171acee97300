"""Policy library endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from temporalio.service import RPCError, RPCStatusCode

from api.access import access
from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalDep, commit_before_temporal
from api.idempotency import IdempotencyKey
from api.pagination import Page, PageDep
from api.params import CreditCode, IsoDate, ItemCode, VersionNumber, VersionQuery
from api.updates import send_update
from core.workdays import SHANGHAI
from domain.access import Rule, require_staff_or_reader
from domain.errors import NotFound
from domain.policy import library
from models.policy import (
    Category,
    Decision,
    DraftUpdate,
    ItemCreate,
    ItemDetail,
    ItemSummary,
    Rejection,
    Suspension,
    VersionPublic,
    VersionStatus,
)
from models.policy_change import PolicyChangeState, ReviewDecision
from workflows.policy_change import PolicyChangeWorkflow
from workflows.starts import PolicyChangeHandle, start_policy_change

router = APIRouter(prefix="/api/v1/items", tags=["policy library"])


@router.get(
    "",
    response_model=Page[ItemSummary],
    summary="列出政策条目（可按类别、部门、地区、状态筛选）",
    **access(Rule.SIGNED_IN),
)
async def list_items(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    category: Category | None = None,
    department: str | None = None,
    region: str | None = None,
    status_: Annotated[VersionStatus | None, Query(alias="status")] = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[ItemSummary]:
    total, items = await library.list_items(
        session,
        user,
        category=category,
        department_code=department,
        region_code=region,
        status=status_,
        q=q,
        offset=page.offset,
        limit=page.limit,
    )
    return Page.of(total, page, items)


@router.post(
    "",
    response_model=ItemDetail,
    status_code=status.HTTP_201_CREATED,
    summary="新建政策条目（草稿）",
    **access(Rule.ITEM_CREATE),
)
async def create_item(
    session: SessionDep, user: CurrentUser, body: ItemCreate, _idempotency: IdempotencyKey
) -> ItemDetail:
    return await library.create_item(session, user, body)


@router.get(
    "/{code}",
    response_model=ItemDetail,
    summary="查看政策条目、各版本及变更记录",
    **access(Rule.SIGNED_IN),
)
async def get_item(session: SessionDep, user: CurrentUser, code: ItemCode) -> ItemDetail:
    return await library.item_detail(session, user, code)


@router.put(
    "/{code}/draft",
    response_model=VersionPublic,
    summary="修改政策条目的草稿",
    **access(Rule.ITEM_EDIT),
)
async def edit_draft(
    session: SessionDep,
    user: CurrentUser,
    code: ItemCode,
    body: DraftUpdate,
    _idempotency: IdempotencyKey,
) -> VersionPublic:
    return await library.update_draft(session, user, code, body)


@router.post(
    "/{code}/versions/{version}/submit",
    response_model=PolicyChangeState,
    summary="提交版本，进入审批",
    **access(Rule.ITEM_EDIT),
)
async def submit(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: CurrentUser,
    code: ItemCode,
    version: VersionNumber,
    _idempotency: IdempotencyKey,
) -> PolicyChangeState:
    change = await library.submit_version(
        session,
        user,
        code,
        version,
        head_review_days=settings.policy_head_review_days,
        finance_review_days=settings.policy_finance_review_days,
    )
    await commit_before_temporal(session)  # the workflow starts once the submission stands
    handle = await start_policy_change(temporal, settings.task_queue, change)
    return await handle.query(PolicyChangeWorkflow.state)


async def _change(
    session: SessionDep, temporal: TemporalDep, code: ItemCode, version: VersionNumber
) -> PolicyChangeHandle:
    """The approval workflow of a version that exists (else 404). The read's transaction
    ends here: the route only talks to Temporal."""
    await library.get_version(session, code, version)
    await commit_before_temporal(session)
    return temporal.get_workflow_handle_for(
        PolicyChangeWorkflow.run, library.change_workflow_id(code, version)
    )


ChangeDep = Annotated[PolicyChangeHandle, Depends(_change)]


@router.get(
    "/{code}/versions/{version}/review",
    response_model=PolicyChangeState,
    summary="查看版本的审批进度",
    **access(Rule.READER),
)
async def review_state(
    user: CurrentUser, code: ItemCode, version: VersionNumber, handle: ChangeDep
) -> PolicyChangeState:
    require_staff_or_reader(user)
    try:
        return await handle.query(PolicyChangeWorkflow.state)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound(f"version {version} of {code} has not been submitted") from None
        raise


@router.post(
    "/{code}/versions/{version}/approve",
    response_model=PolicyChangeState,
    summary="审批通过版本",
    **access(Rule.ITEM_REVIEW),
)
async def approve(
    handle: ChangeDep, user: CurrentUser, body: Decision, request_id: IdempotencyKey
) -> PolicyChangeState:
    return await send_update(
        handle,
        handle.execute_update(
            PolicyChangeWorkflow.approve,
            ReviewDecision(actor=user, comment=body.comment),
            id=request_id,
        ),
    )


@router.post(
    "/{code}/versions/{version}/reject",
    response_model=PolicyChangeState,
    summary="驳回版本",
    **access(Rule.ITEM_REVIEW),
)
async def reject(
    handle: ChangeDep, user: CurrentUser, body: Rejection, request_id: IdempotencyKey
) -> PolicyChangeState:
    return await send_update(
        handle,
        handle.execute_update(
            PolicyChangeWorkflow.reject,
            ReviewDecision(actor=user, comment=body.reason),
            id=request_id,
        ),
    )


@router.post(
    "/{code}/suspend",
    response_model=VersionPublic,
    summary="暂停政策条目",
    **access(Rule.ITEM_EDIT),
)
async def suspend(
    session: SessionDep,
    user: CurrentUser,
    code: ItemCode,
    body: Suspension,
    _idempotency: IdempotencyKey,
) -> VersionPublic:
    return await library.suspend_item(session, user, code, body.reason)


@router.get(
    "/{code}/eligibility/{uscc}",
    response_model=library.EligibilityReport,
    summary="判定企业是否符合条目的条件",
    **access(Rule.ITEM_FIRM_READ),
)
async def eligibility(
    session: SessionDep,
    user: CurrentUser,
    code: ItemCode,
    uscc: CreditCode,
    as_of: IsoDate | None = None,
    version: VersionQuery = None,
) -> library.EligibilityReport:
    day = as_of or datetime.now(SHANGHAI).date()
    return await library.evaluate_eligibility(session, user, code, uscc, day, version)
