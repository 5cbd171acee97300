"""Recognition batches and cases under time and trouble: the reminder and the expiry
(time-skipping server), a batch that continues as new and survives its worker being
replaced mid-way, a quota exhausted mid-batch, a returned payment paid again. All with
the real activities, database and simulators."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from adapters.budget_system import BudgetSystemClient
from adapters.message_channel import MessageChannelClient
from core.workdays import WorkingCalendar
from domain.recognition import batches
from models.budget import BudgetQuota, LedgerEntry, LedgerKind
from models.cases import CaseState
from models.notices import Notice
from models.recognition import BatchProgress, BatchSource, recognition_case_id
from models.reference import Actor, Role
from models.registry import BankAccount
from tests.fixtures.api import auth
from tests.fixtures.stack import Stack
from tests.history_store import keep_history
from tests.test_recognition_e2e import AMOUNT, firm, match, reach, recognition_item
from workers.main import build_worker
from workflows.starts import start_recognition_batch

STAFF = Actor(name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ")
STRAIGHT = {"straight_through": True, "confirmation": "unless_verified"}


def worker(stack: Stack, client: Client, queue: str) -> Worker:
    return build_worker(
        client,
        queue,
        stack.sessionmaker,
        WorkingCalendar(),
        BudgetSystemClient(stack.budget_http),
        MessageChannelClient(stack.channel_http),
        stack.data_platform(),
    )


async def start(
    stack: Stack,
    client: Client,
    queue: str,
    code: str,
    follow_every_s: int = 1,
    page_size: int = 200,
    history_limit: int = 10_000,
) -> Any:
    async with stack.sessionmaker.begin() as session:
        batch = await batches.start_batch(
            session, STAFF, code, "2026", datetime.now(UTC).date(), BatchSource.LIBRARY
        )
    return await start_recognition_batch(
        client,
        queue,
        batch,
        follow_every_s=follow_every_s,
        page_size=page_size,
        history_limit=history_limit,
    )


async def paid_ledger(stack: Stack, code: str) -> dict[str, int]:
    """Paid ledger entries per case of the item."""
    async with stack.sessionmaker() as session:
        rows = await session.execute(
            select(LedgerEntry.case_id, sa.func.count())
            .where(col(LedgerEntry.item_code) == code, col(LedgerEntry.kind) == LedgerKind.RECEIPT)
            .group_by(col(LedgerEntry.case_id))
        )
        return {case_id: int(n) for case_id, n in rows}


async def quota_of(stack: Stack, code: str) -> BudgetQuota:
    async with stack.sessionmaker() as session:
        quota = await session.get(BudgetQuota, (code, 2026), populate_existing=True)
        assert quota is not None
        return quota


async def test_a_firm_that_never_confirms_is_reminded_then_expires(
    stack: Stack, own_time_skipping: WorkflowEnvironment
) -> None:
    code = await recognition_item(
        stack, terms={"straight_through": True, "remind_after_days": 3, "expire_after_days": 10}
    )
    uscc = await firm(stack, code)
    await match(stack, code)
    queue = f"recognition-{uuid.uuid4()}"
    client = own_time_skipping.client
    async with worker(stack, client, queue):
        # Skipped time: the batch looks at its cases once a day, not every second.
        batch = await start(stack, client, queue, code, follow_every_s=86_400)
        await reach(own_time_skipping, recognition_case_id(code, "2026", uscc), "confirmation")
        result: BatchProgress = await batch.result()
        case = client.get_workflow_handle(
            recognition_case_id(code, "2026", uscc), result_type=CaseState
        )
        final: CaseState = await case.result()
    assert result.expired == 1
    assert final.stage.value == "expired"
    actions = [e.action for e in final.timeline]
    assert actions.index("reminded") < actions.index("expired")
    reminded = next(e for e in final.timeline if e.action == "reminded")
    notified = next(e for e in final.timeline if e.action == "notified")
    assert round((reminded.at - notified.at).total_seconds() / 86_400) == 3
    assert round((final.timeline[-1].at - notified.at).total_seconds() / 86_400) == 10
    quota = await quota_of(stack, code)
    assert (quota.reserved_fen, quota.paid_fen) == (0, 0)  # the reservation went back
    async with stack.sessionmaker() as session:
        titles = list(
            await session.scalars(select(Notice.title).where(col(Notice.recipient) == f"u{uscc}"))
        )
    assert any("提醒" in t for t in titles) and any("期限已过" in t for t in titles), titles
    await keep_history(client, case, "recognition-reminded-expired")


async def test_a_large_batch_continues_as_new_and_survives_a_new_worker(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    """Pages of 3 cases, a history limit of 40 events: the batch continues as new
    several times; its worker is replaced mid-way; every firm is paid exactly once."""
    code = await recognition_item(stack, terms=STRAIGHT)
    firms = [await firm(stack, code, verified=True) for _ in range(12)]
    await match(stack, code)
    queue = f"recognition-{uuid.uuid4()}"
    client = dev_server.client
    async with worker(stack, client, queue):
        batch = await start(stack, client, queue, code, page_size=3, history_limit=40)
        first_run = batch.first_execution_run_id
        await reach(dev_server, recognition_case_id(code, "2026", firms[2]), "paid")
    # The worker is gone mid-batch; a new one takes over.
    async with worker(stack, client, queue):
        result: BatchProgress = await client.get_workflow_handle(
            batch.id, result_type=BatchProgress
        ).result()
    assert (result.paid, result.paid_fen) == (12, 12 * AMOUNT)
    ledger = await paid_ledger(stack, code)
    assert sorted(ledger) == sorted(recognition_case_id(code, "2026", u) for u in firms)
    assert set(ledger.values()) == {1}  # paid once each
    history = await client.get_workflow_handle(batch.id, run_id=first_run).fetch_history()
    last = history.events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert len(history.events) < 80


async def test_quota_exhausted_mid_batch_waits_and_never_overspends(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = await recognition_item(stack, terms=STRAIGHT, quota_fen=2 * AMOUNT + AMOUNT // 2)
    firms = [await firm(stack, code, verified=True) for _ in range(4)]
    await match(stack, code)
    started = await stack.api.post(
        f"/api/v1/items/{code}/recognition-batches",
        json={"item_code": code, "period": "2026"},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert started.status_code == 201, started.text
    stages: list[str] = []
    for _ in range(300):
        states = (
            [
                await dev_server.client.get_workflow_handle(
                    recognition_case_id(code, "2026", u)
                ).query("state", result_type=CaseState)
                for u in firms
            ]
            if await _all_started(dev_server.client, code, firms)
            else []
        )
        stages = sorted(s.stage.value for s in states)
        if stages == ["awaiting_budget", "awaiting_budget", "paid", "paid"]:
            break
        await asyncio.sleep(0.1)
    assert stages == ["awaiting_budget", "awaiting_budget", "paid", "paid"]
    quota = await quota_of(stack, code)
    assert quota.paid_fen + quota.reserved_fen <= quota.quota_fen
    raised = await stack.api.put(
        f"/api/v1/items/{code}/quota/2026",
        json={"quota_fen": 4 * AMOUNT},
        headers=auth(stack.settings, "czj_staff"),
    )
    assert raised.status_code == 200, raised.text
    for uscc in firms:
        await reach(dev_server, recognition_case_id(code, "2026", uscc), "paid")
    quota = await quota_of(stack, code)
    assert (quota.paid_fen, quota.reserved_fen) == (4 * AMOUNT, 0)
    assert set((await paid_ledger(stack, code)).values()) == {1}


async def _all_started(client: Client, code: str, firms: list[str]) -> bool:
    for uscc in firms:
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(recognition_case_id(code, "2026", uscc)).describe()
            continue
        return False
    return True


async def test_a_returned_payment_is_paid_again_once_the_account_is_corrected(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = await recognition_item(stack, terms={})
    uscc = await firm(stack, code)
    async with stack.sessionmaker.begin() as session:  # a closed account: returned
        await session.execute(
            sa.update(BankAccount)
            .where(col(BankAccount.uscc) == uscc)
            .values(account_number="6222000011110000")
        )
    await match(stack, code)
    api, settings = stack.api, stack.settings
    started = await api.post(
        f"/api/v1/items/{code}/recognition-batches",
        json={"item_code": code, "period": "2026"},
        headers=auth(settings, "jxj_staff"),
    )
    assert started.status_code == 201, started.text
    batch = f"/api/v1/items/{code}/recognition-batches/2026/1"
    for verifier, path, body in (
        ("jxj_staff", "department-verification", {}),
        ("czj_staff", "finance-verification", {"action": "approve", "expected_total_fen": AMOUNT}),
    ):
        for _ in range(100):
            done = await api.post(f"{batch}/{path}", json=body, headers=auth(settings, verifier))
            if done.status_code != 409:  # not yet at this phase
                break
            await asyncio.sleep(0.1)
        assert done.status_code == 200, done.text
    case_id = recognition_case_id(code, "2026", uscc)
    case = f"/api/v1/cases/recognition/{code}/2026/{uscc}"
    await reach(dev_server, case_id, "confirmation")
    confirmed = await api.post(f"{case}/confirmation", json={}, headers=auth(settings, f"u{uscc}"))
    assert confirmed.status_code == 200, confirmed.text
    returned = await reach(dev_server, case_id, "account_correction")
    assert returned.timeline[-1].action == "returned"
    async with stack.sessionmaker.begin() as session:
        await session.execute(
            sa.update(BankAccount)
            .where(col(BankAccount.uscc) == uscc)
            .values(account_number="6222000011112222")
        )
    again = await api.post(f"{case}/account-confirmation", headers=auth(settings, f"u{uscc}"))
    assert again.status_code == 200, again.text
    paid = await reach(dev_server, case_id, "paid")
    assert (paid.instalment, paid.paid_amount_fen) == (2, AMOUNT)
    entries = [e for e in paid.timeline if e.action in ("department_verified", "finance_verified")]
    assert [e.actor for e in entries] == ["jxj_staff", "czj_staff"]
    await keep_history(
        dev_server.client,
        dev_server.client.get_workflow_handle(case_id),
        "recognition-returned-repaid",
    )
