"""The budget-system adapter against the simulator process (a real HTTP peer)."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import quote

import httpx
import pytest

from adapters.budget_system import (
    BudgetSystemClient,
    BudgetSystemRefused,
    BudgetSystemUnavailable,
    payment_key,
    recovery_key,
)
from models.budget_system import (
    InstructionState,
    PaymentInstruction,
    RecoveryNotice,
    RecoveryState,
)


def instruction(account: str = "6222000011112222333", amount: int = 12_345) -> PaymentInstruction:
    return PaymentInstruction(
        idempotency_key=payment_key(f"application/TEST/{uuid.uuid4()}", 1),
        quota_code="HZ-JXJ-01/2026",
        payee_name="湖州测试纺织有限公司",
        payee_account=account,
        payee_bank="湖州银行",
        amount_fen=amount,
        purpose="工业企业技术改造项目补助",
    )


async def _settled(client: BudgetSystemClient, key: str) -> InstructionState:
    for _ in range(50):
        status = await client.status(key)
        assert status is not None
        if status.state is not InstructionState.ACCEPTED:
            return status.state
        await asyncio.sleep(0.05)
    raise AssertionError("never settled")


async def test_instruction_is_paid_once_whatever_the_retries(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = instruction()
        first = await client.instruct(sent)
        again = await client.instruct(sent)
        assert first.voucher_no == again.voucher_no
        assert first.state is InstructionState.ACCEPTED
        assert await _settled(client, sent.idempotency_key) is InstructionState.PAID
        paid = await client.status(sent.idempotency_key)
        assert paid is not None and paid.bank_serial and paid.paid_at
        statement = await client.statement()
        assert [s.idempotency_key for s in statement].count(sent.idempotency_key) == 1


async def test_same_key_for_another_instruction_is_refused(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = instruction()
        await client.instruct(sent)
        with pytest.raises(BudgetSystemRefused) as caught:
            await client.instruct(sent.model_copy(update={"amount_fen": 99}))
        assert caught.value.status_code == 409
        assert await client.status(payment_key("never-sent", 1)) is None


async def test_closed_account_payment_is_returned(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = instruction(account="6222000011110000")
        await client.instruct(sent)
        assert await _settled(client, sent.idempotency_key) is InstructionState.RETURNED
        status = await client.status(sent.idempotency_key)
        assert status is not None and status.return_reason


async def test_failures_are_transient_and_a_lost_reply_does_not_pay_twice(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    await budget_simulator.put(
        "/v1/_simulator/config",
        json={"seed": 1, "lost_reply_rate": 1.0, "receipt_delay_s": 0},
    )
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = instruction()
        with pytest.raises(BudgetSystemUnavailable):
            await client.instruct(sent)  # the work was done, the reply was lost
        await budget_simulator.put("/v1/_simulator/config", json={"seed": 1, "receipt_delay_s": 0})
        retried = await client.instruct(sent)
        statement = await client.statement()
        assert [s.voucher_no for s in statement if s.idempotency_key == sent.idempotency_key] == [
            retried.voucher_no
        ]

    await budget_simulator.put("/v1/_simulator/config", json={"timeout_rate": 1.0, "timeout_s": 3})
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=0.5) as http:
        with pytest.raises(BudgetSystemUnavailable, match="Timeout"):
            await BudgetSystemClient(http).instruct(instruction())

    await budget_simulator.put("/v1/_simulator/config", json={"failure_rate": 1.0})
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        with pytest.raises(BudgetSystemUnavailable, match="503"):
            await BudgetSystemClient(http).instruct(instruction())


async def test_return_rate_returns_about_that_share(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    await budget_simulator.put(
        "/v1/_simulator/config", json={"seed": 3, "return_rate": 0.25, "receipt_delay_s": 0}
    )
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        states = [(await client.instruct(instruction())).state for _ in range(200)]
    returned = states.count(InstructionState.RETURNED)
    assert 30 <= returned <= 70, returned


# ----- money coming back: recovery orders --------------------------------------------

SHANGHAI = timezone(timedelta(hours=8))


def notice(amount: int = 50_000) -> RecoveryNotice:
    return RecoveryNotice(
        idempotency_key=recovery_key(f"commitment/TEST/{uuid.uuid4()}"),
        quota_code="HZ-JXJ-01/2026",
        payer_name="湖州测试纺织有限公司",
        payer_uscc="91330502T000000019",
        amount_fen=amount,
        due_on=date(2026, 6, 30),
        purpose="未达承诺目标，追回预拨资金",
    )


async def _register(http: httpx.AsyncClient, sent: RecoveryNotice, key: str = "") -> httpx.Response:
    """The registration as sent on the wire, so a test can read its status code."""
    return await http.post(
        "/v1/recoveries",
        json=sent.model_dump(mode="json"),
        headers={"Idempotency-Key": key or sent.idempotency_key},
    )


async def _pay(simulator: httpx.AsyncClient, key: str, amount: int, **rest: str) -> httpx.Response:
    """The firm's transfer arriving at the treasury (the simulator's hand of the bank)."""
    return await simulator.post(
        f"/v1/_simulator/recoveries/{quote(key, safe='')}/payments",
        json={"amount_fen": amount, **rest},
    )


async def test_recovery_is_registered_once_whatever_the_retries(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    await budget_simulator.put("/v1/_simulator/config", json={"seed": 1, "lost_reply_rate": 1.0})
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = notice()
        with pytest.raises(BudgetSystemUnavailable):
            await client.register_recovery(sent)  # registered, the reply was lost
        await budget_simulator.put("/v1/_simulator/config", json={"seed": 1})
        retried = await client.register_recovery(sent)
        assert retried.state is RecoveryState.OPEN and retried.payment_code
        assert (retried.amount_fen, retried.due_on) == (sent.amount_fen, sent.due_on)
        assert retried.receipts == [] and retried.received_fen == 0
        again = await _register(http, sent)
        assert again.status_code == 200, again.text
        assert again.json()["payment_code"] == retried.payment_code
        statement = await client.recovery_statement()
        assert [s.payment_code for s in statement if s.idempotency_key == sent.idempotency_key] == [
            retried.payment_code
        ]

    await budget_simulator.put("/v1/_simulator/config", json={"timeout_rate": 1.0, "timeout_s": 3})
    slow = notice()
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=0.5) as http:
        with pytest.raises(BudgetSystemUnavailable, match="Timeout"):
            await BudgetSystemClient(http).register_recovery(slow)

    await budget_simulator.put("/v1/_simulator/config", json={"failure_rate": 1.0})
    refused_early = notice()
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        with pytest.raises(BudgetSystemUnavailable, match="503"):
            await BudgetSystemClient(http).register_recovery(refused_early)

    await budget_simulator.put("/v1/_simulator/config", json={})
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        assert await client.recovery(slow.idempotency_key) is not None  # done, answered late
        assert await client.recovery(refused_early.idempotency_key) is None  # failed before


async def test_a_recovery_key_used_for_anything_else_is_refused(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = notice()
        first = await _register(http, sent)
        assert first.status_code == 201, first.text
        with pytest.raises(BudgetSystemRefused) as caught:
            await client.register_recovery(sent.model_copy(update={"amount_fen": 99}))
        assert caught.value.status_code == 409
        other_key = await _register(http, notice(), key=sent.idempotency_key)
        assert other_key.status_code == 422
        as_instruction = instruction().model_copy(update={"idempotency_key": sent.idempotency_key})
        with pytest.raises(BudgetSystemRefused) as caught:
            await client.instruct(as_instruction)
        assert caught.value.status_code == 409
        kept = await client.recovery(sent.idempotency_key)
        assert kept is not None and kept.amount_fen == sent.amount_fen
        assert kept.payment_code == first.json()["payment_code"]
        assert await client.status(sent.idempotency_key) is None
        assert await client.recovery(recovery_key("never-sent")) is None


async def test_payments_are_received_with_their_time_and_serial_and_summed(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = notice(amount=50_000)
        await client.register_recovery(sent)
        key = sent.idempotency_key
        on_time = datetime(2026, 6, 29, 12, tzinfo=SHANGHAI)
        first = await _pay(
            budget_simulator, key, 30_000, received_at=on_time.isoformat(), serial="YHLS-0001"
        )
        assert first.status_code == 201, first.text
        before = datetime.now(UTC)
        second = await _pay(budget_simulator, key, 25_000)  # now, with the system's serial
        assert second.status_code == 201, second.text
        status = await client.recovery(key)
        assert status is not None and status.state is RecoveryState.OPEN
        one, two = status.receipts
        assert (one.serial, one.amount_fen, one.received_at) == ("YHLS-0001", 30_000, on_time)
        assert one.received_at.utcoffset() == timedelta(0)  # told in UTC
        assert two.amount_fen == 25_000 and two.serial and two.serial != one.serial
        assert before - timedelta(seconds=1) <= two.received_at <= datetime.now(UTC)
        assert status.received_fen == 55_000  # more than the principal: interest is ours

        repeated = await _pay(budget_simulator, key, 30_000, serial="YHLS-0001")
        assert repeated.status_code == 200  # the same transfer reported twice
        clashing = await _pay(budget_simulator, key, 1, serial="YHLS-0001")
        assert clashing.status_code == 409
        status = await client.recovery(key)
        assert status is not None and len(status.receipts) == 2
        assert status.received_fen == 55_000
        assert [s for s in await client.recovery_statement() if s.idempotency_key == key] == [
            status
        ]


async def test_payment_to_an_unknown_or_closed_recovery_is_refused(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        unknown = await _pay(budget_simulator, recovery_key("never-registered"), 100)
        assert unknown.status_code == 404
        sent = notice()
        await client.register_recovery(sent)
        assert (await _pay(budget_simulator, sent.idempotency_key, 100)).status_code == 201
        closed = await client.close_recovery(sent.idempotency_key, "已足额缴回")
        assert closed.state is RecoveryState.CLOSED
        late = await _pay(budget_simulator, sent.idempotency_key, 100)
        assert late.status_code == 409
        status = await client.recovery(sent.idempotency_key)
        assert status is not None and status.received_fen == 100


async def test_closing_is_idempotent_even_when_the_reply_is_lost(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = notice()
        key = sent.idempotency_key  # it holds slashes: ".../close" must reach the close
        await client.register_recovery(sent)
        await budget_simulator.put("/v1/_simulator/config", json={"lost_reply_rate": 1.0})
        with pytest.raises(BudgetSystemUnavailable):
            await client.close_recovery(key, "已足额缴回")  # closed, the reply was lost
        await budget_simulator.put("/v1/_simulator/config", json={})
        closed = await client.close_recovery(key, "豁免")
        assert closed.state is RecoveryState.CLOSED and closed.closed_at
        assert closed.close_reason == "已足额缴回"  # the first closure stands
        assert await client.close_recovery(key, "again") == closed
        assert await client.recovery(key) == closed
        # A GET of ".../close" reads no order and closes nothing.
        assert (await http.get(f"/v1/recoveries/{quote(key, safe='')}/close")).status_code == 404
        with pytest.raises(BudgetSystemRefused) as caught:
            await client.close_recovery(recovery_key("never-registered"), "已足额缴回")
        assert caught.value.status_code == 404


async def test_the_recovery_statement_is_paged_in_the_order_registered(
    budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> None:
    heard: list[tuple[str, int, int | None]] = []
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=2) as http:
        client = BudgetSystemClient(http)
        sent = [notice(amount=n) for n in range(1, 6)]
        for one in sent:
            await client.register_recovery(one)
        statement = await client.recovery_statement(
            lambda *report: heard.append(report), page_size=2
        )
    keys = [s.idempotency_key for s in statement]
    ours = [s.idempotency_key for s in sent]
    assert [k for k in keys if k in ours] == ours
    assert len(set(keys)) == len(keys)  # no order twice across the pages
    total = len(statement)
    # Pages of 2 while they are full; a full last page is followed by an empty one.
    assert [read for _, read, _ in heard] == [*range(2, total + 1, 2), total]
    assert heard[-1] == ("recoveries", total, total)
    assert {phase for phase, _, _ in heard} == {"recoveries"}
