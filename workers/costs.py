"""What each activity costs the worker: statements sent to the database, CPU and wall
time, logged as `activity.cost` (setting `ZHIDA_PROFILE_ACTIVITIES`).

Statements are counted exactly, per activity, at any concurrency. CPU is the whole
process's (`time.process_time`: the event loop, the database driver's threads and any
workflow task run meanwhile), so it is the activity's own only while one runs at a time;
`bench/application_throughput.py --profile` runs the cases one by one for that.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

log = structlog.get_logger()

# The statements of the activity running in this context (SQLAlchemy runs its
# synchronous work in a greenlet that shares the calling task's context).
_statements: ContextVar[list[int] | None] = ContextVar("activity_statements", default=None)


def count_statements(engine: AsyncEngine) -> None:
    """Count every statement the engine sends against the activity that sent it."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        counter = _statements.get()
        if counter is not None:
            counter[0] += 1


class ActivityCosts(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Measured(next)


class _Measured(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        counter = [0]
        token = _statements.set(counter)
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return await super().execute_activity(input)
        finally:
            _statements.reset(token)
            log.info(
                "activity.cost",
                activity=activity.info().activity_type,
                statements=counter[0],
                cpu_ms=round((time.process_time() - cpu) * 1000, 2),
                wall_ms=round((time.perf_counter() - wall) * 1000, 2),
            )
