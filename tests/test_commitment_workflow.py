"""Commitment cases over their whole life on the time-skipping server, with the real
activities, database and budget-system simulator: joint review, prepayment, reminders,
extension, completion and its review, settlement, and every way a recovery ends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from adapters.budget_system import BudgetSystemClient, recovery_key
from adapters.esignature import PlatformAcceptance
from adapters.message_channel import MessageChannelClient
from core.workdays import SHANGHAI, WorkingCalendar
from domain.commitment import admission
from domain.eligibility import assess
from domain.money import budget
from domain.policy import library
from models.budget import BudgetQuota, LedgerEntry, LedgerKind
from models.cases import (
    CaseDecision,
    CaseState,
    DecisionRequest,
    Resubmission,
    ResubmitRequest,
    ReviewAction,
)
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
    ProgressReport,
    ProgressUpdate,
    Project,
    RecoveryOrder,
    Waiver,
    WaiverRequest,
)
from models.notices import Notice
from models.policy import ItemCreate, StageWarning
from models.reference import Actor, Role, User
from tests.fixtures.factories import create_enterprise, create_users, item_payload
from tests.fixtures.stack import Stack
from tests.history_store import keep_history
from workers.main import build_worker
from workflows.starts import start_commitment_case

DEPARTMENT = Actor(name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ")
FINANCE = Actor(name="czj_staff", role=Role.FINANCE_CASEWORKER, department_code="330500-CZJ")
FINANCE_HEAD = Actor(name="czj_head", role=Role.FINANCE_HEAD, department_code="330500-CZJ")
INVESTMENT, TAX = "renovation_investment_fen", "tax_paid_fen"
COMMITTED = {INVESTMENT: 50_000_000, TAX: 2_000_000}
COMMITTED_FEN = 5_000_000  # 10% of the committed investment
PREPAID_FEN = 2_500_000  # half of it
TERMS: dict[str, Any] = {
    "targets": [{"fact": INVESTMENT, "weight": 3}, {"fact": TAX, "weight": 1}],
    "settlement": {"method": "proportional", "threshold_pct": 60, "combine": "weighted"},
    "prepaid_pct": 50,
    "reminder_days": [30, 7],
    "completion_grace_days": 30,
    "recovery_days": 30,
    "recovery_grace_days": 15,
    "daily_interest_rate": "0.0005",
    "max_instalments": 6,
}
DAY = timedelta(days=1)


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


async def commitment_item(stack: Stack, industry: str | None = None, **terms: Any) -> str:
    code = f"CMT-{uuid.uuid4().hex[:6].upper()}"
    industry = industry or f"C{uuid.uuid4().int % 10**4:04d}"
    async with stack.sessionmaker.begin() as session:
        users = await create_users(session)
        payload = item_payload(
            code,
            category="commitment",
            eligibility={
                "all": [
                    {"fact": "industry_code", "op": "eq", "value": industry},
                    {"fact": "commitment_default", "op": "eq", "value": False},
                ]
            },
            amount_rule={"kind": "rate", "fact": INVESTMENT, "rate": "0.1", "cap_fen": 10**9},
        )
        payload["commitment"] = {**TERMS, **terms}
        payload["summary"] = industry  # where the test finds the item's industry
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
        await budget.set_quota(session, code, 2026, 100_000_000, "czj_staff")
    return code


@dataclass
class Case:
    env: WorkflowEnvironment
    stack: Stack
    code: str
    uscc: str
    handle: WorkflowHandle[Any, CaseState]

    @property
    def firm(self) -> Actor:
        return Actor(name=f"u{self.uscc}", role=Role.ENTERPRISE, enterprise_uscc=self.uscc)

    async def state(self) -> CaseState:
        state: CaseState = await self.handle.query("state", result_type=CaseState)
        return state

    async def update(self, name: str, arg: Any) -> CaseState:
        state: CaseState = await self.handle.execute_update(name, arg, result_type=CaseState)
        return state

    async def reach(self, stage: str, step: timedelta = timedelta(hours=6)) -> CaseState:
        """Let time run (as the firm and the units would wait) until the case is at `stage`."""
        state = await self.state()
        for _ in range(400):
            if state.stage.value == stage:
                return state
            await self.env.sleep(step)
            state = await self.state()
        raise AssertionError(f"never reached {stage}: at {state.stage.value}")

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def joint_approval(self) -> CaseState:
        await self.reach("joint_review")
        for actor in (DEPARTMENT, FINANCE):
            await self.update(
                "decide",
                DecisionRequest(actor=actor, decision=CaseDecision(action=ReviewAction.APPROVE)),
            )
        return await self.reach("project")

    async def complete(self, achieved: dict[str, int]) -> CaseState:
        await self.update(
            "submit_completion",
            CompletionSubmission(actor=self.firm, completion=Completion(achieved=achieved)),
        )
        await self.reach("completion_review")
        await self.update(
            "review_completion",
            CompletionRuling(
                actor=DEPARTMENT, review=CompletionReview(action=CompletionAction.ACCEPT)
            ),
        )
        await self.reach("settlement_review")
        return await self.update(
            "decide",
            DecisionRequest(actor=FINANCE, decision=CaseDecision(action=ReviewAction.APPROVE)),
        )

    async def repay(self, amount_fen: int, on: date) -> None:
        """The firm's transfer arrives at the treasury on `on` (noon, Shanghai); the case
        is told to look."""
        received = datetime.combine(on, datetime.min.time(), SHANGHAI) + timedelta(hours=12)
        paid = await self.stack.budget_http.post(
            f"/v1/_simulator/recoveries/{recovery_key(self.handle.id)}/payments",
            json={"amount_fen": amount_fen, "received_at": received.isoformat()},
        )
        assert paid.status_code in (200, 201), paid.text
        await self.handle.signal("check_recovery")

    async def result(self) -> CaseState:
        return await self.handle.result()


@pytest.fixture
async def case_of(stack: Stack, own_time_skipping: WorkflowEnvironment) -> AsyncIterator[Any]:
    """Start commitments of a fresh item on the time-skipping server; yields a maker."""
    queue = f"commitment-{uuid.uuid4()}"
    client = own_time_skipping.client

    async def make(
        code: str | None = None,
        uscc: str | None = None,
        project_name: str | None = None,
        **terms: Any,
    ) -> Case:
        code = code or await commitment_item(stack, **terms)
        async with stack.sessionmaker.begin() as session:
            version = await library.get_version(session, code, 1)
            if uscc is None:
                enterprise = await create_enterprise(
                    session, industry_code=version.summary, facts={TAX: (1_000_000, "2025")}
                )
                uscc = enterprise.uscc
                session.add(
                    User(
                        name=f"u{uscc}",
                        display_name="企业用户",
                        role=Role.ENTERPRISE,
                        enterprise_uscc=uscc,
                    )
                )
                await session.flush()
            letter = await admission.letter_of(session, code, datetime.now(SHANGHAI).date())
            actor = Actor(name=f"u{uscc}", role=Role.ENTERPRISE, enterprise_uscc=uscc)
            admitted = await admission.admit_commitment(
                session,
                actor,
                CommitmentRequest(
                    item_code=code,
                    period="2026",
                    project=Project(
                        # One project per item, unless the test names it.
                        name=project_name or f"年产十万套智能装备技改项目（{code}）",
                        location="湖州市吴兴区",
                        investment_plan="设备购置 4000 万元，厂房改造 1000 万元",
                        committed=COMMITTED,
                        completion_date=datetime.now(SHANGHAI).date() + timedelta(days=365),
                    ),
                    letter=LetterAcceptance(letter_sha256=letter.sha256, accepted=True),
                ),
                datetime.now(SHANGHAI).date(),
                "127.0.0.1; pytest",
                PlatformAcceptance(),
            )
        handle = await start_commitment_case(client, queue, admitted.commitment)
        return Case(own_time_skipping, stack, code, uscc, handle)

    async with worker(stack, client, queue):
        yield make


async def ledger(stack: Stack, case_id: str) -> dict[str, int]:
    async with stack.sessionmaker() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, sa.func.sum(LedgerEntry.amount_fen))
            .where(col(LedgerEntry.case_id) == case_id)
            .group_by(col(LedgerEntry.kind))
        )
        return {str(kind): int(total) for kind, total in rows}


async def quota_paid(stack: Stack, code: str) -> int:
    async with stack.sessionmaker() as session:
        quota = await session.get(BudgetQuota, (code, 2026), populate_existing=True)
        assert quota is not None
        return quota.paid_fen


async def notices_of(stack: Stack, uscc: str) -> list[str]:
    async with stack.sessionmaker() as session:
        return list(
            await session.scalars(
                select(Notice.title)
                .where(col(Notice.recipient) == f"u{uscc}")
                .order_by(col(Notice.id))
            )
        )


# ----- settlement outcomes ----------------------------------------------------------------


async def test_full_settlement_pays_the_rest_after_reminders(case_of: Any) -> None:
    case: Case = await case_of()
    state = await case.joint_approval()
    assert state.commitment is not None
    assert (state.commitment.committed_fen, state.commitment.prepaid_fen) == (
        COMMITTED_FEN,
        PREPAID_FEN,
    )
    await case.update(
        "report_progress",
        ProgressUpdate(actor=case.firm, report=ProgressReport(note="设备已到货 60%")),
    )
    # Let the year run to a day before the completion date: both reminders went out.
    completion = state.commitment.completion_date
    while (await case.now()).astimezone(SHANGHAI).date() < completion - DAY:
        await case.env.sleep(timedelta(days=20))
    state = await case.state()
    actions = [e.action for e in state.timeline]
    assert actions.count("reminded") == 2 and "progress" in actions
    final = await case.complete(COMMITTED)
    final = await case.result()
    assert final.stage.value == "settled"
    assert final.commitment is not None and final.commitment.settlement is not None
    assert final.commitment.settlement.final_fen == COMMITTED_FEN
    assert final.paid_amount_fen == COMMITTED_FEN
    money = await ledger(case.stack, case.handle.id)
    assert money[LedgerKind.RECEIPT] == COMMITTED_FEN  # prepayment + last instalment
    assert money[LedgerKind.PREPAYMENT] == PREPAID_FEN
    assert money[LedgerKind.SETTLEMENT] == COMMITTED_FEN
    titles = await notices_of(case.stack, case.uscc)
    assert sum("到期提醒" in t for t in titles) == 2, titles
    await keep_history(case.env.client, case.handle, "commitment-approval-notice")


async def test_proportional_settlement_recovers_the_excess_repaid_on_time(case_of: Any) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    # 60% of the investment (weight 3) and all the tax (weight 1): 70% -> 3,500,000 fen,
    # above the prepayment: the difference is paid.
    achieved = {INVESTMENT: 30_000_000, TAX: 2_000_000}
    await case.complete(achieved)
    final = await case.result()
    assert final.commitment and final.commitment.settlement
    assert final.commitment.settlement.share_bp == 7000
    assert final.commitment.settlement.final_fen == 3_500_000
    assert final.paid_amount_fen == 3_500_000


async def test_below_the_threshold_nothing_is_due_and_all_is_recovered(case_of: Any) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    # 40% of the investment, half the tax: 42.5%, below the 60% threshold: nothing.
    await case.complete({INVESTMENT: 20_000_000, TAX: 1_000_000})
    state = await case.reach("recovery")
    assert state.commitment and state.commitment.recovery
    recovery = state.commitment.recovery
    assert recovery.principal_fen == PREPAID_FEN and recovery.payment_code
    paid_before = await quota_paid(case.stack, case.code)
    await case.repay(PREPAID_FEN, recovery.due_on - timedelta(days=3))
    final = await case.result()
    assert final.stage.value == "settled"
    assert final.commitment and final.commitment.recovery and final.commitment.recovery.balance
    assert final.commitment.recovery.balance.interest_fen == 0
    money = await ledger(case.stack, case.handle.id)
    assert money[LedgerKind.REPAYMENT] == PREPAID_FEN
    assert LedgerKind.INTEREST not in money
    # The quota regained what came back.
    assert await quota_paid(case.stack, case.code) == paid_before - PREPAID_FEN
    await keep_history(case.env.client, case.handle, "commitment-recovered")


async def test_late_repayment_pays_simple_interest_from_the_day_after_the_deadline(
    case_of: Any,
) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    await case.complete({INVESTMENT: 0, TAX: 0})
    state = await case.reach("recovery")
    assert state.commitment and state.commitment.recovery
    due = state.commitment.recovery.due_on
    while (await case.now()).astimezone(SHANGHAI).date() < due + timedelta(days=10):
        await case.env.sleep(timedelta(days=2))
    # 10 days late on 2,500,000 fen at 0.05% a day: 12,500 fen. A first transfer of the
    # principal only leaves the interest (a credit pays interest first).
    await case.repay(PREPAID_FEN, due + timedelta(days=10))
    await case.env.sleep(timedelta(hours=1))
    state = await case.state()
    assert state.commitment and state.commitment.recovery and state.commitment.recovery.balance
    balance = state.commitment.recovery.balance
    assert balance.interest_fen == 12_500
    assert balance.principal_outstanding_fen == 12_500  # the principal paid the interest first
    assert state.stage.value == "recovery"
    await case.repay(balance.outstanding_fen, due + timedelta(days=10))
    final = await case.result()
    assert final.stage.value == "settled"
    money = await ledger(case.stack, case.handle.id)
    assert money[LedgerKind.REPAYMENT] == PREPAID_FEN + 12_500
    assert money[LedgerKind.INTEREST] == 12_500


async def test_no_completion_by_the_deadline_defaults_with_a_credit_penalty(
    case_of: Any,
) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    # The completion date and 30 days' grace pass.
    state = await case.reach("recovery", step=timedelta(days=5))
    assert state.commitment and state.commitment.settlement
    assert state.commitment.settlement.final_fen == 0
    assert "not_completed" in [e.action for e in state.timeline]
    due = state.commitment.recovery.due_on if state.commitment.recovery else None
    assert due is not None
    # Deadline plus 15 days' grace pass unpaid: default, warnings, the credit fact.
    while "defaulted" not in [e.action for e in (await case.state()).timeline]:
        await case.env.sleep(timedelta(days=3))
    async with case.stack.sessionmaker() as session:
        order = await session.get(RecoveryOrder, case.handle.id)
        assert order is not None and order.status == "defaulted"
        later = await assess(session, case.code, case.uscc, datetime.now(SHANGHAI).date() + DAY)
    # The item's rule tests `commitment_default eq false`: the defaulter is now excluded.
    assert later.verdict.value == "not_eligible"
    assert any("信用" in t for t in await notices_of(case.stack, case.uscc))
    await case.handle.terminate("test over")


# ----- the life of the project ------------------------------------------------------------


async def test_an_extension_moves_the_deadline_and_every_later_timer(case_of: Any) -> None:
    case: Case = await case_of()
    state = await case.joint_approval()
    assert state.commitment is not None
    old = state.commitment.completion_date
    new = old + timedelta(days=90)
    await case.update(
        "request_extension",
        ExtensionAsk(
            actor=case.firm,
            request=ExtensionRequest(completion_date=new, reason="设备供应延迟"),
        ),
    )
    state = await case.state()
    assert state.waiting_for_department == "330500-JXJ"
    with pytest.raises(WorkflowUpdateFailedError):  # only one extension
        await case.update(
            "request_extension",
            ExtensionAsk(
                actor=case.firm, request=ExtensionRequest(completion_date=new, reason="再延")
            ),
        )
    await case.update(
        "decide_extension",
        ExtensionRuling(
            actor=DEPARTMENT, decision=ExtensionDecision(approve=True, reason="客观原因属实")
        ),
    )
    # Past the old deadline (+ grace) the case is still in its project.
    while (await case.now()).astimezone(SHANGHAI).date() < old + timedelta(days=40):
        await case.env.sleep(timedelta(days=10))
    state = await case.state()
    assert state.stage.value == "project"
    assert state.commitment and state.commitment.completion_date == new
    # The old date's reminders (30 and 7 days before it) never went out: they follow
    # the new date, and go out before it.
    assert [e for e in state.timeline if e.action == "reminded"] == []
    while (await case.now()).astimezone(SHANGHAI).date() < new - DAY:
        await case.env.sleep(timedelta(days=5))
    state = await case.state()
    reminded = [e.at.astimezone(SHANGHAI).date() for e in state.timeline if e.action == "reminded"]
    assert reminded == [new - timedelta(days=30), new - timedelta(days=7)]
    await case.complete(COMMITTED)
    final = await case.result()
    assert final.stage.value == "settled"


async def test_an_instalment_plan_kept_settles_without_interest(case_of: Any) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    await case.complete({INVESTMENT: 0, TAX: 0})
    state = await case.reach("recovery")
    await case.update(
        "grant_instalments",
        PlanGrant(actor=FINANCE, grant=InstalmentGrant(instalments=3, reason="企业资金周转困难")),
    )
    state = await case.state()
    assert state.commitment and state.commitment.recovery
    plan = state.commitment.recovery.plan
    assert [p.amount_fen for p in plan] == [833_333, 833_333, 833_334]
    for instalment in plan:
        await case.repay(instalment.amount_fen, instalment.due_on - timedelta(days=1))
        while (await case.now()).astimezone(SHANGHAI).date() < instalment.due_on:
            await case.env.sleep(timedelta(days=5))
    final = await case.result()
    assert final.stage.value == "settled"
    assert final.commitment and final.commitment.recovery and final.commitment.recovery.balance
    assert final.commitment.recovery.balance.interest_fen == 0


async def test_a_broken_plan_falls_due_at_once_with_interest(case_of: Any) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    await case.complete({INVESTMENT: 0, TAX: 0})
    state = await case.reach("recovery")
    await case.update(
        "grant_instalments",
        PlanGrant(actor=FINANCE, grant=InstalmentGrant(instalments=2, reason="分期")),
    )
    state = await case.state()
    assert state.commitment and state.commitment.recovery
    first = state.commitment.recovery.plan[0]
    # The first instalment is missed; ten days later the state says the plan broke.
    while (await case.now()).astimezone(SHANGHAI).date() < first.due_on + timedelta(days=10):
        await case.env.sleep(timedelta(days=2))
    await case.handle.signal("check_recovery")
    await case.env.sleep(timedelta(hours=1))
    state = await case.state()
    assert state.commitment and state.commitment.recovery and state.commitment.recovery.balance
    balance = state.commitment.recovery.balance
    assert balance.plan_broken_on == first.due_on
    assert balance.interest_fen == PREPAID_FEN * 5 // 10_000 * 10
    await case.repay(balance.outstanding_fen, first.due_on + timedelta(days=10))
    final = await case.result()
    assert final.stage.value == "settled"


async def test_waiver_only_by_the_finance_head(case_of: Any) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    await case.complete({INVESTMENT: 0, TAX: 0})
    await case.reach("recovery")
    with pytest.raises(WorkflowUpdateFailedError):
        await case.update("waive", WaiverRequest(actor=FINANCE, waiver=Waiver(reason="企业已注销")))
    await case.repay(500_000, (await case.now()).astimezone(SHANGHAI).date())
    await case.env.sleep(timedelta(hours=1))
    await case.update(
        "waive", WaiverRequest(actor=FINANCE_HEAD, waiver=Waiver(reason="企业破产清算，无力偿还"))
    )
    final = await case.result()
    assert final.stage.value == "settled"
    money = await ledger(case.stack, case.handle.id)
    assert money[LedgerKind.REPAYMENT] == 500_000
    assert money[LedgerKind.WAIVER] == PREPAID_FEN - 500_000


async def overdue_debtor_commits_again(
    case_of: Any, stack: Stack, days_late: int, **terms: Any
) -> tuple[Case, Case]:
    """A firm that achieved nothing owes its whole prepayment, `days_late` past the
    deadline; then it commits to a second item of the same kind (`terms`)."""
    debtor: Case = await case_of()
    await debtor.joint_approval()
    await debtor.complete({INVESTMENT: 0, TAX: 0})
    state = await debtor.reach("recovery")
    assert state.commitment and state.commitment.recovery
    due = state.commitment.recovery.due_on
    while (await debtor.now()).astimezone(SHANGHAI).date() < due + timedelta(days=days_late):
        await debtor.env.sleep(timedelta(days=1))
    async with stack.sessionmaker() as session:
        industry = (await library.get_version(session, debtor.code, 1)).summary
    second = await commitment_item(stack, industry=industry, **terms)
    return debtor, await case_of(second, debtor.uscc)


async def test_an_overdue_debt_is_offset_against_a_later_payment_on_another_item(
    case_of: Any, stack: Stack
) -> None:
    # The firm commits to a second item, prepaid in full (5,000,000 fen): when that
    # payment is instructed, the overdue debt (principal and 2 days' interest) is withheld.
    debtor, other = await overdue_debtor_commits_again(case_of, stack, 2, prepaid_pct=100)
    await other.joint_approval()
    final = await debtor.result()
    assert final.stage.value == "settled"
    money = await ledger(stack, debtor.handle.id)
    assert money[LedgerKind.OFFSET] == PREPAID_FEN + money.get(LedgerKind.INTEREST, 0)
    other_money = await ledger(stack, other.handle.id)
    assert other_money[LedgerKind.OFFSET] == money[LedgerKind.OFFSET]
    # The other case's instruction paid only what was left; its quota paid it all.
    assert other_money[LedgerKind.INSTRUCT] == COMMITTED_FEN - money[LedgerKind.OFFSET]
    assert other_money[LedgerKind.RECEIPT] == COMMITTED_FEN
    assert any("抵扣" in t for t in await notices_of(stack, debtor.uscc))


# ----- reviews: returns, corrections, overdue ------------------------------------------------


async def test_joint_review_overdue_warns_both_units_and_a_return_goes_back_to_both(
    case_of: Any, stack: Stack
) -> None:
    case: Case = await case_of()
    state = await case.reach("joint_review")
    assert {state.waiting_for_department, state.also_waiting_for_department} == {
        "330500-JXJ",
        "330500-CZJ",
    }
    # Three working days pass (the item's limit): each unit is warned.
    while not (await case.state()).overdue:
        await case.env.sleep(timedelta(days=1))
    async with stack.sessionmaker() as session:
        warned = set(
            await session.scalars(
                select(StageWarning.department_code).where(
                    col(StageWarning.subject) == case.handle.id
                )
            )
        )
    assert warned == {"330500-JXJ", "330500-CZJ"}
    await case.update(
        "decide", DecisionRequest(actor=FINANCE, decision=CaseDecision(action=ReviewAction.APPROVE))
    )
    returned = await case.update(
        "decide",
        DecisionRequest(
            actor=DEPARTMENT,
            decision=CaseDecision(
                action=ReviewAction.RETURN, reason="材料不全", corrections=["补充设备采购合同"]
            ),
        ),
    )
    assert returned.stage.value == "correction" and returned.corrections == ["补充设备采购合同"]
    await case.update(
        "resubmit",
        ResubmitRequest(
            actor=case.firm, resubmission=Resubmission(materials={"contract": "合同.pdf"})
        ),
    )
    # A new round: both decide again.
    state = await case.joint_approval()
    assert state.commitment and state.commitment.prepaid_fen == PREPAID_FEN


async def test_completion_returned_corrected_and_settlement_sent_back(case_of: Any) -> None:
    case: Case = await case_of()
    await case.joint_approval()
    declared = {INVESTMENT: 50_000_000, TAX: 2_000_000}
    await case.update(
        "submit_completion",
        CompletionSubmission(actor=case.firm, completion=Completion(achieved=declared)),
    )
    state = await case.reach("completion_review")
    assert state.commitment is not None
    # The data's figure beside the firm's: the firm declared more tax than recorded.
    evidence = state.commitment.evidence[TAX]
    assert (evidence["declared"], evidence["recorded"]) == (2_000_000, 1_000_000)
    await case.update(
        "review_completion",
        CompletionRuling(
            actor=DEPARTMENT,
            review=CompletionReview(
                action=CompletionAction.RETURN, reason="缺验收报告", corrections=["上传验收报告"]
            ),
        ),
    )
    assert (await case.state()).stage.value == "correction"
    await case.update(
        "submit_completion",
        CompletionSubmission(actor=case.firm, completion=Completion(achieved=declared)),
    )
    await case.reach("completion_review")
    with pytest.raises(WorkflowUpdateFailedError):  # a corrected figure needs a reason
        await case.update(
            "review_completion",
            CompletionRuling(
                actor=DEPARTMENT,
                review=CompletionReview(action=CompletionAction.ACCEPT, corrected={TAX: 1_000_000}),
            ),
        )
    await case.update(
        "review_completion",
        CompletionRuling(
            actor=DEPARTMENT,
            review=CompletionReview(
                action=CompletionAction.ACCEPT,
                corrected={TAX: 1_000_000},
                reason="以税务数据为准",
            ),
        ),
    )
    state = await case.reach("settlement_review")
    assert state.commitment and state.commitment.settlement
    assert state.commitment.settlement.share_bp == 8_750  # (3 × 100% + 50%) / 4
    await case.update(
        "decide",
        DecisionRequest(
            actor=FINANCE, decision=CaseDecision(action=ReviewAction.RETURN, reason="请复核投资额")
        ),
    )
    await case.reach("completion_review")
    await case.update(
        "review_completion",
        CompletionRuling(
            actor=DEPARTMENT,
            review=CompletionReview(
                action=CompletionAction.ACCEPT, corrected={TAX: 1_000_000}, reason="复核无误"
            ),
        ),
    )
    await case.reach("settlement_review")
    await case.update(
        "decide", DecisionRequest(actor=FINANCE, decision=CaseDecision(action=ReviewAction.APPROVE))
    )
    final = await case.result()
    assert final.paid_amount_fen == 4_375_000
    actions = [e.action for e in final.timeline]
    assert actions.count("accepted") == 2 and "returned" in actions


async def test_an_undecided_extension_holds_the_deadline_and_warns_the_department(
    case_of: Any, stack: Stack
) -> None:
    case: Case = await case_of()
    state = await case.joint_approval()
    assert state.commitment is not None
    completion = state.commitment.completion_date
    while (await case.now()).astimezone(SHANGHAI).date() < completion - timedelta(days=3):
        await case.env.sleep(timedelta(days=20))
    await case.update(
        "request_extension",
        ExtensionAsk(
            actor=case.firm,
            request=ExtensionRequest(
                completion_date=completion + timedelta(days=30), reason="疫情停工"
            ),
        ),
    )
    # The department sits on it past the completion date and its grace: no failure.
    while (await case.now()).astimezone(SHANGHAI).date() < completion + timedelta(days=45):
        await case.env.sleep(timedelta(days=5))
    state = await case.state()
    assert state.stage.value == "project" and state.overdue
    assert state.waiting_for_department == "330500-JXJ"
    async with stack.sessionmaker() as session:
        warned = list(
            await session.scalars(
                select(StageWarning.stage).where(col(StageWarning.subject) == case.handle.id)
            )
        )
    assert warned == ["project"]
    # Refused: the deadline (completion date + 30 days' grace) has passed: not completed.
    await case.update(
        "decide_extension",
        ExtensionRuling(
            actor=DEPARTMENT, decision=ExtensionDecision(approve=False, reason="理由不充分")
        ),
    )
    state = await case.reach("recovery")
    assert "not_completed" in [e.action for e in state.timeline]
    await case.handle.terminate("test over")


async def test_a_payment_smaller_than_the_debt_goes_wholly_to_it_and_instructs_nothing(
    case_of: Any, stack: Stack
) -> None:
    # A second item prepaying 20% (1,000,000 fen), less than the 2,500,000 and more owed.
    debtor, other = await overdue_debtor_commits_again(case_of, stack, 1, prepaid_pct=20)
    state = await other.joint_approval()
    assert state.paid_amount_fen == 1_000_000  # paid, to the debt
    money = await ledger(stack, other.handle.id)
    assert money[LedgerKind.OFFSET] == 1_000_000 and money[LedgerKind.RECEIPT] == 1_000_000
    assert LedgerKind.INSTRUCT not in money  # nothing went to the budget system
    statement = await stack.budget_http.get("/v1/payment-instructions")
    keys = [s["idempotency_key"] for s in statement.json()]
    assert not any(other.handle.id in k for k in keys)
    await debtor.handle.signal("check_recovery")
    await debtor.env.sleep(timedelta(hours=1))
    left = await debtor.state()
    assert left.commitment and left.commitment.recovery and left.commitment.recovery.balance
    balance = left.commitment.recovery.balance
    assert balance.credited_fen == 1_000_000
    assert balance.outstanding_fen == PREPAID_FEN + balance.interest_fen - 1_000_000
    for case in (debtor, other):
        await case.handle.terminate("test over")


# ----- the smart review -------------------------------------------------------------------


async def test_one_project_committed_under_two_items_is_held_and_rejected_citing_it(
    case_of: Any, stack: Stack
) -> None:
    """The same project (written another way) committed under a second item is held at
    joint review; the department rejects it citing the finding."""
    first: Case = await case_of(project_name="年产十万套智能装备技改项目")
    await first.joint_approval()
    async with stack.sessionmaker() as session:
        industry = (await library.get_version(session, first.code, 1)).summary
    second: Case = await case_of(
        code=await commitment_item(stack, industry),
        uscc=first.uscc,
        project_name="年产10万套 智能装备技改工程",
    )
    state = await second.reach("joint_review")
    [finding] = state.findings
    assert (
        finding.dimension.value == "project" and finding.counterparts[0].case_id == first.handle.id
    )
    approve = DecisionRequest(actor=DEPARTMENT, decision=CaseDecision(action=ReviewAction.APPROVE))
    with pytest.raises(WorkflowUpdateFailedError):
        await second.update("decide", approve)
    reject = CaseDecision(
        action=ReviewAction.REJECT, reason="同一项目已获承诺制扶持", findings=[finding.id]
    )
    await second.update("decide", DecisionRequest(actor=DEPARTMENT, decision=reject))
    final = await second.result()
    assert final.stage.value == "rejected" and final.findings[0].status.value == "upheld"
    await keep_history(second.env.client, second.handle, "commitment-smart-review-rejected")
