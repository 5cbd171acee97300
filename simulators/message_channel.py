"""A simulator of the government messaging channel, run as its own process.

It accepts messages idempotently on their key, delivers them after a delay, marks a
configurable share undeliverable (a wrong or lapsed number), and fails on demand
(latency, 5xx before any work). Dialled at start (`zhida simulate messages
--failure-rate 0.2`) or at run time (`PUT /v1/_simulator/config`).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter

from models.message_channel import MessageState, MessageStatus, OutgoingMessage
from simulators.persistence import RecordJournal


class ChannelConfig(BaseModel):
    latency_ms: int = Field(default=0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="5xx before any work")
    undeliverable_rate: float = Field(default=0.0, ge=0, le=1)
    delivery_delay_s: float = Field(default=0.2, ge=0)
    seed: int | None = None


@dataclass
class _Record:
    message: OutgoingMessage
    message_id: str
    accepted_at: datetime
    undeliverable: bool

    def status(self, now: datetime, delay: timedelta) -> MessageStatus:
        done = now >= self.accepted_at + delay
        state = MessageState.ACCEPTED
        if done:
            state = MessageState.UNDELIVERABLE if self.undeliverable else MessageState.DELIVERED
        return MessageStatus(
            message_id=self.message_id,
            idempotency_key=self.message.idempotency_key,
            recipient=self.message.recipient,
            state=state,
            accepted_at=self.accepted_at,
            delivered_at=self.accepted_at + delay if state is MessageState.DELIVERED else None,
        )


def create_app(config: ChannelConfig | None = None, state_file: Path | None = None) -> FastAPI:
    state = {"config": config or ChannelConfig()}
    records: dict[str, _Record] = {}
    by_id: dict[str, _Record] = {}

    def restore(saved: dict[str, _Record]) -> None:
        records.update(saved)
        by_id.update({r.message_id: r for r in saved.values()})

    journal = RecordJournal(state_file, TypeAdapter(dict[str, _Record]))
    app = FastAPI(title="政务消息通道 (simulator)", lifespan=journal.lifespan(restore))
    lock = asyncio.Lock()
    rng = random.Random(state["config"].seed)

    def cfg() -> ChannelConfig:
        return state["config"]

    def delay() -> timedelta:
        return timedelta(seconds=cfg().delivery_delay_s)

    async def misbehave() -> None:
        if cfg().latency_ms:
            await asyncio.sleep(cfg().latency_ms / 1000)
        if rng.random() < cfg().failure_rate:
            raise HTTPException(503, "channel busy")

    @app.post("/v1/messages", response_model=MessageStatus)
    async def send(
        message: OutgoingMessage,
        response: Response,
        idempotency_key: str = Header(alias="Idempotency-Key"),
    ) -> MessageStatus:
        await misbehave()
        if idempotency_key != message.idempotency_key:
            raise HTTPException(422, "Idempotency-Key header and body differ")
        async with lock:
            record = records.get(idempotency_key)
            if record is None:
                record = _Record(
                    message=message,
                    message_id=f"MSG{len(records) + 1:010d}",
                    accepted_at=datetime.now(UTC),
                    undeliverable=rng.random() < cfg().undeliverable_rate,
                )
                await asyncio.to_thread(journal.write, idempotency_key, record)
                records[idempotency_key] = by_id[record.message_id] = record
                response.status_code = 201
            elif record.message != message:
                raise HTTPException(409, "this key was used for a different message")
        return record.status(datetime.now(UTC), delay())

    @app.get("/v1/messages/{message_id}", response_model=MessageStatus)
    async def status(message_id: str) -> MessageStatus:
        await misbehave()
        record = by_id.get(message_id)
        if record is None:
            raise HTTPException(404, "no such message")
        return record.status(datetime.now(UTC), delay())

    @app.get("/v1/messages", response_model=list[MessageStatus])
    async def sent() -> list[MessageStatus]:
        """Every message accepted, for reconciliation and tests."""
        now = datetime.now(UTC)
        return [r.status(now, delay()) for r in records.values()]

    @app.get("/v1/_simulator/config", response_model=ChannelConfig)
    async def get_config() -> ChannelConfig:
        return cfg()

    @app.put("/v1/_simulator/config", response_model=ChannelConfig)
    async def put_config(new: ChannelConfig) -> ChannelConfig:
        state["config"] = new
        if new.seed is not None:
            rng.seed(new.seed)
        return new

    @app.exception_handler(HTTPException)
    async def _problem(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app
