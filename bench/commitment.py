"""Commitment cases (承诺类) through their whole life, on Temporal's time-skipping server.

Seeds N firms (a bank account and a user each) and one published commitment item with
enough quota, then commits every firm to it with the same project, and lives through
the next two years as the firms, the department, finance and the finance head would:
the joint review approves every case and the prepayment is paid through the
budget-system simulator; then each case follows an outcome drawn at random (seeded):

    full            every target met: the rest is paid
    proportional    77.5% achieved: the final amount is above the prepayment: the rest
    extension       the one extension (60 days) granted, then full
    short_on_time   45% achieved: below the prepayment: recovered, repaid on time
    nothing_late    20% achieved (under the threshold): all recovered, repaid 10 days
                    late with simple interest
    plan_kept       nothing achieved: a 3-instalment plan, each paid on its date
    plan_broken     nothing achieved: a 2-instalment plan, the first missed; paid in
                    full (with interest) 5 days after it broke
    waiver          nothing achieved: 500,000 fen repaid, the rest waived by the head
    default         no completion by the deadline: all recovered, never paid: default,
                    the credit-penalty fact, outstanding for good

Time moves only when the driver says so (a day at a time once recoveries run), the
workflows' timers fire as they would over two years, and money moves through the
simulator in real time. The clock stops when every case is settled or in default.

    python bench/commitment.py --cases 1000

Last line:

    cases=N prepaid_fen=… settled_fen=… recovered_fen=… outstanding_fen=… waived_fen=…
    double_paid=0 ledger_balanced=true seconds=…

`ledger_balanced` is our ledger reconciled against the simulator's own statements of
instructions and recoveries (`zhida reconcile`'s comparison): no difference, and the
same totals paid out and received back.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col, select
from stack import bench_stack
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import Client, WorkflowHandle

from adapters.budget_system import BudgetSystemClient
from adapters.data_platform import DataPlatformClient
from adapters.esignature import PlatformAcceptance
from adapters.message_channel import MessageChannelClient
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.workdays import SHANGHAI, WorkingCalendar
from domain.commitment import admission, recovery
from domain.money import budget
from domain.policy import library
from models.budget import LedgerEntry, LedgerKind
from models.budget_system import recovery_key
from models.cases import CaseDecision, CaseRecord, CaseState, DecisionRequest, ReviewAction
from models.commitment import (
    CommitmentRequest,
    Completion,
    CompletionAction,
    CompletionReview,
    CompletionRuling,
    CompletionSubmission,
    ExtensionAsk,
    ExtensionDecision,
    ExtensionRequest,
    ExtensionRuling,
    InstalmentGrant,
    LetterAcceptance,
    PlanGrant,
    Project,
    RecoveryOrder,
    RecoveryStatus,
    Waiver,
    WaiverRequest,
)
from models.policy import ItemCreate
from models.reference import Actor, Role, User
from models.registry import BankAccount, Enterprise
from models.uscc import make_uscc
from seed.reference import demo_users, ensure_reference_data, ensure_users
from workers.main import build_worker
from workflows.starts import start_commitment_case

ITEM, PERIOD = "BENCH-CMT-01", "2026"
INVESTMENT, TAX = "renovation_investment_fen", "tax_paid_fen"
COMMITTED = {INVESTMENT: 50_000_000, TAX: 2_000_000}
COMMITTED_FEN, PREPAID_FEN = 5_000_000, 2_500_000
DEPARTMENT = Actor(name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ")
FINANCE = Actor(name="czj_staff", role=Role.FINANCE_CASEWORKER, department_code="330500-CZJ")
HEAD = Actor(name="czj_head", role=Role.FINANCE_HEAD, department_code="330500-CZJ")
# Achieved figures (investment, tax) by outcome; None: no completion.
ACHIEVED: dict[str, tuple[int, int] | None] = {
    "full": (50_000_000, 2_000_000),
    "proportional": (35_000_000, 2_000_000),  # (3 × 70% + 100%) / 4 = 77.5%
    "extension": (50_000_000, 2_000_000),
    "short_on_time": (20_000_000, 1_200_000),  # (3 × 40% + 60%) / 4 = 45%
    "nothing_late": (10_000_000, 400_000),  # 20%: under the 40% threshold
    "plan_kept": (0, 0),
    "plan_broken": (0, 0),
    "waiver": (0, 0),
    "default": None,
}
OUTCOMES = list(ACHIEVED)
DAY = timedelta(days=1)


@dataclass
class Firm:
    uscc: str
    outcome: str
    case_id: str = ""
    done: set[str] = field(default_factory=set)  # the steps taken

    @property
    def actor(self) -> Actor:
        return Actor(name=f"u{self.uscc}", role=Role.ENTERPRISE, enterprise_uscc=self.uscc)


def item() -> dict[str, Any]:
    stages = [
        {"stage": s, "department_code": unit, "working_days": 5}
        for s, unit in (
            ("joint_review", "330500-JXJ"),
            ("prepayment", "330500-CZJ"),
            ("completion_review", "330500-JXJ"),
            ("settlement", "330500-CZJ"),
        )
    ]
    return {
        "code": ITEM,
        "document": {
            "doc_number": "湖政办发〔2026〕12号",
            "title": "关于实施企业技术改造承诺制奖补的通知",
            "issuer": "湖州市人民政府办公室",
            "level": "city",
            "issued_on": "2026-01-10",
        },
        "department_code": "330500-JXJ",
        "region_code": "330500",
        "title": "技术改造承诺制奖补",
        "summary": "按技改设备投资额的 10% 给予奖补，事中预付 50%，完工后按承诺指标结算",
        "category": "commitment",
        "eligibility": {"all": [{"fact": "commitment_default", "op": "eq", "value": False}]},
        "amount_rule": {"kind": "rate", "fact": INVESTMENT, "rate": "0.1", "cap_fen": 10**9},
        "annual_quota_fen": 10**13,
        "stages": stages,
        "valid_from": "2026-01-01",
        "valid_to": "2027-12-31",
        "change_reason": "新增承诺制事项",
        "commitment": {
            "targets": [{"fact": INVESTMENT, "weight": 3}, {"fact": TAX, "weight": 1}],
            "settlement": {"method": "proportional", "threshold_pct": 40},
            "prepaid_pct": 50,
            "reminder_days": [30, 7],
            "completion_grace_days": 30,
            "recovery_days": 30,
            "recovery_grace_days": 15,
            "daily_interest_rate": "0.0005",
            "max_instalments": 6,
        },
    }


async def seed(url: str, firms: list[Firm], completion: date) -> list[Any]:
    """The registry, the item, its quota, and every firm's admitted commitment."""
    await upgrade_async(url)
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    today = now.astimezone(SHANGHAI).date()
    inputs = []
    try:
        async with sessionmaker.begin() as session:
            await ensure_reference_data(session)
            await ensure_users(session, demo_users(None))
            for table, rows in (
                (Enterprise, [_enterprise(f, now) for f in firms]),
                (BankAccount, [_account(f, now) for f in firms]),
                (User, [_user(f, now) for f in firms]),
            ):
                await session.execute(sa.insert(table), rows)
            await library.create_item(session, DEPARTMENT, ItemCreate.model_validate(item()))
            await library.submit_version(
                session, DEPARTMENT, ITEM, 1, head_review_days=3, finance_review_days=5
            )
            await library.publish_version(session, ITEM, 1)
            await budget.set_quota(session, ITEM, int(PERIOD), 10**13, "czj_staff")
        async with sessionmaker.begin() as session:
            letter = await admission.letter_of(session, ITEM, today)
            for firm in firms:
                admitted = await admission.admit_commitment(
                    session,
                    firm.actor,
                    CommitmentRequest(
                        item_code=ITEM,
                        period=PERIOD,
                        project=Project(
                            name="智能化技术改造项目",
                            location="湖州市吴兴区",
                            committed=COMMITTED,
                            completion_date=completion,
                        ),
                        letter=LetterAcceptance(letter_sha256=letter.sha256, accepted=True),
                    ),
                    today,
                    "127.0.0.1; bench",
                    PlatformAcceptance(),
                )
                firm.case_id = admitted.commitment.case_id
                inputs.append(admitted.commitment)
    finally:
        await engine.dispose()
    return inputs


def _enterprise(firm: Firm, now: datetime) -> dict[str, Any]:
    return {
        "uscc": firm.uscc,
        "name": f"承诺企业{firm.uscc[-6:]}有限公司",
        "region_code": "330502",
        "industry_code": "C3411",
        "size_class": "small",
        "established_on": date(2015, 6, 1),
        "created_at": now,
        "updated_at": now,
    }


def _account(firm: Firm, now: datetime) -> dict[str, Any]:
    return {
        "uscc": firm.uscc,
        "bank_name": "湖州银行",
        "account_name": f"承诺企业{firm.uscc[-6:]}有限公司",
        "account_number": f"62220000{firm.uscc[-8:-1]}1",
        "is_default": True,
        "created_at": now,
    }


def _user(firm: Firm, now: datetime) -> dict[str, Any]:
    return {
        "name": f"u{firm.uscc}",
        "display_name": "企业经办人",
        "role": Role.ENTERPRISE.value,
        "enterprise_uscc": firm.uscc,
        "active": True,
    }


class Driver:
    """Acts for everyone, a bounded number of requests at once, and moves time."""

    def __init__(self, client: Client, sessionmaker: Any, http: httpx.AsyncClient) -> None:
        self.client, self.sessionmaker, self.http = client, sessionmaker, http
        self.gate = asyncio.Semaphore(20)

    def handle(self, firm: Firm) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(firm.case_id)

    async def update(self, firm: Firm, name: str, arg: Any) -> CaseState:
        async with self.gate:
            for attempt in range(50):
                try:
                    state: CaseState = await self.handle(firm).execute_update(
                        name, arg, result_type=CaseState
                    )
                    return state
                except Exception as exc:  # "the case is changing; try again"
                    if "changing" not in str(exc) or attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def each(self, firms: list[Firm], act: Callable[[Firm], Awaitable[Any]]) -> None:
        await asyncio.gather(*(act(f) for f in firms))

    async def stages(self) -> dict[str, str]:
        async with self.sessionmaker() as session:
            rows = await session.execute(select(CaseRecord.case_id, CaseRecord.stage))
            return {case_id: stage for case_id, stage in rows}

    async def orders(self) -> dict[str, RecoveryOrder]:
        async with self.sessionmaker() as session:
            return {o.case_id: o for o in await session.scalars(select(RecoveryOrder))}

    async def wait_for(self, firms: list[Firm], stages: set[str], real_s: float = 600) -> None:
        """Until every firm's case is at one of `stages` (money moves in real time)."""
        deadline = time.monotonic() + real_s
        while True:
            now = await self.stages()
            behind = [f for f in firms if now.get(f.case_id) not in stages]
            if not behind:
                return
            if time.monotonic() > deadline:
                seen = Counter(now.get(f.case_id) for f in behind)
                raise AssertionError(f"{len(behind)} cases not at {stages}: {seen}")
            await asyncio.sleep(0.5)

    async def today(self, env: Any) -> date:
        now: datetime = await env.get_current_time()
        return now.astimezone(SHANGHAI).date()

    async def repay(self, firm: Firm, amount: int, on: date) -> None:
        received = datetime.combine(on, datetime.min.time(), SHANGHAI) + timedelta(hours=10)
        reply = await self.http.post(
            f"/v1/_simulator/recoveries/{recovery_key(firm.case_id)}/payments",
            json={"amount_fen": amount, "received_at": received.isoformat()},
        )
        reply.raise_for_status()
        await self.handle(firm).signal("check_recovery")

    async def outstanding(self, firm: Firm, on: date) -> int:
        async with self.sessionmaker() as session:
            view = await recovery.view(session, firm.case_id, on)
        assert view.balance is not None
        return view.balance.outstanding_fen


async def life(driver: Driver, env: Any, firms: list[Firm], completion: date) -> None:
    """Everyone's part: the joint review, the extensions, a year of project, the
    completions, then day by day until every case is settled or in default."""
    await driver.wait_for(firms, {"joint_review"})
    for unit in (DEPARTMENT, FINANCE):
        decision = DecisionRequest(actor=unit, decision=CaseDecision(action=ReviewAction.APPROVE))
        await asyncio.gather(*(driver.update(f, "decide", decision) for f in firms))
    await driver.wait_for(firms, {"project"})
    extended = [f for f in firms if f.outcome == "extension"]
    later = completion + timedelta(days=60)
    ask = ExtensionRequest(completion_date=later, reason="设备供应商延期交货")
    yes = ExtensionDecision(approve=True, reason="延期理由属实")
    await driver.each(
        extended,
        lambda f: driver.update(f, "request_extension", ExtensionAsk(actor=f.actor, request=ask)),
    )
    await driver.each(
        extended,
        lambda f: driver.update(
            f, "decide_extension", ExtensionRuling(actor=DEPARTMENT, decision=yes)
        ),
    )
    await advance(driver, env, completion - DAY, step=timedelta(days=10))
    on_time = [f for f in firms if f.outcome not in ("extension", "default")]
    await driver.each(on_time, lambda f: complete(driver, f))
    await driver.wait_for(on_time, {"settled", "recovery"})
    plans = [f for f in firms if f.outcome in PLANS]
    await driver.each(
        plans,
        lambda f: driver.update(
            f,
            "grant_instalments",
            PlanGrant(
                actor=FINANCE,
                grant=InstalmentGrant(instalments=PLANS[f.outcome], reason="资金周转困难"),
            ),
        ),
    )
    while not await finished(driver, firms):
        today = await driver.today(env)
        waiting = [f for f in extended if "completed" not in f.done]
        if today >= later - DAY and waiting:
            for f in waiting:
                f.done.add("completed")
            await driver.each(waiting, lambda f: complete(driver, f))
        stages, orders = await driver.stages(), await driver.orders()
        owing = [f for f in firms if stages.get(f.case_id) == "recovery"]
        await asyncio.gather(*(act(driver, f, orders[f.case_id], today) for f in owing))
        progress = Counter(stages.get(f.case_id) for f in firms)
        print(f"{today} {dict(progress)}", file=sys.stderr, flush=True)
        await sleep(env, DAY)


PLANS = {"plan_kept": 3, "plan_broken": 2}


async def finished(driver: Driver, firms: list[Firm]) -> bool:
    """Every case settled, but those meant to default: in default."""
    stages, orders = await driver.stages(), await driver.orders()
    for firm in firms:
        if firm.outcome == "default":
            order = orders.get(firm.case_id)
            if order is None or order.status != RecoveryStatus.DEFAULTED:
                return False
        elif stages.get(firm.case_id) != "settled":
            return False
    return True


async def complete(driver: Driver, firm: Firm) -> None:
    figures = ACHIEVED[firm.outcome]
    assert figures is not None
    achieved = {INVESTMENT: figures[0], TAX: figures[1]}
    await driver.update(
        firm,
        "submit_completion",
        CompletionSubmission(actor=firm.actor, completion=Completion(achieved=achieved)),
    )
    await driver.update(
        firm,
        "review_completion",
        CompletionRuling(actor=DEPARTMENT, review=CompletionReview(action=CompletionAction.ACCEPT)),
    )
    await driver.update(
        firm,
        "decide",
        DecisionRequest(actor=FINANCE, decision=CaseDecision(action=ReviewAction.APPROVE)),
    )


async def advance(driver: Driver, env: Any, to: date, step: timedelta) -> None:
    while await driver.today(env) < to:
        gap = datetime.combine(to, datetime.min.time(), SHANGHAI) - await env.get_current_time()
        await sleep(env, max(min(step, gap + timedelta(hours=1)), timedelta(hours=1)))


async def sleep(env: Any, span: timedelta) -> None:
    """Let `span` of workflow time pass. A thousand cases' timers may fall on one
    instant (every recovery polls weekly from the same day): the server fires them all
    before it answers, which takes longer than the SDK's default RPC deadline, so the
    call is made with a deadline of its own."""
    request = SleepRequest()
    request.duration.FromTimedelta(span)
    await env.client.test_service.unlock_time_skipping_with_sleep(
        request, timeout=timedelta(minutes=10)
    )


async def act(driver: Driver, firm: Firm, order: RecoveryOrder, today: date) -> None:
    due = order.due_on
    plan = recovery.plan_of(order)
    match firm.outcome:
        case "short_on_time" if "paid" not in firm.done and today >= due - timedelta(days=5):
            firm.done.add("paid")
            await driver.repay(firm, order.principal_fen, today)
        case "nothing_late" if "paid" not in firm.done and today >= due + timedelta(days=10):
            firm.done.add("paid")
            await driver.repay(firm, await driver.outstanding(firm, today), today)
        case "plan_kept" if plan:
            for n, instalment in enumerate(plan):
                if f"i{n}" not in firm.done and today >= instalment.due_on - DAY:
                    firm.done.add(f"i{n}")
                    await driver.repay(firm, instalment.amount_fen, today)
        case "plan_broken" if plan and "paid" not in firm.done:
            if today >= plan[0].due_on + timedelta(days=5):
                firm.done.add("paid")
                await driver.repay(firm, await driver.outstanding(firm, today), today)
        case "waiver" if today >= due - timedelta(days=5):
            if "paid" not in firm.done:
                firm.done.add("paid")
                await driver.repay(firm, 500_000, today)
            elif "waived" not in firm.done and today >= due - timedelta(days=3):
                firm.done.add("waived")
                waiver = WaiverRequest(actor=HEAD, waiver=Waiver(reason="企业破产重整，无力偿还"))
                await driver.update(firm, "waive", waiver)


async def totals(sessionmaker: Any, statement: Any, recoveries: Any, today: date) -> dict[str, Any]:
    async with sessionmaker() as session:
        sums = dict(
            (str(kind), int(total))
            for kind, total in await session.execute(
                select(LedgerEntry.kind, sa.func.sum(LedgerEntry.amount_fen)).group_by(
                    col(LedgerEntry.kind)
                )
            )
        )
        receipts: dict[str, int] = {}
        for case_id, amount in await session.execute(
            select(LedgerEntry.case_id, sa.func.sum(LedgerEntry.amount_fen))
            .where(LedgerEntry.kind == LedgerKind.RECEIPT)
            .group_by(col(LedgerEntry.case_id))
        ):
            receipts[case_id] = int(amount)
        finals = {
            e.case_id: e.amount_fen
            for e in await session.scalars(
                select(LedgerEntry).where(LedgerEntry.kind == LedgerKind.SETTLEMENT)
            )
        }
        outstanding = 0
        for order in await session.scalars(select(RecoveryOrder)):
            view = await recovery.view(session, order.case_id, today)
            assert view.balance is not None
            outstanding += view.balance.outstanding_fen
        report = await budget.reconcile(session, statement, recoveries)
    # Paid more than the prepayment and the difference to the final amount: paid twice.
    double = sum(
        1 for case_id, paid in receipts.items() if paid > max(PREPAID_FEN, finals.get(case_id, 0))
    )
    balanced = (
        not report.differences
        and report.paid_fen_ours == report.paid_fen_theirs
        and report.recovered_fen_ours == report.recovered_fen_theirs
    )
    return {
        "prepaid_fen": sums.get(LedgerKind.PREPAYMENT, 0),
        "settled_fen": sums.get(LedgerKind.SETTLEMENT, 0),
        "recovered_fen": sums.get(LedgerKind.REPAYMENT, 0) + sums.get(LedgerKind.OFFSET, 0),
        "interest_fen": sums.get(LedgerKind.INTEREST, 0),
        "outstanding_fen": outstanding,
        "waived_fen": sums.get(LedgerKind.WAIVER, 0),
        "double_paid": double,
        "ledger_balanced": balanced,
        "differences": report.differences,
        "paid_out_fen": report.paid_fen_ours,
        "paid_theirs_fen": report.paid_fen_theirs,
        "back_theirs_fen": report.recovered_fen_theirs,
    }


async def run(count: int, seed_value: int) -> int:
    rng = random.Random(seed_value)
    firms = [
        Firm(make_uscc("91", "330502", f"C{n:08d}"), rng.choice(OUTCOMES)) for n in range(count)
    ]
    async with bench_stack("commitment", ["--receipt-delay-s", "0"], time_skipping=True) as stack:
        env, settings = stack.env, stack.settings
        completion = datetime.now(SHANGHAI).date() + timedelta(days=365)
        clock = time.monotonic()
        inputs = await seed(settings.database_url, firms, completion)
        seeded_s = time.monotonic() - clock
        engine = make_engine(settings.database_url)
        sessionmaker = make_sessionmaker(engine)
        async with (
            httpx.AsyncClient(base_url=stack.simulator_url, timeout=30) as http,
            httpx.AsyncClient(base_url=stack.simulator_url, timeout=30) as channel_http,
            httpx.AsyncClient(base_url=stack.settings.data_platform_url, timeout=30) as platform,
            build_worker(
                env.client,
                settings.task_queue,
                sessionmaker,
                WorkingCalendar(),
                BudgetSystemClient(http),
                MessageChannelClient(channel_http),
                DataPlatformClient(platform),
                sandboxed=False,
            ),
        ):
            driver = Driver(env.client, sessionmaker, http)
            started = time.monotonic()
            for start in range(0, len(inputs), 100):
                await asyncio.gather(
                    *(
                        start_commitment_case(env.client, settings.task_queue, i)
                        for i in inputs[start : start + 100]
                    )
                )
            await life(driver, env, firms, completion)
            seconds = time.monotonic() - started
            client = BudgetSystemClient(http)
            statement, recoveries = await client.statement(), await client.recovery_statement()
            figures = await totals(sessionmaker, statement, recoveries, await driver.today(env))
            stages = Counter((await driver.stages()).values())
        await engine.dispose()
    mix = Counter(f.outcome for f in firms)
    print(f"seeded {count} firms and their commitments in {seeded_s:.0f}s; outcomes {dict(mix)}")
    print(f"final stages {dict(stages)}; interest received {figures['interest_fen']} fen")
    print(
        f"paid out {figures['paid_out_fen']} fen (simulator {figures['paid_theirs_fen']}), "
        f"received back {figures['recovered_fen']} fen (simulator {figures['back_theirs_fen']})"
    )
    for line in figures["differences"][:10]:
        print(f"  difference: {line.model_dump_json()}")
    balanced = str(figures["ledger_balanced"]).lower()
    print(
        f"cases={count} prepaid_fen={figures['prepaid_fen']} settled_fen={figures['settled_fen']} "
        f"recovered_fen={figures['recovered_fen']} outstanding_fen={figures['outstanding_fen']} "
        f"waived_fen={figures['waived_fen']} double_paid={figures['double_paid']} "
        f"ledger_balanced={balanced} seconds={seconds:.1f}"
    )
    return 0 if figures["ledger_balanced"] and figures["double_paid"] == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.cases, args.seed)))


if __name__ == "__main__":
    main()
