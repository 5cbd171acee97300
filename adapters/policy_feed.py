"""Adapter to the government portals' policy feed (政策发布), over HTTP.

This is the client production uses; tests and the dev stack point it at the simulator
in simulators/policy_feed.py. Every call is a read, so a retry is always safe. A page
that is not the shape the protocol promises (models/policy_feed.py) is treated as no
answer (`PolicyFeedUnavailable`); a single publication out of shape is rejected with its
reason and the page's others are read (`FeedPage.rejected`), so that one bad document
never holds up every one after it.
"""

from __future__ import annotations

from pydantic import ValidationError

from adapters.http import ExternalSystemClient, ExternalSystemRefused, ExternalSystemUnavailable
from models.policy_feed import MAX_PAGE_SIZE, FeedPage, Publication, RawFeedPage

__all__ = [
    "PolicyFeedClient",
    "PolicyFeedRefused",
    "PolicyFeedUnavailable",
]


class PolicyFeedUnavailable(ExternalSystemUnavailable):
    """Transient (timeout, connection error, 5xx, a malformed page): ask again later."""


class PolicyFeedRefused(ExternalSystemRefused):
    """Permanent: the feed refused the question (4xx, e.g. a cursor it never gave)."""


class PolicyFeedClient(ExternalSystemClient):
    unavailable = PolicyFeedUnavailable
    refused = PolicyFeedRefused

    async def page(self, cursor: str | None, limit: int = 20) -> FeedPage:
        """The publications after `cursor` (from the start when None), at most `limit`."""
        asked = max(1, min(limit, MAX_PAGE_SIZE))
        params: dict[str, int | str] = {"limit": asked}
        if cursor is not None:
            params["cursor"] = cursor
        path = "/v1/publications"
        response = await self._call("GET", path, params=params)
        try:
            raw = RawFeedPage.model_validate_json(response.content)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "the top"
            raise self.unavailable(f"GET {path}: a malformed page (at {where})") from None
        if len(raw.items) > asked:
            raise self.unavailable(f"GET {path}: more publications than asked for")
        # One publication out of shape is that one's problem: it is reported and skipped,
        # never a page (and the feed behind it) that can never be stored.
        items: list[Publication] = []
        rejected: list[str] = []
        for item in raw.items:
            try:
                items.append(Publication.model_validate(item))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "the top"
                name = str(item.get("doc_number", "?"))[:64]
                rejected.append(f"{name}: {where}: {first['msg']}"[:300])
        return FeedPage(
            items=items, next_cursor=raw.next_cursor, has_more=raw.has_more, rejected=rejected
        )
