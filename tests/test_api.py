"""The HTTP API over the real app and a real database (rolled back per test)."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from core.security import issue_token
from core.settings import Settings
from models.policy import PolicyItem
from models.registry import Enterprise, Fact
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload, new_uscc


async def test_requests_without_a_valid_token_are_401(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    assert (await api.get("/api/v1/items")).status_code == 401
    response = await api.get("/api/v1/items", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_token_accepted_once_is_refused_once_it_expires(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    # Issued so that it expires three seconds from now: room for the first request on a
    # loaded machine (a one-second margin once ran out in CI), then wait past it.
    expires = datetime.now(UTC) + timedelta(seconds=3)
    issued = expires - timedelta(hours=settings.token_ttl_hours)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'jxj_staff', now=issued)}"}
    assert (await api.get("/api/v1/me", headers=headers)).status_code == 200
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 1.1)
    refused = await api.get("/api/v1/me", headers=headers)
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    # Signed with another secret: refused, whatever was accepted before.
    forged = settings.model_copy(update={"token_secret": SecretStr("another-secret" * 3)})
    headers = {"Authorization": f"Bearer {issue_token(forged, 'jxj_staff')}"}
    assert (await api.get("/api/v1/me", headers=headers)).status_code == 401


async def test_healthz_reports_database_and_temporal(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await api.get("/healthz")
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["temporal"]["ok"] is False  # nothing listens at the test's Temporal address
    assert response.status_code == 503


async def test_department_staff_create_and_edit_their_items(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    created = await api.post(
        "/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff")
    )
    assert created.status_code == 201, created.text
    assert created.json()["versions"][0]["status"] == "draft"

    edit = {
        k: v
        for k, v in item_payload().items()
        if k not in {"code", "document", "department_code", "region_code"}
    }
    edit["eligibility"] = (
        "all:\n  - {fact: mu_grade, op: in, value: [A, B]}\n"  # YAML, as people write it
    )
    edit["change_reason"] = "放宽亩均条件"
    edited = await api.put(
        "/api/v1/items/TEST-ITEM-01/draft", json=edit, headers=auth(settings, "jxj_staff")
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["eligibility"] == {
        "all": [{"fact": "mu_grade", "op": "in", "value": ["A", "B"]}]
    }

    detail = (await api.get("/api/v1/items/TEST-ITEM-01", headers=auth(settings, "auditor"))).json()
    assert [(h["action"], h["actor"]) for h in detail["history"]] == [
        ("created", "jxj_staff"),
        ("edited", "jxj_staff"),
    ]
    assert detail["history"][1]["details"] == {"fields": ["eligibility"]}
    assert detail["history"][1]["reason"] == "放宽亩均条件"


async def test_invalid_rule_is_422_naming_the_path(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    payload = item_payload(
        eligibility={
            "all": [
                {"fact": "credit_rating", "op": "in", "value": ["A"]},
                {"any": [{"fact": "tax_per_mu_fen", "op": "gte", "value": "high"}]},
            ]
        },
        amount_rule={"kind": "rate", "fact": "rd_expense_fen", "rate": "-1"},
    )
    response = await api.post("/api/v1/items", json=payload, headers=auth(settings, "jxj_staff"))
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"eligibility.all[1].any[0].value", "amount_rule.rate"}
    assert await session.get(PolicyItem, "TEST-ITEM-01") is None


async def test_bad_payload_fields_are_named(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    payload = item_payload()
    payload["annual_quota_fen"] = 1.5
    payload["stages"][0]["working_days"] = 0
    response = await api.post("/api/v1/items", json=payload, headers=auth(settings, "jxj_staff"))
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"annual_quota_fen", "stages[0].working_days"} <= fields


async def test_role_refusals(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    # Another department's staff, finance, auditors and enterprises cannot create a JXJ item.
    for user in ("kjj_staff", "czj_staff", "auditor", "admin"):
        response = await api.post(
            "/api/v1/items", json=item_payload(), headers=auth(settings, user)
        )
        assert response.status_code == 403, (user, response.text)
    assert (
        await api.post("/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff"))
    ).status_code == 201
    edit = {
        k: v
        for k, v in item_payload().items()
        if k not in {"code", "document", "department_code", "region_code"}
    }
    for user in ("kjj_head", "auditor"):
        response = await api.put(
            "/api/v1/items/TEST-ITEM-01/draft", json=edit, headers=auth(settings, user)
        )
        assert response.status_code == 403
        response = await api.post(
            "/api/v1/items/TEST-ITEM-01/suspend", json={"reason": "x"}, headers=auth(settings, user)
        )
        assert response.status_code == 403
    response = await api.post(
        "/api/v1/imports/enterprises?format=jsonl",
        files={"file": ("a.jsonl", b"")},
        headers=auth(settings, "auditor"),
    )
    assert response.status_code == 403


async def test_enterprise_sees_only_its_own_data(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    mine = await create_enterprise(session, facts={"credit_rating": ("A", "2025")})
    other = await create_enterprise(session)
    await create_users(session, enterprise_uscc=mine.uscc)
    headers = auth(settings, "qiye")
    listing = (await api.get("/api/v1/enterprises", headers=headers)).json()
    assert [e["uscc"] for e in listing["items"]] == [mine.uscc]
    own = (await api.get(f"/api/v1/enterprises/{mine.uscc}", headers=headers)).json()
    assert own["accounts"][0]["account_number_masked"] == "6222***********2333"
    assert (await api.get(f"/api/v1/enterprises/{other.uscc}", headers=headers)).status_code == 403
    response = await api.get(f"/api/v1/items/HZ-X/eligibility/{other.uscc}", headers=headers)
    assert response.status_code == 403
    wrong = mine.uscc[:-1] + ("0" if mine.uscc[-1] != "0" else "1")
    response = await api.get(f"/api/v1/enterprises/{wrong}", headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "uscc"
    assert response.json()["errors"][0]["message"].startswith("check character is")


async def test_enterprise_sees_published_items_only(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    mine = await create_enterprise(session)
    await create_users(session, enterprise_uscc=mine.uscc)
    await api.post("/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff"))
    staff_view = (
        await api.get("/api/v1/items?status=draft", headers=auth(settings, "jxj_staff"))
    ).json()
    assert staff_view["total"] == 1
    firm_view = (await api.get("/api/v1/items", headers=auth(settings, "qiye"))).json()
    assert firm_view["total"] == 0
    assert (
        await api.get("/api/v1/items/TEST-ITEM-01", headers=auth(settings, "qiye"))
    ).status_code == 404


async def test_items_list_filters_and_paginates(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    headers = auth(settings, "jxj_staff")
    for n, category in enumerate(["application", "recognition", "commitment", "application"]):
        payload = item_payload(f"TEST-{n}", category=category)
        payload["title"] = f"测试补助{n}号"
        assert (await api.post("/api/v1/items", json=payload, headers=headers)).status_code == 201
    page = (
        await api.get("/api/v1/items?category=application&limit=1&offset=1", headers=headers)
    ).json()
    assert (page["total"], page["offset"], page["limit"]) == (2, 1, 1)
    assert [i["code"] for i in page["items"]] == ["TEST-3"]
    found = (await api.get("/api/v1/items?q=补助2号", headers=headers)).json()
    assert [i["code"] for i in found["items"]] == ["TEST-2"]
    assert (await api.get("/api/v1/items?limit=500", headers=headers)).status_code == 422


async def test_eligibility_endpoint_gives_reasons_and_amount(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    firm = await create_enterprise(
        session, facts={"credit_rating": ("A", "2025"), "rd_expense_fen": (2_000_000, "2025")}
    )
    await create_users(session)
    payload = item_payload(
        eligibility={
            "all": [
                {"fact": "credit_rating", "op": "in", "value": ["A", "B"]},
                {"fact": "mu_grade", "op": "eq", "value": "A"},
            ]
        },
        amount_rule={"kind": "rate", "fact": "rd_expense_fen", "rate": "0.1"},
    )
    await api.post("/api/v1/items", json=payload, headers=auth(settings, "jxj_staff"))
    response = await api.get(
        f"/api/v1/items/TEST-ITEM-01/eligibility/{firm.uscc}?as_of=2026-06-30",
        headers=auth(settings, "jxj_staff"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verdict"] == "possibly_eligible"
    assert [(c["path"], c["outcome"], c["reason"]) for c in body["conditions"]] == [
        ("all[0]", "pass", None),
        ("all[1]", "unknown", "missing"),
    ]
    assert body["amount_fen"] == 200_000


async def test_import_endpoint_rejects_bad_file_whole(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    good, bad = new_uscc(), new_uscc()[:-1] + "I"
    rows = [
        {
            "record": "enterprise",
            "uscc": good,
            "name": "甲",
            "region_code": "330502",
            "industry_code": "C1711",
            "size_class": "small",
            "established_on": "2012-01-01",
        },
        {
            "record": "enterprise",
            "uscc": bad,
            "name": "乙",
            "region_code": "330502",
            "industry_code": "C1711",
            "size_class": "small",
            "established_on": "2012-01-01",
        },
    ]
    content = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    response = await api.post(
        "/api/v1/imports/enterprises",
        files={"file": ("platform.jsonl", content)},
        headers=auth(settings, "admin"),
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "line 2.uscc", "message": "characters not allowed: I"}
    ]
    assert await session.scalar(sa.select(sa.func.count()).where(col(Enterprise.uscc) == good)) == 0

    response = await api.post(
        "/api/v1/imports/enterprises",
        files={"file": ("platform.jsonl", content.split(b"\n")[0])},
        headers=auth(settings, "admin"),
    )
    assert response.status_code == 200
    assert response.json()["enterprises_created"] == 1
    assert (
        await session.scalar(
            sa.select(sa.func.count()).select_from(Fact).where(col(Fact.uscc) == good)
        )
        == 0
    )
