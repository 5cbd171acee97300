"""Policy intake against the policy feed simulator, on both databases: the adapter's
failures, a harvest that keeps every document once with every version and source, a
cursor that survives a crash, amendments and repeals as alerts to the item's department
(the item untouched), and the scheduled workflow end to end."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col, select
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.harvest import HarvestActivities
from adapters.policy_feed import PolicyFeedClient, PolicyFeedRefused, PolicyFeedUnavailable
from cli.schedules import ensure_schedules
from core.db import make_sessionmaker
from domain.policy import harvest, library
from models.notices import Notice
from models.policy import ItemCreate, PolicyItemVersion, VersionStatus
from models.policy_feed import (
    AlertKind,
    FeedCursor,
    HarvestedDocument,
    HarvestedSource,
    HarvestedVersion,
    HarvestReport,
    PolicyAlert,
)
from simulators.policy_feed import publications
from tests.fixtures.factories import create_users, item_payload
from tests.fixtures.temporal import drop_schedules
from tests.history_store import keep_history
from workflows import facts_sync
from workflows import harvest as harvest_workflow
from workflows.harvest import HarvestInput, PolicyHarvestWorkflow

AMENDED = "湖经信〔2025〕18号"  # amended by 湖经信〔2025〕41号
REPEALED = "长政发〔2024〕8号"  # repealed by 长政发〔2026〕3号
REPUBLISHED = "财建〔2024〕236号"  # on the ministry's portal and the province's
CORRECTED = "德政办发〔2025〕15号"  # revision 2 corrects an amount


async def release(simulator: httpx.AsyncClient, count: int | None, **dials: Any) -> None:
    response = await simulator.put(
        "/v1/_simulator/config", json={"seed": 7, "released": count, **dials}
    )
    assert response.status_code == 200, response.text


async def harvest_all(
    session: AsyncSession, feed: PolicyFeedClient, name: str, limit: int = 7
) -> HarvestReport:
    total = HarvestReport()
    while True:
        after = await harvest.cursor_of(session, name)
        page = await feed.page(after, limit)
        report = await harvest.store_page(session, name, after, page)
        for field, value in report:
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(total, field, getattr(total, field) + value)
        if not page.has_more:
            return total


async def count(session: AsyncSession, table: Any) -> int:
    return int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def document(session: AsyncSession, doc_number: str) -> HarvestedDocument:
    found = await session.scalar(
        select(HarvestedDocument).where(HarvestedDocument.doc_number == doc_number)
    )
    assert found is not None, doc_number
    return found


async def test_the_adapter_pages_with_the_cursor_and_names_its_failures(
    policy_feed_simulator: httpx.AsyncClient,
) -> None:
    feed = PolicyFeedClient(policy_feed_simulator)
    first = await feed.page(None, 5)
    assert len(first.items) == 5 and first.has_more
    second = await feed.page(first.next_cursor, 5)
    assert [p.published_at for p in first.items + second.items] == sorted(
        p.published_at for p in first.items + second.items
    )
    assert {p.source_url for p in first.items}.isdisjoint(p.source_url for p in second.items)
    everything = await feed.page(None, 100)
    assert len(everything.items) == len(publications()) and not everything.has_more

    with pytest.raises(PolicyFeedRefused) as refused:
        await feed.page("bm90LWEtY3Vyc29y", 5)
    assert refused.value.status_code == 400
    await release(policy_feed_simulator, None, failure_rate=1.0)
    with pytest.raises(PolicyFeedUnavailable):
        await feed.page(None, 5)
    await release(policy_feed_simulator, None)
    gone = PolicyFeedClient(httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=1))
    with pytest.raises(PolicyFeedUnavailable):
        await gone.page(None, 5)


async def test_a_harvest_keeps_every_document_once_with_its_versions_and_sources(
    session: AsyncSession, policy_feed_simulator: httpx.AsyncClient
) -> None:
    feed = PolicyFeedClient(policy_feed_simulator)
    served = publications()
    documents = {(p.issuer, p.doc_number) for p in served}
    portals = {(p.issuer, p.doc_number, p.portal) for p in served}

    # Published in two steps: the second harvest reads only what came out since.
    await release(policy_feed_simulator, 12)
    early = await harvest_all(session, feed, "feed-a")
    assert early.publications == 12
    await release(policy_feed_simulator, None)
    late = await harvest_all(session, feed, "feed-a")
    assert late.publications == len(served) - 12
    assert early.new_documents + late.new_documents == len(documents)
    assert await count(session, HarvestedDocument) == len(documents)
    assert await count(session, HarvestedSource) == len(portals)
    # One version each, but the corrected document's two.
    assert await count(session, HarvestedVersion) == len(documents) + 1

    republished = await document(session, REPUBLISHED)
    assert republished.versions == 1
    sources = await session.scalars(
        select(HarvestedSource.portal).where(HarvestedSource.document_id == republished.id)
    )
    assert sorted(sources) == ["mof", "zhejiang-czt"]
    corrected = await document(session, CORRECTED)
    versions = list(
        await session.scalars(
            select(HarvestedVersion)
            .where(HarvestedVersion.document_id == corrected.id)
            .order_by(col(HarvestedVersion.version))
        )
    )
    assert [(v.version, v.revision) for v in versions] == [(1, 1), (2, 2)]
    assert versions[0].content != versions[1].content
    amendment = await document(session, "湖经信〔2025〕41号")
    assert amendment.amends_id == (await document(session, AMENDED)).id
    repeal = await document(session, "长政发〔2026〕3号")
    assert (await document(session, REPEALED)).repealed_by_id == repeal.id

    # Read again from the start (a lost cursor): nothing new is kept.
    again = await harvest_all(session, feed, "feed-b", limit=20)
    assert again.publications == len(served)
    assert (again.new_documents, again.new_versions, again.new_sources) == (0, 0, 0)
    assert await count(session, HarvestedVersion) == len(documents) + 1


async def test_a_publication_out_of_shape_is_skipped_and_reported_and_the_feed_goes_on(
    session: AsyncSession, policy_feed_simulator: httpx.AsyncClient
) -> None:
    await release(policy_feed_simulator, None, malformed_rate=0.2)
    report = await harvest_all(session, PolicyFeedClient(policy_feed_simulator), "feed-bad")
    served = len(publications())
    assert 0 < report.rejected < served and report.publications + report.rejected == served
    row = await session.get(FeedCursor, "feed-bad")
    assert row is not None and row.items == served  # read past them: nothing is stuck
    assert await count(session, HarvestedDocument) < len({p.key.doc_number for p in publications()})


async def test_a_page_lost_to_a_crash_is_fetched_again_and_a_stale_one_is_not_stored(
    engine: AsyncEngine, policy_feed_simulator: httpx.AsyncClient
) -> None:
    feed = PolicyFeedClient(policy_feed_simulator)
    name = f"feed-{uuid.uuid4().hex[:8]}"
    async with engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint")
        page = await feed.page(None, 5)
        # The worker dies after storing the page, before the commit: all of it goes.
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await harvest.store_page(session, name, None, page)
                raise RuntimeError("worker killed")
        assert await harvest.cursor_of(session, name) is None
        stored = await harvest.store_page(session, name, None, page)
        assert stored.publications == 5
        cursor = await harvest.cursor_of(session, name)
        assert cursor == page.next_cursor
        # The same page again under the old cursor (a second harvest that read it too):
        # not stored, the cursor not moved back.
        stale = await harvest.store_page(session, name, None, page)
        assert stale.publications == 0 and stale.has_more
        row = await session.get(FeedCursor, name)
        assert row is not None and row.cursor == cursor and row.pages == 1
        await outer.rollback()


async def test_an_amendment_or_a_repeal_warns_the_items_department_and_changes_nothing(
    session: AsyncSession, policy_feed_simulator: httpx.AsyncClient
) -> None:
    users = await create_users(session)
    staff = users["jxj_staff"]
    codes = {}
    for doc_number, code in ((AMENDED, "HV-AMEND-01"), (REPEALED, "HV-REPEAL-01")):
        payload = item_payload(code)
        payload["document"] = payload["document"] | {"doc_number": doc_number}
        await library.create_item(session, staff, ItemCreate.model_validate(payload))
        codes[doc_number] = code

    report = await harvest_all(session, PolicyFeedClient(policy_feed_simulator), "feed-c")
    assert report.alerts == 2
    alerts = {
        a.item_code: a
        for a in await session.scalars(select(PolicyAlert).order_by(col(PolicyAlert.id)))
    }
    assert alerts["HV-AMEND-01"].kind == AlertKind.AMENDED
    assert alerts["HV-REPEAL-01"].kind == AlertKind.REPEALED
    assert alerts["HV-REPEAL-01"].department_code == "330500-JXJ"
    assert "长政发〔2026〕3号" in alerts["HV-REPEAL-01"].message
    assert "暂停" in alerts["HV-REPEAL-01"].message

    notices = list(
        await session.scalars(select(Notice).where(Notice.subject == "policy/HV-REPEAL-01"))
    )
    recipients = {n.recipient for n in notices}
    assert "jxj_staff" in recipients and "kjj_staff" not in recipients
    assert all(n.title == "政策文件已废止，请暂停或替换事项" for n in notices)

    # The items are as they were: drafts, untouched.
    for code in codes.values():
        row = await session.scalar(
            select(PolicyItemVersion).where(PolicyItemVersion.item_code == code)
        )
        assert row is not None and row.status == VersionStatus.DRAFT
    # The feed served again: no second alert, no second notice.
    again = await harvest_all(session, PolicyFeedClient(policy_feed_simulator), "feed-d")
    assert again.alerts == 0
    assert await count(session, PolicyAlert) == 2


async def test_the_scheduled_harvest_reads_the_feed_through_its_failures_once(
    own_engine: AsyncEngine,
    dev_server: WorkflowEnvironment,
    policy_feed_simulator: httpx.AsyncClient,
) -> None:
    sessionmaker = make_sessionmaker(own_engine)
    queue = f"harvest-{uuid.uuid4()}"
    client = dev_server.client
    await ensure_schedules(client, queue)
    described = await client.get_schedule_handle(harvest_workflow.SCHEDULE_ID).describe()
    facts = await client.get_schedule_handle(facts_sync.SCHEDULE_ID).describe()
    await drop_schedules(client)
    assert isinstance(facts.schedule.action, ScheduleActionStartWorkflow)
    assert facts.schedule.action.workflow == "FactSyncWorkflow"
    assert described.schedule.spec.time_zone_name == "Asia/Shanghai"
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "PolicyHarvestWorkflow"

    await release(policy_feed_simulator, None, failure_rate=0.3)
    activities = HarvestActivities(sessionmaker, PolicyFeedClient(policy_feed_simulator))
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PolicyHarvestWorkflow],
        activities=[activities.harvest_page],
    ):
        first = await client.start_workflow(
            PolicyHarvestWorkflow.run,
            HarvestInput(),
            id=f"harvest-{uuid.uuid4()}",
            task_queue=queue,
        )
        report = await first.result()
        second = await client.execute_workflow(
            PolicyHarvestWorkflow.run,
            HarvestInput(),
            id=f"harvest-{uuid.uuid4()}",
            task_queue=queue,
        )
    await keep_history(client, first, "policy-harvest")
    assert report.publications == len(publications()) and not report.has_more
    assert report.new_versions == report.new_documents + 1
    assert second.publications == 0 and second.new_versions == 0
    async with sessionmaker() as session:
        assert await count(session, HarvestedVersion) == report.new_versions


async def test_a_change_harvested_before_the_document_it_changes_is_applied_when_it_arrives(
    session: AsyncSession, policy_feed_simulator: httpx.AsyncClient
) -> None:
    users = await create_users(session)
    payload = item_payload("HV-LATE-01")
    payload["document"] = payload["document"] | {"doc_number": "湖测〔2026〕9号"}
    await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
    feed = PolicyFeedClient(policy_feed_simulator)
    await harvest_all(session, feed, "feed-late")
    model = publications()[0].model_dump(mode="json")
    base = model | {
        "doc_number": "湖测〔2026〕9号",
        "issuer": "湖州市测试局",
        "published_at": "2026-11-25T10:00:00+08:00",
    }
    key = {"doc_number": base["doc_number"], "issuer": base["issuer"]}
    amendment = model | {
        "doc_number": "湖测〔2026〕10号",
        "issuer": "湖州市测试局",
        "published_at": "2026-11-20T10:00:00+08:00",
        "amends": key,
    }
    repeal = model | {
        "doc_number": "湖测〔2026〕11号",
        "issuer": "湖州市测试局",
        "published_at": "2026-11-21T10:00:00+08:00",
        "repeals": [key],
    }
    for early in (amendment, repeal):  # the portals publish the changes first
        assert (
            await policy_feed_simulator.post("/v1/_simulator/publications", json=early)
        ).status_code == 201
    early_report = await harvest_all(session, feed, "feed-late")
    assert (early_report.publications, early_report.alerts) == (2, 0)

    assert (
        await policy_feed_simulator.post("/v1/_simulator/publications", json=base)
    ).status_code == 201
    late = await harvest_all(session, feed, "feed-late")
    assert late.new_documents == 1 and late.alerts == 2  # amended, then repealed
    arrived = await document(session, "湖测〔2026〕9号")
    assert arrived.repealed_by_id == (await document(session, "湖测〔2026〕11号")).id
    assert (await document(session, "湖测〔2026〕10号")).amends_id == arrived.id
    kinds = sorted(
        a.kind
        for a in await session.scalars(
            select(PolicyAlert).where(PolicyAlert.item_code == "HV-LATE-01")
        )
    )
    assert kinds == ["amended", "repealed"]
