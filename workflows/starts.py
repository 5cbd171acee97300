"""Starting workflows from outside a workflow (the API, the CLI, schedules, benchmarks
and tests): the one place that starts them, with each one's id (built by the function
its kind owns: `application_case_id`, `change_workflow_id`, `match_workflow_id`), id
reuse and conflict policies and the search attributes it starts with. Workflow ids are
stored in histories and looked up by the routes: they never change. (Children, such as
a case's payments, are started by their parent workflow.)
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, ScheduleActionStartWorkflow, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from domain.policy.library import change_workflow_id
from domain.registry.sync import SyncReport
from models import search_attributes as sa_keys
from models.cases import ApplicationInput, CaseStage, CaseState
from models.commitment import CommitmentInput
from models.matching import MatchRequest, MatchScope
from models.policy import Category
from models.policy_change import PolicyChangeInput, PolicyChangeState
from models.policy_feed import HarvestReport
from models.recognition import BatchInput, BatchProgress, RecognitionBatch
from workflows import facts_sync, harvest, library_expiry, matching
from workflows.application import ApplicationWorkflow
from workflows.commitment import CommitmentWorkflow
from workflows.facts_sync import FactSyncInput, FactSyncWorkflow
from workflows.harvest import HarvestInput, PolicyHarvestWorkflow
from workflows.library_expiry import LibraryExpiryWorkflow
from workflows.matching import MatchOutcome, MatchWorkflow, match_workflow_id
from workflows.policy_change import PolicyChangeWorkflow
from workflows.recognition_batch import RecognitionBatchWorkflow

CaseHandle = WorkflowHandle[ApplicationWorkflow, CaseState]
CommitmentHandle = WorkflowHandle[CommitmentWorkflow, CaseState]
PolicyChangeHandle = WorkflowHandle[PolicyChangeWorkflow, PolicyChangeState]
MatchRunHandle = WorkflowHandle[MatchWorkflow, MatchOutcome]
LibraryExpiryHandle = WorkflowHandle[LibraryExpiryWorkflow, list[str]]
BatchHandle = WorkflowHandle[RecognitionBatchWorkflow, BatchProgress]
HarvestHandle = WorkflowHandle[PolicyHarvestWorkflow, HarvestReport]
FactSyncHandle = WorkflowHandle[FactSyncWorkflow, SyncReport]


async def start_application_case(
    client: Client,
    task_queue: str,
    application: ApplicationInput,
    *,
    rpc_timeout: timedelta | None = None,
) -> CaseHandle:
    """Start a case under its case id. Never a second run for an id, running or closed:
    that is a `WorkflowAlreadyStartedError`, and the caller decides what a repeat means."""
    return await client.start_workflow(
        ApplicationWorkflow.run,
        application,
        id=application.case_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa_keys.KIND, "case"),
                SearchAttributePair(sa_keys.CATEGORY, Category.APPLICATION.value),
                SearchAttributePair(sa_keys.ITEM_CODE, application.item_code),
                SearchAttributePair(sa_keys.STAGE, CaseStage.CHECK.value),
            ]
        ),
        rpc_timeout=rpc_timeout,
    )


async def start_commitment_case(
    client: Client,
    task_queue: str,
    commitment: CommitmentInput,
    *,
    rpc_timeout: timedelta | None = None,
) -> CommitmentHandle:
    """Start a commitment case under its case id (as `start_application_case`)."""
    return await client.start_workflow(
        CommitmentWorkflow.run,
        commitment,
        id=commitment.case_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa_keys.KIND, "case"),
                SearchAttributePair(sa_keys.CATEGORY, Category.COMMITMENT.value),
                SearchAttributePair(sa_keys.ITEM_CODE, commitment.item_code),
                SearchAttributePair(sa_keys.STAGE, CaseStage.CHECK.value),
            ]
        ),
        rpc_timeout=rpc_timeout,
    )


async def start_recognition_batch(
    client: Client,
    task_queue: str,
    batch: RecognitionBatch,
    *,
    page_size: int = 200,
    follow_every_s: int = 60,
    history_limit: int = 10_000,
    rpc_timeout: timedelta | None = None,
) -> BatchHandle:
    """Start a batch under its id (`batch_id_of`); a second start of the same batch is
    a `WorkflowAlreadyStartedError`. The batch starts its cases itself. An id whose run
    failed (its batch was never recorded: the starting request failed after starting
    it) may be used again."""
    return await client.start_workflow(
        RecognitionBatchWorkflow.run,
        BatchInput(
            batch_id=batch.batch_id,
            page_size=page_size,
            follow_every_s=follow_every_s,
            history_limit=history_limit,
        ),
        id=batch.batch_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa_keys.KIND, "recognition_batch"),
                SearchAttributePair(sa_keys.CATEGORY, Category.RECOGNITION.value),
                SearchAttributePair(sa_keys.ITEM_CODE, batch.item_code),
                SearchAttributePair(sa_keys.STAGE, str(batch.phase)),
                SearchAttributePair(sa_keys.BATCH, batch.batch_id),
            ]
        ),
        rpc_timeout=rpc_timeout,
    )


async def start_policy_change(
    client: Client, task_queue: str, change: PolicyChangeInput
) -> PolicyChangeHandle:
    """Start the approval of a submitted version, or find the one already running for it
    (a submission sent again); a closed one is never started again."""
    return await client.start_workflow(
        PolicyChangeWorkflow.run,
        change,
        id=change_workflow_id(change.item_code, change.version),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa_keys.KIND, "policy_change"),
                SearchAttributePair(sa_keys.ITEM_CODE, change.item_code),
                SearchAttributePair(sa_keys.REGION, change.region_code),
                SearchAttributePair(sa_keys.DEPARTMENT, change.department_code),
                SearchAttributePair(sa_keys.STAGE, "submitted"),
            ]
        ),
    )


async def start_match_run(
    client: Client, task_queue: str, request: MatchRequest, tag: str
) -> MatchRunHandle:
    """Start a matching run, or find the one already started for the same key
    (`match_workflow_id`)."""
    return await client.start_workflow(
        MatchWorkflow.run,
        request,
        id=match_workflow_id(request, tag),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def start_library_expiry(client: Client, task_queue: str, tag: str) -> LibraryExpiryHandle:
    """One library upkeep now, besides the nightly ones of its schedule."""
    return await client.start_workflow(
        LibraryExpiryWorkflow.run,
        id=f"{library_expiry.SCHEDULE_ID}/{tag}",
        task_queue=task_queue,
    )


async def start_policy_harvest(client: Client, task_queue: str, tag: str) -> HarvestHandle:
    """One harvest of the policy feed now, besides the hourly ones of its schedule (a
    harvest running meanwhile is harmless: each page is stored under the cursor it was
    read with, once)."""
    return await client.start_workflow(
        PolicyHarvestWorkflow.run,
        HarvestInput(),
        id=f"{harvest.SCHEDULE_ID}/{tag}",
        task_queue=task_queue,
    )


async def start_facts_sync(
    client: Client, task_queue: str, tag: str, receipt_polls_s: list[float] | None = None
) -> FactSyncHandle:
    """One sync of the data platform's changes now, besides the scheduled ones."""
    return await client.start_workflow(
        FactSyncWorkflow.run,
        FactSyncInput(receipt_polls_s=receipt_polls_s),
        id=f"{facts_sync.SCHEDULE_ID}/{tag}",
        task_queue=task_queue,
    )


# ----- what the schedules start (cli/schedules.py says when) --------------------------


def library_expiry_action(task_queue: str) -> ScheduleActionStartWorkflow:
    return ScheduleActionStartWorkflow(
        LibraryExpiryWorkflow.run, id=library_expiry.SCHEDULE_ID, task_queue=task_queue
    )


def policy_harvest_action(task_queue: str) -> ScheduleActionStartWorkflow:
    """The policy feed, from where the last harvest stopped."""
    return ScheduleActionStartWorkflow(
        PolicyHarvestWorkflow.run, HarvestInput(), id=harvest.SCHEDULE_ID, task_queue=task_queue
    )


def facts_sync_action(task_queue: str) -> ScheduleActionStartWorkflow:
    """The data platform's change feed, from where the last sync stopped."""
    return ScheduleActionStartWorkflow(
        FactSyncWorkflow.run, FactSyncInput(), id=facts_sync.SCHEDULE_ID, task_queue=task_queue
    )


def nightly_match_action(task_queue: str) -> ScheduleActionStartWorkflow:
    """Every published item against every firm."""
    return ScheduleActionStartWorkflow(
        MatchWorkflow.run,
        MatchRequest(scope=MatchScope.FULL),
        id=matching.SCHEDULE_ID,
        task_queue=task_queue,
    )
