"""A commitment lives for years, through many deploys: a change to its workflow is made
behind `workflow.patched`, and both the cases started before it (stored histories
without the patch's marker) and those started after it (with it) replay on the code.

`commitment-full-settlement` was stored before the approval notice existed; the
patched step was added afterwards and `commitment-approval-notice` stored with it."""

from __future__ import annotations

import json

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from tests.history_store import HISTORIES, replayer
from workflows.commitment import APPROVAL_NOTICE

MARKER = EventType.EVENT_TYPE_MARKER_RECORDED


def history(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())


def patches_in(h: WorkflowHistory) -> set[str]:
    found = set()
    for event in h.events:
        if event.event_type == MARKER:
            details = event.marker_recorded_event_attributes.details
            if "patch-data" in details:
                payload = details["patch-data"].payloads[0]
                found.add(json.loads(payload.data)["id"])
    return found


def notices_in(h: WorkflowHistory) -> int:
    """How many `notify` activities the case scheduled."""
    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    return sum(
        1
        for e in h.events
        if e.event_type == scheduled
        and e.activity_task_scheduled_event_attributes.activity_type.name == "notify"
    )


async def test_a_case_from_before_the_patch_replays_without_the_new_step() -> None:
    before = history("commitment-full-settlement")
    assert APPROVAL_NOTICE not in patches_in(before)
    result = await replayer().replay_workflow(before, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_a_case_from_after_the_patch_replays_with_it() -> None:
    after = history("commitment-approval-notice")
    assert APPROVAL_NOTICE in patches_in(after)
    # The new step is there: one notice more than a case from before, same outcome.
    assert notices_in(after) == notices_in(history("commitment-full-settlement")) + 1
    result = await replayer().replay_workflow(after, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
