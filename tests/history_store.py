"""Stored workflow histories: the proof that a running case survives a deploy.

End-to-end tests hand their finished workflows to `keep_history`, which replays each
history (and its child workflows') on the current code. With
`ZHIDA_CAPTURE_HISTORIES=1` it also writes them to `tests/histories/`, where
`tests/test_history_replay.py` replays them on every later run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from core.codec import EncryptionCodec, encode_message, key_ring
from core.settings import Settings
from core.temporal import converter_for
from workflows.all import ALL_WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(workflows=ALL_WORKFLOWS, data_converter=converter_for(Settings()))


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
            _write(HISTORIES / f"{stored_as}.json", history)
        started = EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
        for event in history.events:
            if event.event_type == started:
                child = event.child_workflow_execution_started_event_attributes
                child_id = child.workflow_execution.workflow_id
                kind = child.workflow_type.name.removesuffix("Workflow").lower()
                pending.append((f"{name}.{kind}-{child_id.rsplit('/', 1)[-1]}", child_id))


def _write(path: Path, history: WorkflowHistory) -> None:
    text = json.dumps(json.loads(history.to_json()), indent=1, ensure_ascii=False)
    path.write_text(text + "\n")


def seal(path: Path) -> bool:
    """Encrypt the clear payloads and failure messages of a stored history with the
    test key ring, as the codec would have written them; True if anything changed.
    (For histories recorded before payloads were encrypted: their commands are those
    of older code, so they are sealed, never re-recorded.)"""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    proto = History(events=history.events)
    before = proto.SerializeToString()
    encode_message(EncryptionCodec(key_ring(Settings())), proto)
    if proto.SerializeToString() == before:
        return False
    _write(path, WorkflowHistory(path.stem, list(proto.events)))
    return True


if __name__ == "__main__":  # python -m tests.history_store [FILE...]: seal stored histories
    os.environ["ZHIDA_CODEC_KEY_FILE"] = str(HISTORIES / "test-codec-keys")
    for name in sys.argv[1:] or sorted(str(p) for p in HISTORIES.glob("*.json")):
        print(name, "sealed" if seal(Path(name)) else "already sealed")  # noqa: T201
