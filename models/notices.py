"""In-app notices (站内消息) to users."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Notice(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    recipient: str = Field(foreign_key="user.name", max_length=64, index=True)
    title: str = Field(max_length=128)
    body: str = Field(sa_type=sa.Text)
    subject: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NoticePublic(BaseModel):
    id: int
    title: str
    body: str
    subject: str | None
    created_at: datetime
    read_at: datetime | None
