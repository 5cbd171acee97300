"""The budget-system adapter against the simulator process (a real HTTP peer)."""

import asyncio
import uuid

import httpx
import pytest

from adapters.budget_system import (
    BudgetSystemClient,
    BudgetSystemRefused,
    BudgetSystemUnavailable,
    payment_key,
)
from models.budget_system import InstructionState, PaymentInstruction


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
