"""Adapter to the city's public data platform (公共数据平台), over HTTP.

This is the client production uses; tests and the dev stack point it at the
simulator in simulators/data_platform.py. Every call is a read, so a retry is always
safe. An answer that is not the shape the protocol promises (models/data_platform.py),
or is about another firm or other kinds than asked, is treated as no answer
(`DataPlatformUnavailable`): a figure read from it could not be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from adapters.http import ExternalSystemClient, ExternalSystemRefused, ExternalSystemUnavailable
from models.data_platform import (
    MAX_CHANGES_PER_PAGE,
    MAX_FIRMS_PER_BATCH,
    FactChangesPage,
    FactsAnswer,
    FactsReply,
    RelatedParties,
    RelatedPartiesBatch,
    RelatedPartiesQuery,
    RelatedPartiesReply,
)

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "DataPlatformClient",
    "DataPlatformRefused",
    "DataPlatformUnavailable",
    "make_data_platform_client",
]

Wire = TypeVar("Wire", bound=BaseModel)


class DataPlatformUnavailable(ExternalSystemUnavailable):
    """Transient (timeout, connection error, 5xx, a malformed answer): ask again later."""


class DataPlatformRefused(ExternalSystemRefused):
    """Permanent: the platform refused the question (4xx: an invalid credit code, a kind
    it does not serve). Asking again will not help."""


class DataPlatformClient(ExternalSystemClient):
    """The platform's three questions. Leaving `async with` (or `aclose`) closes the HTTP
    client it was given: use that for the one `make_data_platform_client` builds."""

    unavailable = DataPlatformUnavailable
    refused = DataPlatformRefused

    async def facts(self, uscc: str, kinds: Sequence[str]) -> FactsAnswer:
        """The firm's latest figure of each kind (at most 50); a kind the platform has no
        figure for, or a firm it does not know, comes back in `missing`."""
        asked = list(dict.fromkeys(kinds))
        kinds_query = quote(",".join(asked), safe=",")
        path = f"/v1/enterprises/{quote(uscc, safe='')}/facts?kinds={kinds_query}"
        response = await self._call("GET", path)
        reply = self._read(response, FactsReply, path)
        answered = [r.kind for r in reply.readings] + reply.missing
        if reply.uscc != uscc or sorted(answered) != sorted(asked):
            raise self.unavailable(f"GET {path}: an answer about other firms or kinds")
        return FactsAnswer(**dict(reply), retrieved_at=_now())

    async def fact_changes(self, cursor: str | None, limit: int = 200) -> FactChangesPage:
        """The firms whose figures changed after `cursor` (from the first change when
        None), at most `limit`, each with its latest figures, and the cursor after."""
        asked = max(1, min(limit, MAX_CHANGES_PER_PAGE))
        params: dict[str, int | str] = {"limit": asked}
        if cursor is not None:
            params["cursor"] = cursor
        path = "/v1/fact-changes"
        response = await self._call("GET", path, params=params)
        page = self._read(response, FactChangesPage, path)
        if len(page.changes) > asked:
            raise self.unavailable(f"GET {path}: more firms than asked for")
        return page

    async def end_cursor(self) -> str:
        """The cursor after every change the platform holds now."""
        cursor: str | None = None
        while True:
            page = await self.fact_changes(cursor, limit=MAX_CHANGES_PER_PAGE)
            cursor = page.next_cursor
            if not page.has_more:
                return cursor

    async def related_parties(self, uscc: str) -> RelatedParties | None:
        """The firm's legal representative, parent and related firms; None if the
        platform does not know the firm."""
        path = f"/v1/enterprises/{quote(uscc, safe='')}/related-parties"
        try:
            response = await self._call("GET", path)
        except DataPlatformRefused as exc:
            if exc.status_code == 404:
                return None
            raise
        reply = self._read(response, RelatedPartiesReply, path)
        if reply.uscc != uscc:
            raise self.unavailable(f"GET {path}: an answer about another firm")
        return RelatedParties(**dict(reply), retrieved_at=_now())

    async def related_parties_many(self, usccs: Sequence[str]) -> list[RelatedParties]:
        """The related parties of each firm the platform knows, in the order asked (each
        once), asked 1000 at a time; the firms it does not know are left out."""
        asked = list(dict.fromkeys(usccs))
        found: list[RelatedParties] = []
        path = "/v1/related-parties:batchGet"
        for start in range(0, len(asked), MAX_FIRMS_PER_BATCH):
            page = asked[start : start + MAX_FIRMS_PER_BATCH]
            query = RelatedPartiesQuery(usccs=page)
            response = await self._call("POST", path, json=query.model_dump(mode="json"))
            batch = self._read(response, RelatedPartiesBatch, path)
            retrieved_at = _now()
            answered = [p.uscc for p in batch.parties] + batch.unknown
            if sorted(answered) != sorted(page):
                raise self.unavailable(f"POST {path}: an answer about other firms")
            found += [RelatedParties(**dict(p), retrieved_at=retrieved_at) for p in batch.parties]
        return found

    def _read(self, response: httpx.Response, wire: type[Wire], path: str) -> Wire:
        try:
            return wire.model_validate_json(response.content)
        except ValidationError as exc:
            raise self.unavailable(
                f"{response.request.method} {path}: a malformed answer "
                f"({exc.error_count()} errors, first at {_location(exc)})"
            ) from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DataPlatformClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def make_data_platform_client(settings: Settings) -> DataPlatformClient:
    """A client to the platform the settings name, with its timeout; close it (or use it
    in `async with`) when done."""
    http = httpx.AsyncClient(
        base_url=settings.data_platform_url, timeout=settings.data_platform_timeout_s
    )
    return DataPlatformClient(http)


def _now() -> datetime:
    return datetime.now(UTC)


def _location(exc: ValidationError) -> str:
    first = exc.errors()[0]["loc"]
    return ".".join(str(part) for part in first) or "the top"
