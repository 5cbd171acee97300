"""Throughput of recognition cases (认定类 / 免申即享) on the embedded stack, against a bare
Temporal baseline.

Seeds N firms (facts, a bank account, a user each; a share of the accounts verified by
an earlier payment), a published straight-through recognition item with a fixed amount
and exactly enough quota, and runs the match for it. Then, on the dev server with
SQLite, the worker as its own process and the budget-system and message-channel
simulators answering at once: a department user starts the batch through the API; the
firms the cases ask to confirm their account (those never verified by a payment) do
so through the API as they appear at `confirmation` in the case list, a bounded number
at once; the clock stops when every case is paid. Then, on the same server, one bare
parent starts N bare workflows in the same pages, each with the activities, the firm's
update and the payment child (with its activities) of a real case, counted from the
histories of two real cases, and no business logic.

    python bench/recognition.py --firms 10000

Last line:

    firms=N paid=… paid_once=… double_paid=0 overspent_fen=0 seconds=… cases_per_s=…
    baseline_per_s=… ratio=… p50_to_money_s=… p95_to_money_s=…
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import uvloop
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import col
from stack import BenchStack, bench_stack, cpu_seconds, cpu_text
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker import Worker as TemporalWorker

from api.main import create_app
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.security import issue_token
from core.settings import Settings
from core.temporal import exit_after_client
from core.workdays import SHANGHAI
from domain.matching import match_library
from domain.money import budget
from domain.policy import library
from models.budget import BudgetQuota, LedgerEntry, LedgerKind
from models.cases import CaseRecord, CaseStage
from models.facts import period_end
from models.matching import MatchRequest, MatchScope
from models.policy import ItemCreate
from models.recognition import BatchInput, RecognitionBatch, recognition_case_id
from models.reference import Actor, Role, User
from models.registry import BankAccount, Enterprise, Fact
from models.uscc import make_uscc
from seed.reference import demo_users, ensure_reference_data, ensure_users
from workflows.options import RECOGNITION_SNAPSHOT
from workflows.recognition_batch import CONCURRENT_STARTS

ITEM = "RCG-BENCH"
PERIOD = "2026"
AMOUNT = 1_000_000
CHUNK = 5_000  # rows per bulk insert
# The batch's pages as the API starts it (workflows/starts.py takes the defaults).
PAGE_SIZE: int = BatchInput.model_fields["page_size"].default
HISTORY_LIMIT: int = BatchInput.model_fields["history_limit"].default
# Identifying a batch is one activity with a time limit of its own.
IDENTIFY_LIMIT_S = (RECOGNITION_SNAPSHOT["start_to_close_timeout"] or timedelta()).total_seconds()


# ----- seeding --------------------------------------------------------------------------


@dataclass(frozen=True)
class Firm:
    uscc: str
    user: str
    verified: bool  # its account was verified by an earlier payment: paid without asking


def verified(n: int, share: float) -> bool:
    """Whether firm `n` has a verified account: `share` of the firms, spread evenly."""
    return math.floor((n + 1) * share) > math.floor(n * share)


def firms_of(count: int, share: float) -> list[Firm]:
    return [
        Firm(make_uscc("91", "330502", f"B{n:08d}"), f"firm-{n}", verified(n, share))
        for n in range(count)
    ]


async def _seed(settings: Settings, firms: list[Firm]) -> None:
    """The registry, the item and its quota, and the match library's list for it."""
    await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    paid_last_year = datetime(2025, 12, 15, 2, 0, tzinfo=UTC)
    try:
        async with sessionmaker.begin() as session:
            await ensure_reference_data(session)
            await ensure_users(session, demo_users(None))
            for start in range(0, len(firms), CHUNK):
                chunk = firms[start : start + CHUNK]
                for table, rows in (
                    (Enterprise, [_enterprise(f, now) for f in chunk]),
                    (Fact, [fact for f in chunk for fact in _facts(f, now)]),
                    (BankAccount, [_account(f, now, paid_last_year) for f in chunk]),
                    (User, [_user(f, now) for f in chunk]),
                ):
                    await session.execute(sa.insert(table), rows)
            staff = Actor(
                name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ"
            )
            await library.create_item(session, staff, ItemCreate.model_validate(_item(len(firms))))
            await library.submit_version(
                session, staff, ITEM, 1, head_review_days=3, finance_review_days=5
            )
            await library.publish_version(session, ITEM, 1)
            # Exactly enough: a double payment would overspend, or leave a case waiting.
            await budget.set_quota(session, ITEM, int(PERIOD), AMOUNT * len(firms), "czj_staff")
        await match_library.run(
            sessionmaker,
            MatchRequest(scope=MatchScope.ITEM, item_code=ITEM),
            "bench-recognition-match",
            datetime.now(SHANGHAI).date(),
            2,
        )
    finally:
        await engine.dispose()


def _enterprise(firm: Firm, now: datetime) -> dict[str, Any]:
    return {
        "uscc": firm.uscc,
        "name": f"湖州认定测试{firm.uscc[-7:]}有限公司",
        "region_code": "330502",
        "industry_code": "C3411",
        "size_class": "small",
        "established_on": date(2015, 6, 1),
        "created_at": now,
        "updated_at": now,
    }


def _facts(firm: Firm, now: datetime) -> list[dict[str, Any]]:
    facts = {"credit_rating": "A", "revenue_fen": 50_000_000}
    return [
        {
            "uscc": firm.uscc,
            "kind": kind,
            "period": "2025",
            "period_end": period_end("2025"),
            "value": value,
            "source": "bench",
            "fetched_at": now,
            "imported_at": now,
        }
        for kind, value in facts.items()
    ]


def _account(firm: Firm, now: datetime, paid_last_year: datetime) -> dict[str, Any]:
    return {
        "uscc": firm.uscc,
        "bank_name": "湖州银行",
        "account_name": f"湖州认定测试{firm.uscc[-7:]}有限公司",
        # The simulator returns payments to accounts ending 0000 (closed accounts).
        "account_number": f"6222{firm.uscc[-9:-1]}1",
        "is_default": True,
        "created_at": now,
        "verified_at": paid_last_year if firm.verified else None,
    }


def _user(firm: Firm, now: datetime) -> dict[str, Any]:
    return {
        "name": firm.user,
        "display_name": "企业用户",
        "role": Role.ENTERPRISE.value,
        "enterprise_uscc": firm.uscc,
        "active": True,
        "created_at": now,
    }


def _item(firms: int) -> dict[str, Any]:
    stages = [
        {"stage": "identify", "department_code": "330500-JXJ", "working_days": 3},
        {"stage": "department_review", "department_code": "330500-JXJ", "working_days": 3},
        {"stage": "finance_review", "department_code": "330500-CZJ", "working_days": 3},
        {"stage": "payment", "department_code": "330500-CZJ", "working_days": 3},
    ]
    return {
        "code": ITEM,
        "document": {
            "doc_number": "湖政发〔2024〕8号",
            "title": "关于推动经济高质量发展的若干政策意见",
            "issuer": "湖州市人民政府",
            "level": "city",
            "issued_on": "2024-02-18",
        },
        "department_code": "330500-JXJ",
        "region_code": "330500",
        "title": "免申即享测试补助",
        "category": "recognition",
        "eligibility": {
            "all": [
                {"fact": "credit_rating", "op": "in", "value": ["A", "B"]},
                {"fact": "revenue_fen", "op": "gte", "value": 1_000_000},
            ]
        },
        "amount_rule": {"kind": "fixed", "amount_fen": AMOUNT},
        "annual_quota_fen": AMOUNT * firms,
        "stages": stages,
        "recognition": {"straight_through": True, "confirmation": "unless_verified"},
        "valid_from": "2026-01-01",
        "valid_to": "2027-12-31",
        "change_reason": "认定类基准测试",
    }


# ----- the batch, driven as the department and the firms would ----------------------------


@dataclass
class Timeline:
    """Seconds from the batch's start (t0) to each thing the benchmark saw."""

    t0: float  # time.monotonic() at the start
    t0_wall: datetime
    batch_id: str = ""
    cases: int = 0  # identified (listed and possible)
    identified_s: float | None = None  # the snapshot's time, from the batch row
    all_started_s: float | None = None  # the batch left `starting` (observed)
    first_paid_s: float | None = None
    paid_s: float = 0.0  # every case paid: t1 - t0
    closed_s: float | None = None  # the batch closed (it follows its cases periodically)
    confirmations: int = 0
    retries: int = 0
    confirm_latency: list[float] = field(default_factory=list)
    last_confirmation_s: float | None = None
    backlog: int = 0  # most firms seen waiting that no confirmer had taken yet
    failures: list[str] = field(default_factory=list)


def observer_engine(settings: Settings) -> AsyncEngine:
    """An engine for the benchmark's own reads. The platform's engine begins every
    transaction with BEGIN IMMEDIATE (the write lock, core/db.py); the benchmark's
    watching must not queue with the writers it watches, so it reads in autocommit."""
    return create_async_engine(
        settings.database_url, poolclass=NullPool, connect_args={"timeout": 30}
    )


async def _drive_batch(
    api: httpx.AsyncClient,
    settings: Settings,
    observer: AsyncEngine,
    firms: list[Firm],
    concurrency: int,
    poll_page: int,
    stall_s: float,
) -> Timeline:
    by_uscc = {f.uscc: f for f in firms}
    staff = {"Authorization": f"Bearer {issue_token(settings, 'jxj_staff')}"}
    timeline = Timeline(t0=time.monotonic(), t0_wall=datetime.now(UTC))
    started = await api.post(
        f"/api/v1/items/{ITEM}/recognition-batches",
        json={"item_code": ITEM, "period": PERIOD},
        headers=staff,
    )
    if started.status_code != 201:
        raise RuntimeError(f"batch not started: {started.status_code} {started.text[:500]}")
    timeline.batch_id = started.json()["batch_id"]
    asked: asyncio.Queue[str] = asyncio.Queue()

    async def confirmer() -> None:
        while True:
            uscc = await asked.get()
            clock = time.monotonic()
            try:
                # Awaited first: `timeline.retries += await ...` would read the count
                # before the wait and overwrite what other confirmers added meanwhile.
                resent = await _confirm(api, settings, by_uscc[uscc])
            except RuntimeError as exc:
                timeline.failures.append(str(exc))
                continue
            timeline.retries += resent
            timeline.confirm_latency.append(time.monotonic() - clock)
            timeline.confirmations += 1
            timeline.last_confirmation_s = time.monotonic() - timeline.t0

    helpers = [
        asyncio.create_task(_poll_confirmations(observer, asked, poll_page)),
        *(asyncio.create_task(confirmer()) for _ in range(concurrency)),
    ]
    try:
        await _watch(observer, timeline, asked, stall_s)
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    return timeline


async def _confirm(api: httpx.AsyncClient, settings: Settings, firm: Firm) -> int:
    """The firm confirms the account on file; returns how many times it had to retry.
    A 409 (the case is changing) and a 503 are worth sending again; the key makes the
    resend safe."""
    case_id = recognition_case_id(ITEM, PERIOD, firm.uscc)
    headers = {
        "Authorization": f"Bearer {issue_token(settings, firm.user)}",
        "Idempotency-Key": f"{case_id}:confirm",
    }
    path = f"/api/v1/cases/recognition/{ITEM}/{PERIOD}/{firm.uscc}/confirmation"
    for attempt in range(100):
        try:
            response = await api.post(path, json={}, headers=headers)
        except (httpx.HTTPError, OSError):
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 200:
            return attempt
        if response.status_code != 409 and response.status_code < 500:
            raise RuntimeError(f"confirmation of {case_id}: {response.status_code} {response.text}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"confirmation of {case_id} kept failing")


async def _poll_confirmations(observer: AsyncEngine, asked: asyncio.Queue[str], page: int) -> None:
    """Page through the cases waiting at `confirmation` (the case list a firm's inbox
    reads), handing each firm to the confirmers once."""
    seen: set[str] = set()
    after = ""
    while True:
        async with observer.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(col(CaseRecord.case_id), col(CaseRecord.uscc))
                    .where(
                        col(CaseRecord.item_code) == ITEM,
                        col(CaseRecord.stage) == CaseStage.CONFIRMATION.value,
                        col(CaseRecord.case_id) > after,
                    )
                    .order_by(col(CaseRecord.case_id))
                    .limit(page)
                )
            )
        for case_id, uscc in rows:
            if case_id not in seen:
                seen.add(case_id)
                asked.put_nowait(uscc)
        if len(rows) < page:
            after = ""
            await asyncio.sleep(0.5)
        else:
            after = rows[-1][0]


async def _watch(
    observer: AsyncEngine, timeline: Timeline, asked: asyncio.Queue[str], stall_s: float
) -> None:
    """Every second: the batch's phase and the cases by stage, until every case is paid."""
    t0 = timeline.t0
    progress: tuple[int, ...] = ()
    moved = time.monotonic()
    while True:
        await asyncio.sleep(1)
        now = time.monotonic()
        timeline.backlog = max(timeline.backlog, asked.qsize())
        stages, batch = await _stages(observer, timeline.batch_id)
        phase = batch.phase if batch is not None else None
        if batch is not None and batch.identified_at is not None and not timeline.cases:
            timeline.cases = batch.identified
            timeline.identified_s = (batch.identified_at - timeline.t0_wall).total_seconds()
        if timeline.all_started_s is None and phase in ("disbursing", "done"):
            timeline.all_started_s = now - t0
        paid = stages.get(CaseStage.PAID.value, 0)
        if paid and timeline.first_paid_s is None:
            timeline.first_paid_s = now - t0
        if timeline.cases and paid >= timeline.cases:
            timeline.paid_s = now - t0
            return
        if phase == "done" and timeline.cases == 0:
            raise RuntimeError("the batch identified no firm")
        seen = (paid, sum(stages.values()), timeline.confirmations)
        limit = stall_s if timeline.cases else max(stall_s, IDENTIFY_LIMIT_S)
        if seen != progress:
            progress, moved = seen, now
        elif now - moved > limit:
            raise RuntimeError(
                f"no progress for {limit:.0f}s: batch {phase}, cases by stage {stages}, "
                f"confirmations refused: {timeline.failures[:3]}"
            )


@dataclass(frozen=True)
class BatchRow:
    phase: str
    identified_at: datetime | None
    identified: int  # listed and possible


async def _stages(observer: AsyncEngine, batch_id: str) -> tuple[dict[str, int], BatchRow | None]:
    async with observer.connect() as conn:
        rows = await conn.execute(
            sa.select(col(CaseRecord.stage), sa.func.count())
            .where(col(CaseRecord.item_code) == ITEM)
            .group_by(col(CaseRecord.stage))
        )
        stages = {stage: int(n) for stage, n in rows}
        batch = (
            await conn.execute(
                sa.select(
                    col(RecognitionBatch.phase),
                    col(RecognitionBatch.identified_at),
                    col(RecognitionBatch.listed) + col(RecognitionBatch.possible),
                ).where(col(RecognitionBatch.batch_id) == batch_id)
            )
        ).first()
    if batch is None:
        return stages, None
    phase, identified_at, identified = batch
    return stages, BatchRow(str(phase), identified_at, int(identified))


async def _await_closed(observer: AsyncEngine, timeline: Timeline, within_s: float) -> None:
    """The batch closes at its next look at its cases (`recognition_follow_s`)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        _stages_now, batch = await _stages(observer, timeline.batch_id)
        if batch is not None and batch.phase == "done":
            timeline.closed_s = time.monotonic() - timeline.t0
            return
        await asyncio.sleep(1)


# ----- the checks -------------------------------------------------------------------------


@dataclass
class Checks:
    paid: int
    paid_once: int
    double_paid: int
    overspent_fen: int
    to_money_s: list[float]


async def _check(observer: AsyncEngine, t0_wall: datetime) -> Checks:
    async with observer.connect() as conn:
        paid = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(CaseRecord)
            .where(col(CaseRecord.item_code) == ITEM, col(CaseRecord.stage) == CaseStage.PAID.value)
        )
        receipts = Counter(
            {
                case_id: int(n)
                for case_id, n in await conn.execute(
                    sa.select(col(LedgerEntry.case_id), sa.func.count())
                    .where(
                        col(LedgerEntry.item_code) == ITEM,
                        col(LedgerEntry.kind) == LedgerKind.RECEIPT,
                    )
                    .group_by(col(LedgerEntry.case_id))
                )
            }
        )
        quota = (
            await conn.execute(
                sa.select(
                    col(BudgetQuota.quota_fen),
                    col(BudgetQuota.reserved_fen),
                    col(BudgetQuota.paid_fen),
                ).where(col(BudgetQuota.item_code) == ITEM, col(BudgetQuota.year) == int(PERIOD))
            )
        ).one()
        details = await conn.scalars(
            sa.select(col(CaseRecord.details)).where(
                col(CaseRecord.item_code) == ITEM, col(CaseRecord.stage) == CaseStage.PAID.value
            )
        )
        to_money = [
            (datetime.fromisoformat(d["moments"]["paid"]) - t0_wall).total_seconds()
            for d in details
            if d and "paid" in d.get("moments", {})
        ]
    quota_fen, reserved_fen, paid_fen = quota
    return Checks(
        paid=int(paid or 0),
        paid_once=sum(1 for n in receipts.values() if n == 1),
        double_paid=sum(1 for n in receipts.values() if n > 1),
        overspent_fen=max(0, paid_fen + reserved_fen - quota_fen),
        to_money_s=sorted(to_money),
    )


async def _batch_runs(client: Client, batch_id: str) -> list[int]:
    """The history length of each run of the batch (continue-as-new makes new runs)."""
    lengths = []
    async for run in client.list_workflows(f'WorkflowId = "{batch_id}"'):
        description = await client.get_workflow_handle(batch_id, run_id=run.run_id).describe()
        lengths.append(description.history_length)
    return lengths


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


# ----- the baseline -----------------------------------------------------------------------


class CaseShape(BaseModel):
    """A case's steps in order, read from its history: `a` an activity, `u` the firm's
    update, `c` the payment child; and the child's activities."""

    confirming: str
    verified: str
    child_activities: int


async def _case_shape(client: Client, firms: list[Firm]) -> CaseShape:
    scripts: dict[bool, str] = {}
    child = 0
    for kind in (False, True):
        firm = next((f for f in firms if f.verified is kind), None)
        if firm is None:
            continue
        case_id = recognition_case_id(ITEM, PERIOD, firm.uscc)
        scripts[kind] = await _script(client, case_id)
        payment = await client.get_workflow_handle(f"{case_id}/payment/1").fetch_history()
        child = sum(
            1
            for e in payment.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        )
    return CaseShape(
        confirming=scripts.get(False, ""), verified=scripts.get(True, ""), child_activities=child
    )


async def _script(client: Client, workflow_id: str) -> str:
    steps = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "a",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "u",
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "c",
    }
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return "".join(steps.get(e.event_type, "") for e in history.events)


STEP = workflow.ActivityConfig(start_to_close_timeout=timedelta(seconds=30))


class BareCaseInput(BaseModel):
    script: str
    child_activities: int


class BarePage(BaseModel):
    after: int
    limit: int
    firms: int


class BareBatchInput(BaseModel):
    firms: int
    verified_share: float
    shape: CaseShape
    page_size: int
    history_limit: int
    after: int = 0


class BareActivities:
    """No work; the step before the firm's update tells the bare firms the case waits,
    a case's last step counts it done."""

    def __init__(self, firms: int) -> None:
        self.waiting: asyncio.Queue[str] = asyncio.Queue()
        self.finished = asyncio.Event()
        self._firms, self.done = firms, 0

    @activity.defn
    async def page(self, request: BarePage) -> list[int]:
        return list(range(request.after, min(request.after + request.limit, request.firms)))

    @activity.defn
    async def step(self, signal: str) -> None:
        if signal == "waiting":
            self.waiting.put_nowait(activity.info().workflow_id or "")
        elif signal == "done":
            self.done += 1
            if self.done >= self._firms:
                self.finished.set()


@workflow.defn
class BareChild:
    @workflow.run
    async def run(self, activities: int) -> None:
        for _ in range(activities):
            await workflow.execute_activity_method(BareActivities.step, "", **STEP)


@workflow.defn
class BareCase:
    """A recognition case's steps with nothing in them. Update: `confirm`, which returns
    when the case starts its payment, as the real one does."""

    def __init__(self) -> None:
        self._confirmed = self._settled = False

    @workflow.run
    async def run(self, input: BareCaseInput) -> None:
        script = input.script
        last = script.rindex("a")
        for n, step in enumerate(script):
            if step == "a":
                signal = "done" if n == last else "waiting" if script[n + 1 : n + 2] == "u" else ""
                await workflow.execute_activity_method(BareActivities.step, signal, **STEP)
            elif step == "u":
                await workflow.wait_condition(lambda: self._confirmed)
            else:
                self._settled = True
                await workflow.execute_child_workflow(
                    BareChild.run,
                    input.child_activities,
                    id=f"{workflow.info().workflow_id}/payment/1",
                )
        self._settled = True
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def confirm(self) -> None:
        self._confirmed = True
        await workflow.wait_condition(lambda: self._settled)

    @confirm.validator
    def validate_confirm(self) -> None:
        if self._confirmed:
            raise ApplicationError("confirmed already")


@workflow.defn
class BareBatch:
    """Starts the bare cases a page at a time, `CONCURRENT_STARTS` at once, continuing as
    new past the history limit, as the batch workflow does."""

    @workflow.run
    async def run(self, input: BareBatchInput) -> None:
        after = input.after
        while True:
            page = await workflow.execute_activity_method(
                BareActivities.page,
                BarePage(after=after, limit=input.page_size, firms=input.firms),
                **STEP,
            )
            if not page:
                return
            for start in range(0, len(page), CONCURRENT_STARTS):
                chunk = page[start : start + CONCURRENT_STARTS]
                await asyncio.gather(*(self._start(input, n) for n in chunk))
            after = page[-1] + 1
            info = workflow.info()
            if (
                info.get_current_history_length() > input.history_limit
                or info.is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(input.model_copy(update={"after": after}))

    async def _start(self, input: BareBatchInput, n: int) -> None:
        shape = input.shape
        script = shape.verified if verified(n, input.verified_share) else shape.confirming
        await workflow.start_child_workflow(
            BareCase.run,
            BareCaseInput(script=script, child_activities=shape.child_activities),
            id=f"{workflow.info().workflow_id}/{n}",
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )


async def _bare(
    env: WorkflowEnvironment,
    shape: CaseShape,
    firms: int,
    verified_share: float,
    concurrency: int,
    stall_s: float,
) -> float:
    """Seconds for N bare cases, from the bare batch's start to the last one done."""
    queue = f"bare-recognition-{os.getpid()}-{time.time_ns()}"
    activities = BareActivities(firms)

    async def confirmer() -> None:
        while True:
            workflow_id = await activities.waiting.get()
            await env.client.get_workflow_handle(workflow_id).execute_update(BareCase.confirm)

    async with TemporalWorker(
        env.client,
        task_queue=queue,
        workflows=[BareBatch, BareCase, BareChild],
        activities=[activities.page, activities.step],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        confirmers = [asyncio.create_task(confirmer()) for _ in range(concurrency)]
        started = time.monotonic()
        await env.client.start_workflow(
            BareBatch.run,
            BareBatchInput(
                firms=firms,
                verified_share=verified_share,
                shape=shape,
                page_size=PAGE_SIZE,
                history_limit=HISTORY_LIMIT,
            ),
            id=queue,
            task_queue=queue,
        )
        try:
            done = -1
            while not activities.finished.is_set():
                if activities.done == done:
                    raise RuntimeError(f"baseline: no progress for {stall_s:.0f}s at {done} done")
                done = activities.done
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(activities.finished.wait(), stall_s)
            return time.monotonic() - started
        finally:
            for task in confirmers:
                task.cancel()
            await asyncio.gather(*confirmers, return_exceptions=True)


# ----- the run ------------------------------------------------------------------------


async def run(
    count: int,
    verified_share: float,
    concurrency: int,
    poll_page: int,
    follow_s: int,
    stall_s: float,
) -> int:
    firms = firms_of(count, verified_share)
    async with bench_stack(
        "recognition", ["--receipt-delay-s", "0"], message_simulator=True
    ) as stack:
        settings, env = stack.settings, stack.env
        settings.recognition_follow_s = follow_s
        clock = time.monotonic()
        await _seed(settings, firms)
        seeded_s = time.monotonic() - clock
        stack.worker.start()
        observer = observer_engine(settings)
        try:
            timeline, cpu = await _run_batch(
                stack, observer, firms, concurrency, poll_page, stall_s
            )
            checks = await _check(observer, timeline.t0_wall)
        finally:
            await observer.dispose()
        runs = await _batch_runs(env.client, timeline.batch_id)
        shape = await _case_shape(env.client, firms)
        stack.worker.stop()
        before = cpu_seconds()
        baseline_s = await _bare(env, shape, count, verified_share, concurrency, stall_s)
        baseline_cpu = cpu_text(before, cpu_seconds())
    confirming = sum(1 for f in firms if not f.verified)
    latency = timeline.confirm_latency
    print(f"seeded {count} firms ({count - confirming} with a verified account) in {seeded_s:.0f}s")
    print(
        f"identified {timeline.cases} firms at +{_s(timeline.identified_s)}s; "
        f"all cases started at +{_s(timeline.all_started_s)}s; "
        f"first paid at +{_s(timeline.first_paid_s)}s; all paid at +{timeline.paid_s:.1f}s"
    )
    print(
        f"confirmations through the API: {timeline.confirmations} of {confirming} "
        f"({timeline.retries} resent), {concurrency} at once, mean "
        f"{statistics.fmean(latency) if latency else 0:.2f}s each, p95 "
        f"{percentile(latency, 0.95):.2f}s, last at +{_s(timeline.last_confirmation_s)}s; "
        f"at most {timeline.backlog} firms waited for a free confirmer"
    )
    print(
        f"batch {timeline.batch_id}: {len(runs)} runs, longest history {max(runs, default=0)} "
        f"events (limit {HISTORY_LIMIT}, page {PAGE_SIZE}); closed at +{_s(timeline.closed_s)}s "
        f"(follows every {follow_s}s)"
    )
    print(f"cpu from batch start to all paid: {cpu}")
    print(
        f"case shape from histories: confirming {shape.confirming!r}, verified "
        f"{shape.verified!r}, payment child {shape.child_activities} activities "
        f"(a activity, u update, c child); baseline {baseline_s:.1f}s, cpu {baseline_cpu}"
    )
    cases_per_s = count / timeline.paid_s
    baseline_per_s = count / baseline_s
    money = checks.to_money_s
    print(
        f"firms={count} paid={checks.paid} paid_once={checks.paid_once} "
        f"double_paid={checks.double_paid} overspent_fen={checks.overspent_fen} "
        f"seconds={timeline.paid_s:.1f} cases_per_s={cases_per_s:.1f} "
        f"baseline_per_s={baseline_per_s:.1f} ratio={cases_per_s / baseline_per_s:.2f} "
        f"p50_to_money_s={percentile(money, 0.5):.1f} p95_to_money_s={percentile(money, 0.95):.1f}"
    )
    ok = checks.paid == checks.paid_once == count and checks.double_paid == 0
    return 0 if ok and checks.overspent_fen == 0 else 1


async def _run_batch(
    stack: BenchStack,
    observer: AsyncEngine,
    firms: list[Firm],
    concurrency: int,
    poll_page: int,
    stall_s: float,
) -> tuple[Timeline, str]:
    settings = stack.settings
    app = create_app(settings, temporal=stack.env.client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120
        ) as api,
    ):
        before = cpu_seconds()
        timeline = await _drive_batch(
            api, settings, observer, firms, concurrency, poll_page, stall_s
        )
        cpu = cpu_text(before, cpu_seconds())
        await _await_closed(observer, timeline, settings.recognition_follow_s * 2 + 120)
    return timeline, cpu


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=10_000)
    parser.add_argument(
        "--verified-share",
        type=float,
        default=0.5,
        help="share of firms whose account a payment verified (paid without confirming)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="confirmations in flight at once"
    )
    parser.add_argument(
        "--poll-page", type=int, default=500, help="rows per page of the confirmation poll"
    )
    parser.add_argument(
        "--follow-s",
        type=int,
        default=Settings.model_fields["recognition_follow_s"].default,
        help="how often the batch looks at its cases once all have started",
    )
    parser.add_argument(
        "--stall-s", type=float, default=300, help="give up after this long without progress"
    )
    args = parser.parse_args()
    # libuv's loop, as in the worker and the API processes, for both runs alike.
    code = uvloop.run(
        run(
            args.firms,
            args.verified_share,
            args.concurrency,
            args.poll_page,
            args.follow_s,
            args.stall_s,
        )
    )
    exit_after_client(code)


if __name__ == "__main__":
    main()
