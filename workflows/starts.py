"""Starting matching runs from outside a workflow (API, CLI)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from models.matching import MatchRequest
from workflows.matching import MatchWorkflow, match_workflow_id


async def start_match_run(client: Client, task_queue: str, request: MatchRequest, tag: str) -> str:
    """Start a run, or find the one already started for the same key; returns its id."""
    workflow_id = match_workflow_id(request, tag)
    await client.start_workflow(
        MatchWorkflow.run,
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return workflow_id
