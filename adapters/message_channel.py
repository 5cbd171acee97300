"""Adapter to the government messaging channel, over HTTP.

Production points it at the city's channel; the dev stack and the tests at
simulators/message_channel.py. Every message carries an idempotency key derived
from the push's business key (firm and item), so a retried send is one message.
Delivery receipts are polled, for the reasons given in activities/budget_system.py.
"""

from __future__ import annotations

import httpx

from models.message_channel import MessageStatus, OutgoingMessage


class ChannelUnavailable(Exception):
    """Transient: timeouts, connection errors, 5xx. Safe to retry with the same key."""


class ChannelRefused(Exception):
    """Permanent: the channel refused the request (4xx)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def push_key(uscc: str, item_code: str) -> str:
    """The idempotency key of the one push a firm ever gets for an item."""
    return f"zhida:push:{uscc}:{item_code}"


class MessageChannelClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def send(self, message: OutgoingMessage) -> MessageStatus:
        response = await self._call(
            "POST",
            "/v1/messages",
            json=message.model_dump(mode="json"),
            headers={"Idempotency-Key": message.idempotency_key},
        )
        return MessageStatus.model_validate_json(response.content)

    async def status(self, message_id: str) -> MessageStatus:
        response = await self._call("GET", f"/v1/messages/{message_id}")
        return MessageStatus.model_validate_json(response.content)

    async def sent(self) -> list[MessageStatus]:
        response = await self._call("GET", "/v1/messages")
        return [MessageStatus.model_validate(item) for item in response.json()]

    async def _call(
        self, method: str, path: str, json: object = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json, headers=headers)
        except httpx.TransportError as exc:
            raise ChannelUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise ChannelUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ChannelRefused(
                f"{method} {path}: HTTP {response.status_code} {response.text[:200]}",
                response.status_code,
            )
        return response
