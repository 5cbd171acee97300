"""Dashboards at city scale: every page's queries on 300,000 firms and 100,000 cases.

Loads the sample data set (N firms, the 30 sample items) into a database of its own,
runs the real full match into the match library, then writes a year of case history
as the workflows would have left it (projection rows, ledger receipts and returns,
quotas, pushes, overdue warnings, findings, recovery orders, a second year of revenue
for the policy-effect page), and times each dashboard request through the real app
(in-process ASGI, so authentication, scope, queries and JSON are all counted), as an
auditor (every case) and as a district's finance (its district).

    python bench/dashboard.py                      # SQLite in a temporary directory
    python bench/dashboard.py --database-url postgresql://postgres@127.0.0.1:5432/zhida_dash

Last line: firms=… cases=… matches=… <page>_ms=… … max_ms=…  (the slowest request's
median of five, per page; the target is under 300 ms each)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa
from sqlmodel import col

from api.main import create_app
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.security import issue_token
from core.settings import Environment, Settings
from core.workdays import WorkingCalendar
from domain.cases import projection
from domain.matching import match_library
from models.budget import BudgetQuota, LedgerEntry, LedgerKind
from models.cases import CaseRecord
from models.commitment import RecoveryOrder, RecoveryStatus
from models.facts import period_end
from models.matching import MatchRequest, MatchResult, MatchScope, PolicyPush
from models.policy import PolicyItem, PolicyItemVersion, StageWarning
from models.registry import Fact
from models.review import Dimension, FindingStatus, ReviewFinding
from seed.reference import demo_users, ensure_users
from seed.sample import load_sample

CHUNK = 5_000
YEAR = 2026
PAGES = {
    "overview": "/api/v1/dashboard/overview",
    "overview_year": f"/api/v1/dashboard/overview?year={YEAR}&category=application",
    "warnings": "/api/v1/dashboard/warnings",
    "time_to_money": "/api/v1/dashboard/time-to-money",
    "bulletin": f"/api/v1/dashboard/bulletin?year={YEAR}&quarter=2",
    "bulletin_xlsx": f"/api/v1/dashboard/bulletin.xlsx?year={YEAR}&quarter=2",
    "policy_effect": "/api/v1/dashboard/policy-effect",
}
READERS = ("auditor", "wx_czj_staff", "jxj_staff")


async def _insert(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        await session.execute(sa.insert(table), rows[start : start + CHUNK])


def _at(day: date, rng: random.Random) -> datetime:
    seconds = rng.randint(1 * 3600, 10 * 3600)  # 09:00-18:00 in Shanghai
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)


async def load_history(sessionmaker: Any, cases: int, seed: int = 7) -> dict[str, int]:
    """A year of cases over the eligible pairs of the match library."""
    rng = random.Random(seed)
    calendar = WorkingCalendar()
    async with sessionmaker() as session:
        pairs = (
            await session.execute(
                sa.select(
                    col(MatchResult.item_code), col(MatchResult.uscc), col(MatchResult.region_code)
                ).where(col(MatchResult.verdict) == "eligible")
            )
        ).all()
        items = dict(
            (
                await session.execute(
                    sa.select(col(PolicyItemVersion.item_code), col(PolicyItemVersion.category))
                )
            ).all()
        )
        departments = dict(
            (
                await session.execute(
                    sa.select(col(PolicyItem.code), col(PolicyItem.department_code))
                )
            ).all()
        )
    chosen = rng.sample(pairs, min(cases, len(pairs)))
    records, ledger, pushes, warnings, findings, orders, facts = [], [], [], [], [], [], []
    paid_by_item: dict[str, int] = {}
    later_revenue: set[str] = set()
    stages = (
        ["paid"] * 70
        + ["payment"] * 5
        + ["department_review"] * 8
        + ["finance_review"] * 5
        + ["rejected"] * 6
        + ["account_correction"] * 1
        + ["awaiting_budget"] * 2
        + ["confirmation"] * 3
    )
    first = date(YEAR, 1, 2)
    for n, (item, uscc, region) in enumerate(chosen):
        category = str(items[item])
        stage = rng.choice(stages)
        amount = rng.choice((20_000, 50_000, 100_000, 300_000, 1_000_000)) * 100
        entitled_day = first + timedelta(days=rng.randint(0, 300))
        entitled = _at(entitled_day, rng)
        case_id = f"{category}/{item}/{YEAR}/{uscc}"
        paid_at = None
        paid = 0
        if stage == "paid":
            # Recognition pays in days, the others in weeks: a realistic spread.
            span = rng.randint(1, 8) if category == "recognition" else rng.randint(3, 25)
            paid_at = _at(entitled_day + timedelta(days=span), rng)
            paid = amount
            ledger.append(
                {
                    "case_id": case_id,
                    "instalment": 1,
                    "kind": LedgerKind.RECEIPT.value,
                    "item_code": item,
                    "year": YEAR,
                    "amount_fen": amount,
                    "at": paid_at,
                    "details": None,
                }
            )
            paid_by_item[item] = paid_by_item.get(item, 0) + amount
        if stage == "account_correction":
            ledger.append(
                {
                    "case_id": case_id,
                    "instalment": 1,
                    "kind": LedgerKind.RETURN.value,
                    "item_code": item,
                    "year": YEAR,
                    "amount_fen": amount,
                    "at": entitled + timedelta(days=10),
                    "details": None,
                }
            )
        overdue = stage in ("department_review", "finance_review") and rng.random() < 0.2
        waiting = departments[item] if stage == "department_review" else None
        records.append(
            {
                "case_id": case_id,
                "category": category,
                "item_code": item,
                "version": 1,
                "period": str(YEAR),
                "uscc": uscc,
                "region_code": region,
                "stage": stage,
                "waiting_for_department": waiting,
                "due_at": entitled + timedelta(days=7) if overdue or waiting else None,
                "overdue": overdue,
                "approved_amount_fen": amount if stage not in ("rejected",) else None,
                "paid_amount_fen": paid,
                "created_at": entitled,
                "updated_at": paid_at or entitled,
                "year": YEAR,
                "entitled_at": entitled,
                "paid_at": paid_at,
                "days_to_money": None
                if paid_at is None
                else calendar.working_days_between(entitled, paid_at),
                "details": {"batch_id": None, "moments": {"entitled": entitled.isoformat()}},
            }
        )
        if overdue:
            warnings.append(
                {
                    "subject": case_id,
                    "stage": stage,
                    "department_code": waiting or departments[item],
                    "due_at": entitled + timedelta(days=7),
                    "raised_at": entitled + timedelta(days=8),
                    "escalated_to_role": "department_head",
                    "message": "超期",
                }
            )
        if n % 200 == 0 and stage in ("department_review", "finance_review"):
            findings.append(
                {
                    "case_id": case_id,
                    "category": category,
                    "item_code": item,
                    "department_code": departments[item],
                    "region_code": region,
                    "uscc": uscc,
                    "period": str(YEAR),
                    "dimension": Dimension.INVOICE.value,
                    "key": f"INV-{n}",
                    "score": 100,
                    "summary": "同一发票",
                    "evidence": {},
                    "counterparts": [],
                    "excess_fen": amount // 2,
                    "status": FindingStatus.OPEN.value,
                    "raised_at": entitled,
                }
            )
        if n % 500 == 0 and category == "commitment":
            orders.append(
                {
                    "case_id": case_id,
                    "uscc": uscc,
                    "item_code": item,
                    "year": YEAR,
                    "principal_fen": amount // 3,
                    "due_on": entitled_day + timedelta(days=60),
                    "daily_interest_rate": "0.0005",
                    "reason": "未达承诺",
                    "status": (RecoveryStatus.DEFAULTED if n % 1000 == 0 else RecoveryStatus.OPEN),
                    "created_at": entitled,
                    "updated_at": entitled,
                    "plan": None,
                }
            )
        if paid_at is not None and n % 3 == 0 and uscc not in later_revenue:
            later_revenue.add(uscc)
            period = f"{YEAR}-Q4"
            facts.append(
                {
                    "uscc": uscc,
                    "kind": "revenue_fen",
                    "period": period,
                    "period_end": period_end(period),
                    "value": rng.randint(10**8, 10**11),
                    "source": "bench",
                    "fetched_at": paid_at,
                }
            )
    for item, uscc, region in rng.sample(pairs, min(len(pairs), 2 * cases)):
        pushes.append(
            {
                "uscc": uscc,
                "item_code": item,
                "region_code": region,
                "version": 1,
                "verdict": "eligible",
                "status": "delivered",
                "pushed_at": datetime(YEAR, 1, 5, tzinfo=UTC),
                "opened_at": datetime(YEAR, 1, 6, tzinfo=UTC) if rng.random() < 0.4 else None,
            }
        )
    async with sessionmaker.begin() as session:
        await _insert(session, CaseRecord, records)
        await projection.count_all_firms(session)
        await _insert(session, LedgerEntry, ledger)
        await _insert(session, PolicyPush, pushes)
        await _insert(session, StageWarning, warnings)
        await _insert(session, ReviewFinding, findings)
        await _insert(session, RecoveryOrder, orders)
        # A later revenue figure for a third of the paid firms, beside last year's.
        await session.execute(sa.delete(Fact).where(sa.column("period") == f"{YEAR}-Q4"))
        await _insert(session, Fact, facts)
        for item, paid in paid_by_item.items():
            quota = paid + rng.choice((paid // 20, paid // 2, paid))
            await session.merge(
                BudgetQuota(item_code=item, year=YEAR, quota_fen=quota, paid_fen=paid)
            )
    return {"cases": len(records), "ledger": len(ledger), "pushes": len(pushes)}


async def time_pages(settings: Settings, repeats: int) -> dict[str, float]:
    app = create_app(settings)
    worst: dict[str, float] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60
        ) as client,
    ):
        for reader in READERS:
            headers = {"Authorization": f"Bearer {issue_token(settings, reader)}"}
            for page, path in PAGES.items():
                times = []
                for _ in range(repeats):
                    clock = time.perf_counter()
                    response = await client.get(path, headers=headers)
                    times.append((time.perf_counter() - clock) * 1000)
                    assert response.status_code == 200, (page, reader, response.text[:300])
                median = statistics.median(times)
                worst[page] = max(worst.get(page, 0.0), median)
                print(f"{reader:>13} {page:<14} median {median:7.1f} ms  max {max(times):7.1f} ms")
    return worst


async def build_city(database_url: str, enterprises: int, cases: int) -> None:
    """A city in the database at `database_url`, unless it holds cases already: the
    sample's firms and items, the full match, a year of case history, then ANALYZE.
    (bench/api_load.py loads its city through it too.)"""
    await upgrade_async(database_url)
    engine = make_engine(database_url)
    sessionmaker = make_sessionmaker(engine)
    today = match_library.today_in_shanghai()
    async with sessionmaker.begin() as session:
        already = await session.scalar(sa.select(sa.func.count()).select_from(CaseRecord))
    if not already:
        clock = time.perf_counter()
        async with sessionmaker.begin() as session:
            await load_sample(session, enterprises, today)
            await ensure_users(session, demo_users(None))
        print(f"sample: {enterprises} firms in {time.perf_counter() - clock:.0f}s")
        clock = time.perf_counter()
        request = MatchRequest(scope=MatchScope.FULL)
        async with sessionmaker() as session:
            loaded = await match_library.load(session, request)
        evaluated = match_library.Evaluated(loaded, today, threads=2)
        async with sessionmaker.begin() as session:
            await match_library.store(session, request, loaded, evaluated)
        print(f"match library written in {time.perf_counter() - clock:.0f}s")
        clock = time.perf_counter()
        counts = await load_history(sessionmaker, cases)
        # Statistics as a database in service has them (PostgreSQL's autovacuum analyzes
        # after a bulk load; on SQLite it is an operator's ANALYZE), so plans fit the data.
        async with engine.begin() as connection:
            await connection.execute(sa.text("ANALYZE"))
        print(f"history {counts} in {time.perf_counter() - clock:.0f}s")
    await engine.dispose()


async def run(database_url: str, enterprises: int, cases: int, repeats: int) -> None:
    await build_city(database_url, enterprises, cases)
    engine = make_engine(database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        firms = await session.scalar(sa.text("SELECT count(*) FROM enterprise"))
        stored = await session.scalar(sa.select(sa.func.count()).select_from(CaseRecord))
        matches = await session.scalar(sa.select(sa.func.count()).select_from(MatchResult))
    await engine.dispose()
    settings = Settings(environment=Environment.TEST, database_url=database_url)
    worst = await time_pages(settings, repeats)
    figures = " ".join(f"{page}_ms={ms:.0f}" for page, ms in worst.items())
    print(
        f"firms={firms} cases={stored} matches={matches} {figures} max_ms={max(worst.values()):.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enterprises", type=int, default=300_000)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--database-url",
        help="default: a new SQLite file in a temporary directory; an existing database "
        "with cases is timed as it is",
    )
    args = parser.parse_args()
    url = args.database_url or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='zhida-dash-')) / 'bench.db'}"
    )
    url = Settings(environment=Environment.TEST, database_url=url).database_url
    asyncio.run(run(url, args.enterprises, args.cases, args.repeats))


if __name__ == "__main__":
    main()
