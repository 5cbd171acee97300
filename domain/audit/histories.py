"""A case's workflows as Temporal recorded them: the case's own workflow and every child
it started (payments; a batch's cases and theirs), fetched, decoded for reading, and
replayed against the current code."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC as _UTC
from typing import Any

from google.protobuf import json_format
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from core.codec import EncryptionCodec, decode_message
from models.audit import ReplayReport, ReplayVerdict, WorkflowRun

_CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: "completed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "timed_out",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "canceled",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "continued_as_new",
}
# How the SDK's core names the event where a replay parted from the history.
_EVENT_ID = re.compile(r"(?:HistoryEvent\(id: |event[ _]id[:= ]+|event )(\d+)", re.IGNORECASE)


async def family(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """The workflow's history and those of every child it started, and theirs."""
    found: list[WorkflowHistory] = []
    pending, seen = [workflow_id], set()
    while pending:
        current = pending.pop(0)
        if current in seen:
            continue
        seen.add(current)
        history = await client.get_workflow_handle(current).fetch_history()
        found.append(history)
        pending += children(history)
    return found


def children(history: WorkflowHistory) -> list[str]:
    started = EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    return [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for e in history.events
        if e.event_type == started
    ]


def run_of(history: WorkflowHistory) -> WorkflowRun:
    first, last = history.events[0], history.events[-1]
    started = first.workflow_execution_started_event_attributes
    status = _CLOSED.get(last.event_type, "running")
    return WorkflowRun(
        workflow_id=history.workflow_id,
        run_id=started.original_execution_run_id,
        workflow_type=started.workflow_type.name,
        status=status,
        started_at=first.event_time.ToDatetime().replace(tzinfo=_UTC),
        closed_at=last.event_time.ToDatetime().replace(tzinfo=_UTC)
        if status != "running"
        else None,
        events=len(history.events),
    )


def decoded(codec: EncryptionCodec, history: WorkflowHistory) -> dict[str, Any]:
    """The history in protobuf JSON with every payload and failure message decrypted: what
    an auditor reads, and what replays offline with no key."""
    proto = History(events=history.events)
    decode_message(codec, proto)
    rendered: dict[str, Any] = json_format.MessageToDict(proto)
    return rendered


def completion_payload(history: WorkflowHistory) -> Any:
    """The result payload of a completed workflow, or None."""
    last = history.events[-1]
    if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        return None
    result = last.workflow_execution_completed_event_attributes.result
    return result.payloads[0] if result.payloads else None


async def replay(
    histories: Iterable[WorkflowHistory], workflows: Sequence[type], converter: DataConverter
) -> ReplayReport:
    """Replay each history on the current workflow code: identical, or where it parted."""
    listed = list(histories)
    verdicts: list[ReplayVerdict] = []
    replayer = Replayer(workflows=workflows, data_converter=converter)
    async with replayer.workflow_replay_iterator(_each(listed)) as results:
        index = 0
        async for result in results:
            history = listed[index]
            index += 1
            failure = result.replay_failure
            kind = history.events[0].workflow_execution_started_event_attributes.workflow_type
            verdicts.append(
                ReplayVerdict(
                    workflow_id=history.workflow_id,
                    workflow_type=kind.name,
                    identical=failure is None,
                    first_diverging_event=_diverging_event(failure),
                    error=None if failure is None else str(failure)[:2000],
                )
            )
    return ReplayReport(
        replayed=len(verdicts),
        identical=sum(v.identical for v in verdicts),
        verdicts=verdicts,
    )


def _diverging_event(failure: Exception | None) -> int | None:
    if failure is None:
        return None
    match = _EVENT_ID.search(str(failure))
    return int(match.group(1)) if match else None


async def _each(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


async def closed_between(client: Client, since_iso: str, until_iso: str) -> list[str]:
    """Ids of the workflows that closed in [since, until) (RFC 3339 times)."""
    query = (
        f"ExecutionStatus != 'Running' AND CloseTime >= '{since_iso}' AND CloseTime < '{until_iso}'"
    )
    return [w.id async for w in client.list_workflows(query)]
