"""Time to money (兑付时长): working days from entitlement to the first money in the
firm's account, per case paid (counted by the projection when the money arrives,
`CaseRecord.days_to_money`), summarised as median and 90th percentile."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from domain.access import Column
from domain.dashboard.money import CATEGORY_NAMES
from domain.dashboard.scope import View, cases_where
from models.cases import CaseRecord
from models.dashboard import TRADITIONAL_WORKING_DAYS, Speed, TimeToMoney
from models.types import utcnow

METHOD = (
    "每个已到账案件计一次：从“应享”时点到首笔资金到账（预算系统回单）之间的工作日数，"
    "按上海时间的日历日计，周末、法定节假日不计、调休上班日计入；同一天到账为 0 个工作日。"
    "“应享”时点：认定类为批次据以认定的数据日期，承诺类为企业提交承诺之日，申报类为企业申报之日。"
    f"与传统流程约 {TRADITIONAL_WORKING_DAYS} 个工作日相比，压减比例 = 1 − 中位数 ÷ "
    f"{TRADITIONAL_WORKING_DAYS}。"
)


class Days:
    """Working days to money of many cases, as counts per number of days."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = defaultdict(int)

    def add(self, days: int, cases: int) -> None:
        self.counts[days] += cases

    def array(self) -> npt.NDArray[np.int64]:
        if not self.counts:
            return np.zeros(0, dtype=np.int64)
        days = np.fromiter(self.counts.keys(), dtype=np.int64)
        return np.repeat(days, np.fromiter(self.counts.values(), dtype=np.int64))


def speed(key: str, name: str, days: Days) -> Speed:
    values = days.array()
    if not len(values):
        return Speed(
            key=key, name=name, paid_cases=0, median_days=None, p90_days=None, reduction_pct=None
        )
    median = float(np.median(values))
    return Speed(
        key=key,
        name=name,
        paid_cases=len(values),
        median_days=round(median, 1),
        p90_days=round(float(np.percentile(values, 90)), 1),
        reduction_pct=round(100 * (1 - median / TRADITIONAL_WORKING_DAYS), 1),
    )


async def paid_days(
    session: AsyncSession, where: Iterable[sa.ColumnElement[bool]], *columns: Column
) -> list[tuple[int, int, tuple[str, ...]]]:
    """(working days, cases, the columns asked for) of the paid cases, grouped."""
    rows = await session.execute(
        sa.select(col(CaseRecord.days_to_money), sa.func.count(), *columns)
        .where(col(CaseRecord.days_to_money).is_not(None), *where)
        .group_by(col(CaseRecord.days_to_money), *columns)
    )
    return [(int(row[0] or 0), int(row[1]), tuple(row[2:])) for row in rows]


async def time_to_money(session: AsyncSession, view: View) -> TimeToMoney:
    where = await cases_where(session, view)
    rows = await paid_days(session, where, col(CaseRecord.category), col(CaseRecord.item_code))
    everything = Days()
    by_category: dict[str, Days] = defaultdict(Days)
    by_item: dict[str, Days] = defaultdict(Days)
    for days, cases, (category, item) in rows:
        for tally in (everything, by_category[category], by_item[item]):
            tally.add(days, cases)
    return TimeToMoney(
        filters=view.filters,
        headline=speed("all", "全部", everything),
        by_category=[speed(c, CATEGORY_NAMES.get(c, c), d) for c, d in sorted(by_category.items())],
        by_item=sorted(
            (speed(i, view.catalogue.title(i), d) for i, d in by_item.items()),
            key=lambda s: (s.median_days or 0, s.key),
        ),
        method=METHOD,
        generated_at=utcnow(),
    )
