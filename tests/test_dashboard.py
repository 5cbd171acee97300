"""Dashboards over HTTP: money, funnels, warnings, time to money, the bulletin and policy
effect, worked out by hand on a small city, scoped to the reader, on both databases.

The case projection, ledger and match library rows are written here as the workflows
and runs would leave them; the live path (a case paid through the stack shows up) is
in tests/test_web_pages.py and tests/test_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.main import create_app
from api.routers.dashboard import Figures
from core.settings import Settings
from core.workdays import WorkingCalendar
from domain.cases import projection
from domain.matching import match_library
from domain.money.budget import set_quota
from domain.policy import library
from models.budget import LedgerEntry, LedgerKind
from models.cases import CaseRecord
from models.commitment import RecoveryOrder, RecoveryStatus
from models.dashboard import Bulletin
from models.matching import MatchResult, PolicyPush
from models.policy import ItemCreate
from models.reference import Actor, Role, User
from models.review import Dimension, FindingStatus, ReviewFinding
from models.types import utcnow
from tests.fixtures.api import app_on_engine, app_on_session, auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload

SHANGHAI = ZoneInfo("Asia/Shanghai")
JXJ_ITEM, KJJ_ITEM = "DASH-JXJ-01", "DASH-KJJ-01"
WUXING, NANXUN = "330502", "330503"


def shanghai(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00").replace(tzinfo=SHANGHAI).astimezone(UTC)


@dataclass
class City:
    wuxing: str  # credit codes
    nanxun: str
    wuxing2: str


async def _record(
    session: AsyncSession,
    case_id: str,
    item: str,
    uscc: str,
    region: str,
    stage: str,
    *,
    approved: int | None = None,
    paid: int = 0,
    entitled: datetime | None = None,
    paid_at: datetime | None = None,
    overdue: bool = False,
    waiting: str | None = None,
) -> None:
    session.add(
        CaseRecord(
            case_id=case_id,
            category=case_id.split("/")[0],
            item_code=item,
            version=1,
            period="2026",
            uscc=uscc,
            region_code=region,
            stage=stage,
            approved_amount_fen=approved,
            paid_amount_fen=paid,
            year=2026,
            entitled_at=entitled or shanghai("2026-03-02"),
            paid_at=paid_at,
            # As the projection counts it when the money arrives.
            days_to_money=None
            if paid_at is None
            else WorkingCalendar().working_days_between(
                entitled or shanghai("2026-03-02"), paid_at
            ),
            overdue=overdue,
            waiting_for_department=waiting,
            due_at=shanghai("2026-03-10", 23) if overdue else None,
        )
    )
    if paid_at is not None:
        session.add(
            LedgerEntry(
                case_id=case_id,
                instalment=1,
                kind=LedgerKind.RECEIPT,
                item_code=item,
                year=2026,
                amount_fen=paid,
                at=paid_at,
            )
        )


@pytest.fixture
async def city(session: AsyncSession) -> City:
    """Two items (市经信局's application item, 市科技局's recognition item), three firms
    in two districts, and cases at every step that counts."""
    wuxing = (await create_enterprise(session, region_code=WUXING)).uscc
    await create_users(session, wuxing)
    for code, author, department, category in (
        (JXJ_ITEM, "jxj_staff", "330500-JXJ", "application"),
        (KJJ_ITEM, "kjj_staff", "330500-KJJ", "recognition"),
    ):
        user = await session.get(User, author)
        assert user is not None
        body = ItemCreate.model_validate(
            item_payload(code, department_code=department, category=category)
        )
        await library.create_item(session, Actor.of(user), body)
    wuxing2 = (await create_enterprise(session, region_code=WUXING)).uscc
    nanxun = (await create_enterprise(session, region_code=NANXUN)).uscc
    # Paid in four working days (Monday to Friday).
    await _record(
        session,
        f"application/{JXJ_ITEM}/2026/{wuxing}",
        JXJ_ITEM,
        wuxing,
        WUXING,
        "paid",
        approved=100_000,
        paid=100_000,
        entitled=shanghai("2026-03-02"),
        paid_at=shanghai("2026-03-06"),
    )
    # Entitled late on Monday, paid just after midnight (Shanghai): one working day.
    await _record(
        session,
        f"recognition/{KJJ_ITEM}/2026/{wuxing2}",
        KJJ_ITEM,
        wuxing2,
        WUXING,
        "paid",
        approved=30_000,
        paid=30_000,
        entitled=shanghai("2026-03-02", 23),
        paid_at=shanghai("2026-03-03", 0) + timedelta(minutes=30),
    )
    # Approved and held on the quota, not yet paid; overdue at finance.
    await _record(
        session,
        f"application/{JXJ_ITEM}/2026/{nanxun}",
        JXJ_ITEM,
        nanxun,
        NANXUN,
        "payment",
        approved=50_000,
        overdue=True,
        waiting="330500-CZJ",
    )
    # Rejected: counts as acted, never as committed.
    await _record(
        session, f"recognition/{KJJ_ITEM}/2026/{nanxun}", KJJ_ITEM, nanxun, NANXUN, "rejected"
    )
    for item, uscc, region in (
        (JXJ_ITEM, wuxing, WUXING),
        (JXJ_ITEM, nanxun, NANXUN),
        (JXJ_ITEM, wuxing2, WUXING),
        (KJJ_ITEM, wuxing2, WUXING),
    ):
        session.add(
            MatchResult(
                item_code=item,
                uscc=uscc,
                version=1,
                verdict="eligible",
                outcomes="P",
                region_code=region,
            )
        )
    session.add(PolicyPush(uscc=wuxing, item_code=JXJ_ITEM, version=1, verdict="eligible"))
    session.add(
        PolicyPush(
            uscc=nanxun, item_code=JXJ_ITEM, version=1, verdict="eligible", opened_at=utcnow()
        )
    )
    await session.flush()
    await match_library.count_library(session)  # as the run that wrote them does
    await projection.count_all_firms(session)  # as the projection does, case by case
    quota = await set_quota(session, JXJ_ITEM, 2026, 160_000, "czj_staff")
    quota.reserved_fen, quota.paid_fen = 50_000, 100_000  # as the two cases left it
    await session.flush()
    return City(wuxing=wuxing, nanxun=nanxun, wuxing2=wuxing2)


async def _get(api: httpx.AsyncClient, settings: Settings, user: str, path: str) -> Any:
    response = await api.get(f"/api/v1/dashboard/{path}", headers=auth(settings, user))
    assert response.status_code == 200, response.text
    return response.json()


async def test_overview_counts_money_by_region_department_category_and_month(
    api: httpx.AsyncClient, settings: Settings, city: City
) -> None:
    body = await _get(api, settings, "auditor", "overview")
    totals = body["totals"]
    assert (totals["cases"], totals["committed_fen"]) == (4, 180_000)
    assert (totals["reserved_fen"], totals["paid_fen"]) == (50_000, 130_000)
    regions = {m["key"]: m for m in body["by_region"]}
    assert regions[WUXING]["name"] == "吴兴区"
    assert (regions[WUXING]["committed_fen"], regions[WUXING]["paid_fen"]) == (130_000, 130_000)
    assert (regions[NANXUN]["committed_fen"], regions[NANXUN]["reserved_fen"]) == (50_000, 50_000)
    departments = {m["key"]: m["committed_fen"] for m in body["by_department"]}
    assert departments == {"330500-JXJ": 150_000, "330500-KJJ": 30_000}
    assert {m["key"]: m["paid_fen"] for m in body["by_category"]} == {
        "application": 100_000,
        "recognition": 30_000,
    }
    assert [(m["key"], m["paid_fen"]) for m in body["by_month"]] == [("2026-03", 130_000)]
    funnel = {f["item_code"]: f for f in body["funnel"]}
    jxj = funnel[JXJ_ITEM]
    assert (jxj["matched"], jxj["pushed"], jxj["pushes_opened"]) == (3, 2, 1)
    assert (jxj["acted"], jxj["approved"], jxj["paid"], jxj["paid_fen"]) == (2, 2, 1, 100_000)
    kjj = funnel[KJJ_ITEM]
    assert (kjj["matched"], kjj["acted"], kjj["approved"], kjj["paid"]) == (1, 2, 1, 1)
    [budget] = body["budget"]
    assert (budget["item_code"], budget["quota_fen"], budget["year"]) == (JXJ_ITEM, 160_000, 2026)


async def test_each_reader_sees_its_own_scope_and_filters_narrow_it(
    api: httpx.AsyncClient, settings: Settings, city: City
) -> None:
    # 吴兴区 finance: its district's firms only.
    district = await _get(api, settings, "wx_czj_staff", "overview")
    assert {m["key"] for m in district["by_region"]} == {WUXING}
    assert district["totals"]["committed_fen"] == 130_000
    # 市科技局: its own item only, whatever the firm's district.
    department = await _get(api, settings, "kjj_staff", "overview")
    assert {f["item_code"] for f in department["funnel"]} == {KJJ_ITEM}
    assert department["totals"]["cases"] == 2
    assert department["budget"] == []  # the quota is 市经信局's item's
    # An auditor narrows to a district, a department, a category, a year.
    nanxun = await _get(api, settings, "auditor", "overview?region_code=330503")
    assert nanxun["totals"]["cases"] == 2
    applications = await _get(api, settings, "auditor", "overview?category=application")
    assert applications["totals"]["committed_fen"] == 150_000
    other_year = await _get(api, settings, "auditor", "overview?year=2025")
    assert other_year["totals"]["cases"] == 0
    query = "time-to-money?department_code=330500-KJJ"
    by_department = await _get(api, settings, "czj_staff", query)
    assert by_department["headline"]["paid_cases"] == 1


async def test_money_by_month_follows_shanghai_midnight(
    api: httpx.AsyncClient, settings: Settings, session: AsyncSession, city: City
) -> None:
    case_id = f"application/{JXJ_ITEM}/2026-Q1/{city.nanxun}"
    await _record(session, case_id, JXJ_ITEM, city.nanxun, NANXUN, "paid", paid=3_000)
    for instalment, at, fen in (
        (1, shanghai("2026-03-31", 23) + timedelta(minutes=30), 1_000),  # 15:30 UTC: March
        (2, shanghai("2026-04-01", 0) + timedelta(minutes=30), 2_000),  # 16:30 UTC: April
    ):
        session.add(
            LedgerEntry(
                case_id=case_id,
                instalment=instalment,
                kind=LedgerKind.RECEIPT,
                item_code=JXJ_ITEM,
                year=2026,
                amount_fen=fen,
                at=at,
            )
        )
    await session.flush()
    body = await _get(api, settings, "auditor", "overview?region_code=330503")
    assert [(m["key"], m["paid_fen"]) for m in body["by_month"]] == [
        ("2026-03", 1_000),
        ("2026-04", 2_000),
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("overview?region_code=999999", "region_code"),
        ("overview?department_code=NOPE", "department_code"),
        ("overview?category=grant", "category"),
        ("overview?year=99999", "year"),
        ("bulletin?year=2026&quarter=5", "quarter"),
        ("bulletin?quarter=1", "year"),
        ("policy-effect?item_code=NO-SUCH-ITEM", "item_code"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(
    api: httpx.AsyncClient, settings: Settings, city: City, query: str, field: str
) -> None:
    response = await api.get(f"/api/v1/dashboard/{query}", headers=auth(settings, "auditor"))
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_firms_and_operations_staff_may_not_read_dashboards(
    api: httpx.AsyncClient, settings: Settings, city: City
) -> None:
    for user in ("qiye", "ops"):
        response = await api.get("/api/v1/dashboard/overview", headers=auth(settings, user))
        assert response.status_code == 403


async def test_a_scope_keeps_its_figures_for_their_max_age_whoever_of_it_asks(
    api: httpx.AsyncClient, settings: Settings, session: AsyncSession, city: City
) -> None:
    assert settings.dashboard_max_age_s == 15  # the default
    first = await _get(api, settings, "auditor", "overview")
    assert first["totals"]["cases"] == 4
    first_auditor = await session.get(User, "auditor")
    assert first_auditor is not None
    session.add(
        User(
            name="auditor2",
            display_name="审计员二",
            role=Role.AUDITOR,
            region_code=first_auditor.region_code,
        )
    )
    await _record(
        session,
        f"application/{JXJ_ITEM}/2026/{city.wuxing2}",
        JXJ_ITEM,
        city.wuxing2,
        WUXING,
        "payment",
        approved=20_000,
    )
    await session.flush()
    # Within the max age the scope's figures are those kept, for every reader of it.
    for auditor in ("auditor", "auditor2"):
        again = await _get(api, settings, auditor, "overview")
        assert (again["generated_at"], again["totals"]) == (first["generated_at"], first["totals"])
    # Another scope (a role, a unit, other filters) has figures of its own, counted now.
    admin = await _get(api, settings, "admin", "overview")
    assert (admin["totals"]["cases"], admin["totals"]["committed_fen"]) == (5, 200_000)
    district = await _get(api, settings, "wx_czj_staff", "overview")
    assert district["totals"]["committed_fen"] == 150_000
    narrowed = await _get(api, settings, "auditor", "overview?region_code=330502")
    assert narrowed["totals"]["cases"] == 3
    # An app that keeps nothing counts every request.
    fresh = settings.model_copy(update={"dashboard_max_age_s": 0})
    async with app_on_session(create_app(fresh), session) as uncached:
        now = await _get(uncached, fresh, "auditor", "overview")
    assert now["totals"]["cases"] == 5


async def test_readers_of_one_scope_asking_at_once_share_one_computation() -> None:
    computed: list[str] = []

    async def compute(_: AsyncSession) -> Bulletin:
        computed.append("x")
        await asyncio.sleep(0.05)
        return Bulletin(
            year=2026,
            quarter=1,
            starts_on="2026-01-01",
            ends_on="2026-03-31",
            districts=[],
            departments=[],
            ranking="",
            generated_at=utcnow(),
        )

    def reader() -> contextlib.nullcontext[Any]:
        return contextlib.nullcontext(None)

    def staff(name: str, department: str) -> Actor:
        return Actor(name=name, role=Role.DEPARTMENT_CASEWORKER, department_code=department)

    kept = Figures(max_age_s=15)
    same_unit = [staff(f"jxj_{n}", "330500-JXJ") for n in range(5)]
    answers = await asyncio.gather(
        *(kept.get(reader, actor, Bulletin, (2026, 1), compute) for actor in same_unit),
        kept.get(reader, staff("kjj_staff", "330500-KJJ"), Bulletin, (2026, 1), compute),
        kept.get(reader, same_unit[0], Bulletin, (2026, 2), compute),
    )
    assert len(computed) == 3  # one unit, another unit, another quarter
    assert len({id(answer) for answer in answers[:5]}) == 1
    never = Figures(max_age_s=0)
    for _ in range(2):
        await never.get(reader, same_unit[0], Bulletin, (2026, 1), compute)
    assert len(computed) == 5


async def test_time_to_money_counts_working_days_in_shanghai(
    api: httpx.AsyncClient, settings: Settings, city: City
) -> None:
    body = await _get(api, settings, "auditor", "time-to-money")
    # Two paid cases: 4 working days and 1 (paid after Shanghai's midnight).
    headline = body["headline"]
    assert (headline["paid_cases"], headline["median_days"]) == (2, 2.5)
    assert headline["p90_days"] == pytest.approx(3.7)
    assert headline["reduction_pct"] == pytest.approx(round(100 * (1 - 2.5 / 60), 1))
    assert body["traditional_days"] == 60
    assert {s["key"]: s["median_days"] for s in body["by_category"]} == {
        "application": 4.0,
        "recognition": 1.0,
    }
    assert "工作日" in body["method"]


def test_working_days_to_money_skip_weekends_and_holidays_and_count_make_up_days() -> None:
    calendar = WorkingCalendar()
    assert calendar.working_days_between(shanghai("2026-03-02"), shanghai("2026-03-02", 18)) == 0
    assert calendar.working_days_between(shanghai("2026-03-06"), shanghai("2026-03-09")) == 1
    # National Day 2026: 1-7 October off; Saturday 10 October a make-up working day.
    assert calendar.working_days_between(shanghai("2026-09-30"), shanghai("2026-10-09")) == 2
    assert calendar.working_days_between(shanghai("2026-09-30"), shanghai("2026-10-10")) == 3
    # The days are Shanghai's: 23:00 and 00:30 the next morning are one working day apart.
    late, early = shanghai("2026-03-02", 23), shanghai("2026-03-03", 0) + timedelta(minutes=30)
    assert calendar.working_days_between(late, early) == 1
    assert calendar.working_days_between(early, late) == 0  # never negative


async def test_warnings_list_what_needs_someone(
    api: httpx.AsyncClient, settings: Settings, session: AsyncSession, city: City
) -> None:
    returned = f"application/{JXJ_ITEM}/2025/{city.wuxing2}"
    await _record(session, returned, JXJ_ITEM, city.wuxing2, WUXING, "account_correction")
    session.add(
        LedgerEntry(
            case_id=returned,
            instalment=1,
            kind=LedgerKind.RETURN,
            item_code=JXJ_ITEM,
            year=2026,
            amount_fen=7_000,
        )
    )
    recovery = f"commitment/{JXJ_ITEM}/once/{city.nanxun}"
    await _record(session, recovery, JXJ_ITEM, city.nanxun, NANXUN, "recovery")
    session.add(
        RecoveryOrder(
            case_id=recovery,
            uscc=city.nanxun,
            item_code=JXJ_ITEM,
            year=2026,
            principal_fen=20_000,
            due_on=date(2026, 4, 1),
            daily_interest_rate="0.0005",
            reason="未达承诺",
            status=RecoveryStatus.DEFAULTED,
        )
    )
    session.add(
        ReviewFinding(
            case_id=f"application/{JXJ_ITEM}/2026/{city.nanxun}",
            category="application",
            item_code=JXJ_ITEM,
            department_code="330500-JXJ",
            region_code=NANXUN,
            uscc=city.nanxun,
            period="2026",
            dimension=Dimension.INVOICE,
            key="INV-1",
            score=100,
            summary="同一发票",
            evidence={},
            counterparts=[],
            excess_fen=10_000,
            status=FindingStatus.OPEN,
        )
    )
    await session.flush()
    body = await _get(api, settings, "auditor", "warnings")
    [overdue] = body["overdue_reviews"]
    assert overdue["case_id"] == f"application/{JXJ_ITEM}/2026/{city.nanxun}"
    assert overdue["department_name"] == "湖州市财政局"
    assert overdue["working_days_late"] > 100  # due in March 2026
    [quota] = body["quotas"]  # 150,000 of 160,000 reserved and paid: 93.8%
    assert (quota["item_code"], quota["used_pct"]) == (JXJ_ITEM, 93.8)
    [back] = body["returned_payments"]
    assert (back["case_id"], back["returned_fen"]) == (returned, 7_000)
    [owed] = body["recoveries"]
    assert (owed["outstanding_fen"], owed["defaulted"]) == (20_000, True)
    [finding] = body["findings"]
    assert (finding["item_code"], finding["findings"], finding["excess_fen"]) == (
        JXJ_ITEM,
        1,
        10_000,
    )
    # 南浔区's finance sees none of 吴兴区's returned payment.
    nanxun = await _get(api, settings, "auditor", "warnings?region_code=330503")
    assert nanxun["returned_payments"] == []


async def test_bulletin_ranks_districts_and_departments_and_exports_a_workbook(
    api: httpx.AsyncClient, settings: Settings, city: City
) -> None:
    body = await _get(api, settings, "wx_czj_staff", "bulletin?year=2026&quarter=1")
    assert (body["starts_on"], body["ends_on"]) == ("2026-01-01", "2026-03-31")
    districts = {s["key"]: s for s in body["districts"]}
    assert districts[WUXING]["rank"] == 1  # paid quickly, covered 2 of 3 eligible pairs
    assert (districts[WUXING]["paid_pairs"], districts[WUXING]["eligible_pairs"]) == (2, 3)
    assert districts[WUXING]["coverage_pct"] == pytest.approx(66.7)
    assert districts[WUXING]["paid_fen"] == 130_000
    assert districts[NANXUN]["rank"] == 2 and districts[NANXUN]["paid_fen"] == 0
    assert len(body["districts"]) == 7  # every district, county and zone of the city
    departments = {s["key"]: s for s in body["departments"]}
    assert departments["330500-JXJ"]["median_days"] == 4.0
    assert departments["330500-KJJ"]["median_days"] == 1.0
    empty = await _get(api, settings, "auditor", "bulletin?year=2026&quarter=2")
    assert all(s["paid_fen"] == 0 for s in empty["districts"])

    response = await api.get(
        "/api/v1/dashboard/bulletin.xlsx?year=2026&quarter=1", headers=auth(settings, "auditor")
    )
    assert response.status_code == 200
    assert "2026-Q1" in response.headers["content-disposition"]
    book = load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["区县", "部门", "排名方法"]
    rows = list(book["区县"].iter_rows(min_row=4, values_only=True))
    assert rows[0][:3] == (1, WUXING, "吴兴区")
    assert rows[0][8] == 1300  # yuan


async def test_policy_effect_compares_paid_firms_with_eligible_ones_not_paid(
    api: httpx.AsyncClient, settings: Settings, session: AsyncSession, city: City
) -> None:
    from models.facts import period_end
    from models.registry import Fact

    def fact(uscc: str, period: str, value: int) -> Fact:
        return Fact(
            uscc=uscc,
            kind="revenue_fen",
            period=period,
            period_end=period_end(period),
            value=value,
            source="test",
            fetched_at=utcnow(),
        )

    # Paid on 2026-03-06: revenue up 50% from 2025 to 2026-Q2; the unpaid eligible one
    # (wuxing2 for 市经信局's item) up 10%.
    session.add_all(
        [
            fact(city.wuxing, "2025", 1_000_000),
            fact(city.wuxing, "2026-Q2", 1_500_000),
            fact(city.wuxing2, "2025", 1_000_000),
            fact(city.wuxing2, "2026-Q2", 1_100_000),
        ]
    )
    await session.flush()
    body = await _get(api, settings, "auditor", f"policy-effect?item_code={JXJ_ITEM}")
    [item] = body["items"]
    assert (item["paid_firms"], item["eligible_firms"], item["year"]) == (1, 3, 2026)
    revenue = next(m for m in item["movements"] if m["kind"] == "revenue_fen")
    assert (revenue["paid_change_pct"], revenue["comparison_change_pct"]) == (50.0, 10.0)
    assert revenue["difference_pts"] == 40.0
    assert {c["item_code"] for c in body["choices"]} == {JXJ_ITEM, KJJ_ITEM}
    assert body["caveats"] and "因果" in body["caveats"][0]


async def test_figures_are_read_in_a_session_of_their_own_on_a_real_engine(
    own_engine: AsyncEngine,
) -> None:
    """Served by uvicorn, the request's transaction ends before the figures are computed
    (its connection goes back to the pool) and they are read in a read-only session that
    outlives any one request; readers asking at once share it."""
    async with app_on_engine(own_engine) as (app, settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            answers = await asyncio.gather(
                *(_get(api, settings, user, "overview") for user in ("auditor",) * 4),
                _get(api, settings, "czj_staff", "warnings"),
            )
    assert len({answer["generated_at"] for answer in answers[:4]}) == 1
    assert answers[0]["totals"]["cases"] == 0
    assert answers[4]["overdue_reviews"] == []
