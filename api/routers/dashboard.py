"""Dashboards (绩效看板): money by region, department, category and month, each item's
funnel, warnings, time to money, the quarterly bulletin and policy effect. Read-only,
for staff, auditors and admins, each figure filtered to the reader's scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.access import access
from api.deps import CalendarDep, CurrentUser, SessionDep
from api.params import ITEM_CODE_PATTERN
from domain import dashboard
from domain.access import Rule
from models.dashboard import (
    Bulletin,
    DashboardFilters,
    Overview,
    PolicyEffect,
    TimeToMoney,
    Warnings,
)

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CATEGORIES = r"^(application|recognition|commitment)$"


async def filters(
    year: Annotated[int | None, Query(description="budget year", ge=2000, le=2100)] = None,
    region_code: Annotated[
        str | None,
        Query(description="region (GB/T 2260), with those under it", pattern=r"^[0-9A-Z]{2,16}$"),
    ] = None,
    department_code: Annotated[
        str | None, Query(description="the item's department", pattern=r"^[0-9A-Za-z_-]{1,32}$")
    ] = None,
    category: Annotated[
        str | None, Query(description="application, recognition or commitment", pattern=CATEGORIES)
    ] = None,
) -> DashboardFilters:
    return DashboardFilters(
        year=year, region_code=region_code, department_code=department_code, category=category
    )


FiltersDep = Annotated[DashboardFilters, Depends(filters)]
Quarter = Annotated[int, Query(description="quarter of the year", ge=1, le=4)]
BulletinYear = Annotated[int, Query(description="year", ge=2000, le=2100)]


@router.get(
    "/overview",
    response_model=Overview,
    summary="资金看板：按区域、部门、类别、月份的承诺、预留与拨付，条目漏斗与预算使用",
    **access(Rule.READER),
)
async def overview(session: SessionDep, user: CurrentUser, chosen: FiltersDep) -> Overview:
    return await dashboard.overview(session, user, chosen)


@router.get(
    "/warnings",
    response_model=Warnings,
    summary="预警：超期审核、额度将尽、退票未重付、追回到期或违约、匹配失败、待处理查重",
    **access(Rule.READER),
)
async def warnings(
    session: SessionDep, user: CurrentUser, chosen: FiltersDep, calendar: CalendarDep
) -> Warnings:
    return await dashboard.warnings(session, user, chosen, calendar)


@router.get(
    "/time-to-money",
    response_model=TimeToMoney,
    summary="兑付时长：从应享到到账的工作日（中位数、90 分位）与传统流程相比的压减",
    **access(Rule.READER),
)
async def time_to_money(session: SessionDep, user: CurrentUser, chosen: FiltersDep) -> TimeToMoney:
    return await dashboard.time_to_money(session, user, chosen)


@router.get(
    "/bulletin",
    response_model=Bulletin,
    summary="季度亮晒比拼：区县与部门按速度、覆盖、超期与拨付排名",
    **access(Rule.READER),
)
async def bulletin(
    session: SessionDep,
    user: CurrentUser,
    year: BulletinYear,
    quarter: Quarter,
) -> Bulletin:
    return await dashboard.bulletin(session, user, year, quarter)


@router.get(
    "/bulletin.xlsx",
    summary="季度亮晒比拼（Excel 导出）",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}, "description": "the bulletin as a workbook"}},
    **access(Rule.READER),
)
async def bulletin_xlsx(
    session: SessionDep,
    user: CurrentUser,
    year: BulletinYear,
    quarter: Quarter,
) -> Response:
    standing = await dashboard.bulletin(session, user, year, quarter)
    name = f"bulletin-{year}-Q{quarter}.xlsx"
    return Response(
        dashboard.bulletin_workbook(standing),
        media_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/policy-effect",
    response_model=PolicyEffect,
    summary="政策绩效评价：受补企业付款后营收、税收、用工的变化与未受补合格企业相比",
    **access(Rule.READER),
)
async def policy_effect(
    session: SessionDep,
    user: CurrentUser,
    chosen: FiltersDep,
    item_code: Annotated[str | None, Query(pattern=ITEM_CODE_PATTERN)] = None,
) -> PolicyEffect:
    return await dashboard.policy_effect(session, user, chosen, item_code)
