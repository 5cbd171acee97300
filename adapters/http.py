"""What every HTTP adapter to an external system shares: how a failed call is read.

A call either fails for now (the system is down, slow or overloaded: retry later with
the same idempotency key) or is refused (a 4xx: it will not succeed as sent). Each
system names its own two failures as subclasses of these, so an activity catches the
system's names and code that talks to several systems may catch the shared ones.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import httpx
from pydantic import BaseModel

Reply = TypeVar("Reply", bound=BaseModel)


class ExternalSystemError(Exception):
    """A call to an external system did not succeed."""


class ExternalSystemUnavailable(ExternalSystemError):
    """Transient: timeouts, connection errors, 5xx. Safe to retry with the same key."""


class ExternalSystemRefused(ExternalSystemError):
    """Permanent: the system refused the request (4xx). Retrying will not help."""

    def __init__(self, message: str, status_code: int, reason: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        # Why, in the system's own words (a problem's `detail`), for people to read; the
        # message keeps the whole answer for the logs.
        self.reason = reason or message


class ExternalSystemClient:
    """An adapter over an `httpx.AsyncClient` aimed at one external system; subclasses
    name the system's failures and add its calls."""

    unavailable: ClassVar[type[ExternalSystemUnavailable]] = ExternalSystemUnavailable
    refused: ClassVar[type[ExternalSystemRefused]] = ExternalSystemRefused

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        idempotency_key: str | None = None,
        params: dict[str, int | str] | None = None,
    ) -> httpx.Response:
        """The system's answer if below 400; otherwise, or if it never came, the
        system's `unavailable` (transport error, timeout, 5xx) or `refused` (4xx)."""
        headers = None if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        try:
            response = await self._http.request(
                method, path, json=json, headers=headers, params=params
            )
        except httpx.TransportError as exc:  # includes timeouts
            raise self.unavailable(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise self.unavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise self.refused(
                f"{method} {path}: HTTP {response.status_code} {response.text[:200]}",
                response.status_code,
                f"HTTP {response.status_code}：{_detail(response)}",
            )
        return response

    async def _submit(
        self, path: str, record: BaseModel, idempotency_key: str, reply: type[Reply]
    ) -> Reply:
        """POST one record under its idempotency key (sent again, it is still one
        record there); the system's answer about it."""
        response = await self._call(
            "POST", path, json=record.model_dump(mode="json"), idempotency_key=idempotency_key
        )
        return reply.model_validate_json(response.content)


def _detail(response: httpx.Response) -> str:
    """A refusal's `detail` (RFC 9457 problem details, as both systems answer), or its
    text when it has none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    return (detail if isinstance(detail, str) and detail else response.text)[:200]
