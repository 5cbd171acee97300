"""In-app notices (站内消息) to users."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Notice(SQLModel, table=True):
    # Key first: lookups by recipient keep using ix_notice_recipient (and its order).
    __table_args__ = (
        sa.Index("uq_notice_dedupe_key_recipient", "dedupe_key", "recipient", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    recipient: str = Field(foreign_key="user.name", max_length=64, index=True)
    title: str = Field(max_length=128)
    body: str = Field(sa_type=sa.Text)
    subject: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # What makes sending this notice happen once: a recipient gets one notice per key
    # (e.g. the activity execution that sent it, so a retry sends nothing twice).
    # None on notices sent before keys existed.
    dedupe_key: str | None = Field(default=None, max_length=255)


class NoticePublic(BaseModel):
    id: int
    title: str
    body: str
    subject: str | None
    created_at: datetime
    read_at: datetime | None
