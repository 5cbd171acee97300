"""ApplicationWorkflow on the time-skipping server; the database and the budget system
are replaced by fakes registered under the real activity names."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.workdays import WorkingCalendar
from models import search_attributes as sa_keys
from models.cases import (
    ApplicationInput,
    CaseClosure,
    CaseDecision,
    CaseStage,
    CaseState,
    CheckResult,
    DecisionRequest,
    ReviewAction,
    ReviewEntry,
    StageDeadlineMissed,
    Withdrawal,
    WithdrawRequest,
)
from models.eligibility import ConditionResult, Outcome, UnknownReason, Verdict
from models.payments import (
    PaymentFailure,
    PaymentOutcome,
    PaymentRequest,
    PaymentRetry,
    Reservation,
)
from models.policy import Stage, StageLimit
from models.policy_change import DeadlineRequest
from models.reference import Actor, Role
from models.review import FindingDecision, ReviewOutcome, ReviewRequest
from tests.history_store import keep_history
from workflows.application import ApplicationWorkflow
from workflows.payment import PaymentWorkflow
from workflows.starts import start_application_case

CASEWORKER = Actor(name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ")
FIRM = Actor(name="qiye", role=Role.ENTERPRISE, enterprise_uscc="91330502T000000019")
OTHER_FIRM = Actor(name="other", role=Role.ENTERPRISE, enterprise_uscc="91330502MA2B3C4D5E")
FINANCE = Actor(name="czj_staff", role=Role.FINANCE_CASEWORKER, department_code="330500-CZJ")
STAGES = [
    StageLimit(stage=Stage.DEPARTMENT_REVIEW, department_code="330500-JXJ", working_days=3),
    StageLimit(stage=Stage.FINANCE_REVIEW, department_code="330500-CZJ", working_days=2),
    StageLimit(stage=Stage.PAYMENT, department_code="330500-CZJ", working_days=2),
]


@dataclass
class Edges:
    quota_open: bool = True
    reservations: list[Reservation] = field(default_factory=list)
    overdue: list[StageDeadlineMissed] = field(default_factory=list)
    projected: list[CaseStage] = field(default_factory=list)
    paid: list[PaymentRequest] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    returns: int = 0  # how many instalments the bank sends back before one is paid
    returned: list[PaymentRequest] = field(default_factory=list)
    closed: list[CaseClosure] = field(default_factory=list)
    check: CheckResult | None = None  # what the automatic check finds (default: eligible)
    refusals: int = 0  # how many instructions the budget system refuses before one passes
    failures: list[PaymentFailure] = field(default_factory=list)
    warnings: list[PaymentFailure] = field(default_factory=list)
    retries: list[PaymentRetry] = field(default_factory=list)
    reviewed: list[ReviewRequest] = field(default_factory=list)
    entry_fails: bool = False  # a review's projection (with its deadline) cannot be written
    # The first projection of this stage waits for `release` (set `projecting` meanwhile).
    hold_at: CaseStage | None = None
    projecting: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def activities(self) -> list[Callable[..., Any]]:
        calendar = WorkingCalendar()

        @activity.defn(name="check_application")
        async def check_application(application: ApplicationInput) -> CheckResult:
            if self.check is not None:
                return self.check
            return CheckResult(
                verdict=Verdict.ELIGIBLE,
                conditions=[],
                amount_fen=1_000_000,
                amount_explanation="定额",
                stages=STAGES,
                region_code="330502",
            )

        @activity.defn(name="working_deadline")
        async def working_deadline(request: DeadlineRequest) -> datetime:
            return calendar.add_working_days(request.start, request.working_days)

        @activity.defn(name="project_case")
        async def project_case(state: CaseState) -> None:
            self.projected.append(state.stage)
            if state.stage is self.hold_at and not self.projecting.is_set():
                self.projecting.set()
                await self.release.wait()

        @activity.defn(name="enter_review")
        async def enter_review(entry: ReviewEntry) -> datetime:
            if self.entry_fails:
                raise ApplicationError("database gone", type="Unavailable", non_retryable=True)
            due_at = calendar.add_working_days(entry.start, entry.working_days)
            await project_case(entry.state.model_copy(update={"due_at": due_at}))
            return due_at

        @activity.defn(name="raise_case_overdue")
        async def raise_case_overdue(missed: StageDeadlineMissed) -> None:
            self.overdue.append(missed)

        @activity.defn(name="reserve_budget")
        async def reserve_budget(reservation: Reservation) -> None:
            if not self.quota_open:
                raise ApplicationError("quota exhausted", type="QuotaExhausted", non_retryable=True)
            self.reservations.append(reservation)

        @activity.defn(name="send_instruction")
        async def send_instruction(request: PaymentRequest) -> str:
            if request.instalment <= self.refusals:
                raise ApplicationError(
                    "HTTP 422 收款账户已冻结", type="BudgetSystemRefused", non_retryable=True
                )
            return f"V{request.instalment}"

        @activity.defn(name="record_payment_failure")
        async def record_payment_failure(failure: PaymentFailure) -> None:
            self.failures.append(failure)

        @activity.defn(name="warn_awaiting_budget")
        async def warn_awaiting_budget(shortage: PaymentFailure) -> None:
            self.warnings.append(shortage)

        @activity.defn(name="prepare_retry")
        async def prepare_retry(retry: PaymentRetry) -> int:
            self.retries.append(retry)
            return retry.instalment + 1

        @activity.defn(name="await_settlement")
        async def await_settlement(request: PaymentRequest) -> PaymentOutcome:
            if request.instalment <= self.returns:
                return PaymentOutcome(
                    state="returned", voucher_no=f"V{request.instalment}", return_reason="销户"
                )
            return PaymentOutcome(
                state="paid",
                voucher_no=f"V{request.instalment}",
                bank_serial="B1",
                paid_at=datetime(2026, 11, 27, tzinfo=UTC),
            )

        @activity.defn(name="record_receipt")
        async def record_receipt(request: PaymentRequest, outcome: PaymentOutcome) -> None:
            self.paid.append(request)

        @activity.defn(name="record_returned_payment")
        async def record_returned_payment(request: PaymentRequest, outcome: PaymentOutcome) -> None:
            self.returned.append(request)

        @activity.defn(name="close_case")
        async def close_case(closure: CaseClosure) -> None:
            self.closed.append(closure)

        @activity.defn(name="review_case")
        async def review_case(request: ReviewRequest) -> ReviewOutcome:
            self.reviewed.append(request)
            return ReviewOutcome(evidence=[], findings=[], to_verify=[])

        @activity.defn(name="decide_findings")
        async def decide_findings(decision: FindingDecision) -> None:
            raise AssertionError(f"no finding to decide: {decision}")

        return [
            check_application,
            working_deadline,
            project_case,
            enter_review,
            review_case,
            decide_findings,
            raise_case_overdue,
            reserve_budget,
            send_instruction,
            await_settlement,
            record_receipt,
            record_returned_payment,
            close_case,
            record_payment_failure,
            warn_awaiting_budget,
            prepare_retry,
        ]


@dataclass
class Harness:
    env: WorkflowEnvironment
    edges: Edges
    queue: str

    async def apply(self) -> WorkflowHandle[ApplicationWorkflow, CaseState]:
        case_id = f"application/TEST/2026/{uuid.uuid4().hex[:18]}"
        self.edges.started.append(case_id)
        return await start_application_case(
            self.env.client,
            self.queue,
            ApplicationInput(
                case_id=case_id,
                item_code="TEST",
                version=1,
                period="2026",
                uscc="91330502T000000019",
                applicant="qiye",
                materials={},
            ),
        )


@pytest.fixture
async def harness(time_skipping: WorkflowEnvironment) -> AsyncIterator[Harness]:
    edges = Edges()
    queue = f"application-{uuid.uuid4()}"
    async with Worker(
        time_skipping.client,
        task_queue=queue,
        workflows=[ApplicationWorkflow, PaymentWorkflow],
        activities=edges.activities(),
    ):
        yield Harness(time_skipping, edges, queue)
    # Only once the worker has stopped, so no activity is still running: the test
    # server stops skipping time while one runs, and an activity whose workflow was
    # terminated under it never releases that, for every later test on the server.
    for workflow_id in edges.started:
        handle = time_skipping.client.get_workflow_handle(workflow_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test finished")


def decision(
    actor: Actor, action: ReviewAction = ReviewAction.APPROVE, **kw: Any
) -> DecisionRequest:
    return DecisionRequest(actor=actor, decision=CaseDecision(action=action, **kw))


async def approved_case(harness: Harness) -> WorkflowHandle[ApplicationWorkflow, CaseState]:
    """A case the department and finance have both approved, on its way to payment."""
    handle = await harness.apply()
    await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    await handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
    await handle.execute_update(ApplicationWorkflow.decide, decision(FINANCE))
    return handle


async def _until(
    handle: WorkflowHandle[ApplicationWorkflow, CaseState],
    stage: CaseStage,
    settled: Callable[[CaseState], bool] = lambda state: True,
) -> CaseState:
    """The case's state once it is in `stage` and `settled` holds: a stage is entered
    before its projection and deadline activities finish, and a query can land between."""
    for _ in range(400):  # up to about 20 s on a busy machine
        state = await handle.query(ApplicationWorkflow.state)
        if state.stage is stage and settled(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {stage}")


async def test_a_decision_sent_while_the_case_is_projected_answers_with_its_effect(
    harness: Harness,
) -> None:
    """An update that arrives while the workflow writes its projection is answered only
    once acted on: it never returns the state from before it, and the case takes no
    second decision in between (it would have replaced the first)."""
    harness.edges.hold_at = CaseStage.DEPARTMENT_REVIEW
    with harness.env.auto_time_skipping_disabled():
        handle = await harness.apply()
        await asyncio.wait_for(harness.edges.projecting.wait(), timeout=20)
        first = asyncio.create_task(
            handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
        )
        for _ in range(100):  # until the workflow has taken the update in
            if (await handle.describe()).raw_description.pending_workflow_task is None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        second = handle.execute_update(
            ApplicationWorkflow.decide, decision(CASEWORKER, ReviewAction.REJECT, reason="x")
        )
        with pytest.raises(WorkflowUpdateFailedError):
            await second  # busy: the first is not acted on yet
        harness.edges.release.set()
        after = await asyncio.wait_for(first, timeout=20)
    assert after.stage is CaseStage.FINANCE_REVIEW
    assert [t.action for t in after.timeline].count("approve") == 1
    await handle.execute_update(ApplicationWorkflow.decide, decision(FINANCE))
    assert (await handle.result()).stage is CaseStage.PAID
    await keep_history(harness.env.client, handle, "application-ack-after-projection")


async def test_overdue_review_warns_once_then_completes(harness: Harness) -> None:
    handle = await harness.apply()
    await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    await harness.env.sleep(timedelta(days=10))
    state = await handle.query(ApplicationWorkflow.state)
    assert state.overdue is True and state.stage is CaseStage.DEPARTMENT_REVIEW
    assert [(m.stage, m.department_code) for m in harness.edges.overdue] == [
        (CaseStage.DEPARTMENT_REVIEW, "330500-JXJ")
    ]
    assert (await handle.describe()).typed_search_attributes.get(sa_keys.OVERDUE) is True
    await harness.env.sleep(timedelta(days=10))
    assert len(harness.edges.overdue) == 1

    after = await handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
    assert (after.stage, after.overdue) == (CaseStage.FINANCE_REVIEW, False)
    await handle.execute_update(ApplicationWorkflow.decide, decision(FINANCE))
    final = await handle.result()
    assert (final.stage, final.paid_amount_fen) == (CaseStage.PAID, 1_000_000)
    assert [p.instalment for p in harness.edges.paid] == [1]
    await keep_history(harness.env.client, handle, "application-overdue-paid")


async def test_a_review_whose_projection_fails_still_runs_against_its_deadline(
    harness: Harness,
) -> None:
    harness.edges.entry_fails = True
    handle = await harness.apply()
    # a deadline computed on its own once the projection has failed
    state = await _until(handle, CaseStage.DEPARTMENT_REVIEW, lambda s: s.due_at is not None)
    assert [t.action for t in state.timeline].count("projection_failed") == 1
    await harness.env.sleep(timedelta(days=10))
    assert [m.stage for m in harness.edges.overdue] == [CaseStage.DEPARTMENT_REVIEW]
    await handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
    await handle.execute_update(ApplicationWorkflow.decide, decision(FINANCE))
    assert (await handle.result()).stage is CaseStage.PAID


async def test_awaiting_budget_resumes_when_quota_is_added(harness: Harness) -> None:
    harness.edges.quota_open = False
    handle = await approved_case(harness)
    waiting = await _until(handle, CaseStage.AWAITING_BUDGET)
    assert waiting.approved_amount_fen == 1_000_000
    harness.edges.quota_open = True
    await handle.signal(ApplicationWorkflow.budget_added)
    final = await handle.result()
    assert final.stage is CaseStage.PAID
    assert len(harness.edges.reservations) == 1


async def test_rejection_reserves_nothing(harness: Harness) -> None:
    handle = await harness.apply()
    await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    await handle.execute_update(
        ApplicationWorkflow.decide,
        decision(CASEWORKER, ReviewAction.REJECT, reason="不符合产业导向"),
    )
    final = await handle.result()
    assert final.stage is CaseStage.REJECTED
    assert harness.edges.reservations == [] and harness.edges.paid == []
    assert final.timeline[-1].detail == "不符合产业导向"
    await keep_history(harness.env.client, handle, "application-rejected")


async def test_duplicate_request_id_is_applied_once(harness: Harness) -> None:
    handle = await harness.apply()
    await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    first = await handle.execute_update(
        ApplicationWorkflow.decide, decision(CASEWORKER), id="req-1"
    )
    again = await handle.execute_update(
        ApplicationWorkflow.decide, decision(CASEWORKER), id="req-1"
    )
    assert first.stage is again.stage is CaseStage.FINANCE_REVIEW
    state = await handle.query(ApplicationWorkflow.state)
    assert [e.action for e in state.timeline].count("approve") == 1


def withdrawal(actor: Actor, reason: str = "") -> WithdrawRequest:
    return WithdrawRequest(actor=actor, withdrawal=Withdrawal(reason=reason))


async def refused(
    handle: WorkflowHandle[ApplicationWorkflow, CaseState], request: WithdrawRequest
) -> str:
    """The type of the validator's refusal of a withdrawal."""
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(ApplicationWorkflow.withdraw, request)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    return str(cause.type)


async def test_firm_withdraws_during_review_and_nothing_is_reserved(harness: Harness) -> None:
    handle = await harness.apply()
    await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    assert await refused(handle, withdrawal(OTHER_FIRM)) == "Forbidden"
    assert await refused(handle, withdrawal(CASEWORKER, "不想办了")) == "Forbidden"
    # Finance cancels only a case that cannot be paid; in review, the reviewer rejects.
    assert await refused(handle, withdrawal(FINANCE, "撤销")) == "WrongStage"
    state = await handle.execute_update(
        ApplicationWorkflow.withdraw, withdrawal(FIRM, "项目已取消")
    )
    assert state.stage is CaseStage.WITHDRAWN
    assert (state.timeline[-1].action, state.timeline[-1].detail) == ("withdrawn", "项目已取消")
    assert (await handle.result()).stage is CaseStage.WITHDRAWN
    assert harness.edges.reservations == [] and harness.edges.paid == []
    [closure] = harness.edges.closed
    assert (closure.stage, closure.instalment) == (CaseStage.WITHDRAWN, 1)


async def test_firm_withdraws_while_awaiting_budget(harness: Harness) -> None:
    harness.edges.quota_open = False
    handle = await approved_case(harness)
    await _until(handle, CaseStage.AWAITING_BUDGET)
    state = await handle.execute_update(ApplicationWorkflow.withdraw, withdrawal(FIRM))
    assert state.stage is CaseStage.WITHDRAWN
    assert harness.edges.paid == [] and len(harness.edges.closed) == 1


async def test_returned_payment_waits_for_the_firm_then_pays_the_next_instalment(
    harness: Harness,
) -> None:
    harness.edges.returns = 1
    handle = await approved_case(harness)
    waiting = await _until(handle, CaseStage.ACCOUNT_CORRECTION)
    assert (waiting.waiting_for_role, waiting.instalment) == ("enterprise", 2)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(ApplicationWorkflow.confirm_account, OTHER_FIRM)
    state = await handle.execute_update(ApplicationWorkflow.confirm_account, FIRM)
    assert (state.stage, state.instalment) == (CaseStage.PAYMENT, 2)
    final = await handle.result()
    assert (final.stage, final.instalment, final.paid_amount_fen) == (CaseStage.PAID, 2, 1_000_000)
    assert [r.instalment for r in harness.edges.returned] == [1]
    assert [p.instalment for p in harness.edges.paid] == [2]


async def test_finance_cancels_a_case_whose_account_is_never_corrected(harness: Harness) -> None:
    harness.edges.returns = 1
    handle = await approved_case(harness)
    await _until(handle, CaseStage.ACCOUNT_CORRECTION)
    assert await refused(handle, withdrawal(FINANCE)) == "InvalidInput"  # a reason is owed
    state = await handle.execute_update(
        ApplicationWorkflow.withdraw, withdrawal(FINANCE, "企业账户三个月未更正")
    )
    assert state.stage is CaseStage.CANCELLED
    assert harness.edges.paid == []
    # The reservation moved to the next instalment when the payment came back:
    # that is the one to release.
    [closure] = harness.edges.closed
    assert (closure.stage, closure.instalment, closure.actor) == (
        CaseStage.CANCELLED,
        2,
        "czj_staff",
    )


async def test_approved_amount_is_empty_until_someone_approves(harness: Harness) -> None:
    handle = await harness.apply()
    state = await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    assert (state.computed_amount_fen, state.approved_amount_fen) == (1_000_000, None)
    assert state.model_dump()["computed_amount_yuan"] == "10,000.00元"
    approved = await handle.execute_update(
        ApplicationWorkflow.decide, decision(CASEWORKER, amount_fen=800_000, reason="核减")
    )
    assert approved.approved_amount_fen == 800_000


async def test_possibly_eligible_goes_to_review_with_the_unknowns_marked(harness: Harness) -> None:
    unknown = ConditionResult(
        path="all[1]",
        description="社保参保人数 ≥ 10 人",
        outcome=Outcome.UNKNOWN,
        fact="social_security_headcount",
        reason=UnknownReason.MISSING,
    )
    harness.edges.check = CheckResult(
        verdict=Verdict.POSSIBLY_ELIGIBLE,
        conditions=[unknown],
        amount_fen=None,
        amount_explanation="缺少研发费用，无法计算金额",
        stages=STAGES,
        region_code="330502",
    )
    handle = await harness.apply()
    state = await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    assert state.verdict is Verdict.POSSIBLY_ELIGIBLE
    assert state.to_verify == [
        "需人工核实：社保参保人数 ≥ 10 人",
        "金额无法自动计算：审核通过时请核定金额",
    ]
    assert state.conditions == [unknown]
    # Nothing to approve against: the reviewer must name the amount.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
    state = await handle.execute_update(
        ApplicationWorkflow.decide, decision(CASEWORKER, amount_fen=300_000)
    )
    assert (state.stage, state.approved_amount_fen) == (CaseStage.FINANCE_REVIEW, 300_000)


async def test_a_refused_instruction_waits_for_finance_then_pays_again(harness: Harness) -> None:
    harness.edges.refusals = 1
    handle = await approved_case(harness)
    failed = await _until(handle, CaseStage.PAYMENT_FAILED)
    assert failed.waiting_for_department == "330500-CZJ"
    assert failed.failure_reason is not None and "冻结" in failed.failure_reason
    assert [f.department_code for f in harness.edges.failures] == ["330500-CZJ"]
    description = await handle.describe()
    assert description.typed_search_attributes.get(sa_keys.DEPARTMENT) == "330500-CZJ"
    # Only the item's finance pays again, and only by approving.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            ApplicationWorkflow.decide, decision(FINANCE, ReviewAction.REJECT, reason="x")
        )
    await handle.execute_update(ApplicationWorkflow.decide, decision(FINANCE, reason="账户已解冻"))
    final = await handle.result()
    assert (final.stage, final.instalment, final.paid_amount_fen) == (CaseStage.PAID, 2, 1_000_000)
    assert [r.instalment for r in harness.edges.retries] == [1]
    await keep_history(harness.env.client, handle, "application-payment-failed-retried")


async def test_a_refused_instruction_can_be_cancelled_by_finance(harness: Harness) -> None:
    harness.edges.refusals = 5
    handle = await approved_case(harness)
    await _until(handle, CaseStage.PAYMENT_FAILED)
    state = await handle.execute_update(
        ApplicationWorkflow.withdraw, withdrawal(FINANCE, "企业账户长期冻结")
    )
    assert state.stage is CaseStage.CANCELLED
    [closure] = harness.edges.closed
    assert (closure.stage, closure.instalment) == (CaseStage.CANCELLED, 1)
    assert harness.edges.paid == []


async def test_awaiting_budget_warns_finance_once(harness: Harness) -> None:
    harness.edges.quota_open = False
    handle = await approved_case(harness)
    waiting = await _until(handle, CaseStage.AWAITING_BUDGET)
    assert waiting.waiting_for_department == "330500-CZJ"
    await harness.env.sleep(timedelta(days=3))  # retried daily, warned once
    assert [w.department_code for w in harness.edges.warnings] == ["330500-CZJ"]
    state = await handle.execute_update(
        ApplicationWorkflow.withdraw, withdrawal(FINANCE, "年度指标已用完")
    )
    assert state.stage is CaseStage.CANCELLED
    await handle.result()
    await keep_history(harness.env.client, handle, "application-awaiting-budget-cancelled")


async def test_awaiting_budget_is_retried_daily_without_a_signal(harness: Harness) -> None:
    harness.edges.quota_open = False
    handle = await approved_case(harness)
    await _until(handle, CaseStage.AWAITING_BUDGET)
    await harness.env.sleep(timedelta(days=2))
    harness.edges.quota_open = True  # quota set, but nobody signals the case
    await harness.env.sleep(timedelta(days=2))
    final = await handle.result()
    assert (final.stage, final.paid_amount_fen) == (CaseStage.PAID, 1_000_000)
    assert len(harness.edges.reservations) == 1
    await keep_history(harness.env.client, handle, "application-budget-retried-daily")
