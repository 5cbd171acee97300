"""Dashboards (绩效看板): money by region, department, category and month, each item's
funnel, warnings, time to money, the quarterly bulletin and policy effect. Read-only,
for staff, auditors and admins, each figure filtered to the reader's scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Annotated, TypeVar, cast

from async_lru import alru_cache
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api.access import access
from api.deps import CalendarDep, CurrentUser, SessionDep, bulk_reader_for
from api.params import ITEM_CODE_PATTERN
from core.db import Reader
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
from models.reference import Actor

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CATEGORIES = r"^(application|recognition|commitment)$"

Figure = TypeVar("Figure", bound=BaseModel)
Compute = Callable[[AsyncSession], Awaitable[BaseModel]]
# Scopes times filters an API process keeps figures for; the least recently used go.
FIGURES_KEPT = 512


class Figures:
    """The dashboards' figures an API process keeps for `max_age_s` (settings:
    `dashboard_max_age_s`), by kind, reader scope and filters. Each is computed from a
    year of cases (50 to 230 ms of CPU at city scale, bench/api_load.py), and on a page
    several readers of one unit ask for the same at once: they share one computation,
    in a read transaction of its own, as it may outlive the request that started it.
    The scope is what the figures depend on: the reader's role and unit, never the name.
    """

    def __init__(self, max_age_s: float) -> None:
        self._figures = (
            alru_cache(maxsize=FIGURES_KEPT, ttl=max_age_s, key=_scope_key)(_computed)
            if max_age_s > 0
            else _computed
        )

    async def get(
        self,
        reader: Reader,
        actor: Actor,
        kind: type[Figure],
        args: tuple[Hashable, ...],
        compute: Callable[[AsyncSession], Awaitable[Figure]],
    ) -> Figure:
        """`compute`'s figures for the actor's scope and `args`, computed on a session of
        `reader` unless kept."""
        return cast(Figure, await self._figures(kind, actor, args, compute, reader))


async def _computed(
    kind: type[BaseModel],
    actor: Actor,
    args: tuple[Hashable, ...],
    compute: Compute,
    reader: Reader,
) -> BaseModel:
    async with reader() as session:
        return await compute(session)


def _scope_key(
    kind: type[BaseModel], actor: Actor, args: tuple[Hashable, ...], *_: object
) -> Hashable:
    return (kind, actor.role, actor.department_code, actor.region_code, actor.enterprise_uscc, args)


async def kept_figures(
    request: Request,
    session: AsyncSession,
    actor: Actor,
    kind: type[Figure],
    args: tuple[Hashable, ...],
    compute: Callable[[AsyncSession], Awaitable[Figure]],
) -> Figure:
    """The app's figures of `kind` for the actor's scope and `args` (`Figures.get`)."""
    reader = await bulk_reader_for(request, session)
    figures: Figures = request.app.state.dashboard_figures
    return await figures.get(reader, actor, kind, args, compute)


def _filters_key(chosen: DashboardFilters) -> tuple[Hashable, ...]:
    return (chosen.year, chosen.region_code, chosen.department_code, chosen.category)


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
async def overview(
    request: Request, session: SessionDep, user: CurrentUser, chosen: FiltersDep
) -> Overview:
    return await kept_figures(
        request,
        session,
        user,
        Overview,
        _filters_key(chosen),
        lambda reader: dashboard.overview(reader, user, chosen),
    )


@router.get(
    "/warnings",
    response_model=Warnings,
    summary="预警：超期审核、额度将尽、退票未重付、追回到期或违约、匹配失败、待处理查重",
    **access(Rule.READER),
)
async def warnings(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    chosen: FiltersDep,
    calendar: CalendarDep,
) -> Warnings:
    return await kept_figures(
        request,
        session,
        user,
        Warnings,
        _filters_key(chosen),
        lambda reader: dashboard.warnings(reader, user, chosen, calendar),
    )


@router.get(
    "/time-to-money",
    response_model=TimeToMoney,
    summary="兑付时长：从应享到到账的工作日（中位数、90 分位）与传统流程相比的压减",
    **access(Rule.READER),
)
async def time_to_money(
    request: Request, session: SessionDep, user: CurrentUser, chosen: FiltersDep
) -> TimeToMoney:
    return await kept_figures(
        request,
        session,
        user,
        TimeToMoney,
        _filters_key(chosen),
        lambda reader: dashboard.time_to_money(reader, user, chosen),
    )


@router.get(
    "/bulletin",
    response_model=Bulletin,
    summary="季度亮晒比拼：区县与部门按速度、覆盖、超期与拨付排名",
    **access(Rule.READER),
)
async def bulletin(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    year: BulletinYear,
    quarter: Quarter,
) -> Bulletin:
    return await _bulletin(request, session, user, year, quarter)


async def _bulletin(
    request: Request, session: AsyncSession, user: Actor, year: int, quarter: int
) -> Bulletin:
    return await kept_figures(
        request,
        session,
        user,
        Bulletin,
        (year, quarter),
        lambda reader: dashboard.bulletin(reader, user, year, quarter),
    )


@router.get(
    "/bulletin.xlsx",
    summary="季度亮晒比拼（Excel 导出）",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}, "description": "the bulletin as a workbook"}},
    **access(Rule.READER),
)
async def bulletin_xlsx(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    year: BulletinYear,
    quarter: Quarter,
) -> Response:
    standing = await _bulletin(request, session, user, year, quarter)
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
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    chosen: FiltersDep,
    item_code: Annotated[str | None, Query(pattern=ITEM_CODE_PATTERN)] = None,
) -> PolicyEffect:
    return await kept_figures(
        request,
        session,
        user,
        PolicyEffect,
        (*_filters_key(chosen), item_code),
        lambda reader: dashboard.policy_effect(reader, user, chosen, item_code),
    )
