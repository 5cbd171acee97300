"""Time to money (兑付时长): working days from entitlement to the first money in the
firm's account, per case paid, summarised as median and 90th percentile."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from core.workdays import WorkingCalendar
from domain.access import Column
from domain.dashboard.money import CATEGORY_NAMES
from domain.dashboard.scope import View, cases_where, shanghai_day
from models.cases import CaseRecord
from models.dashboard import TRADITIONAL_WORKING_DAYS, Speed, TimeToMoney
from models.types import utcnow

EPOCH = date(1970, 1, 1)
METHOD = (
    "每个已到账案件计一次：从“应享”时点到首笔资金到账（预算系统回单）之间的工作日数，"
    "按上海时间的日历日计，周末、法定节假日不计、调休上班日计入；同一天到账为 0 个工作日。"
    "“应享”时点：认定类为批次据以认定的数据日期，承诺类为企业提交承诺之日，申报类为企业申报之日。"
    f"与传统流程约 {TRADITIONAL_WORKING_DAYS} 个工作日相比，压减比例 = 1 − 中位数 ÷ "
    f"{TRADITIONAL_WORKING_DAYS}。"
)


class WorkingDays:
    """Working days between Shanghai days, by a running count over the days spanned."""

    def __init__(self, calendar: WorkingCalendar, first: int, last: int) -> None:
        self.first = first
        days = [EPOCH + timedelta(days=d) for d in range(first, last + 1)]
        working = np.fromiter((calendar.is_working_day(d) for d in days), dtype=np.int32)
        self.count = np.cumsum(working)

    def between(
        self, start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Working days after the start day up to and including the end day (0 if same)."""
        later = np.maximum(end, start)
        counted: npt.NDArray[np.int64] = (
            self.count[later - self.first] - self.count[start - self.first]
        )
        return counted.astype(np.int64)


def working_days(
    calendar: WorkingCalendar, pairs: Iterable[tuple[int, int]]
) -> npt.NDArray[np.int64]:
    array = np.array(list(pairs), dtype=np.int64).reshape(-1, 2)
    if not len(array):
        return np.zeros(0, dtype=np.int64)
    counter = WorkingDays(calendar, int(array.min()), int(array.max()))
    return counter.between(array[:, 0], array[:, 1])


def speed(key: str, name: str, days: npt.NDArray[np.int64]) -> Speed:
    if not len(days):
        return Speed(
            key=key, name=name, paid_cases=0, median_days=None, p90_days=None, reduction_pct=None
        )
    median = float(np.median(days))
    return Speed(
        key=key,
        name=name,
        paid_cases=len(days),
        median_days=round(median, 1),
        p90_days=round(float(np.percentile(days, 90)), 1),
        reduction_pct=round(100 * (1 - median / TRADITIONAL_WORKING_DAYS), 1),
    )


async def paid_days(
    session: AsyncSession, where: list[sa.ColumnElement[bool]], *columns: Column
) -> list[tuple[int, int, tuple[str, ...]]]:
    """(entitled day, paid day, the columns asked for) of each paid case."""
    dialect = session.get_bind().dialect.name
    rows = await session.execute(
        sa.select(
            shanghai_day(col(CaseRecord.entitled_at), dialect),
            shanghai_day(col(CaseRecord.paid_at), dialect),
            *columns,
        ).where(
            col(CaseRecord.paid_at).is_not(None), col(CaseRecord.entitled_at).is_not(None), *where
        )
    )
    return [(int(row[0]), int(row[1]), tuple(row[2:])) for row in rows]


async def time_to_money(
    session: AsyncSession, view: View, calendar: WorkingCalendar
) -> TimeToMoney:
    where = await cases_where(session, view)
    rows = await paid_days(session, where, col(CaseRecord.category), col(CaseRecord.item_code))
    days = working_days(calendar, ((start, end) for start, end, _ in rows))
    by_category: dict[str, list[int]] = defaultdict(list)
    by_item: dict[str, list[int]] = defaultdict(list)
    for (_, _, (category, item)), n in zip(rows, days.tolist(), strict=True):
        by_category[category].append(n)
        by_item[item].append(n)
    return TimeToMoney(
        filters=view.filters,
        headline=speed("all", "全部", days),
        by_category=[
            speed(c, CATEGORY_NAMES.get(c, c), np.array(v)) for c, v in sorted(by_category.items())
        ],
        by_item=sorted(
            (speed(i, view.catalogue.title(i), np.array(v)) for i, v in by_item.items()),
            key=lambda s: (s.median_days or 0, s.key),
        ),
        method=METHOD,
        generated_at=utcnow(),
    )
