"""Idempotency-Key records: which request holds a key, and the response it got."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime


class IdempotencyRecord(SQLModel, table=True):
    """One `Idempotency-Key` and the request it is bound to (`fingerprint`: the user,
    method, path, query and body). While the request runs, `holder` names the attempt
    and `locked_until` its lease; once it has an answer worth keeping, `status_code`,
    `response_headers` and `response_body` are what every retry gets back until
    `expires_at`."""

    __tablename__ = "idempotency_record"

    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    user_name: str = Field(max_length=64)
    method: str = Field(max_length=8)
    path: str = Field(sa_type=sa.Text)
    holder: str | None = Field(default=None, max_length=32)
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status_code: int | None = None
    response_headers: list[list[str]] | None = Field(default=None, sa_type=sa.JSON)
    response_body: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
