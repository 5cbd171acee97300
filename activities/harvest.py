"""Activities of policy intake: one page of the policy feed, fetched and stored."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.policy_feed import PolicyFeedClient, PolicyFeedRefused
from core.temporal_errors import ErrorType
from domain.policy import harvest
from models.policy_feed import HarvestReport

log = structlog.get_logger()


class HarvestActivities:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], feed: PolicyFeedClient
    ) -> None:
        self._sessionmaker = sessionmaker
        self._feed = feed

    @activity.defn
    async def harvest_page(self, feed: str) -> HarvestReport:
        """Fetch the page after the feed's stored cursor and store it with the cursor after
        it, in one transaction. A feed that is down fails the attempt (Temporal retries);
        one that refuses the cursor fails the harvest, for people to look at."""
        async with self._sessionmaker() as session:
            after = await harvest.cursor_of(session, feed)
        try:
            page = await self._feed.page(after, limit=20)
        except PolicyFeedRefused as exc:
            raise ApplicationError(
                exc.reason, type=ErrorType.POLICY_FEED_REFUSED, non_retryable=True
            ) from exc
        async with self._sessionmaker.begin() as session:
            report = await harvest.store_page(session, feed, after, page)
        log.info("harvest.page", feed=feed, **report.model_dump())
        for reason in page.rejected:
            log.warning("harvest.publication_rejected", feed=feed, reason=reason)
        return report
