"""ApplicationWorkflow on the time-skipping server; the database and the budget system
are replaced by fakes registered under the real activity names."""

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.workdays import WorkingCalendar
from domain.rules import Verdict
from models import search_attributes as sa_keys
from models.case import (
    ApplicationInput,
    CaseDecision,
    CaseStage,
    CaseState,
    CheckResult,
    DecisionRequest,
    PaymentOutcome,
    PaymentRequest,
    Reservation,
    ReviewAction,
    StageDeadlineMissed,
)
from models.policy import Stage, StageLimit
from models.policy_change import DeadlineRequest
from models.reference import Actor, Role
from workflows.application import ApplicationWorkflow
from workflows.payment import PaymentWorkflow

CASEWORKER = Actor(name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ")
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

    def activities(self) -> list[Callable[..., Any]]:
        calendar = WorkingCalendar()

        @activity.defn(name="check_application")
        async def check_application(application: ApplicationInput) -> CheckResult:
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
            return f"V{request.instalment}"

        @activity.defn(name="await_settlement")
        async def await_settlement(request: PaymentRequest) -> PaymentOutcome:
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
            raise AssertionError("no returns in these tests")

        return [
            check_application,
            working_deadline,
            project_case,
            raise_case_overdue,
            reserve_budget,
            send_instruction,
            await_settlement,
            record_receipt,
            record_returned_payment,
        ]


@dataclass
class Harness:
    env: WorkflowEnvironment
    edges: Edges
    queue: str

    async def apply(self) -> WorkflowHandle[ApplicationWorkflow, CaseState]:
        case_id = f"application/TEST/2026/{uuid.uuid4().hex[:18]}"
        self.edges.started.append(case_id)
        return await self.env.client.start_workflow(
            ApplicationWorkflow.run,
            ApplicationInput(
                case_id=case_id,
                item_code="TEST",
                version=1,
                period="2026",
                uscc="91330502T000000019",
                applicant="qiye",
                materials={},
            ),
            id=case_id,
            task_queue=self.queue,
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
        for workflow_id in edges.started:
            handle = time_skipping.client.get_workflow_handle(workflow_id)
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test finished")


def decision(
    actor: Actor, action: ReviewAction = ReviewAction.APPROVE, **kw: Any
) -> DecisionRequest:
    return DecisionRequest(actor=actor, decision=CaseDecision(action=action, **kw))


async def _until(
    handle: WorkflowHandle[ApplicationWorkflow, CaseState], stage: CaseStage
) -> CaseState:
    for _ in range(100):
        state = await handle.query(ApplicationWorkflow.state)
        if state.stage is stage:
            return state
    raise AssertionError(f"never reached {stage}")


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


async def test_awaiting_budget_resumes_when_quota_is_added(harness: Harness) -> None:
    harness.edges.quota_open = False
    handle = await harness.apply()
    await _until(handle, CaseStage.DEPARTMENT_REVIEW)
    await handle.execute_update(ApplicationWorkflow.decide, decision(CASEWORKER))
    await handle.execute_update(ApplicationWorkflow.decide, decision(FINANCE))
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
