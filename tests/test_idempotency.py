"""Idempotency-Key over HTTP: bound to the user, the endpoint and the body, kept in the
database, replayed to the same request, refused to any other; and, for case decisions on
the live stack, the Temporal update id derived from the bound key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from api.idempotency import HEADER, REPLAYED, purge_expired
from api.main import create_app
from core.settings import Settings
from models.idempotency import IdempotencyRecord
from models.types import utcnow
from tests.fixtures.api import auth
from tests.fixtures.factories import create_users, item_payload
from tests.fixtures.stack import Stack
from tests.test_application_e2e import AMOUNT, _setup, apply_and_wait

WRITES = ("post", "put", "patch", "delete")


def _key() -> str:
    return f"req-{uuid.uuid4()}"


def _draft(reason: str, title: str = "测试补助") -> dict[str, Any]:
    edit = {
        k: v
        for k, v in item_payload().items()
        if k not in {"code", "document", "department_code", "region_code"}
    }
    return edit | {"title": title, "change_reason": reason}


def _names_the_header(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [HEADER]
    assert HEADER in response.json()["detail"]


async def _history(api: httpx.AsyncClient, settings: Settings, code: str) -> list[tuple[str, str]]:
    detail = (await api.get(f"/api/v1/items/{code}", headers=auth(settings, "auditor"))).json()
    return [(h["action"], h["actor"]) for h in detail["history"]]


async def _set_record(session: AsyncSession, key: str, **values: Any) -> None:
    await session.execute(
        sa.update(IdempotencyRecord).where(col(IdempotencyRecord.key) == key).values(**values)
    )
    await session.commit()


# ----- the contract, in the OpenAPI --------------------------------------------------------


def test_every_write_route_declares_the_key_and_its_binding(settings: Settings) -> None:
    schema = create_app(settings).openapi()
    writes = [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        # The codec server's POSTs compute and change nothing (the Temporal UI's protocol).
        if method in WRITES and not path.startswith("/codec/")
    ]
    assert len(writes) >= 10
    for method, path, operation in writes:
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        assert HEADER in headers, f"{method} {path} does not declare {HEADER}"
        declared = headers[HEADER]
        assert declared["required"] is False
        value = declared["schema"]["anyOf"][0]
        assert (value["minLength"], value["maxLength"]) == (1, 255)
        assert "24 hours" in declared["description"]
        assert "user" in declared["description"]


# ----- a plain database write (rolled back per test) ---------------------------------------


async def test_a_draft_edit_sent_twice_is_replayed_not_applied_twice(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    staff = auth(settings, "jxj_staff")
    create = staff | {HEADER: _key()}
    created = await api.post("/api/v1/items", json=item_payload(), headers=create)
    assert created.status_code == 201, created.text
    again = await api.post("/api/v1/items", json=item_payload(), headers=create)
    assert (again.status_code, again.json()) == (201, created.json())  # not "already exists"
    assert again.headers[REPLAYED] == "true"
    assert REPLAYED not in created.headers

    key = staff | {HEADER: _key()}
    edited = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("改名"), headers=key)
    assert edited.status_code == 200, edited.text
    replayed = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("改名"), headers=key)
    assert replayed.status_code == 200
    assert replayed.content == edited.content
    assert replayed.headers[REPLAYED] == "true"
    assert replayed.headers["content-type"] == edited.headers["content-type"]

    other = await api.put(
        "/api/v1/items/TEST-ITEM-01/draft", json=_draft("再改", title="别的名字"), headers=key
    )
    _names_the_header(other, 422)
    assert other.json()["code"] == "idempotency_key_reused"

    detail = (await api.get("/api/v1/items/TEST-ITEM-01", headers=staff)).json()
    assert detail["versions"][0]["title"] == "测试补助"
    assert await _history(api, settings, "TEST-ITEM-01") == [
        ("created", "jxj_staff"),
        ("edited", "jxj_staff"),
    ]


async def test_a_key_belongs_to_one_user_and_one_endpoint(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    key = {HEADER: _key()}
    created = await api.post(
        "/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff") | key
    )
    assert created.status_code == 201, created.text

    # The head of the same department may edit this draft, but not under the staff's key.
    by_head = await api.put(
        "/api/v1/items/TEST-ITEM-01/draft",
        json=_draft("主任修改"),
        headers=auth(settings, "jxj_head") | key,
    )
    _names_the_header(by_head, 422)
    # Nor may the staff reuse it on another endpoint.
    elsewhere = await api.put(
        "/api/v1/items/TEST-ITEM-01/draft",
        json=_draft("换个接口"),
        headers=auth(settings, "jxj_staff") | key,
    )
    _names_the_header(elsewhere, 422)
    assert await _history(api, settings, "TEST-ITEM-01") == [("created", "jxj_staff")]


async def test_a_bad_key_is_a_422_naming_the_header_and_nothing_is_applied(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    staff = auth(settings, "jxj_staff")
    sent = [(name.encode(), value.encode()) for name, value in staff.items()]
    for bad in (b"k" * 256, b"", "钥匙".encode(), b"a\x01b"):
        headers = httpx.Headers([*sent, (HEADER.encode(), bad)])
        refused = await api.post("/api/v1/items", json=item_payload(), headers=headers)
        _names_the_header(refused, 422)
    twice = httpx.Headers([*staff.items(), (HEADER, "one"), (HEADER, "two")])
    refused = await api.post("/api/v1/items", json=item_payload(), headers=twice)
    _names_the_header(refused, 422)
    # Nothing was created (other tests may have committed items of their own).
    absent = await api.get("/api/v1/items/TEST-ITEM-01", headers=auth(settings, "auditor"))
    assert absent.status_code == 404, absent.text

    longest = await api.post(
        "/api/v1/items", json=item_payload(), headers=staff | {HEADER: "k" * 255}
    )
    assert longest.status_code == 201, longest.text


async def test_a_running_key_is_409_and_an_abandoned_one_is_taken_over(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    staff = auth(settings, "jxj_staff")
    assert (await api.post("/api/v1/items", json=item_payload(), headers=staff)).status_code == 201
    key = _key()
    headers = staff | {HEADER: key}
    first = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("一"), headers=headers)
    assert first.status_code == 200, first.text

    # Another API process holds the key and is still running the request.
    running = utcnow() + timedelta(seconds=60)
    await _set_record(session, key, status_code=None, holder="elsewhere", locked_until=running)
    busy = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("一"), headers=headers)
    _names_the_header(busy, 409)
    assert busy.headers["Retry-After"]

    # That process died: its lease ran out. Another body still may not take the key ...
    await _set_record(session, key, locked_until=utcnow() - timedelta(seconds=1))
    other = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("二"), headers=headers)
    _names_the_header(other, 422)
    # ... the same request does, and runs.
    retried = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("一"), headers=headers)
    assert retried.status_code == 200
    assert REPLAYED not in retried.headers
    again = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("一"), headers=headers)
    assert again.headers[REPLAYED] == "true"

    # After 24 hours a key is forgotten, and then it may serve another request.
    await _set_record(session, key, expires_at=utcnow() - timedelta(seconds=1))
    later = await api.put("/api/v1/items/TEST-ITEM-01/draft", json=_draft("二"), headers=headers)
    assert later.status_code == 200
    assert REPLAYED not in later.headers
    assert [a for a, _ in await _history(api, settings, "TEST-ITEM-01")].count("edited") == 3

    await _set_record(session, key, expires_at=utcnow() - timedelta(seconds=1))
    sessions = async_sessionmaker(session.bind, join_transaction_mode="create_savepoint")
    assert await purge_expired(sessions, utcnow()) >= 1
    assert await session.get(IdempotencyRecord, key, populate_existing=True) is None


async def test_identical_requests_at_once_apply_once(stack: Stack) -> None:
    """Five copies of one request at the same moment, on a committed database: one runs,
    the others are told it is running (409) or get its answer."""
    code = f"IDEM-{uuid.uuid4().hex[:6].upper()}"
    async with stack.sessionmaker.begin() as session:
        await create_users(session)
    staff = auth(stack.settings, "jxj_staff")
    created = await stack.api.post("/api/v1/items", json=item_payload(code), headers=staff)
    assert created.status_code == 201, created.text

    headers = staff | {HEADER: _key()}
    path = f"/api/v1/items/{code}/draft"
    answers = await asyncio.gather(
        *(stack.api.put(path, json=_draft("并发"), headers=headers) for _ in range(5))
    )
    ran = [a for a in answers if a.status_code == 200 and REPLAYED not in a.headers]
    assert len(ran) <= 1, [(a.status_code, a.text) for a in answers]
    for answer in answers:
        # 503: on a loaded machine the key could not be recorded in time; nothing ran.
        assert answer.status_code in (200, 409, 503), answer.text
        if answer.status_code == 200 and ran and answer is not ran[0]:
            assert answer.content == ran[0].content
    again = await stack.api.put(path, json=_draft("并发"), headers=headers)
    assert again.status_code == 200, again.text
    if ran:
        assert REPLAYED in again.headers and again.content == ran[0].content
    assert [a for a, _ in await _history(stack.api, stack.settings, code)].count("edited") == 1


# ----- case decisions on the live stack (Temporal updates) ---------------------------------


async def _case(stack: Stack, code: str, uscc: str) -> dict[str, Any]:
    path = f"/api/v1/cases/application/{code}/2026/{uscc}"
    response = await stack.api.get(path, headers=auth(stack.settings, "auditor"))
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def test_a_decision_cannot_be_replaced_under_the_same_key(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)
    await apply_and_wait(stack, dev_server, code, uscc)
    decisions = f"/api/v1/cases/application/{code}/2026/{uscc}/decisions"
    key = {HEADER: _key()}
    staff = auth(stack.settings, "jxj_staff") | key

    approved = await stack.api.post(decisions, json={"action": "approve"}, headers=staff)
    assert approved.status_code == 200, approved.text
    assert approved.json()["stage"] == "finance_review"
    replayed = await stack.api.post(decisions, json={"action": "approve"}, headers=staff)
    assert (replayed.status_code, replayed.content) == (200, approved.content)
    assert replayed.headers[REPLAYED] == "true"

    # The caseworker changes their mind but resends the key: refused, not swallowed.
    rejection = {"action": "reject", "reason": "材料不全"}
    rejected = await stack.api.post(decisions, json=rejection, headers=staff)
    _names_the_header(rejected, 422)
    # Finance, whose approval would be accepted now, may not use the caseworker's key.
    finance = auth(stack.settings, "czj_staff") | key
    by_finance = await stack.api.post(decisions, json={"action": "approve"}, headers=finance)
    _names_the_header(by_finance, 422)

    state = await _case(stack, code, uscc)
    assert (state["stage"], state["approved_amount_fen"]) == ("finance_review", AMOUNT)
    assert [e["actor"] for e in state["timeline"]].count("czj_staff") == 0
    assert [e["actor"] for e in state["timeline"]].count("jxj_staff") == 1


async def test_the_update_id_is_bound_to_the_user_and_survives_a_crash(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)
    await apply_and_wait(stack, dev_server, code, uscc)
    decisions = f"/api/v1/cases/application/{code}/2026/{uscc}/decisions"
    key = _key()
    staff = auth(stack.settings, "jxj_staff") | {HEADER: key}
    assert (await stack.api.post(decisions, json={"action": "approve"}, headers=staff)).json()[
        "stage"
    ] == "finance_review"

    # A day later the record is gone; finance happens to send the same key. A raw key as
    # update id would have Temporal answer with the caseworker's approval and drop this one.
    async with stack.sessionmaker.begin() as session:
        await session.execute(
            sa.update(IdempotencyRecord)
            .where(col(IdempotencyRecord.key) == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    finance = auth(stack.settings, "czj_staff") | {HEADER: key}
    paid = await stack.api.post(decisions, json={"action": "approve"}, headers=finance)
    assert paid.status_code == 200, paid.text
    after_finance = paid.json()["stage"]
    assert after_finance != "finance_review"

    # The API died after Temporal applied finance's approval and before it kept the answer:
    # the retry takes the abandoned key over and Temporal recognises the update id.
    async with stack.sessionmaker.begin() as session:
        await session.execute(
            sa.update(IdempotencyRecord)
            .where(col(IdempotencyRecord.key) == key)
            .values(status_code=None, holder="dead", locked_until=utcnow() - timedelta(seconds=1))
        )
    retried = await stack.api.post(decisions, json={"action": "approve"}, headers=finance)
    assert retried.status_code == 200, retried.text  # not a 409 for the wrong stage
    assert REPLAYED not in retried.headers
    assert retried.json()["stage"] == after_finance
    timeline = (await _case(stack, code, uscc))["timeline"]
    assert [e["actor"] for e in timeline].count("czj_staff") == 1


async def test_a_retry_after_a_503_runs_again(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)
    await apply_and_wait(stack, dev_server, code, uscc)
    decisions = f"/api/v1/cases/application/{code}/2026/{uscc}/decisions"
    staff = auth(stack.settings, "jxj_staff") | {HEADER: _key()}

    # An API process that cannot reach Temporal, on the same database.
    cut_off = create_app(stack.settings.model_copy(update={"temporal_address": "127.0.0.1:9"}))
    async with (
        cut_off.router.lifespan_context(cut_off),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=cut_off), base_url="http://cut-off"
        ) as client,
    ):
        down = await client.post(decisions, json={"action": "approve"}, headers=staff)
    assert down.status_code == 503, down.text
    assert (await _case(stack, code, uscc))["stage"] == "department_review"

    retried = await stack.api.post(decisions, json={"action": "approve"}, headers=staff)
    assert retried.status_code == 200, retried.text
    assert REPLAYED not in retried.headers
    assert retried.json()["stage"] == "finance_review"
    # The 503 was not kept; the answer that followed it is.
    again = await stack.api.post(decisions, json={"action": "approve"}, headers=staff)
    assert (again.headers[REPLAYED], again.content) == ("true", retried.content)
