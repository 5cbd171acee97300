"""A simulator of the provincial budget system, run as its own process.

It accepts payment instructions idempotently on their key, pays them after a
delay, returns a configurable share (退票), and fails on demand: latency, 5xx
before or after doing the work, and answers slower than any client waits; and
it refuses (422) any instruction to an account listed in `refuse_accounts`.
Failures are dialled at start (`zhida simulate budget --failure-rate 0.2`) or at
run time (`PUT /v1/_simulator/config`).

Money comes back under recovery orders (追回), registered idempotently like
instructions and under the same dials; the firm's transfers arrive through
`POST /v1/_simulator/recoveries/{key}/payments`, which stands in for the bank.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import Field, TypeAdapter

from models.budget_system import (
    InstructionState,
    InstructionStatus,
    PaymentInstruction,
    RecoveryClosure,
    RecoveryNotice,
    RecoveryPayment,
    RecoveryReceipt,
    RecoveryState,
    RecoveryStatus,
)
from simulators.base import Dials, Simulator

CLOSED_ACCOUNT_SUFFIX = "0000"  # accounts ending so are closed: always returned
REFUSED_DETAIL = "收款账户已冻结或已销户，支付指令不予受理"

T = TypeVar("T")


class SimulatorConfig(Dials):
    lost_reply_rate: float = Field(default=0.0, ge=0, le=1, description="work done, then 5xx")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="work done, reply too late")
    timeout_s: float = Field(default=15.0, ge=0)
    return_rate: float = Field(default=0.0, ge=0, le=1, description="share of payments returned")
    receipt_delay_s: float = Field(default=0.2, ge=0)
    refuse_accounts: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="payee accounts the system refuses (closed or frozen): 422, nothing done",
    )


@dataclass
class _Instruction:
    instruction: PaymentInstruction
    voucher_no: str
    accepted_at: datetime
    returned: bool
    serial: str

    def status(self, now: datetime, delay: timedelta) -> InstructionStatus:
        settled = now >= self.accepted_at + delay
        if not settled:
            state = InstructionState.ACCEPTED
        else:
            state = InstructionState.RETURNED if self.returned else InstructionState.PAID
        done_at = self.accepted_at + delay if settled else None
        return InstructionStatus(
            idempotency_key=self.instruction.idempotency_key,
            state=state,
            voucher_no=self.voucher_no,
            amount_fen=self.instruction.amount_fen,
            accepted_at=self.accepted_at,
            bank_serial=self.serial if state is InstructionState.PAID else None,
            paid_at=done_at if state is InstructionState.PAID else None,
            returned_at=done_at if state is InstructionState.RETURNED else None,
            return_reason="收款账户已销户或户名不符"
            if state is InstructionState.RETURNED
            else None,
        )


@dataclass(frozen=True)
class _Recovery:
    """A recovery order and the money received under it. Unlike an instruction it
    changes (a receipt arrives, it closes), so a change is a new record, journaled under
    the same key before it replaces the old one: the journal's last line for a key wins."""

    notice: RecoveryNotice
    payment_code: str
    registered_at: datetime
    receipts: tuple[RecoveryReceipt, ...] = ()
    closed_at: datetime | None = None
    close_reason: str | None = None

    def status(self) -> RecoveryStatus:
        return RecoveryStatus(
            idempotency_key=self.notice.idempotency_key,
            payment_code=self.payment_code,
            quota_code=self.notice.quota_code,
            payer_uscc=self.notice.payer_uscc,
            amount_fen=self.notice.amount_fen,
            due_on=self.notice.due_on,
            registered_at=self.registered_at,
            state=RecoveryState.OPEN if self.closed_at is None else RecoveryState.CLOSED,
            receipts=list(self.receipts),
            received_fen=sum(r.amount_fen for r in self.receipts),
            closed_at=self.closed_at,
            close_reason=self.close_reason,
        )


def _page(records: list[T], response: Response, offset: int, limit: int | None) -> list[T]:
    """One page of a statement, in the order received; the total goes in a header."""
    response.headers["X-Total-Count"] = str(len(records))
    return records[offset : None if limit is None else offset + limit]


def create_app(config: SimulatorConfig | None = None, state_file: Path | None = None) -> FastAPI:
    # Instructions and recovery orders share one key space, as they share one journal:
    # a key names one request, and a key used for one kind is refused (409) for the other.
    sim: Simulator[SimulatorConfig, _Instruction | _Recovery] = Simulator(
        config or SimulatorConfig(),
        state_file,
        TypeAdapter(dict[str, _Instruction | _Recovery]),
        busy="budget system busy",
    )
    protocol = APIRouter()

    def now() -> datetime:
        return datetime.now(UTC)

    def delay() -> timedelta:
        return timedelta(seconds=sim.config.receipt_delay_s)

    def number() -> int:
        """The next voucher's or payment code's number: unique, as records only grow."""
        return len(sim.records) + 1

    def recovery_of(key: str) -> _Recovery:
        record = sim.records.get(key)
        if not isinstance(record, _Recovery):
            raise HTTPException(404, "no such recovery order")
        return record

    async def misbehave_after() -> None:
        if sim.rng.random() < sim.config.lost_reply_rate:
            raise HTTPException(502, "reply lost after the work was done")
        if sim.rng.random() < sim.config.timeout_rate:
            await asyncio.sleep(sim.config.timeout_s)

    @protocol.post("/v1/payment-instructions", response_model=InstructionStatus)
    async def instruct(
        instruction: PaymentInstruction,
        response: Response,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key")],
    ) -> InstructionStatus | JSONResponse:
        await sim.misbehave()
        if idempotency_key != instruction.idempotency_key:
            raise HTTPException(422, "Idempotency-Key header and body differ")
        async with sim.lock:
            record = sim.records.get(idempotency_key)
            if isinstance(record, _Recovery):
                raise HTTPException(409, "this key was used for a recovery order")
            if record is None and instruction.payee_account in sim.config.refuse_accounts:
                # Refused outright, as the provincial system refuses a closed or frozen
                # account: nothing is recorded, and asking again is refused again. The
                # body names no account (it may end up in a workflow's failure message).
                return JSONResponse(
                    {"code": "payee_account_refused", "detail": REFUSED_DETAIL}, status_code=422
                )
            if record is None:
                returned = (
                    instruction.payee_account.endswith(CLOSED_ACCOUNT_SUFFIX)
                    or sim.rng.random() < sim.config.return_rate
                )
                record = _Instruction(
                    instruction=instruction,
                    voucher_no=f"ZFPZ{now():%Y%m%d}{number():08d}",
                    accepted_at=now(),
                    returned=returned,
                    serial=f"YHLS{sim.rng.randrange(10**12):012d}",
                )
                await sim.keep(idempotency_key, record)
                response.status_code = 201
            elif record.instruction != instruction:
                raise HTTPException(409, "this key was used for a different instruction")
        await misbehave_after()
        return record.status(now(), delay())

    @protocol.get("/v1/payment-instructions/{key:path}", response_model=InstructionStatus)
    async def status(key: str) -> InstructionStatus:
        await sim.misbehave()
        record = sim.records.get(key)
        if not isinstance(record, _Instruction):
            raise HTTPException(404, "no such instruction")
        return record.status(now(), delay())

    @protocol.get("/v1/payment-instructions", response_model=list[InstructionStatus])
    async def statement(
        response: Response,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    ) -> list[InstructionStatus]:
        """Instructions with their state, in the order received, a page at a time
        (all of them without `limit`): what reconciliation compares against."""
        every = [r for r in sim.records.values() if isinstance(r, _Instruction)]
        return [r.status(now(), delay()) for r in _page(every, response, offset, limit)]

    @protocol.post("/v1/recoveries", response_model=RecoveryStatus)
    async def register_recovery(
        notice: RecoveryNotice,
        response: Response,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key")],
    ) -> RecoveryStatus:
        await sim.misbehave()
        if idempotency_key != notice.idempotency_key:
            raise HTTPException(422, "Idempotency-Key header and body differ")
        async with sim.lock:
            record = sim.records.get(idempotency_key)
            if isinstance(record, _Instruction):
                raise HTTPException(409, "this key was used for a payment instruction")
            if record is None:
                record = _Recovery(
                    notice=notice,
                    payment_code=f"JKM{now():%Y%m%d}{number():08d}",
                    registered_at=now(),
                )
                await sim.keep(idempotency_key, record)
                response.status_code = 201
            elif record.notice != notice:
                raise HTTPException(409, "this key was used for a different recovery order")
        await misbehave_after()
        return record.status()

    @protocol.get("/v1/recoveries", response_model=list[RecoveryStatus])
    async def recovery_statement(
        response: Response,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    ) -> list[RecoveryStatus]:
        """Recovery orders with every receipt, in the order registered, a page at a time."""
        every = [r for r in sim.records.values() if isinstance(r, _Recovery)]
        return [r.status() for r in _page(every, response, offset, limit)]

    # Declared before the GET of `{key:path}`, which would also match ".../close": the
    # methods differ, but the order keeps that from mattering.
    @protocol.post("/v1/recoveries/{key:path}/close", response_model=RecoveryStatus)
    async def close_recovery(key: str, closure: RecoveryClosure) -> RecoveryStatus:
        """Close the order (its payment code takes nothing more); a closed one is
        answered as it is, with its first reason."""
        await sim.misbehave()
        async with sim.lock:
            record = recovery_of(key)
            if record.closed_at is None:
                record = replace(record, closed_at=now(), close_reason=closure.reason)
                await sim.keep(key, record)
        await misbehave_after()
        return record.status()

    @protocol.get("/v1/recoveries/{key:path}", response_model=RecoveryStatus)
    async def recovery(key: str) -> RecoveryStatus:
        await sim.misbehave()
        return recovery_of(key).status()

    @protocol.post(
        "/v1/_simulator/recoveries/{key:path}/payments",
        response_model=RecoveryStatus,
        status_code=201,
    )
    async def receive_payment(
        key: str, payment: RecoveryPayment, response: Response
    ) -> RecoveryStatus:
        """The firm's transfer arrives under the order's payment code: what the real
        system hears from the bank. A serial names one transfer, so the same one
        reported again adds nothing (200); no dials apply, this is the tester's hand."""
        async with sim.lock:
            record = recovery_of(key)
            # Numbered under the payment code: unique, and the same after a restart.
            serial = payment.serial or f"{record.payment_code}-{len(record.receipts) + 1:03d}"
            known = next((r for r in record.receipts if r.serial == serial), None)
            if known is not None:
                if known.amount_fen != payment.amount_fen:
                    raise HTTPException(409, "this serial was used for a different amount")
                response.status_code = 200
                return record.status()
            if record.closed_at is not None:
                raise HTTPException(409, "the recovery order is closed")
            receipt = RecoveryReceipt(
                serial=serial,
                amount_fen=payment.amount_fen,
                received_at=(payment.received_at or now()).astimezone(UTC),
            )
            record = replace(record, receipts=(*record.receipts, receipt))
            await sim.keep(key, record)
        return record.status()

    return sim.app("预算管理一体化系统 (simulator)", protocol)
