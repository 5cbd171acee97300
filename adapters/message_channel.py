"""Adapter to the government messaging channel, over HTTP.

Production points it at the city's channel; the dev stack and the tests at
simulators/message_channel.py. Every message carries an idempotency key derived
from the push's business key (firm and item), so a retried send is one message.
Delivery receipts are polled, for the reasons given in adapters/budget_system.py.
"""

from __future__ import annotations

from adapters.http import ExternalSystemClient, ExternalSystemRefused, ExternalSystemUnavailable
from models.message_channel import MessageStatus, OutgoingMessage


class ChannelUnavailable(ExternalSystemUnavailable):
    """Transient (timeout, connection error, 5xx): safe to retry with the same key."""


class ChannelRefused(ExternalSystemRefused):
    """Permanent: the channel refused the request (4xx)."""


def push_key(uscc: str, item_code: str) -> str:
    """The idempotency key of the one push a firm ever gets for an item."""
    return f"zhida:push:{uscc}:{item_code}"


class MessageChannelClient(ExternalSystemClient):
    unavailable = ChannelUnavailable
    refused = ChannelRefused

    async def send(self, message: OutgoingMessage) -> MessageStatus:
        return await self._submit("/v1/messages", message, message.idempotency_key, MessageStatus)

    async def status(self, message_id: str) -> MessageStatus:
        response = await self._call("GET", f"/v1/messages/{message_id}")
        return MessageStatus.model_validate_json(response.content)

    async def sent(self) -> list[MessageStatus]:
        response = await self._call("GET", "/v1/messages")
        return [MessageStatus.model_validate(item) for item in response.json()]
