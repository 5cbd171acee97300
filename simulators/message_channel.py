"""A simulator of the government messaging channel, run as its own process.

It accepts messages idempotently on their key, delivers them after a delay, marks a
configurable share undeliverable (a wrong or lapsed number), and fails on demand
(latency, 5xx before any work). Dialled at start (`zhida simulate messages
--failure-rate 0.2`) or at run time (`PUT /v1/_simulator/config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, FastAPI, Header, HTTPException, Response
from pydantic import Field, TypeAdapter

from models.message_channel import MessageState, MessageStatus, OutgoingMessage
from simulators.base import Dials, Simulator


class ChannelConfig(Dials):
    undeliverable_rate: float = Field(default=0.0, ge=0, le=1)
    delivery_delay_s: float = Field(default=0.2, ge=0)


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
    sim = Simulator(
        config or ChannelConfig(), state_file, TypeAdapter(dict[str, _Record]), busy="channel busy"
    )
    by_id: dict[str, _Record] = {}
    protocol = APIRouter()

    def delay() -> timedelta:
        return timedelta(seconds=sim.config.delivery_delay_s)

    @protocol.post("/v1/messages", response_model=MessageStatus)
    async def send(
        message: OutgoingMessage,
        response: Response,
        idempotency_key: str = Header(alias="Idempotency-Key"),
    ) -> MessageStatus:
        await sim.misbehave()
        if idempotency_key != message.idempotency_key:
            raise HTTPException(422, "Idempotency-Key header and body differ")
        async with sim.lock:
            record = sim.records.get(idempotency_key)
            if record is None:
                record = _Record(
                    message=message,
                    message_id=f"MSG{len(sim.records) + 1:010d}",
                    accepted_at=datetime.now(UTC),
                    undeliverable=sim.rng.random() < sim.config.undeliverable_rate,
                )
                await sim.keep(idempotency_key, record)
                by_id[record.message_id] = record
                response.status_code = 201
            elif record.message != message:
                raise HTTPException(409, "this key was used for a different message")
        return record.status(datetime.now(UTC), delay())

    @protocol.get("/v1/messages/{message_id}", response_model=MessageStatus)
    async def status(message_id: str) -> MessageStatus:
        await sim.misbehave()
        record = by_id.get(message_id)
        if record is None:
            raise HTTPException(404, "no such message")
        return record.status(datetime.now(UTC), delay())

    @protocol.get("/v1/messages", response_model=list[MessageStatus])
    async def sent() -> list[MessageStatus]:
        """Every message accepted, for reconciliation and tests."""
        now = datetime.now(UTC)
        return [r.status(now, delay()) for r in sim.records.values()]

    def index(saved: dict[str, _Record]) -> None:
        by_id.update({r.message_id: r for r in saved.values()})

    return sim.app("政务消息通道 (simulator)", protocol, restored=index)
