"""Adapter to the government portals' policy feed (政策发布), over HTTP.

This is the client production uses; tests and the dev stack point it at the simulator
in simulators/policy_feed.py. Every call is a read, so a retry is always safe. A page
that is not the shape the protocol promises (models/policy_feed.py) is treated as no
answer (`PolicyFeedUnavailable`): storing half of it could skip what it held, as the
cursor after it would be kept.
"""

from __future__ import annotations

from pydantic import ValidationError

from adapters.http import ExternalSystemClient, ExternalSystemRefused, ExternalSystemUnavailable
from models.policy_feed import MAX_PAGE_SIZE, FeedPage

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
            page = FeedPage.model_validate_json(response.content)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "the top"
            raise self.unavailable(f"GET {path}: a malformed page (at {where})") from None
        if len(page.items) > asked:
            raise self.unavailable(f"GET {path}: more publications than asked for")
        return page
