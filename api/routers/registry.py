"""Enterprise registry endpoints and the data platform import."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, UploadFile

from api.access import access
from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalConnectionDep, recorded
from api.idempotency import IdempotencyKey
from api.pagination import Page, PageDep
from api.params import CreditCode
from domain.access import Rule, require_role
from domain.errors import InvalidInput
from domain.registry import enterprises, importer
from models.reference import Role
from models.registry import EnterpriseDetail, EnterprisePublic
from workflows.registry_import import import_then_rematch

router = APIRouter(prefix="/api/v1", tags=["enterprises"])

MAX_IMPORT_BYTES = 200 * 1024 * 1024


@router.get(
    "/enterprises",
    response_model=Page[EnterprisePublic],
    summary="列出企业",
    **access(Rule.SIGNED_IN),
)
async def list_enterprises(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    region: str | None = None,
    industry: Annotated[str | None, Query(max_length=5)] = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[EnterprisePublic]:
    total, items = await enterprises.list_enterprises(
        session,
        user,
        region_code=region,
        industry_prefix=industry,
        q=q,
        offset=page.offset,
        limit=page.limit,
    )
    return Page.of(total, page, items)


@router.get(
    "/enterprises/{uscc}",
    response_model=EnterpriseDetail,
    summary="查看企业详情（收款账户脱敏）与事实数据",
    **access(Rule.FIRM_READ),
)
async def get_enterprise(
    session: SessionDep, user: CurrentUser, uscc: CreditCode
) -> EnterpriseDetail:
    return await enterprises.enterprise_detail(session, user, uscc)


@router.post(
    "/imports/enterprises",
    response_model=importer.ImportReport,
    summary="导入公共数据平台的企业数据（CSV 或 JSONL，最大 200 MiB；全部有效才写入）",
    **access(Rule.ADMIN),
)
async def import_enterprises(
    session: SessionDep,
    user: CurrentUser,
    temporal: TemporalConnectionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV or JSONL export of the data platform")],
    _idempotency: IdempotencyKey,
    format: Annotated[Literal["csv", "jsonl"] | None, Query()] = None,
) -> importer.ImportReport:
    require_role(user, Role.ADMIN)
    fmt = format or _format_from_name(file.filename or "")
    content = await file.read(MAX_IMPORT_BYTES + 1)
    if len(content) > MAX_IMPORT_BYTES:
        raise InvalidInput.field("file", "larger than 200 MiB")
    return await import_then_rematch(
        recorded(session),
        content,
        fmt,
        temporal=temporal.get,
        task_queue=settings.task_queue,
        receipt_polls_s=settings.push_receipt_polls_s,
    )


def _format_from_name(name: str) -> str:
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise InvalidInput.field("format", "give format=csv or format=jsonl, or a .csv/.jsonl file")
