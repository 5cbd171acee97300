"""The match library's write of a full run, past the ORM (COPY on PostgreSQL, the
driver's executemany on SQLite), on a city too big for the firm-by-firm path: what it
writes is what the firm-by-firm path would have written, an unchanged run writes
nothing, and a changed one adds, rewrites and removes exactly the pairs that moved."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col, select

from core.db import make_sessionmaker
from domain.matching import match_library
from domain.matching.match_library import ROW_PATH_LIMIT, Evaluated, LibraryRow, Loaded
from domain.policy import library
from models.matching import MatchRequest, MatchResult, MatchScope, MatchTally
from models.policy import ItemCreate, PolicyItemVersion, VersionStatus
from models.reference import Actor
from models.registry import Fact
from seed.reference import ensure_reference_data
from tests.fixtures.factories import create_enterprise, create_users, item_payload

AS_OF = date(2026, 11, 27)
CODE = "STORE-01"
FULL = MatchRequest(scope=MatchScope.FULL)
FIRMS = 3 * ROW_PATH_LIMIT + 7


async def _publish_item(
    session: AsyncSession, code: str = CODE, users: dict[str, Actor] | None = None
) -> None:
    users = users or await create_users(session)
    payload = item_payload(
        code,
        # Eligible from 1,000 yuan of revenue; unknown revenue is possibly eligible.
        eligibility={"all": [{"fact": "revenue_fen", "op": "gte", "value": 100_000}]},
        amount_rule={"kind": "rate", "fact": "revenue_fen", "rate": "0.01"},
    )
    await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
    await session.execute(
        sa.update(PolicyItemVersion)
        .where(col(PolicyItemVersion.item_code) == code)
        .values(status=VersionStatus.PUBLISHED)
    )
    await session.execute(
        sa.text("UPDATE policy_item SET published_version = 1 WHERE code = :c"), {"c": code}
    )


async def _schema(session: AsyncSession) -> list[tuple[str, ...]]:
    """The library table's indexes and constraints, as the database describes them."""
    if session.get_bind().dialect.name == "sqlite":
        query = "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE tbl_name = 'match_result'"
    else:
        query = (
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'match_result' "
            "UNION ALL SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'match_result'::regclass"
        )
    rows = await session.execute(sa.text(query))
    return sorted(tuple(row) for row in rows)


async def _library(session: AsyncSession) -> list[tuple[object, ...]]:
    rows = await session.execute(
        sa.select(
            col(MatchResult.uscc),
            col(MatchResult.version),
            col(MatchResult.verdict),
            col(MatchResult.amount_fen),
            col(MatchResult.outcomes),
            col(MatchResult.region_code),
        )
        .where(col(MatchResult.item_code) == CODE)
        .order_by(col(MatchResult.uscc))
    )
    return [tuple(row) for row in rows]


async def _commit_and_run(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    request: MatchRequest = FULL,
) -> tuple[tuple[int, int], list[tuple[object, ...]]]:
    await session.commit()
    return await _run(sessionmaker, request)


async def _evaluate(
    sessionmaker: async_sessionmaker[AsyncSession], request: MatchRequest
) -> tuple[Loaded, Evaluated, list[LibraryRow]]:
    async with sessionmaker() as reader:
        loaded = await match_library.load(reader, request)
    [item] = [i for i in loaded.items if i.item_code == CODE]
    evaluated = Evaluated(loaded, AS_OF, threads=2)
    rows = evaluated.rows(item, loaded.regions)
    assert rows is not None
    # Plain Python values, as the drivers bind them (no numpy integers).
    assert {type(value) for row in rows for value in row} <= {str, int, type(None)}
    return loaded, evaluated, rows


async def _run(
    sessionmaker: async_sessionmaker[AsyncSession], request: MatchRequest = FULL
) -> tuple[tuple[int, int], list[tuple[object, ...]]]:
    """A run as `match_library.run` makes it: read in one session, written in another
    (on PostgreSQL the first write's DDL waits for no cursor of the read)."""
    loaded, evaluated, rows = await _evaluate(sessionmaker, request)
    [item] = [i for i in loaded.items if i.item_code == CODE]
    # The same rows as the firm-by-firm path gives, a few firms at a time.
    by_firm = []
    for start in range(0, len(loaded.table), ROW_PATH_LIMIT):
        part = loaded.table.subset(range(start, min(start + ROW_PATH_LIMIT, len(loaded.table))))
        small = Evaluated(Loaded(loaded.items, part, loaded.regions), AS_OF, threads=1)
        by_firm.extend(small.rows(item, loaded.regions) or [])
    assert rows == by_firm
    async with sessionmaker.begin() as writer:
        changes = await match_library.store(writer, request, loaded, evaluated)
    return changes, [tuple(row) for row in rows]


async def test_a_full_run_writes_the_library_in_bulk_and_rewrites_only_what_moved(
    own_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Firms are named a few dozen at a time, so that a run of changed firms spans lists.
    monkeypatch.setattr(match_library, "IN_LIST", 50)
    sessionmaker = make_sessionmaker(own_engine)
    async with sessionmaker() as session:
        await _check(sessionmaker, session)


async def _check(sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession) -> None:
    await ensure_reference_data(session)
    await _publish_item(session)
    firms = []
    for n in range(FIRMS):
        # Every seventh firm has no revenue (possibly eligible), the poorest third fails.
        revenue = None if n % 7 == 0 else n * 1_000
        facts = {} if revenue is None else {"revenue_fen": (revenue, "2025")}
        region = "330502" if n % 2 else "330503"
        firms.append(await create_enterprise(session, region_code=region, facts=facts))
    before = await _schema(session)
    await session.commit()

    # A first write that fails leaves the library empty and its indexes as they were.
    loaded, evaluated, _ = await _evaluate(sessionmaker, FULL)
    with pytest.raises(RuntimeError):
        async with sessionmaker.begin() as writer:
            assert await match_library.store(writer, FULL, loaded, evaluated) != (0, 0)
            raise RuntimeError("the worker dies before the commit")
    assert await _library(session) == []
    assert await _schema(session) == before

    # The first run into an empty library builds its indexes afterwards.
    (added, removed), rows = await _commit_and_run(session, sessionmaker)
    assert await _schema(session) == before
    with pytest.raises(sa.exc.IntegrityError):  # the primary key holds again
        async with session.begin_nested():
            session.add(
                MatchResult(
                    item_code=CODE,
                    uscc=str(rows[0][0]),
                    version=1,
                    verdict="eligible",
                    outcomes="P",
                    region_code="330502",
                )
            )
    # On PostgreSQL a later run confirms an unchanged item by one digest of its rows,
    # computed by the database as `_digest` computes it from the run's rows (an
    # unknown amount included); SQLite compares the rows themselves.
    digests = await match_library._stored_digests(session, [CODE])
    if session.get_bind().dialect.name == "postgresql":
        assert digests == {CODE: match_library._digest(rows)}  # type: ignore[arg-type]
        assert any(row[3] is None for row in rows)
    else:
        assert digests is None
    eligible = [n for n in range(FIRMS) if n % 7 and n * 1_000 >= 100_000]
    possible = [n for n in range(FIRMS) if n % 7 == 0]
    assert (added, removed) == (len(eligible) + len(possible), 0)
    assert await _library(session) == rows
    first = {f.uscc: f for f in firms}
    sample = next(r for r in rows if r[0] == firms[eligible[0]].uscc)
    assert sample[1:] == (1, "eligible", eligible[0] * 10, "P", first[str(sample[0])].region_code)
    assert next(r for r in rows if r[0] == firms[possible[1]].uscc)[2:5] == (
        "possibly_eligible",
        None,
        "U",
    )
    matched_at = {
        u: at
        for u, at in await session.execute(
            select(MatchResult.uscc, MatchResult.matched_at).where(
                col(MatchResult.item_code) == CODE
            )
        )
    }

    # Nothing changed: nothing written, not even the time of the match.
    assert (await _commit_and_run(session, sessionmaker))[0] == (0, 0)
    again = await session.execute(
        select(MatchResult.uscc, MatchResult.matched_at).where(col(MatchResult.item_code) == CODE)
    )
    assert {u: at for u, at in again} == matched_at

    # One firm falls below the threshold, one unknown becomes known and eligible, one
    # eligible firm's amount moves, and a new firm appears.
    falls, known, moves = firms[eligible[0]], firms[possible[1]], firms[eligible[1]]
    await session.execute(
        sa.update(Fact)
        .where(col(Fact.uscc) == falls.uscc, col(Fact.kind) == "revenue_fen")
        .values(value=5)
    )
    await session.execute(
        sa.update(Fact)
        .where(col(Fact.uscc) == moves.uscc, col(Fact.kind) == "revenue_fen")
        .values(value=900_000)
    )
    session.add(
        Fact(
            uscc=known.uscc,
            kind="revenue_fen",
            period="2025",
            period_end=date(2025, 12, 31),
            value=400_000,
            source="test",
            fetched_at=datetime.now(UTC),
        )
    )
    newcomer = await create_enterprise(session, facts={"revenue_fen": (300_000, "2025")})
    await session.flush()
    (added, removed), rows = await _commit_and_run(session, sessionmaker)
    assert (added, removed) == (1, 1)
    library_rows = await _library(session)
    assert library_rows == rows
    by_uscc = {row[0]: row for row in library_rows}
    assert falls.uscc not in by_uscc
    assert by_uscc[known.uscc][2:5] == ("eligible", 4_000, "P")
    assert by_uscc[moves.uscc][3] == 9_000
    assert by_uscc[newcomer.uscc][2:4] == ("eligible", 3_000)
    tally = (
        await session.execute(
            select(
                sa.func.sum(col(MatchTally.firms)), sa.func.sum(col(MatchTally.amount_fen))
            ).where(col(MatchTally.item_code) == CODE)
        )
    ).one()
    # The tally follows the amounts too (a moved amount alone changes no count).
    assert tuple(tally) == (
        len(library_rows),
        sum(row[3] for row in library_rows if isinstance(row[3], int)),
    )

    # A run of the firms changed since the start (all of them, in four lists): two
    # eligible firms, in the first list and the last, fall below the threshold.
    for gone in (firms[eligible[1]], firms[eligible[-1]]):
        await session.execute(
            sa.update(Fact)
            .where(col(Fact.uscc) == gone.uscc, col(Fact.kind) == "revenue_fen")
            .values(value=5, imported_at=datetime.now(UTC))
        )
    changed = MatchRequest(scope=MatchScope.FIRMS, changed_since=datetime(2000, 1, 1, tzinfo=UTC))
    (added, removed), rows = await _commit_and_run(session, sessionmaker, changed)
    assert (added, removed) == (0, 2)
    assert await _library(session) == rows
    assert len(rows) == len(library_rows) - 2


async def test_items_no_longer_in_force_leave_the_library_and_its_tally(
    own_engine: AsyncEngine,
) -> None:
    sessionmaker = make_sessionmaker(own_engine)
    codes = ("STORE-01", "STORE-02", "STORE-03")
    async with sessionmaker() as session:
        await ensure_reference_data(session)
        users = await create_users(session)
        for code in codes:
            await _publish_item(session, code, users)
        for n in range(ROW_PATH_LIMIT + 5):  # all eligible: the array path
            await create_enterprise(session, facts={"revenue_fen": (100_000 + n, "2025")})
        await session.commit()

    async def run(request: MatchRequest) -> tuple[int, int]:
        async with sessionmaker() as reader:
            loaded = await match_library.load(reader, request)
        evaluated = Evaluated(loaded, AS_OF, threads=1)
        async with sessionmaker.begin() as writer:
            return await match_library.store(writer, request, loaded, evaluated)

    async def library_and_tally() -> tuple[dict[str, int], dict[str, int]]:
        async with sessionmaker() as session:
            rows = await session.execute(
                sa.select(col(MatchResult.item_code), sa.func.count()).group_by(
                    col(MatchResult.item_code)
                )
            )
            tally = await session.execute(
                sa.select(col(MatchTally.item_code), sa.func.sum(col(MatchTally.firms))).group_by(
                    col(MatchTally.item_code)
                )
            )
            return {c: int(n) for c, n in rows}, {c: int(n) for c, n in tally}

    async def suspend(code: str) -> None:
        async with sessionmaker.begin() as session:
            await session.execute(
                sa.update(PolicyItemVersion)
                .where(col(PolicyItemVersion.item_code) == code)
                .values(status=VersionStatus.SUSPENDED)
            )

    firms = ROW_PATH_LIMIT + 5
    assert await run(FULL) == (3 * firms, 0)
    everything = {code: firms for code in codes}
    assert await library_and_tally() == (everything, everything)

    # A suspended item leaves with the next full run; the others stay as they are.
    await suspend("STORE-02")
    # An item run of another item leaves it alone.
    assert await run(MatchRequest(scope=MatchScope.ITEM, item_code="STORE-03")) == (0, 0)
    assert (await library_and_tally())[0] == everything
    assert await run(FULL) == (0, firms)
    left = {"STORE-01": firms, "STORE-03": firms}
    assert await library_and_tally() == (left, left)

    # An item run of a suspended item removes that item alone.
    await suspend("STORE-03")
    assert await run(MatchRequest(scope=MatchScope.ITEM, item_code="STORE-03")) == (0, firms)
    assert await library_and_tally() == ({"STORE-01": firms}, {"STORE-01": firms})
    # Nothing changed since: nothing written, the tally as it was.
    assert await run(FULL) == (0, 0)
    assert await library_and_tally() == ({"STORE-01": firms}, {"STORE-01": firms})

    # A firm's revenue becomes unknown: its pair stays (possibly eligible), rewritten in
    # place, and the tally moves it from one verdict to the other.
    async with sessionmaker.begin() as session:
        uscc = await session.scalar(select(MatchResult.uscc).limit(1))
        await session.execute(sa.delete(Fact).where(col(Fact.uscc) == uscc))
    assert await run(FULL) == (0, 0)
    async with sessionmaker() as session:
        verdicts = await session.execute(
            sa.select(col(MatchTally.verdict), sa.func.sum(col(MatchTally.firms))).group_by(
                col(MatchTally.verdict)
            )
        )
        assert {v: int(n) for v, n in verdicts} == {"eligible": firms - 1, "possibly_eligible": 1}
