"""Push planning: once per firm and item, within the weekly limit, most valuable
first; and the follow-up a push is measured by (on SQLite and PostgreSQL)."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.db import make_engine, make_sessionmaker
from domain.matching import push
from domain.policy import library
from models.matching import MatchResult, PolicyPush
from models.notices import Notice
from models.policy import ItemCreate
from seed.reference import ensure_reference_data
from tests.fixtures.factories import create_enterprise, create_users, item_payload

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


async def _items(session: AsyncSession, count: int, prefix: str = "PUSH") -> list[str]:
    users = await create_users(session)
    codes = []
    for n in range(count):
        code = f"{prefix}-{n}"
        await library.create_item(
            session, users["jxj_staff"], ItemCreate.model_validate(item_payload(code))
        )
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
        codes.append(code)
    return codes


def _match(code: str, uscc: str, verdict: str, amount: int | None) -> MatchResult:
    return MatchResult(
        item_code=code,
        uscc=uscc,
        version=1,
        verdict=verdict,
        amount_fen=amount,
        outcomes="P",
        region_code="330502",
    )


async def _pushed(session: AsyncSession, uscc: str) -> list[str]:
    rows = await session.scalars(
        select(PolicyPush.item_code)
        .where(col(PolicyPush.uscc) == uscc)
        .order_by(col(PolicyPush.id))
    )
    return list(rows)


async def test_pushes_once_within_the_weekly_limit_most_valuable_first(
    session: AsyncSession,
) -> None:
    codes = await _items(session, 4)
    firm = await create_enterprise(session)
    await create_users(session, enterprise_uscc=firm.uscc)  # 企业 user "qiye" gets the notices
    session.add_all(
        [
            _match(codes[0], firm.uscc, "possibly_eligible", 9_000_000),
            _match(codes[1], firm.uscc, "eligible", 100),
            _match(codes[2], firm.uscc, "eligible", 5_000),
            _match(codes[3], firm.uscc, "eligible", None),
        ]
    )
    await session.flush()

    first = await push.plan_pushes(session, per_week=2, now=NOW)
    assert (first.planned, first.deferred) == (2, 2)
    assert await _pushed(session, firm.uscc) == [codes[2], codes[1]]  # eligible, larger first
    titles = list(
        await session.scalars(select(Notice.subject).where(col(Notice.recipient) == "qiye"))
    )
    assert titles == [push.policy_subject(codes[2]), push.policy_subject(codes[1])]

    # Later the same week: the limit holds and nothing is pushed twice.
    again = await push.plan_pushes(session, per_week=2, now=NOW + timedelta(days=6))
    assert (again.planned, again.deferred) == (0, 2)
    # Seven days after the first pushes, the waiting ones go out.
    later = await push.plan_pushes(session, per_week=2, now=NOW + timedelta(days=7, seconds=1))
    assert later.planned == 2
    assert await _pushed(session, firm.uscc) == [codes[2], codes[1], codes[3], codes[0]]
    assert (await push.plan_pushes(session, per_week=5, now=NOW + timedelta(days=30))).planned == 0


async def test_only_a_pushed_policy_counts_and_only_its_first_action(
    session: AsyncSession,
) -> None:
    codes = await _items(session, 2)
    firms = [await create_enterprise(session) for _ in range(3)]
    session.add_all([_match(codes[0], f.uscc, "eligible", 100) for f in firms])
    await session.flush()
    await push.plan_pushes(session, per_week=3, now=NOW)

    assert await push.record_action(session, firms[0].uscc, codes[0], "opened")
    assert not await push.record_action(session, firms[0].uscc, codes[0], "opened")  # once
    assert await push.record_action(session, firms[0].uscc, codes[0], "applied")
    assert await push.record_action(session, firms[1].uscc, codes[0], "confirmed")
    assert not await push.record_action(session, firms[2].uscc, codes[1], "applied")  # not pushed
    stats = await push.push_stats(session, codes[0])
    assert (stats.pushed, stats.opened, stats.applied, stats.confirmed, stats.acted) == (
        3,
        1,
        1,
        1,
        2,
    )
    assert stats.success_rate == round(2 / 3, 4)


async def test_concurrent_planners_never_exceed_the_weekly_limit(live_database: str) -> None:
    """Two runs planning at once, on separate connections: one firm, four matches, a
    limit of two a week. Exactly two pushes, whichever planner made them."""
    engine = make_engine(live_database)
    sessionmaker = make_sessionmaker(engine)
    try:
        async with sessionmaker.begin() as session:
            await ensure_reference_data(session)
            suffix = uuid.uuid4().hex[:4].upper()
            codes = await _items(session, 4, prefix=f"RACE{suffix}")
            firm = await create_enterprise(session)
            session.add_all([_match(code, firm.uscc, "eligible", 100) for code in codes])

        async def plan() -> None:
            async with sessionmaker.begin() as session:
                await push.plan_pushes(session, per_week=2, now=NOW)

        await asyncio.gather(*(plan() for _ in range(4)))
        async with sessionmaker() as session:
            assert len(await _pushed(session, firm.uscc)) == 2
    finally:
        await engine.dispose()
