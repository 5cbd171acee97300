"""A process keeps every firm's facts in memory (`FactTableCache`, for budget preview)
and reads them again only when the database's `FactsVersion` token says they changed:
every write of a profile or a fact changes it, as its transaction commits, whichever
way it is written."""

import contextlib
import json
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col, select

from api.main import create_app
from core.db import Reader, make_sessionmaker, reader_of
from core.settings import Environment, Settings
from domain.commitment.recovery import record_default
from domain.engine.arrays import FactTable
from domain.engine.rules import KnownFact, invalid_fact
from domain.matching import match_library
from domain.registry import facts_snapshot
from domain.registry.enterprises import (
    FACT_TABLES,
    FactTableCache,
    load_fact_table,
    read_fact,
)
from domain.registry.importer import import_content
from models.facts import FACT_KINDS
from models.matching import MatchRequest, MatchScope
from models.registry import (
    BankAccount,
    Enterprise,
    Fact,
    FactsChange,
    FactsSnapshot,
    FactsVersion,
)
from seed.reference import ensure_reference_data
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


async def _last_change(session: AsyncSession) -> list[str] | None:
    await session.commit()
    change = await session.scalar(select(FactsChange).order_by(col(FactsChange.seq).desc()))
    assert change is not None
    return change.usccs


async def test_each_change_names_the_firms_it_touched_where_it_can(session: AsyncSession) -> None:
    firm = await create_enterprise(session, facts={"mu_grade": ("B", "2025")})
    other = await create_enterprise(session, region_code="330503")
    assert await _last_change(session) == sorted([firm.uscc, other.uscc]), "firms added"

    await import_content(session, _fact_line(firm.uscc, "mu_grade", "A"), "jsonl")
    assert await _last_change(session) == [firm.uscc], "an import"
    await record_default(session, other.uscc, date(2026, 11, 2))
    assert await _last_change(session) == [other.uscc], "a default recorded"
    firm.size_class = "medium"
    assert await _last_change(session) == [firm.uscc], "a profile edited on the object"
    await session.execute(
        sa.update(Enterprise).where(col(Enterprise.uscc) == other.uscc).values(size_class="micro")
    )
    assert await _last_change(session) == [other.uscc], "an update by credit code"
    await session.execute(sa.delete(Fact).where(col(Fact.uscc).in_([firm.uscc, other.uscc])))
    assert await _last_change(session) == sorted([firm.uscc, other.uscc]), "a delete by codes"

    # A statement whose firms cannot be read off it is recorded as touching any firm.
    await session.execute(
        sa.update(Enterprise)
        .where(col(Enterprise.region_code) == "330503")
        .values(size_class="small")
    )
    assert await _last_change(session) is None, "an update by region"
    await session.execute(sa.delete(Fact).where(col(Fact.id) == -1))
    assert await _last_change(session) is None, "a delete by id"
    await session.execute(
        sa.update(Fact).where(col(Fact.uscc) == firm.uscc).values(uscc=other.uscc)
    )
    assert await _last_change(session) is None, "an update that moves facts to another firm"


def _how(cache: FactTableCache) -> str | None:
    """How the cache read its last copy (a function: mypy would narrow the attribute)."""
    return cache.last_read


def _as_read(table: FactTable) -> dict[str, dict[str, KnownFact]]:
    return {uscc: table.known_facts(row) for uscc, row in table.row_of.items()}


def _invalid_2026_fact(uscc: str, kind: str, value: object) -> Fact:
    """A fact past every validator, as a database may hold it."""
    return Fact(
        uscc=uscc,
        kind=kind,
        period="2026",
        period_end=date(2026, 12, 31),
        value=value,
        source="test",
        fetched_at=datetime.now(UTC),
    )


async def test_a_kept_copy_is_patched_with_the_changed_firms_to_what_a_full_read_gives(
    session: AsyncSession,
) -> None:
    firms = [
        await create_enterprise(
            session, facts={"mu_grade": ("B", "2025"), "talent_count": (3, "2025")}
        )
        for _ in range(4)
    ]
    await session.commit()
    cache = FactTableCache()
    before, _ = await cache.load(session)
    assert _how(cache) == "whole"

    # A text value the copy's dictionary lacks, an int changed, a fact made invalid
    # (past every validator, as a database may hold it), a firm added, a firm removed.
    await import_content(session, _fact_line(firms[0].uscc, "mu_grade", "D"), "jsonl")
    await import_content(session, _fact_line(firms[1].uscc, "talent_count", 40), "jsonl")
    session.add(_invalid_2026_fact(firms[2].uscc, "mu_grade", "Z"))
    added = await create_enterprise(
        session, region_code="330503", facts={"mu_grade": ("C", "2025")}
    )
    await session.execute(sa.delete(Fact).where(col(Fact.uscc) == firms[3].uscc))
    await session.execute(sa.delete(BankAccount).where(col(BankAccount.uscc) == firms[3].uscc))
    await session.delete(await session.get(Enterprise, firms[3].uscc))
    await session.commit()

    patched, regions = await cache.load(session)
    assert _how(cache) == "patched"
    whole, whole_regions = await load_fact_table(session)
    assert _as_read(patched) == _as_read(whole)
    assert patched.uscc == whole.uscc  # in credit-code order, as match runs compare rows
    assert regions == whole_regions
    assert added.uscc in patched.row_of and firms[3].uscc not in patched.row_of
    assert patched.known_facts(patched.row_of[firms[0].uscc])["mu_grade"].value == "D"
    assert patched.known_facts(patched.row_of[firms[2].uscc])["mu_grade"].invalid is not None
    # The copy read before is left as it was, for whoever still reads it.
    assert before.known_facts(before.row_of[firms[0].uscc])["mu_grade"].value == "B"
    assert firms[3].uscc in before.row_of

    await session.execute(
        sa.update(Enterprise)
        .where(col(Enterprise.size_class) == "small")
        .values(size_class="micro")
    )
    await session.commit()
    again, _ = await cache.load(session)
    assert _how(cache) == "whole"  # firms not named: everything read again
    assert _as_read(again) == _as_read((await FactTableCache().load(session))[0])


async def test_a_copy_of_another_database_is_never_patched(session: AsyncSession) -> None:
    """A copy patched forward only from the change whose token it holds: a database
    made again at the same address, at the same count of changes, is read whole."""
    await create_enterprise(session, facts={"mu_grade": ("B", "2025")})
    await session.commit()
    cache = FactTableCache()
    await cache.load(session)
    seq = await session.scalar(select(FactsVersion.seq))
    assert seq is not None
    # What a new database would hold: the same count, another token for it.
    await session.execute(
        sa.update(FactsChange).where(col(FactsChange.seq) == seq).values(token="0" * 32)
    )
    await create_enterprise(session)
    await session.commit()
    await cache.load(session)
    assert _how(cache) == "whole"


async def test_an_api_process_can_read_every_firms_facts_as_it_starts(
    own_engine: AsyncEngine,
) -> None:
    """`ZHIDA_PRELOAD_FACTS`: the copy is read in the background as the app starts, so the
    first budget preview finds it kept."""
    async with make_sessionmaker(own_engine).begin() as session:
        await ensure_reference_data(session)
        firm = await create_enterprise(session, facts={"mu_grade": ("B", "2025")})
    url = own_engine.url.render_as_string(hide_password=False)
    settings = Settings(environment=Environment.TEST, database_url=url, preload_facts=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.facts_preload
        async with app.state.bulk_read_sessionmaker() as reading:
            table, _ = await FACT_TABLES.load(reading)
        assert FACT_TABLES.last_read == "kept"
        assert firm.uscc in table.row_of
    # A worker's match run stores the snapshot (a process of its own: its own cache);
    # the next API process starts from it.
    sessionmaker = make_sessionmaker(own_engine)
    async with reader_of(sessionmaker)() as reading:
        await FactTableCache().load(reading, sessionmaker)
    FACT_TABLES.clear()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.facts_preload
        assert _how(FACT_TABLES) == "stored"


async def test_a_copy_behind_a_pruned_change_or_too_many_firms_is_read_whole(
    session: AsyncSession,
) -> None:
    firms = [await create_enterprise(session) for _ in range(2)]
    await session.commit()
    cache = FactTableCache()
    await cache.load(session)
    for firm in firms:
        firm.size_class = "medium"
        await session.commit()
    # The first change after the copy's is gone (pruned: the last KEPT_CHANGES kept).
    seq = await session.scalar(select(FactsVersion.seq))
    assert seq is not None
    await session.execute(sa.delete(FactsChange).where(col(FactsChange.seq) == seq - 1))
    await session.commit()
    await cache.load(session)
    assert _how(cache) == "whole"

    cache.PATCH_UP_TO = 1
    for firm in firms:
        firm.size_class = "small"
    await session.commit()
    await cache.load(session)
    assert _how(cache) == "whole"  # two firms touched, more than it patches
    firms[0].size_class = "micro"
    await session.commit()
    await cache.load(session)
    assert _how(cache) == "patched"


# ----- the stored snapshot a cold process starts from ------------------------------------


def _writer(session: AsyncSession) -> Reader:
    return lambda: contextlib.nullcontext(session)


async def _snapshot_seq(session: AsyncSession) -> int | None:
    return await session.scalar(select(FactsSnapshot.seq))


async def _firms_with_every_kind_of_fact(session: AsyncSession) -> list[Enterprise]:
    """Text and numeric facts, a fact past every validator (invalid), a firm without."""
    firms = [
        await create_enterprise(
            session, facts={"mu_grade": ("B", "2025"), "talent_count": (3, "2025")}
        )
        for _ in range(3)
    ]
    firms.append(await create_enterprise(session, region_code="330503"))
    session.add(_invalid_2026_fact(firms[2].uscc, "talent_count", "many"))
    await session.commit()
    return firms


async def test_a_cold_process_starts_from_the_stored_snapshot_to_what_a_full_read_gives(
    session: AsyncSession,
) -> None:
    firms = await _firms_with_every_kind_of_fact(session)
    first = FactTableCache()
    await first.load(session, _writer(session))
    assert _how(first) == "whole"
    assert await _snapshot_seq(session) == await session.scalar(select(FactsVersion.seq))

    cold = FactTableCache()
    table, regions = await cold.load(session)  # nothing changed since: the snapshot as it is
    assert _how(cold) == "stored" and cold.from_snapshot
    whole, whole_regions = await load_fact_table(session)
    assert _as_read(table) == _as_read(whole) and regions == whole_regions
    assert table.invalid_facts() == whole.invalid_facts() != []

    await import_content(session, _fact_line(firms[0].uscc, "mu_grade", "D"), "jsonl")
    added = await create_enterprise(session, facts={"talent_count": (9, "2025")})
    await session.commit()
    cold = FactTableCache()
    table, regions = await cold.load(session)
    assert _how(cold) == "patched" and cold.from_snapshot
    whole, whole_regions = await load_fact_table(session)
    assert _as_read(table) == _as_read(whole) and regions == whole_regions
    assert table.known_facts(table.row_of[firms[0].uscc])["mu_grade"].value == "D"
    assert added.uscc in table.row_of


async def test_a_snapshot_is_stored_again_once_far_behind(session: AsyncSession) -> None:
    firms = await _firms_with_every_kind_of_fact(session)
    cache = FactTableCache()
    cache.RESTORE_AFTER = 2
    store = _writer(session)
    await cache.load(session, store)
    stored = await _snapshot_seq(session)
    assert stored is not None
    other = FactTableCache()  # another process's, started from the same snapshot
    other.RESTORE_AFTER = 2
    await other.load(session, store)
    assert _how(other) == "stored"
    firms[0].size_class = "medium"
    await session.commit()
    await cache.load(session, store)
    assert _how(cache) == "patched" and await _snapshot_seq(session) == stored
    firms[1].size_class = "medium"
    await session.commit()
    await cache.load(session, store)
    assert _how(cache) == "patched" and await _snapshot_seq(session) == stored + 2
    # A process without a store (or whose copy is not newer) never replaces it.
    firms[1].size_class = "micro"
    await session.commit()
    await FactTableCache().load(session)
    assert await _snapshot_seq(session) == stored + 2
    # The other process, three changes past the snapshot it read, finds one stored
    # since that is less than two behind its copy: it stores none.
    await other.load(session, store)
    assert _how(other) == "patched" and await _snapshot_seq(session) == stored + 2
    firms[0].size_class = "micro"
    await session.commit()
    await other.load(session, store)
    assert await _snapshot_seq(session) == stored + 4


async def test_a_snapshot_it_cannot_use_is_passed_over_and_replaced(
    session: AsyncSession,
) -> None:
    firms = await _firms_with_every_kind_of_fact(session)
    store = _writer(session)
    await FactTableCache().load(session, store)
    seq = await _snapshot_seq(session)

    # Written by another release (another reading of the facts): read whole, replaced.
    await session.execute(sa.update(FactsSnapshot).values(layout="another"))
    await session.commit()
    cache = FactTableCache()
    await cache.load(session, store)
    assert _how(cache) == "whole"
    assert await session.scalar(select(FactsSnapshot.layout)) == facts_snapshot.LAYOUT

    # Unreadable bytes: read whole, and the next write's whole read replaces them.
    await session.execute(sa.update(FactsSnapshot).values(data=b"not a snapshot"))
    await session.commit()
    cache = FactTableCache()
    await cache.load(session)
    assert _how(cache) == "whole"

    # Behind a change no longer kept: read whole, and stored at the version read.
    firms[0].size_class = "medium"
    await session.commit()
    await session.execute(sa.delete(FactsChange).where(col(FactsChange.seq) == seq))
    await session.commit()
    cache = FactTableCache()
    await cache.load(session, store)
    assert _how(cache) == "whole" and not cache.from_snapshot
    assert await _snapshot_seq(session) == await session.scalar(select(FactsVersion.seq))
    await FactTableCache().load(session)
    table, _ = await FactTableCache().load(session)
    assert table.known_facts(table.row_of[firms[0].uscc])["size_class"].value == "medium"


def test_a_snapshot_reads_back_as_the_table_it_was() -> None:
    facts = {
        "mu_grade": KnownFact("A", date(2025, 12, 31)),
        "talent_count": KnownFact(12, date(2025, 12, 31)),
        "tax_per_mu_fen": KnownFact(10**12, date(2025, 12, 31)),
        "size_class": KnownFact("small"),
        "established_on": KnownFact(date(2003, 5, 1)),
        "social_security_headcount": invalid_fact("-3", "must be at least 0", date(2025, 12, 31)),
    }
    table = FactTable.build([("91330500MA2B000001", facts), ("91330500MA2B000002", {})])
    regions = {"91330500MA2B000001": "330502", "91330500MA2B000002": "330503"}
    again, again_regions = facts_snapshot.load(facts_snapshot.dump(table, regions))
    assert _as_read(again) == _as_read(table) and again_regions == regions
    assert again.invalid_facts() == table.invalid_facts() != []
    empty, no_regions = facts_snapshot.load(facts_snapshot.dump(FactTable.build([]), {}))
    assert len(empty) == 0 and no_regions == {}


async def test_a_nightly_run_stores_the_snapshot_and_a_cold_worker_starts_from_it(
    own_engine: AsyncEngine,
) -> None:
    """The match run reads every firm's facts through the process's copy: a worker's
    first run stores it, a worker started later reads it and the firms changed since."""
    sessionmaker = make_sessionmaker(own_engine)
    async with sessionmaker.begin() as session:
        await ensure_reference_data(session)
        await create_enterprise(session, facts={"mu_grade": ("B", "2025")})
    request = MatchRequest(scope=MatchScope.FULL)
    FACT_TABLES.clear()
    first = await match_library.run(sessionmaker, request, "t-1", date(2026, 11, 30), 1)
    async with sessionmaker() as session:
        assert await _snapshot_seq(session) == await session.scalar(select(FactsVersion.seq))

    async with sessionmaker.begin() as session:
        added = await create_enterprise(session, facts={"mu_grade": ("A", "2025")})
    FACT_TABLES.clear()  # a worker started since
    again = await match_library.run(sessionmaker, request, "t-2", date(2026, 11, 30), 1)
    assert FACT_TABLES.from_snapshot and _how(FACT_TABLES) == "patched"
    assert again.firms == first.firms + 1
    async with sessionmaker() as session:
        table, _ = await FACT_TABLES.load(session)
    assert _how(FACT_TABLES) == "kept"
    assert table.known_facts(table.row_of[added.uscc])["mu_grade"].value == "A"


async def test_an_older_copy_never_replaces_a_newer_snapshot_and_an_unreadable_one_is_replaced(
    session: AsyncSession,
) -> None:
    firms = await _firms_with_every_kind_of_fact(session)
    store = _writer(session)
    behind = FactTableCache()
    await behind.load(session, store)  # whole, stored at the version
    seq = await _snapshot_seq(session)
    assert seq is not None
    firms[0].size_class = "medium"
    await session.commit()
    ahead = FactTableCache()
    ahead.RESTORE_AFTER = 1
    await ahead.load(session, store)
    assert _how(ahead) == "patched" and await _snapshot_seq(session) == seq + 1
    # A copy read whole at the older version, stored late (a slow process, which took
    # the newer one for unreadable): the upsert itself keeps it out.
    key = _database_key(session)
    behind._unreadable[key] = seq + 1
    await behind._store(session, store, key, behind._kept[key], 1)
    assert await _snapshot_seq(session) == seq + 1

    # Bytes no one can read, at the current version: the next whole read replaces them.
    await session.execute(sa.update(FactsSnapshot).values(data=b"not a snapshot"))
    await session.commit()
    cold = FactTableCache()
    await cold.load(session, store)
    assert _how(cold) == "whole"
    cold = FactTableCache()
    await cold.load(session)
    assert _how(cold) == "stored"


def _database_key(session: AsyncSession) -> str:
    """The key `FactTableCache` keeps a database's copy under."""
    return session.get_bind().engine.url.render_as_string(hide_password=True)


def test_an_invalid_fact_of_any_text_survives_the_snapshot() -> None:
    """A stored value is kept as text when invalid, a lone surrogate included (JSON
    allows the escape; UTF-8 cannot encode it)."""
    broken = read_fact(FACT_KINDS["mu_grade"], '"\\ud800"', date(2025, 12, 31))
    assert broken.invalid is not None
    table = FactTable.build([("91330500MA2B000001", {"mu_grade": broken})])
    again, _ = facts_snapshot.load(facts_snapshot.dump(table, {"91330500MA2B000001": "330502"}))
    assert again.invalid_facts() == table.invalid_facts()
