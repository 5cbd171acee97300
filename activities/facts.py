"""Activities of the facts sync: one page of the data platform's change feed, fetched
and stored."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.data_platform import DataPlatformClient, DataPlatformRefused
from core.temporal_errors import ErrorType
from domain.registry import sync
from domain.registry.sync import SyncReport

log = structlog.get_logger()


class FactSyncActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], platform: DataPlatformClient
    ) -> None:
        self._sessionmaker = sessionmaker
        self._platform = platform

    @activity.defn
    async def sync_facts_page(self, feed: str) -> SyncReport:
        """Fetch the firms changed after the feed's stored cursor and store their figures
        with the cursor after them, in one transaction. A platform that is down fails
        the attempt (Temporal retries); one that refuses the cursor fails the sync."""
        async with self._sessionmaker() as session:
            after = await sync.cursor_of(session, feed)
        try:
            page = await self._platform.fact_changes(after, limit=200)
        except DataPlatformRefused as exc:
            raise ApplicationError(
                exc.reason, type=ErrorType.DATA_PLATFORM_REFUSED, non_retryable=True
            ) from exc
        async with self._sessionmaker.begin() as session:
            report = await sync.store_changes(session, feed, after, page)
        log.info(
            "facts_sync.page",
            feed=feed,
            firms=report.firms,
            created=report.facts_created,
            updated=report.facts_updated,
            skipped=report.skipped,
            has_more=report.has_more,
        )
        for skipped in report.skips:
            log.warning(
                "facts_sync.skipped", uscc=skipped.uscc, kind=skipped.kind, reason=skipped.reason
            )
        return report
