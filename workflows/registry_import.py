"""Importing a data-platform file, then re-matching the firms it changed: the one path of
`zhida import enterprises` and `POST /api/v1/imports/enterprises`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.progress import ProgressCallback
from domain.registry.importer import ImportReport, import_content
from models.matching import MatchRequest, MatchScope
from workflows.starts import start_match_run

log = structlog.get_logger()


async def import_then_rematch(
    transaction: AbstractAsyncContextManager[AsyncSession],
    content: bytes,
    fmt: str,
    *,
    temporal: Callable[[], Awaitable[Client | None]],
    task_queue: str,
    receipt_polls_s: list[float],
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import the file in `transaction`, whose end records it (every row or none: a bad
    row is an `AppError` naming it), then start a run that re-matches the firms it
    changed; `report.match_run` names that run. The import stands whether or not the run
    starts: one not started now (Temporal unreachable: `temporal` gives None or fails)
    is left to the nightly run, with a warning."""
    async with transaction as session:
        report = await import_content(session, content, fmt, progress)
    if not report.changed:
        return report
    assert report.written_at is not None
    request = MatchRequest(
        scope=MatchScope.FIRMS, changed_since=report.written_at, receipt_polls_s=receipt_polls_s
    )
    try:
        client = await temporal()
        if client is None:
            raise RuntimeError("Temporal is not reachable")
        report.match_run = (await start_match_run(client, task_queue, request, "")).id
    except Exception as exc:
        log.warning("import.match_not_started", error=str(exc))
    return report
