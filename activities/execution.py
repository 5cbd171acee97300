"""The identity of the running activity execution, for side effects that must happen
once per execution however often it is attempted."""

from __future__ import annotations

from temporalio import activity


def execution_key() -> str:
    """The same on every attempt of the running activity execution, and different for
    any other: another activity, the same one scheduled again, or another run."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"
