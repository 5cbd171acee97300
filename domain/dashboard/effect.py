"""Policy effect (政策绩效评价): how paid firms' revenue, tax and headcount moved after
payment, beside eligible firms not (yet) paid, from the registry's dated facts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.workdays import SHANGHAI
from domain.dashboard.scope import View, firms_where, readable, tally_readable
from domain.errors import InvalidInput
from models.cases import CaseFirm
from models.dashboard import EffectChoice, ItemEffect, Movement, PolicyEffect
from models.facts import FACT_KINDS
from models.matching import MatchResult, MatchTally
from models.registry import Fact
from models.types import utcnow

KINDS = ("revenue_fen", "tax_paid_fen", "social_security_headcount")
# The organisation part of a credit code, written as the index on it has it (literals,
# not parameters, or the database cannot use the index).
ORGANISATION = sa.func.substr(
    col(MatchResult.uscc), sa.literal_column("10"), sa.literal_column("9")
)
SAMPLE = 1_000  # firms of each group compared, at most
CHUNK = 1_000
METHOD = (
    "受补企业：该条目在所选年度已到账的企业；以首笔到账日为界，取到账日前最近一期与到账日后最近一期的"
    "营业收入、实缴税金、社保参保人数（登记库中带期间的数据），计算变化率，取中位数。"
    "对照组：匹配库中该条目“符合条件”但尚未获得该条目资金的企业。每组超过 "
    f"{SAMPLE} 家时抽取 {SAMPLE} 家（两组都按信用代码中组织机构代码部分排序抽取，"
    "该部分与地区无关，抽样可重复），"
    "以受补企业到账日的中位数为界，"
    "同样计算。两组中位数之差（百分点）为粗略的政策效应。"
)
CAVEATS = [
    "这是描述性对比，不是因果估计：获得资金的企业与未获得的企业本身可能不同（选择偏差）。",
    "只统计在到账前后都有数据的企业；数据缺失或过期的企业不计入，样本可能偏小。",
    "到账后的年度数据要到次年才由公共数据平台更新，近期兑付的条目往往还看不出变化。",
    "前一期为零的企业无法计算变化率，不计入。",
]


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 1) if values else None


async def policy_effect(session: AsyncSession, view: View, item_code: str | None) -> PolicyEffect:
    where: list[sa.ColumnElement[bool]] = [
        *await firms_where(session, view),
        col(CaseFirm.paid) == sa.true(),
    ]
    counts = await session.execute(
        # Firms paid, once per year they were paid: which items have anything to show.
        sa.select(col(CaseFirm.item_code), sa.func.count())
        .where(*where)
        .group_by(col(CaseFirm.item_code))
    )
    choices = sorted(
        (
            EffectChoice(item_code=code, title=view.catalogue.title(code), paid_firms=int(n))
            for code, n in counts
        ),
        key=lambda c: (-c.paid_firms, c.item_code),
    )
    if item_code is not None and item_code not in view.catalogue.items:
        raise InvalidInput.field("item_code", f"no item {item_code}")
    chosen = item_code or (choices[0].item_code if choices else None)
    items = [await _item_effect(session, view, where, chosen)] if chosen else []
    return PolicyEffect(
        filters=view.filters,
        items=items,
        choices=choices,
        method=METHOD,
        caveats=CAVEATS,
        generated_at=utcnow(),
    )


async def _item_effect(
    session: AsyncSession, view: View, where: list[sa.ColumnElement[bool]], code: str
) -> ItemEffect:
    of_item = [col(CaseFirm.item_code) == code, *where]
    year = view.filters.year or await session.scalar(
        select(sa.func.max(col(CaseFirm.year))).where(*of_item)
    )
    of_year = [*of_item, col(CaseFirm.year) == (year or 0)]
    paid_total = int(await session.scalar(sa.select(sa.func.count()).where(*of_year)) or 0)
    # Paid firms (one row each in a year) and the comparison both drawn in the order of the
    # credit codes' organisation part: random, unlike the region prefix, and repeatable.
    paid_on = {
        uscc: _day(at)
        for uscc, at in await session.execute(
            sa.select(col(CaseFirm.uscc), col(CaseFirm.first_paid_at))
            .where(*of_year, col(CaseFirm.first_paid_at).is_not(None))
            .order_by(sa.func.substr(col(CaseFirm.uscc), 10, 9))
            .limit(SAMPLE)
        )
        if at is not None
    }
    # The library's eligible firms, paid ones included: its count per item and region.
    eligible_firms = int(
        await session.scalar(
            select(sa.func.sum(col(MatchTally.firms))).where(
                col(MatchTally.item_code) == code,
                col(MatchTally.verdict) == "eligible",
                *await tally_readable(session, view),
            )
        )
        or 0
    )
    ever_paid = select(CaseFirm.uscc).where(col(CaseFirm.item_code) == code, col(CaseFirm.paid))
    scope = await readable(
        session,
        view,
        item_code=col(MatchResult.item_code),
        uscc=col(MatchResult.uscc),
        region_code=col(MatchResult.region_code),
    )
    comparison = list(
        await session.scalars(
            select(MatchResult.uscc)
            .where(
                col(MatchResult.item_code) == code,
                col(MatchResult.verdict) == "eligible",
                col(MatchResult.uscc).not_in(ever_paid),
                *scope,
            )
            .order_by(ORGANISATION)
            .limit(SAMPLE)
        )
    )
    reference = (
        date.fromordinal(int(np.median([d.toordinal() for d in paid_on.values()])))
        if paid_on
        else None
    )
    series = await _series(session, [*paid_on, *comparison])
    movements = []
    for kind in KINDS:
        paid_changes = _changes(series, kind, paid_on)
        other = _changes(series, kind, dict.fromkeys(comparison, reference)) if reference else []
        paid_median, other_median = _median(paid_changes), _median(other)
        movements.append(
            Movement(
                kind=kind,
                label=FACT_KINDS[kind].label,
                paid_firms=len(paid_changes),
                paid_change_pct=paid_median,
                comparison_firms=len(other),
                comparison_change_pct=other_median,
                difference_pts=round(paid_median - other_median, 1)
                if paid_median is not None and other_median is not None
                else None,
            )
        )
    return ItemEffect(
        item_code=code,
        title=view.catalogue.title(code),
        year=int(year or 0),
        paid_firms=paid_total,
        eligible_firms=eligible_firms,
        movements=movements,
    )


def _day(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


Series = dict[tuple[str, str], list[tuple[date, int]]]


async def _series(session: AsyncSession, firms: list[str]) -> Series:
    """Each firm's dated figures of the kinds compared, oldest first."""
    out: Series = defaultdict(list)
    for start in range(0, len(firms), CHUNK):
        rows = await session.execute(
            sa.select(col(Fact.uscc), col(Fact.kind), col(Fact.period_end), Fact.value).where(
                col(Fact.uscc).in_(firms[start : start + CHUNK]), col(Fact.kind).in_(KINDS)
            )
        )
        for uscc, kind, end, value in rows:
            if isinstance(value, int) and not isinstance(value, bool):
                out[(uscc, kind)].append((end, value))
    for values in out.values():
        values.sort()
    return out


def _changes(series: Series, kind: str, reference: Mapping[str, date]) -> list[float]:
    """Per firm, the change in percent from its latest figure before the reference day to
    its latest one after it; firms without both, or with zero before, are left out."""
    changes = []
    for uscc, day in reference.items():
        values = series.get((uscc, kind), [])
        before = [v for end, v in values if end < day]
        after = [v for end, v in values if end >= day]
        if before and after and before[-1] > 0:
            changes.append(100 * (after[-1] - before[-1]) / before[-1])
    return changes
