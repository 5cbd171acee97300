"""The facts sync from the public data platform's change feed, on both databases: each
figure checked as the importer checks a row (a bad one reported and skipped, never
half-written), a cursor so nothing is fetched twice and a crash loses nothing, and the
scheduled workflow that re-matches the firms it changed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from adapters.budget_system import BudgetSystemClient
from adapters.data_platform import DataPlatformClient, DataPlatformRefused
from adapters.message_channel import MessageChannelClient
from core.db import make_sessionmaker
from core.workdays import WorkingCalendar
from domain.registry import sync
from models.matching import MatchRun
from models.registry import Fact
from seed.reference import ensure_reference_data
from tests.fixtures.factories import create_enterprise, new_uscc
from tests.history_store import keep_history
from workers.main import build_worker
from workflows.facts_sync import FactSyncInput, FactSyncWorkflow
from workflows.matching import MatchOutcome


def record(uscc: str, **facts: tuple[Any, str]) -> dict[str, Any]:
    return {
        "uscc": uscc,
        "legal_representative": f"rep-{uscc[-6:]}",
        "facts": {kind: {"value": value, "as_of": day} for kind, (value, day) in facts.items()},
    }


async def load(simulator: httpx.AsyncClient, *records: dict[str, Any]) -> None:
    reply = await simulator.put("/v1/_simulator/enterprises", json=list(records))
    assert reply.status_code == 200, reply.text


async def sync_all(
    session: AsyncSession, platform: DataPlatformClient, feed: str
) -> sync.SyncReport:
    total = sync.SyncReport()
    while True:
        after = await sync.cursor_of(session, feed)
        page = await platform.fact_changes(after, limit=2)
        report = await sync.store_changes(session, feed, after, page)
        total.add(report)
        if not page.has_more:
            return total


async def stored(session: AsyncSession, uscc: str) -> dict[tuple[str, str], Any]:
    rows = await session.scalars(select(Fact).where(Fact.uscc == uscc))
    return {(f.kind, f.period): f.value for f in rows}


async def test_the_sync_writes_valid_figures_skips_bad_ones_and_reads_each_change_once(
    session: AsyncSession, data_platform_simulator: httpx.AsyncClient
) -> None:
    platform = DataPlatformClient(data_platform_simulator)
    feed = f"facts-{uuid.uuid4().hex[:8]}"
    # What other tests loaded is not ours: start at the platform's end.
    assert await sync.start_at(session, await platform.end_cursor(), feed)
    assert not await sync.start_at(session, "another", feed)  # a cursor is kept

    good = await create_enterprise(session)
    other = await create_enterprise(session)
    old = await create_enterprise(session)  # a figure dated 1850: no reading
    stranger = new_uscc()  # the platform knows it; the registry does not
    await load(
        data_platform_simulator,
        record(
            good.uscc,
            tax_paid_fen=(123_456_789, "2025-12-31"),
            social_security_headcount=(88, "2026-10-31"),
            credit_rating=("A", "2026-06-30"),
            patent_count=(3, "2025-12-31"),
        ),
        record(
            other.uscc,
            credit_rating=("AAA", "2026-06-30"),
            revenue_fen=(-5, "2025-12-31"),
            tax_paid_fen=(9_000, "2025-12-31"),  # good, but the record is not: not written
        ),
        record(stranger, tax_paid_fen=(1, "2025-12-31")),
        record(old.uscc, tax_paid_fen=(5, "2025-12-31"), revenue_fen=(777, "1850-12-31")),
    )
    report = await sync_all(session, platform, feed)
    assert report.firms == 4 and report.facts_created == 3
    assert report.ignored == 1  # patents: no rule reads them
    assert report.skipped == 3 and report.changed_since is not None  # three firms' records
    reasons = {(s.uscc, s.kind): s.reason for s in report.skips}
    assert "must be one of" in reasons[(other.uscc, "credit_rating")]
    assert (other.uscc, "revenue_fen") in reasons
    assert reasons[(stranger, None)] == "the registry holds no such firm"
    assert "1850-12-31" in reasons[(old.uscc, "revenue_fen")]
    assert await stored(session, old.uscc) == {}
    assert await stored(session, good.uscc) == {
        ("tax_paid_fen", "2025"): 123_456_789,
        ("social_security_headcount", "2026-10"): 88,
        ("credit_rating", "2026-06"): "A",
    }
    assert await stored(session, other.uscc) == {}

    # Nothing new on the platform: nothing read, nothing written.
    again = await sync_all(session, platform, feed)
    assert (again.firms, again.facts_created, again.facts_updated) == (0, 0, 0)

    # One firm's figure changes: only that firm is read again, and its fact updated.
    await load(
        data_platform_simulator,
        record(
            good.uscc,
            tax_paid_fen=(200_000_000, "2025-12-31"),
            social_security_headcount=(88, "2026-10-31"),
            credit_rating=("A", "2026-06-30"),
            patent_count=(3, "2025-12-31"),
        ),
    )
    changed = await sync_all(session, platform, feed)
    assert changed.firms == 1 and changed.facts_updated == 1 and changed.unchanged == 2
    assert (await stored(session, good.uscc))[("tax_paid_fen", "2025")] == 200_000_000


async def test_a_page_lost_to_a_crash_is_read_again_and_a_bad_cursor_is_refused(
    engine: AsyncEngine, data_platform_simulator: httpx.AsyncClient
) -> None:
    platform = DataPlatformClient(data_platform_simulator)
    feed = f"facts-{uuid.uuid4().hex[:8]}"
    async with engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint")
        await ensure_reference_data(session)
        await sync.start_at(session, await platform.end_cursor(), feed)
        firm = await create_enterprise(session)
        await load(data_platform_simulator, record(firm.uscc, tax_paid_fen=(7, "2025-12-31")))
        after = await sync.cursor_of(session, feed)
        page = await platform.fact_changes(after)
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await sync.store_changes(session, feed, after, page)
                raise RuntimeError("worker killed")
        assert await sync.cursor_of(session, feed) == after
        assert await stored(session, firm.uscc) == {}
        report = await sync.store_changes(session, feed, after, page)
        assert report.facts_created == 1
        stale = await sync.store_changes(session, feed, after, page)  # stored by another
        assert stale.firms == 0 and stale.has_more
        await outer.rollback()
    with pytest.raises(DataPlatformRefused):
        await platform.fact_changes("bm90LWEtY3Vyc29y")


async def test_the_scheduled_sync_rematches_the_firms_it_changed(
    own_engine: AsyncEngine,
    dev_server: WorkflowEnvironment,
    data_platform_simulator: httpx.AsyncClient,
    budget_simulator: httpx.AsyncClient,
    channel_simulator: httpx.AsyncClient,
) -> None:
    sessionmaker = make_sessionmaker(own_engine)
    platform = DataPlatformClient(data_platform_simulator)
    async with sessionmaker.begin() as session:
        await ensure_reference_data(session)
        await sync.start_at(session, await platform.end_cursor())
        firm = await create_enterprise(session)
    await load(
        data_platform_simulator,
        record(firm.uscc, tax_paid_fen=(55_000_000, "2025-12-31"), mu_grade=("A", "2025-12-31")),
    )
    await data_platform_simulator.put(
        "/v1/_simulator/config", json={"seed": 7, "failure_rate": 0.3}
    )
    queue = f"facts-{uuid.uuid4()}"
    client = dev_server.client
    worker = build_worker(
        client,
        queue,
        sessionmaker,
        WorkingCalendar(),
        BudgetSystemClient(budget_simulator),
        MessageChannelClient(channel_simulator),
        platform,
    )
    try:
        async with worker:
            handle = await client.start_workflow(
                FactSyncWorkflow.run,
                FactSyncInput(receipt_polls_s=[]),
                id=f"facts-sync-{uuid.uuid4()}",
                task_queue=queue,
            )
            report = await handle.result()
            assert report.match_run is not None
            rematch = await client.get_workflow_handle(
                report.match_run, result_type=MatchOutcome
            ).result()
    finally:
        await data_platform_simulator.put("/v1/_simulator/config", json={"seed": 7})
    await keep_history(client, handle, "facts-sync")
    assert report.facts_created == 2 and report.firms == 1
    assert report.changed_since is not None
    assert report.match_run == f"match/firms/{report.changed_since.isoformat()}"
    assert rematch.match.firms >= 1  # the firm the sync changed was matched again
    async with sessionmaker() as session:
        count = len(await stored(session, firm.uscc))
        run = await session.scalar(select(MatchRun).where(MatchRun.workflow_id == report.match_run))
    assert count == 2 and run is not None
