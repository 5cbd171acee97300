"""A process keeps every firm's facts in memory (`FactTableCache`, for budget preview)
and reads them again only when the database's `FactsVersion` token says they changed:
every write of a profile or a fact changes it, as its transaction commits, whichever
way it is written."""

import json
from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.commitment.recovery import record_default
from domain.registry.enterprises import FactTableCache
from domain.registry.importer import import_content
from models.registry import BankAccount, Enterprise, Fact, FactsVersion
from tests.fixtures.factories import create_enterprise


async def _token(session: AsyncSession) -> str:
    token = await session.scalar(select(FactsVersion.token))
    assert token is not None
    return token


def _fact_line(uscc: str, kind: str, value: object) -> bytes:
    row = {
        "record": "fact",
        "uscc": uscc,
        "kind": kind,
        "value": value,
        "period": "2025",
        "source": "亩均论英雄平台",
        "fetched_at": "2026-11-20T08:00:00+08:00",
    }
    return json.dumps(row, ensure_ascii=False).encode()


async def test_every_way_of_writing_facts_or_profiles_changes_the_token(
    session: AsyncSession,
) -> None:
    firm = await create_enterprise(session, facts={"mu_grade": ("B", "2025")})
    seen = {await _token(session)}

    async def changed() -> bool:
        await session.commit()  # the token changes as the writing transaction commits
        token = await _token(session)
        new = token not in seen
        seen.add(token)
        return new

    await import_content(session, _fact_line(firm.uscc, "mu_grade", "A"), "jsonl")
    assert await changed(), "an import that updates a fact"
    await import_content(session, _fact_line(firm.uscc, "talent_count", 3), "jsonl")
    assert await changed(), "an import that adds a fact"
    await import_content(session, _fact_line(firm.uscc, "talent_count", 3), "jsonl")
    assert not await changed(), "an import that changes nothing"

    await record_default(session, firm.uscc, date(2026, 11, 2))
    assert await changed(), "a default recorded (a Fact added)"

    firm.size_class = "medium"
    assert await changed(), "a profile edited on the object (flushed by the commit)"
    await session.execute(
        sa.update(Enterprise).where(col(Enterprise.uscc) == firm.uscc).values(size_class="micro")
    )
    assert await changed(), "a profile edited by an ORM statement"
    await session.execute(sa.delete(Fact).where(col(Fact.uscc) == firm.uscc))
    assert await changed(), "facts deleted by an ORM statement"

    session.add(
        BankAccount(
            uscc=firm.uscc, bank_name="湖州银行", account_name="测试", account_number="6222001"
        )
    )
    await session.flush()
    assert not await changed(), "a write of anything else"


async def test_the_cache_keeps_its_table_until_a_fact_changes(session: AsyncSession) -> None:
    firm = await create_enterprise(session, facts={"mu_grade": ("B", "2025")})
    cache = FactTableCache()
    first, regions = await cache.load(session)
    assert firm.uscc in regions
    again, _ = await cache.load(session)
    assert again is first  # nothing read again

    await import_content(session, _fact_line(firm.uscc, "mu_grade", "A"), "jsonl")
    await session.commit()
    fresh, _ = await cache.load(session)
    assert fresh is not first
    assert fresh.known_facts(fresh.row_of[firm.uscc])["mu_grade"].value == "A"
    assert first.known_facts(first.row_of[firm.uscc])["mu_grade"].value == "B"
    assert (await cache.load(session))[0] is fresh
