"""The policy-change workflow on the time-skipping server, with the database edge
replaced by fakes registered under the real activity names."""

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.workdays import WorkingCalendar
from models import search_attributes as sa_keys
from models.matching import MatchRequest
from models.policy_change import (
    ChangeStage,
    DeadlineRequest,
    PolicyChangeInput,
    PolicyChangeState,
    ReviewDecision,
    ReviewOutcome,
    StageOverdue,
)
from models.reference import Actor, Role
from workflows.policy_change import PolicyChangeWorkflow

AUTHOR = Actor(name="jxj_staff", role=Role.DEPARTMENT_CASEWORKER, department_code="330500-JXJ")
HEAD = Actor(name="jxj_head", role=Role.DEPARTMENT_HEAD, department_code="330500-JXJ")
OTHER_HEAD = Actor(name="kjj_head", role=Role.DEPARTMENT_HEAD, department_code="330500-KJJ")
FINANCE = Actor(name="czj_staff", role=Role.FINANCE_CASEWORKER, department_code="330500-CZJ")
DISTRICT_FINANCE = Actor(
    name="wx_czj_staff", role=Role.FINANCE_CASEWORKER, department_code="330502-CZJ"
)


@dataclass
class FakeLibrary:
    """Stands in for the database side: records what the workflow asked for."""

    started: list[str] = field(default_factory=list)
    reviews: list[ReviewOutcome] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    overdue: list[StageOverdue] = field(default_factory=list)
    matched: list[MatchRequest] = field(default_factory=list)

    def activities(self) -> list[Callable[..., Any]]:
        calendar = WorkingCalendar()

        @activity.defn(name="working_deadline")
        async def working_deadline(request: DeadlineRequest) -> datetime:
            return calendar.add_working_days(request.start, request.working_days)

        @activity.defn(name="record_review")
        async def record_review(outcome: ReviewOutcome) -> None:
            self.reviews.append(outcome)

        @activity.defn(name="publish_version")
        async def publish_version(change: PolicyChangeInput) -> None:
            self.published.append(change.version)

        @activity.defn(name="raise_overdue")
        async def raise_overdue(overdue: StageOverdue) -> None:
            self.overdue.append(overdue)

        @activity.defn(name="record_match_request")
        async def record_match_request(request: MatchRequest) -> None:
            self.matched.append(request)

        return [
            working_deadline,
            record_review,
            publish_version,
            raise_overdue,
            record_match_request,
        ]


def change(money_changed: bool = True, author: str = AUTHOR.name) -> PolicyChangeInput:
    return PolicyChangeInput(
        item_code="HZ-JXJ-02",
        version=2,
        title="测试",
        author=author,
        department_code="330500-JXJ",
        region_code="330500",
        finance_department_code="330500-CZJ",
        money_changed=money_changed,
        head_review_days=3,
        finance_review_days=5,
    )


@workflow.defn(name="MatchWorkflow")
class RecordedMatchRun:
    """Stands in for the matching run a publication starts (tested on its own in
    tests/test_matching_e2e.py): it only records the request."""

    @workflow.run
    async def run(self, request: MatchRequest) -> None:
        await workflow.execute_activity(
            "record_match_request", request, start_to_close_timeout=timedelta(seconds=10)
        )


@dataclass
class Harness:
    env: WorkflowEnvironment
    fake: FakeLibrary
    queue: str

    async def start(
        self, input: PolicyChangeInput
    ) -> WorkflowHandle[PolicyChangeWorkflow, PolicyChangeState]:
        workflow_id = f"policy-change/{uuid.uuid4()}"
        self.fake.started.append(workflow_id)
        return await self.env.client.start_workflow(
            PolicyChangeWorkflow.run, input, id=workflow_id, task_queue=self.queue
        )


@pytest.fixture
async def harness(own_time_skipping: WorkflowEnvironment) -> AsyncIterator[Harness]:
    # A server of its own per test: a publication starts a match run as an abandoned
    # child, and this test server leaves its clock locked once such a parent has
    # closed, which would stall every later test's timers.
    time_skipping = own_time_skipping
    fake = FakeLibrary()
    queue = f"policy-change-{uuid.uuid4()}"
    async with Worker(
        time_skipping.client,
        task_queue=queue,
        workflows=[PolicyChangeWorkflow, RecordedMatchRun],
        activities=fake.activities(),
    ):
        yield Harness(time_skipping, fake, queue)
        # A workflow left waiting would hold the shared server's clock once its worker is gone.
        for workflow_id in fake.started:
            handle = time_skipping.client.get_workflow_handle(workflow_id)
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test finished")


async def test_money_change_needs_head_then_finance_then_publishes(
    harness: Harness,
) -> None:
    fake = harness.fake
    handle = await harness.start(change(money_changed=True))
    await handle.execute_update(
        PolicyChangeWorkflow.approve, ReviewDecision(actor=HEAD, comment="同意")
    )
    state = await handle.query(PolicyChangeWorkflow.state)
    assert state.stage is ChangeStage.FINANCE_REVIEW
    assert state.waiting_for_department == "330500-CZJ"
    await handle.execute_update(
        PolicyChangeWorkflow.approve, ReviewDecision(actor=FINANCE, comment="财政同意")
    )
    result = await handle.result()
    assert result.stage is ChangeStage.PUBLISHED
    assert [(r.stage, r.approved, r.actor.name) for r in fake.reviews] == [
        (ChangeStage.DEPARTMENT_HEAD_REVIEW, True, "jxj_head"),
        (ChangeStage.FINANCE_REVIEW, True, "czj_staff"),
    ]
    assert fake.published == [2]
    # The published version is matched against every firm by a run of its own.
    for _ in range(50):
        if fake.matched:
            break
        await harness.env.sleep(timedelta(seconds=1))
    assert [(r.scope.value, r.item_code) for r in fake.matched] == [("item", "HZ-JXJ-02")]


async def test_no_money_change_publishes_after_head(
    harness: Harness,
) -> None:
    fake = harness.fake
    handle = await harness.start(change(money_changed=False))
    await handle.execute_update(PolicyChangeWorkflow.approve, ReviewDecision(actor=HEAD))
    assert (await handle.result()).stage is ChangeStage.PUBLISHED
    assert fake.published == [2]


async def test_rejection_ends_without_publishing(
    harness: Harness,
) -> None:
    fake = harness.fake
    handle = await harness.start(change())
    await handle.execute_update(
        PolicyChangeWorkflow.reject, ReviewDecision(actor=HEAD, comment="金额依据不足")
    )
    result = await handle.result()
    assert result.stage is ChangeStage.REJECTED
    assert fake.published == []
    assert fake.reviews[0].comment == "金额依据不足"


async def _refused(
    handle: WorkflowHandle[PolicyChangeWorkflow, PolicyChangeState],
    decision: ReviewDecision,
    reject: bool = False,
) -> ApplicationError:
    update = PolicyChangeWorkflow.reject if reject else PolicyChangeWorkflow.approve
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(update, decision)
    assert isinstance(caught.value.cause, ApplicationError)
    return caught.value.cause


async def test_validators_refuse_wrong_role_department_author_and_stage(
    harness: Harness,
) -> None:
    fake = harness.fake
    handle = await harness.start(change(author=HEAD.name))
    assert (
        await _refused(handle, ReviewDecision(actor=AUTHOR))
    ).type == "Forbidden"  # caseworker, not head
    assert (
        await _refused(handle, ReviewDecision(actor=OTHER_HEAD))
    ).type == "Forbidden"  # other department
    assert (
        await _refused(handle, ReviewDecision(actor=FINANCE))
    ).type == "Forbidden"  # not finance's stage yet
    refusal = await _refused(
        handle, ReviewDecision(actor=HEAD)
    )  # the author approving their own change
    assert refusal.type == "Forbidden" and "own change" in refusal.message
    assert (
        await _refused(handle, ReviewDecision(actor=HEAD, comment=""), reject=True)
    ).type == "Forbidden"

    other = await harness.start(change())
    assert (
        await _refused(other, ReviewDecision(actor=HEAD, comment="  "), reject=True)
    ).type == "InvalidInput"
    await other.execute_update(PolicyChangeWorkflow.approve, ReviewDecision(actor=HEAD))
    assert (
        await _refused(other, ReviewDecision(actor=DISTRICT_FINANCE))
    ).type == "Forbidden"  # wrong region's finance
    # Refused updates leave no trace in history: only the one accepted update is there.
    history = await other.fetch_history()
    accepted = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 1
    assert [r.actor.name for r in fake.reviews] == ["jxj_head"]


async def test_repeated_request_id_is_answered_not_applied_twice(
    harness: Harness,
) -> None:
    handle = await harness.start(change())
    first = await handle.execute_update(
        PolicyChangeWorkflow.approve, ReviewDecision(actor=HEAD), id="req-1"
    )
    again = await handle.execute_update(
        PolicyChangeWorkflow.approve, ReviewDecision(actor=HEAD), id="req-1"
    )
    assert again.decisions == first.decisions
    state = await handle.query(PolicyChangeWorkflow.state)
    assert len(state.decisions) == 1


async def test_stage_past_its_time_limit_warns_once_and_keeps_waiting(
    harness: Harness,
) -> None:
    fake = harness.fake
    handle = await harness.start(change())
    await harness.env.sleep(timedelta(days=10))  # 3 working days are well past
    state = await handle.query(PolicyChangeWorkflow.state)
    assert state.overdue is True
    assert state.stage is ChangeStage.DEPARTMENT_HEAD_REVIEW
    assert [(o.stage, o.department_code) for o in fake.overdue] == [
        (ChangeStage.DEPARTMENT_HEAD_REVIEW, "330500-JXJ")
    ]
    description = await handle.describe()
    assert description.typed_search_attributes.get(sa_keys.OVERDUE) is True
    await harness.env.sleep(timedelta(days=10))
    assert len(fake.overdue) == 1  # one warning per stage, not one per tick

    await handle.execute_update(PolicyChangeWorkflow.approve, ReviewDecision(actor=HEAD))
    state = await handle.query(PolicyChangeWorkflow.state)
    assert state.stage is ChangeStage.FINANCE_REVIEW and state.overdue is False
    await handle.execute_update(PolicyChangeWorkflow.approve, ReviewDecision(actor=FINANCE))
    assert (await handle.result()).stage is ChangeStage.PUBLISHED
