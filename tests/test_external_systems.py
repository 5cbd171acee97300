"""What the two external systems share, pinned for both: how an adapter reads a failed
call (unavailable: retry later; refused: will not succeed as sent), and the dials every
simulator has (`/v1/_simulator/config`, latency and 5xx before any work, a seed)."""

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from adapters.budget_system import (
    BudgetSystemClient,
    BudgetSystemRefused,
    BudgetSystemUnavailable,
)
from adapters.http import ExternalSystemError, ExternalSystemRefused, ExternalSystemUnavailable
from adapters.message_channel import (
    ChannelRefused,
    ChannelUnavailable,
    MessageChannelClient,
    push_key,
)
from models.message_channel import MessageState, OutgoingMessage
from simulators import budget_system, message_channel


def _http(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _answer(status: int, body: str = "") -> Callable[[httpx.Request], httpx.Response]:
    return lambda _request: httpx.Response(status, text=body)


def _message(n: int = 1) -> OutgoingMessage:
    uscc = f"91330502T0000000{n:02d}"
    return OutgoingMessage(
        idempotency_key=push_key(uscc, "HZ-JXJ-01"), recipient=uscc, title="政策快享", body="测试"
    )


# ----- the adapters: one reading of a failed call --------------------------------------


async def test_each_system_names_its_failures_and_the_shared_names_catch_them() -> None:
    async with _http(_unreachable) as http:
        with pytest.raises(BudgetSystemUnavailable) as budget_down:
            await BudgetSystemClient(http).statement()
        with pytest.raises(ChannelUnavailable) as channel_down:
            await MessageChannelClient(http).sent()
    assert str(budget_down.value) == "GET /v1/payment-instructions: ConnectError"
    assert str(channel_down.value) == "GET /v1/messages: ConnectError"
    for failure in (budget_down.value, channel_down.value):
        assert isinstance(failure, ExternalSystemUnavailable)
        assert isinstance(failure.__cause__, httpx.ConnectError)
    assert issubclass(BudgetSystemRefused, ExternalSystemRefused)
    assert issubclass(ChannelRefused, ExternalSystemRefused)
    assert issubclass(ExternalSystemRefused, ExternalSystemError)
    assert issubclass(ExternalSystemUnavailable, ExternalSystemError)
    assert not issubclass(ChannelRefused, ExternalSystemUnavailable)


async def test_a_5xx_is_unavailable_and_a_4xx_is_refused_with_its_status_and_body() -> None:
    async with _http(_answer(502, "bad gateway")) as http:
        with pytest.raises(ChannelUnavailable, match=r"^GET /v1/messages/M1: HTTP 502$"):
            await MessageChannelClient(http).status("M1")
        with pytest.raises(
            BudgetSystemUnavailable, match=r"^GET /v1/payment-instructions: HTTP 502$"
        ):
            await BudgetSystemClient(http).statement()
    async with _http(_answer(409, "x" * 300)) as http:
        with pytest.raises(ChannelRefused) as refused:
            await MessageChannelClient(http).send(_message())
        assert refused.value.status_code == 409
        assert str(refused.value) == "POST /v1/messages: HTTP 409 " + "x" * 200
        with pytest.raises(BudgetSystemRefused) as budget_refused:
            await BudgetSystemClient(http).status("zhida:some:1")
        assert budget_refused.value.status_code == 409
        assert str(budget_refused.value).startswith(
            "GET /v1/payment-instructions/zhida%3Asome%3A1: HTTP 409 xxx"
        )
    async with _http(_answer(404)) as http:  # the budget system never received it
        assert await BudgetSystemClient(http).status("zhida:some:1") is None


async def test_a_message_is_sent_with_its_key_in_the_header() -> None:
    seen: list[httpx.Request] = []

    def accept(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201,
            json={
                "message_id": "MSG1",
                "idempotency_key": _message().idempotency_key,
                "recipient": _message().recipient,
                "state": "accepted",
                "accepted_at": "2026-01-05T09:00:00Z",
            },
        )

    async with _http(accept) as http:
        status = await MessageChannelClient(http).send(_message())
    assert status.message_id == "MSG1" and status.state is MessageState.ACCEPTED
    assert seen[0].headers["Idempotency-Key"] == _message().idempotency_key


# ----- the simulators: the dials they share --------------------------------------------

SIMULATORS: dict[str, tuple[Callable[[], FastAPI], str, str]] = {
    "budget": (budget_system.create_app, "budget system busy", "/v1/payment-instructions"),
    "channel": (message_channel.create_app, "channel busy", "/v1/messages"),
}


@pytest.fixture(params=sorted(SIMULATORS))
def simulator(request: pytest.FixtureRequest) -> tuple[FastAPI, str, str]:
    create_app, busy, listing = SIMULATORS[request.param]
    return create_app(), busy, listing


async def test_the_dials_are_read_and_set_at_run_time(simulator: tuple[FastAPI, str, str]) -> None:
    app, busy, listing = simulator
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as h:
        dials = (await h.get("/v1/_simulator/config")).json()
        assert dials["latency_ms"] == 0 and dials["failure_rate"] == 0 and dials["seed"] is None
        assert (await h.get(listing)).status_code == 200

        changed = await h.put("/v1/_simulator/config", json={"failure_rate": 1.0, "seed": 5})
        assert changed.status_code == 200
        assert changed.json() == {**dials, "failure_rate": 1.0, "seed": 5}
        assert (await h.get("/v1/_simulator/config")).json() == changed.json()
        busy_reply = await h.get(f"{listing}/anything")
        assert busy_reply.status_code == 503 and busy_reply.json() == {"detail": busy}

        wrong = await h.put("/v1/_simulator/config", json={"failure_rate": 2})
        assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"][-1] == "failure_rate"
        assert (await h.get("/v1/_simulator/config")).json() == changed.json()

        assert (await h.put("/v1/_simulator/config", json={})).json() == dials
        missing = await h.get(f"{listing}/anything")
        assert missing.status_code == 404 and set(missing.json()) == {"detail"}


async def test_a_seed_set_at_run_time_replays_the_same_chances() -> None:
    app = message_channel.create_app(message_channel.ChannelConfig(delivery_delay_s=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as h:
        client = MessageChannelClient(h)
        runs = []
        for first in (1, 21):
            dials = {"seed": 11, "undeliverable_rate": 0.5, "delivery_delay_s": 0}
            await h.put("/v1/_simulator/config", json=dials)
            sent = [await client.send(_message(n)) for n in range(first, first + 20)]
            runs.append([s.state for s in sent])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {MessageState.DELIVERED, MessageState.UNDELIVERABLE}


async def test_a_refusal_keeps_the_whole_answer_for_logs_and_its_detail_for_people() -> None:
    problem = '{"code": "payee_account_refused", "detail": "收款账户已冻结"}'
    async with _http(_answer(422, problem)) as http:
        with pytest.raises(ChannelRefused) as refused:
            await MessageChannelClient(http).sent()
    assert refused.value.status_code == 422 and problem in str(refused.value)
    assert refused.value.reason == "HTTP 422：收款账户已冻结"
    async with _http(_answer(409, "not json")) as http:
        with pytest.raises(ChannelRefused) as plain:
            await MessageChannelClient(http).sent()
    assert plain.value.reason == "HTTP 409：not json"
