"""The simulators keep their records across a restart (the dev stack's second
`make run` finds the first one's payments and messages) and across a crash."""

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import TypeAdapter

from adapters.budget_system import (
    BudgetSystemClient,
    BudgetSystemRefused,
    payment_key,
    recovery_key,
)
from adapters.message_channel import MessageChannelClient, push_key
from cli.devstack import wait_for_http
from core.settings import PROJECT_ROOT
from models.budget_system import (
    InstructionState,
    PaymentInstruction,
    RecoveryNotice,
    RecoveryState,
)
from models.message_channel import MessageState, OutgoingMessage
from simulators import budget_system, message_channel, policy_feed
from simulators.persistence import RecordJournal


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


# ----- crash safety: records are on disk before the reply, not only at shutdown ------


def _instruction(n: int = 1) -> PaymentInstruction:
    return PaymentInstruction(
        idempotency_key=payment_key(f"application/TEST/2026/CRASH{n}", 1),
        quota_code="TEST/2026",
        payee_name="湖州测试有限公司",
        payee_account="6222000011112222333",
        payee_bank="湖州银行",
        amount_fen=100 * n,
        purpose="测试",
    )


@asynccontextmanager
async def _budget_process(state: Path) -> AsyncIterator[str]:
    """The simulator with a state file, as `zhida simulate budget --state-file` serves it
    (without importing the whole command line, to start faster)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve = (
        "import sys, uvicorn; from pathlib import Path; "
        "from simulators.budget_system import SimulatorConfig, create_app; "
        "app = create_app(SimulatorConfig(receipt_delay_s=0), Path(sys.argv[1])); "
        "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')"
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - a simulator process the test kills
        [sys.executable, "-c", serve, str(state), str(port)], cwd=PROJECT_ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_for_http(f"{url}/v1/_simulator/config", within=30)
        yield url
    finally:
        process.kill()  # SIGKILL: no shutdown hook runs
        process.wait()


async def test_budget_simulator_killed_outright_keeps_every_instruction_it_acknowledged(
    tmp_path: Path,
) -> None:
    state = tmp_path / "budget.jsonl"
    sent = _instruction()
    async with _budget_process(state) as url, httpx.AsyncClient(base_url=url) as http:
        first = await BudgetSystemClient(http).instruct(sent)
    async with _budget_process(state) as url, httpx.AsyncClient(base_url=url) as http:
        client = BudgetSystemClient(http)
        status = await client.status(sent.idempotency_key)
        assert status is not None and status.voucher_no == first.voucher_no
        again = await client.instruct(sent)  # a retry after the crash pays nothing new
        assert again.voucher_no == first.voucher_no
        assert [s.idempotency_key for s in await client.statement()] == [sent.idempotency_key]


def _recovery(n: int = 1) -> RecoveryNotice:
    return RecoveryNotice(
        idempotency_key=recovery_key(f"commitment/TEST/2026/CRASH{n}"),
        quota_code="TEST/2026",
        payer_name="湖州测试有限公司",
        payer_uscc="91330502T000000019",
        amount_fen=1_000 * n,
        due_on=date(2026, 6, 30),
        purpose="测试",
    )


async def test_budget_simulator_killed_outright_keeps_recoveries_and_their_receipts(
    tmp_path: Path,
) -> None:
    """Orders change after they are made (receipts, closure): each change is on disk
    before its reply, in the one journal the instructions are in."""
    state = tmp_path / "budget.jsonl"
    paid, owed = _instruction(), _recovery()
    key = owed.idempotency_key
    at = datetime(2026, 6, 1, 4, tzinfo=UTC)
    async with _budget_process(state) as url, httpx.AsyncClient(base_url=url) as http:
        client = BudgetSystemClient(http)
        await client.instruct(paid)
        registered = await client.register_recovery(owed)
        for n, amount in enumerate((300, 200), start=1):
            payment = {"amount_fen": amount, "received_at": at.isoformat(), "serial": f"S{n}"}
            reply = await http.post(f"/v1/_simulator/recoveries/{key}/payments", json=payment)
            assert reply.status_code == 201, reply.text
        before_kill = await client.recovery(key)
    async with _budget_process(state) as url, httpx.AsyncClient(base_url=url) as http:
        client = BudgetSystemClient(http)
        assert await client.recovery(key) == before_kill
        assert before_kill is not None and before_kill.received_fen == 500
        again = await client.register_recovery(owed)  # a retry after the crash: same order
        assert again.payment_code == registered.payment_code
        closed = await client.close_recovery(key, "已足额缴回")
    async with _budget_process(state) as url, httpx.AsyncClient(base_url=url) as http:
        client = BudgetSystemClient(http)
        assert await client.recovery(key) == closed
        assert closed.state is RecoveryState.CLOSED
        assert [r.serial for r in closed.receipts] == ["S1", "S2"]
        assert await client.recovery_statement() == [closed]
        assert [s.idempotency_key for s in await client.statement()] == [paid.idempotency_key]


async def test_channel_simulator_that_never_shut_down_leaves_its_messages(
    tmp_path: Path,
) -> None:
    state = tmp_path / "channel.jsonl"
    message = OutgoingMessage(
        idempotency_key=push_key("91330502T000000027", "HZ-JXJ-02"),
        recipient="91330502T000000027",
        title="政策快享",
        body="测试",
    )
    config = message_channel.ChannelConfig(delivery_delay_s=0)
    crashed = message_channel.create_app(config, state)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(crashed.router.lifespan_context(crashed))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=crashed), base_url="http://m")
        sent = await MessageChannelClient(http).send(message)
        # The first app is never shut down: a second one reads what it wrote.
        restarted = message_channel.create_app(config, state)
        await stack.enter_async_context(restarted.router.lifespan_context(restarted))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=restarted), base_url="http://m")
        status = await MessageChannelClient(http).status(sent.message_id)
        assert status.idempotency_key == message.idempotency_key


def test_a_record_cut_short_by_a_crash_is_dropped_and_the_journal_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    adapter = TypeAdapter(dict[str, int])
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')  # the write of "c" was never finished
    journal = RecordJournal(path, adapter)
    assert journal.open() == {"a": 1, "b": 2}
    journal.write("d", 4)
    journal.close()
    assert RecordJournal(path, adapter).open() == {"a": 1, "b": 2, "d": 4}
    path.write_bytes(b'{"a": 1}\n{"b": \n{"c": 3}\n')  # damage before the end is refused
    with pytest.raises(ValueError, match="line 2"):
        RecordJournal(path, adapter).open()


def test_the_snapshot_an_older_simulator_wrote_at_shutdown_is_read(tmp_path: Path) -> None:
    path = tmp_path / "budget-simulator.json"
    adapter = TypeAdapter(dict[str, int])
    path.write_bytes(adapter.dump_json({"a": 1, "b": 2}))  # no newline at the end
    journal = RecordJournal(path, adapter)
    assert journal.open() == {"a": 1, "b": 2}
    journal.write("c", 3)
    journal.close()
    assert RecordJournal(path, adapter).open() == {"a": 1, "b": 2, "c": 3}


async def test_the_statement_is_read_a_page_at_a_time_with_progress() -> None:
    app = budget_system.create_app(budget_system.SimulatorConfig(receipt_delay_s=0))
    heard: list[tuple[str, int, int | None]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as h:
        client = BudgetSystemClient(h)
        sent = [_instruction(n) for n in range(1, 6)]
        for instruction in sent:
            await client.instruct(instruction)
        statement = await client.statement(lambda *report: heard.append(report), page_size=2)
    assert [s.idempotency_key for s in statement] == [i.idempotency_key for i in sent]
    assert heard == [("statement", 2, 5), ("statement", 4, 5), ("statement", 5, 5)]


async def test_each_statement_holds_its_own_kind_a_page_at_a_time() -> None:
    app = budget_system.create_app(budget_system.SimulatorConfig(receipt_delay_s=0))
    heard: list[tuple[str, int, int | None]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as h:
        client = BudgetSystemClient(h)
        owed = [_recovery(n) for n in range(1, 6)]
        for n, notice in enumerate(owed, start=1):
            await client.register_recovery(notice)
            await client.instruct(_instruction(n))  # interleaved: each list keeps to its own
        recoveries = await client.recovery_statement(
            lambda *report: heard.append(report), page_size=2
        )
        instructions = await client.statement(page_size=2)
    assert [r.idempotency_key for r in recoveries] == [n.idempotency_key for n in owed]
    assert len({r.payment_code for r in recoveries}) == 5
    assert [i.idempotency_key for i in instructions] == [
        _instruction(n).idempotency_key for n in range(1, 6)
    ]
    assert heard == [("recoveries", 2, 5), ("recoveries", 4, 5), ("recoveries", 5, 5)]


# ----- the refuse_accounts dial: the provincial system refuses a closed or frozen account


def _to(account: str, n: int) -> PaymentInstruction:
    return _instruction(n).model_copy(update={"payee_account": account})


async def test_an_instruction_to_a_refused_account_is_a_422_and_nothing_is_recorded() -> None:
    frozen, open_account = "6222000099998888777", "6222000011112222333"
    app = budget_system.create_app(budget_system.SimulatorConfig(receipt_delay_s=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as h:
        assert (await h.get("/v1/_simulator/config")).json()["refuse_accounts"] == []
        accepted_before = await BudgetSystemClient(h).instruct(_to(frozen, 1))
        dials = {"receipt_delay_s": 0, "return_rate": 1.0, "refuse_accounts": [frozen]}
        assert (await h.put("/v1/_simulator/config", json=dials)).status_code == 200
        refused = _to(frozen, 2)
        for _again in range(2):  # refused again when asked again
            reply = await h.post(
                "/v1/payment-instructions",
                json=refused.model_dump(mode="json"),
                headers={"Idempotency-Key": refused.idempotency_key},
            )
            assert reply.status_code == 422
            assert reply.headers["content-type"] == "application/json"
            assert reply.json()["code"] == "payee_account_refused"
            assert "冻结" in reply.json()["detail"] and frozen not in reply.text
        client = BudgetSystemClient(h)
        with pytest.raises(BudgetSystemRefused) as caught:
            await client.instruct(refused)
        assert caught.value.status_code == 422
        assert await client.status(refused.idempotency_key) is None
        # What the system accepted before the dial stays accepted; other accounts are
        # untouched, and the other dials behave as before (return_rate 1: returned).
        again = await client.instruct(_to(frozen, 1))
        assert again.voucher_no == accepted_before.voucher_no
        other = await client.instruct(_to(open_account, 3))
        assert other.state is InstructionState.RETURNED
        keys = [s.idempotency_key for s in await client.statement()]
        assert keys == [_to(frozen, 1).idempotency_key, _to(open_account, 3).idempotency_key]


async def test_zhida_simulate_budget_refuses_accounts_and_survives_sigkill(
    tmp_path: Path,
) -> None:
    """The simulator as `make run` starts it: the command line, a state file; killed
    outright between two runs."""
    frozen = "6222000099998888777"
    state = tmp_path / "budget-simulator.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        *[sys.executable, "-m", "cli.main", "simulate", "budget", "--port", str(port)],
        *["--receipt-delay-s", "0", "--state-file", str(state), "--refuse-account", frozen],
    ]
    url = f"http://127.0.0.1:{port}"
    paid = _to("6222000011112222333", 1)
    for run in range(2):
        process = subprocess.Popen(command, cwd=PROJECT_ROOT)  # noqa: ASYNC220
        try:
            await wait_for_http(f"{url}/v1/_simulator/config", within=60)
            async with httpx.AsyncClient(base_url=url) as http:
                client = BudgetSystemClient(http)
                if run == 0:
                    await client.instruct(paid)
                with pytest.raises(BudgetSystemRefused) as caught:
                    await client.instruct(_to(frozen, 2))
                assert caught.value.status_code == 422
                status = await client.status(paid.idempotency_key)
                assert status is not None and status.state is InstructionState.PAID
        finally:
            process.kill()  # SIGKILL: no shutdown hook writes anything
            process.wait()


async def test_policy_feed_simulator_keeps_what_testers_published_until_told_to_forget(
    tmp_path: Path,
) -> None:
    state = tmp_path / "feed.json"
    served = len(policy_feed.publications())
    extra = policy_feed.publications()[0].model_dump(mode="json") | {
        "doc_number": "测试〔2026〕1号",
        "published_at": "2026-11-20T10:00:00+08:00",
    }

    async def feed_length() -> int:
        page = (await http.get("/v1/publications", params={"limit": 100})).json()
        return len(page["items"])

    for step in ("publish", "restarted", "forget", "forgotten"):
        app = policy_feed.create_app(policy_feed.PolicyFeedConfig(), state)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://f") as http,
        ):
            if step == "publish":
                answer = await http.post("/v1/_simulator/publications", json=extra)
                assert answer.json() == {"position": served}
                assert await feed_length() == served + 1
            elif step == "restarted":
                assert await feed_length() == served + 1
            elif step == "forget":
                assert (await http.delete("/v1/_simulator/publications")).status_code == 204
                assert await feed_length() == served
            else:
                assert await feed_length() == served
