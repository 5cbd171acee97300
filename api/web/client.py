"""The platform's own REST API, called in-process from a page with the signed-in user's
token, so that every access rule and scope of the API applies to the pages unchanged.

A page never reads the database or the domain itself: what the API refuses, the page
refuses, and what the API filters out, the page never sees."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Request

from api.errors import REQUEST_ID_HEADER, correlation_id

# A page waits on one API call at most this long (the API itself answers a 503 within
# about 2 s when the database or Temporal is down).
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FieldMessage:
    field: str
    message: str


@dataclass
class ApiError(Exception):
    """What the API answered instead of a success: its status and problem details."""

    status: int
    detail: str = ""
    errors: list[FieldMessage] = field(default_factory=list)
    correlation: str = ""

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


def segment(value: str) -> str:
    """One path segment, quoted whole: a page's path parameter never reaches another
    API route (`..`, `/` and `%2F` stay inside the segment)."""
    return quote(value, safe="") if value not in ("", ".", "..") else "_"


class PlatformClient:
    """The API as the signed-in user sees it; with no token, as anyone does (the public
    catalogue's pages)."""

    def __init__(self, request: Request, token: str | None) -> None:
        self._request = request
        self._token = token

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        request_id = correlation_id.get()
        if request_id:  # the page's log lines and the API's share one id
            headers[REQUEST_ID_HEADER] = request_id
        headers.update(extra or {})
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        transport = httpx.ASGITransport(app=self._request.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://zhida", timeout=TIMEOUT_S
        ) as client:
            response = await client.request(
                method, path, params=params, json=body, headers=self._headers(extra)
            )
        if response.status_code >= 400:
            raise problem_of(response)
        return response

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return (await self._send("GET", path, params)).json()

    async def get_file(self, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        return await self._send("GET", path, params)

    async def post(self, path: str, body: Any, idempotency_key: str) -> Any:
        return (await self._send("POST", path, body=body, idempotency_key=idempotency_key)).json()


def problem_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    errors = [
        FieldMessage(str(e.get("field", "")), str(e.get("message", "")))
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    return ApiError(
        status=response.status_code,
        detail=str(body.get("detail", "")),
        errors=errors,
        correlation=str(body.get("correlation_id") or response.headers.get(REQUEST_ID_HEADER, "")),
    )
