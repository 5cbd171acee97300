"""The wire format of the government messaging channel (政务短信/浙政钉 消息通道)."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, Field


class OutgoingMessage(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=128)
    recipient: str = Field(min_length=1, max_length=64, description="the firm's credit code")
    title: str = Field(max_length=128)
    body: str = Field(max_length=2000)


class MessageState(enum.StrEnum):
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"


class MessageStatus(BaseModel):
    message_id: str
    idempotency_key: str
    recipient: str
    state: MessageState
    accepted_at: datetime
    delivered_at: datetime | None = None
