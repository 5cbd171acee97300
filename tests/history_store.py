"""Stored workflow histories: the proof that a running case survives a deploy.

End-to-end tests hand their finished workflows to `keep_history`, which replays each
history (and its child workflows') on the current code. With
`ZHIDA_CAPTURE_HISTORIES=1` it also writes them to `tests/histories/`, where
`tests/test_history_replay.py` replays them on every later run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer

from core.temporal import DATA_CONVERTER
from workflows.all import ALL_WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(workflows=ALL_WORKFLOWS, data_converter=DATA_CONVERTER)


async def keep_history(client: Client, handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Replay the finished workflow `handle` and every child it started; store them
    under `name` when capturing."""
    capture = os.environ.get("ZHIDA_CAPTURE_HISTORIES") == "1"
    pending = [(name, handle.id)]
    while pending:
        stored_as, workflow_id = pending.pop(0)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        await replayer().replay_workflow(history)
        if capture:
            HISTORIES.mkdir(exist_ok=True)
            text = json.dumps(json.loads(history.to_json()), indent=1, ensure_ascii=False)
            (HISTORIES / f"{stored_as}.json").write_text(text + "\n")
        started = EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
        for event in history.events:
            if event.event_type == started:
                child = event.child_workflow_execution_started_event_attributes
                child_id = child.workflow_execution.workflow_id
                kind = child.workflow_type.name.removesuffix("Workflow").lower()
                pending.append((f"{name}.{kind}-{child_id.rsplit('/', 1)[-1]}", child_id))
