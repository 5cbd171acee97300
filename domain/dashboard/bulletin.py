"""The quarterly bulletin (亮晒比拼): districts and departments ranked on speed,
coverage, overdue stages and money paid, as a page and as a workbook."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal

import numpy as np
import sqlalchemy as sa
from openpyxl import Workbook
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.workdays import SHANGHAI
from domain.access import require_staff_or_reader
from domain.dashboard.scope import Catalogue, catalogue
from domain.dashboard.speed import Days, paid_days
from models.budget import LedgerEntry, LedgerKind
from models.cases import CaseFirm, CaseRecord
from models.dashboard import Bulletin, Standing
from models.matching import MatchTally
from models.policy import StageWarning
from models.reference import Actor
from models.types import utcnow

RANKING = (
    "四项分别排名后相加，总分小者居前：兑付速度（本季度到账案件从应享到到账的工作日中位数，"
    "少者优）、覆盖率（本年截至季末已兑付的企业·条目对占匹配库中符合条件的企业·条目对之比，"
    "高者优）、超期（本季度发出的超期预警数，少者优）、拨付金额（本季度到账金额减退票，多者优）。"
    "总分相同时速度快者居前；本季度无任何数据的单位列于最后。"
    "亮晒比拼按全市口径公布，各单位看到的排名相同（只含汇总数，不含企业和案件）。"
)


@dataclass
class Tally:
    days: Days = field(default_factory=Days)
    eligible: int = 0
    paid_pairs: int = 0
    overdue: int = 0
    paid_fen: int = 0

    @property
    def empty(self) -> bool:
        return not (
            self.days.counts or self.eligible or self.paid_pairs or self.overdue or self.paid_fen
        )


def quarter_window(year: int, quarter: int) -> tuple[date, date, datetime, datetime]:
    first = date(year, 3 * quarter - 2, 1)
    after = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
    start = datetime.combine(first, time.min, tzinfo=SHANGHAI).astimezone(UTC)
    end = datetime.combine(after, time.min, tzinfo=SHANGHAI).astimezone(UTC)
    return first, after, start, end


def _districts(known: Catalogue) -> dict[str, str]:
    """Each region's district: the city's direct children (districts, counties, zones)
    stand for themselves and everything under them."""
    parent = {code: r.parent_code for code, r in known.regions.items()}
    city = {code for code, p in parent.items() if p is None}
    out = {}
    for code in parent:
        node = code
        while parent.get(node) is not None and parent[node] not in city:
            node = parent[node] or node
        if parent.get(node) in city:
            out[code] = node
    return out


async def bulletin(session: AsyncSession, actor: Actor, year: int, quarter: int) -> Bulletin:
    require_staff_or_reader(actor)
    known = await catalogue(session)
    first, after, start, end = quarter_window(year, quarter)
    district_of = _districts(known)
    department_of = {code: item.department_code for code, item in known.items.items()}
    districts: dict[str, Tally] = defaultdict(Tally)
    departments: dict[str, Tally] = defaultdict(Tally)

    def both(region: str, item: str) -> list[Tally]:
        tallies = []
        if region in district_of:
            tallies.append(districts[district_of[region]])
        if item in department_of:
            tallies.append(departments[department_of[item]])
        return tallies

    in_quarter = [col(CaseRecord.paid_at) >= start, col(CaseRecord.paid_at) < end]
    rows = await paid_days(
        session, in_quarter, col(CaseRecord.region_code), col(CaseRecord.item_code)
    )
    for days, cases, (region, item) in rows:
        for tally in both(region, item):
            tally.days.add(days, cases)

    signed = sa.case(
        (col(LedgerEntry.kind) == LedgerKind.RETURN, -col(LedgerEntry.amount_fen)),
        else_=col(LedgerEntry.amount_fen),
    )
    for region, item, paid in await session.execute(
        select(CaseRecord.region_code, CaseRecord.item_code, sa.func.sum(signed))
        .select_from(LedgerEntry)
        .join(CaseRecord, col(CaseRecord.case_id) == col(LedgerEntry.case_id))
        .where(
            col(LedgerEntry.kind).in_([LedgerKind.RECEIPT, LedgerKind.RETURN]),
            col(LedgerEntry.at) >= start,
            col(LedgerEntry.at) < end,
        )
        .group_by(col(CaseRecord.region_code), col(CaseRecord.item_code))
    ):
        for tally in both(region, item):
            tally.paid_fen += int(paid or 0)

    for region, item, pairs in await session.execute(
        select(MatchTally.region_code, MatchTally.item_code, MatchTally.firms).where(
            col(MatchTally.verdict) == "eligible"
        )
    ):
        for tally in both(region, item):
            tally.eligible += int(pairs)
    for region, item, pairs in await session.execute(
        sa.select(col(CaseFirm.region_code), col(CaseFirm.item_code), sa.func.count())
        .where(col(CaseFirm.year) == year, col(CaseFirm.paid), col(CaseFirm.first_paid_at) < end)
        .group_by(col(CaseFirm.region_code), col(CaseFirm.item_code))
    ):
        for tally in both(region, item):
            tally.paid_pairs += int(pairs)

    raised = [col(StageWarning.raised_at) >= start, col(StageWarning.raised_at) < end]
    for region, count in await session.execute(
        select(CaseRecord.region_code, sa.func.count())
        .select_from(StageWarning)
        .join(CaseRecord, col(CaseRecord.case_id) == col(StageWarning.subject))
        .where(*raised)
        .group_by(col(CaseRecord.region_code))
    ):
        if region in district_of:
            districts[district_of[region]].overdue += int(count)
    for department, count in await session.execute(
        select(StageWarning.department_code, sa.func.count())
        .where(*raised, col(StageWarning.department_code).is_not(None))
        .group_by(col(StageWarning.department_code))
    ):
        if department in set(department_of.values()):
            departments[department].overdue += int(count)

    district_names = {code: known.region_name(code) for code in set(district_of.values())}
    department_names = {code: known.department_name(code) for code in set(department_of.values())}
    return Bulletin(
        year=year,
        quarter=quarter,
        starts_on=first.isoformat(),
        ends_on=date.fromordinal(after.toordinal() - 1).isoformat(),
        districts=rank(district_names, districts),
        departments=rank(department_names, departments),
        ranking=RANKING,
        generated_at=utcnow(),
    )


def _ranks(values: list[float], *, higher_first: bool) -> list[int]:
    """Competition ranks (1, 2, 2, 4) of the values, the best first."""
    order = sorted(values, reverse=higher_first)
    return [order.index(v) + 1 for v in values]


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def rank(names: dict[str, str], tallies: dict[str, Tally]) -> list[Standing]:
    active = [code for code in names if not tallies[code].empty]
    idle = sorted(code for code in names if tallies[code].empty)
    medians: dict[str, float | None] = {
        code: float(np.median(days)) if len(days := tallies[code].days.array()) else None
        for code in names
    }
    coverage = {
        code: round(100 * t.paid_pairs / t.eligible, 1) if (t := tallies[code]).eligible else None
        for code in names
    }
    worst_days = max((m for m in medians.values() if m is not None), default=0.0) + 1
    score = {code: 0 for code in active}
    for values, higher in (
        ([-_or(medians[c], worst_days) for c in active], True),
        ([coverage[c] or 0.0 for c in active], True),
        ([-float(tallies[c].overdue) for c in active], True),
        ([float(tallies[c].paid_fen) for c in active], True),
    ):
        for code, r in zip(active, _ranks(values, higher_first=higher), strict=True):
            score[code] += r
    ordered = sorted(
        active,
        key=lambda c: (score[c], _or(medians[c], worst_days), c),
    )
    standings = []
    for position, code in enumerate([*ordered, *idle], start=1):
        tally, median = tallies[code], medians[code]
        standings.append(
            Standing(
                rank=position,
                key=code,
                name=names[code],
                median_days=round(median, 1) if median is not None else None,
                eligible_pairs=tally.eligible,
                paid_pairs=tally.paid_pairs,
                coverage_pct=coverage[code],
                overdue=tally.overdue,
                paid_fen=tally.paid_fen,
            )
        )
    return standings


HEADERS = [
    "名次",
    "代码",
    "名称",
    "到账工作日中位数",
    "符合条件（企业·条目）",
    "已兑付",
    "覆盖率%",
    "超期预警",
    "拨付金额（元）",
]


def workbook(standing: Bulletin) -> bytes:
    """The bulletin as an XLSX workbook: one sheet for districts, one for departments."""
    book = Workbook()
    sheets = [("区县", standing.districts), ("部门", standing.departments)]
    for index, (title, rows) in enumerate(sheets):
        sheet = book.active if index == 0 else book.create_sheet()
        assert sheet is not None
        sheet.title = title
        sheet.append([f"{standing.year}年第{standing.quarter}季度 亮晒比拼（{title}）"])
        sheet.append([f"统计期：{standing.starts_on} 至 {standing.ends_on}"])
        sheet.append(HEADERS)
        for row in rows:
            sheet.append(
                [
                    row.rank,
                    row.key,
                    row.name,
                    row.median_days,
                    row.eligible_pairs,
                    row.paid_pairs,
                    row.coverage_pct,
                    row.overdue,
                    Decimal(row.paid_fen) / 100,
                ]
            )
            sheet.cell(sheet.max_row, 9).number_format = "#,##0.00"
        for letter, width in zip("ABCDEFGHI", (6, 12, 24, 16, 20, 10, 10, 10, 18), strict=True):
            sheet.column_dimensions[letter].width = width
    sheet = book.create_sheet("排名方法")
    sheet.append([standing.ranking])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
