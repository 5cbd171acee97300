"""The simulators keep their records across a restart (the dev stack's second
`make run` finds the first one's payments and messages)."""

from pathlib import Path

import httpx

from activities.budget_system import BudgetSystemClient, payment_key
from activities.message_channel import MessageChannelClient, push_key
from models.budget_system import PaymentInstruction
from models.message_channel import MessageState, OutgoingMessage
from simulators import budget_system, message_channel


async def test_budget_system_simulator_remembers_instructions_across_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "budget.json"
    instruction = PaymentInstruction(
        idempotency_key=payment_key("application/TEST/2026/X", 1),
        quota_code="TEST/2026",
        payee_name="湖州测试有限公司",
        payee_account="6222000011112222333",
        payee_bank="湖州银行",
        amount_fen=100,
        purpose="测试",
    )
    for _restart in range(2):
        app = budget_system.create_app(budget_system.SimulatorConfig(receipt_delay_s=0), state)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
        ):
            client = BudgetSystemClient(http)
            if not state.exists():
                first = await client.instruct(instruction)
            status = await client.status(instruction.idempotency_key)
            assert status is not None and status.voucher_no == first.voucher_no
    assert state.exists()


async def test_channel_simulator_remembers_messages_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "channel.json"
    message = OutgoingMessage(
        idempotency_key=push_key("91330502T000000019", "HZ-JXJ-01"),
        recipient="91330502T000000019",
        title="政策快享",
        body="测试",
    )
    sent = None
    for _restart in range(2):
        app = message_channel.create_app(message_channel.ChannelConfig(delivery_delay_s=0), state)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as http,
        ):
            client = MessageChannelClient(http)
            sent = sent or await client.send(message)
            status = await client.status(sent.message_id)
            assert status.state is MessageState.DELIVERED
            again = await client.send(message)  # the same key, after the restart too
            assert again.message_id == sent.message_id
