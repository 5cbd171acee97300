"""Dashboards (绩效看板): money, funnels and budget use; warnings; time to money; the
quarterly bulletin; policy effect. Every figure is filtered to what the reader may see,
as the API's lists are (`scope.py`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from core.workdays import WorkingCalendar
from domain.dashboard import effect, money, speed
from domain.dashboard import warnings as warning_lists
from domain.dashboard.bulletin import bulletin, quarter_window
from domain.dashboard.bulletin import workbook as bulletin_workbook
from domain.dashboard.scope import view_of
from models.dashboard import DashboardFilters, Overview, PolicyEffect, TimeToMoney, Warnings
from models.reference import Actor

__all__ = [
    "bulletin",
    "bulletin_workbook",
    "overview",
    "policy_effect",
    "quarter_window",
    "time_to_money",
    "warnings",
]


async def overview(session: AsyncSession, actor: Actor, filters: DashboardFilters) -> Overview:
    return await money.overview(session, await view_of(session, actor, filters))


async def warnings(
    session: AsyncSession, actor: Actor, filters: DashboardFilters, calendar: WorkingCalendar
) -> Warnings:
    return await warning_lists.warnings(session, await view_of(session, actor, filters), calendar)


async def time_to_money(
    session: AsyncSession, actor: Actor, filters: DashboardFilters
) -> TimeToMoney:
    return await speed.time_to_money(session, await view_of(session, actor, filters))


async def policy_effect(
    session: AsyncSession, actor: Actor, filters: DashboardFilters, item_code: str | None
) -> PolicyEffect:
    return await effect.policy_effect(session, await view_of(session, actor, filters), item_code)
