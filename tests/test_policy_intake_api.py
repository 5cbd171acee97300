"""Policy intake over HTTP, on both databases: harvested documents and the items proposed
from them, a proposal adopted as a library draft (and only a draft), and the alert a
later repeal raises to the adopting department, which marks it handled."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.policy_feed import PolicyFeedClient
from core.settings import Settings
from simulators.policy_feed import publications
from tests.fixtures.api import auth
from tests.fixtures.factories import create_users
from tests.test_policy_harvest import harvest_all, release

INTAKE = "/api/v1/intake"
REPEALED = "长政发〔2024〕8号"


def before_the_repeal() -> int:
    """How many publications come out before the repealing one."""
    return next(i for i, p in enumerate(publications()) if p.repeals)


async def document_id(api: httpx.AsyncClient, settings: Settings, doc_number: str) -> int:
    found = await api.get(
        f"{INTAKE}/documents", params={"q": doc_number}, headers=auth(settings, "jxj_staff")
    )
    assert found.status_code == 200, found.text
    (document,) = [d for d in found.json()["items"] if d["doc_number"] == doc_number]
    return int(document["id"])


def adoption(code: str, **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "department_code": "330500-JXJ",
        "region_code": "330522",
        "annual_quota_fen": 100_000_000,
        **extra,
    }


async def test_staff_read_documents_adopt_a_proposal_and_handle_the_repeal_alert(
    api: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    policy_feed_simulator: httpx.AsyncClient,
) -> None:
    await create_users(session)
    feed = PolicyFeedClient(policy_feed_simulator)
    staff, other, firm = (auth(settings, u) for u in ("jxj_staff", "kjj_staff", "admin"))
    await release(policy_feed_simulator, before_the_repeal())
    await harvest_all(session, feed, "feed-api")

    listed = (await api.get(f"{INTAKE}/documents", headers=staff)).json()
    out = publications()[: before_the_repeal()]
    assert listed["total"] == len({(p.issuer, p.doc_number) for p in out})
    national = await api.get(f"{INTAKE}/documents", params={"level": "national"}, headers=staff)
    assert {d["level"] for d in national.json()["items"]} == {"national"}

    repealed_id = await document_id(api, settings, REPEALED)
    detail = (await api.get(f"{INTAKE}/documents/{repealed_id}", headers=staff)).json()
    assert detail["repealed_by"] is None and detail["versions"] == 1
    assert detail["versions_seen"][0]["content"]["articles"]
    proposals = detail["proposals"]
    assert proposals, "the extractor proposes the document's paying articles"
    computable = next(p for p in proposals if p["amount_rule"] is not None)
    for condition in computable["conditions"]:
        assert condition["quote"] and 0 < condition["confidence"] <= 1
        if "；" not in condition["quote"]:  # not two alternatives widened into one
            assert condition["quote"] in condition["sentence"]
    url = f"{INTAKE}/proposals/{computable['id']}/adopt"

    # Only the department's own staff adopt, for their own department.
    assert (await api.post(url, json=adoption("CX-HARV-01"), headers=other)).status_code == 403
    assert (await api.post(url, json=adoption("CX-HARV-01"), headers=firm)).status_code == 403
    refused = await api.post(url, json=adoption("cx harv"), headers=staff)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "code"

    adopted = await api.post(url, json=adoption("CX-HARV-01"), headers=staff)
    assert adopted.status_code == 201, adopted.text
    item = adopted.json()
    assert item["document"]["doc_number"] == REPEALED
    (version,) = item["versions"]
    assert version["status"] == "draft"
    assert version["amount_rule"] == {"rounding": "half_up"} | computable["amount_rule"]
    assert version["eligibility"] == computable["eligibility"]
    assert version["period_scheme"] == computable["period_scheme"]
    assert REPEALED in version["change_reason"]
    again = await api.post(url, json=adoption("CX-HARV-02"), headers=staff)
    assert again.status_code == 409
    # A draft is not public: nothing harvested is published without the approval.
    assert (await api.get("/api/v1/public/policies/CX-HARV-01")).status_code == 404

    unpriced = [p for p in proposals if p["amount_rule"] is None]
    if unpriced:
        missing = await api.post(
            f"{INTAKE}/proposals/{unpriced[0]['id']}/adopt",
            json=adoption("CX-HARV-03"),
            headers=staff,
        )
        assert missing.status_code == 422
        assert missing.json()["errors"][0]["field"] == "amount_rule"

    # The county repeals the document: the adopting department is warned.
    await release(policy_feed_simulator, None)
    report = await harvest_all(session, feed, "feed-api")
    assert report.alerts == 1
    alerts = (await api.get(f"{INTAKE}/alerts", headers=staff)).json()
    (alert,) = alerts["items"]
    assert alert["kind"] == "repealed" and alert["item_code"] == "CX-HARV-01"
    assert alert["cause"]["doc_number"] == "长政发〔2026〕3号"
    assert (await api.get(f"{INTAKE}/alerts", headers=other)).json()["total"] == 0
    # A district's finance reads no city item's alerts; the city's finance does.
    district = auth(settings, "wx_czj_staff")
    assert (await api.get(f"{INTAKE}/alerts", headers=district)).json()["total"] == 0
    city = (await api.get(f"{INTAKE}/alerts", headers=auth(settings, "czj_staff"))).json()
    assert city["total"] == 1
    notices = (await api.get("/api/v1/me/notices", headers=staff)).json()
    assert any(n["subject"] == "policy/CX-HARV-01" for n in notices)
    detail = (await api.get(f"{INTAKE}/documents/{repealed_id}", headers=staff)).json()
    assert detail["repealed_by"]["doc_number"] == "长政发〔2026〕3号"

    handle = f"{INTAKE}/items/CX-HARV-01/alerts/{alert['id']}/handled"
    elsewhere = f"{INTAKE}/items/HZ-HARV-05/alerts/{alert['id']}/handled"
    assert (await api.post(handle, headers=other)).status_code == 403
    handled = await api.post(handle, headers=staff)
    assert handled.status_code == 200 and handled.json()["handled_by"] == "jxj_staff"
    assert (await api.get(f"{INTAKE}/alerts", headers=staff)).json()["total"] == 0
    everything = await api.get(f"{INTAKE}/alerts", params={"open": "false"}, headers=staff)
    assert everything.json()["total"] == 1

    # Nothing more is drafted from the repealed document.
    other_proposal = next(p for p in proposals if p["id"] != computable["id"])
    late = await api.post(
        f"{INTAKE}/proposals/{other_proposal['id']}/adopt",
        json=adoption("CX-HARV-04", amount_rule={"kind": "fixed", "amount_fen": 100}),
        headers=staff,
    )
    assert late.status_code == 409 and "长政发〔2026〕3号" in late.json()["detail"]

    # Drafted from a document amended already: its department is told at once.
    amended_id = await document_id(api, settings, "湖经信〔2025〕18号")
    amended = (await api.get(f"{INTAKE}/documents/{amended_id}", headers=staff)).json()
    assert [k["doc_number"] for k in amended["amended_by"]] == ["湖经信〔2025〕41号"]
    pick = next(p for p in amended["proposals"] if p["amount_rule"] is not None)
    pick_url = f"{INTAKE}/proposals/{pick['id']}/adopt"
    window = {"valid_from": "2026-01-01", "valid_to": "2027-12-31"}
    for body, field in (
        (adoption("HZ-HARV-05", valid_from="2027-01-01", valid_to="2026-01-01"), "valid_to"),
        (adoption("HZ-HARV-05", valid_from="1899-01-01", valid_to="2027-12-31"), "valid_from"),
        (adoption("HZ-HARV-05", valid_from="2026-01-01", valid_to="2100-12-31"), "valid_to"),
        (adoption("HZ-HARV-05", title="技改\u0000补助", **window), "title"),
        (adoption("HZ-HARV-05", period_scheme="yearly", **window), "period_scheme"),
        (adoption("HZ-HARV-05", valid_from=946684800, valid_to="2027-12-31"), "valid_from"),
    ):
        wrong = await api.post(pick_url, json=body, headers=staff)
        assert wrong.status_code == 422, (body, wrong.text)
        assert field in [e["field"] for e in wrong.json()["errors"]], wrong.text
    fine = adoption("HZ-HARV-05", **window)
    assert (await api.post(pick_url, json=fine, headers=staff)).status_code == 201
    warned = (await api.get(f"{INTAKE}/alerts", headers=staff)).json()["items"]
    assert [(a["item_code"], a["kind"]) for a in warned] == [("HZ-HARV-05", "amended")]
    assert (await api.post(elsewhere, headers=staff)).status_code == 404  # another item's

    # A keyword is text, not a pattern.
    for literal in ("_", "%"):
        found = await api.get(f"{INTAKE}/documents", params={"q": literal}, headers=staff)
        assert found.json()["total"] == 0

    assert (await api.get(f"{INTAKE}/documents/999999", headers=staff)).status_code == 404
    assert (await api.get(f"{INTAKE}/documents/0", headers=staff)).status_code == 422
    assert (await api.get(f"{INTAKE}/documents")).status_code == 401


async def test_a_repeal_published_after_an_item_was_drafted_warns_its_department(
    api: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    policy_feed_simulator: httpx.AsyncClient,
) -> None:
    """The tester's story over HTTP: adopt a draft from a document in force, then a
    portal repeals that document (published through the simulator), then harvest."""
    await create_users(session)
    feed = PolicyFeedClient(policy_feed_simulator)
    staff = auth(settings, "jxj_staff")
    await harvest_all(session, feed, "feed-story")
    base = next(p for p in publications() if p.doc_number == "湖政发〔2024〕9号")
    detail = (
        await api.get(
            f"{INTAKE}/documents/{await document_id(api, settings, base.doc_number)}",
            headers=staff,
        )
    ).json()
    pick = next(p for p in detail["proposals"] if p["amount_rule"] is not None)
    adopted = await api.post(
        f"{INTAKE}/proposals/{pick['id']}/adopt",
        json=adoption(
            "HZ-STORY-01", region_code="330500", valid_from="2026-01-01", valid_to="2027-12-31"
        ),
        headers=staff,
    )
    assert adopted.status_code == 201, adopted.text

    repeal = base.model_dump(mode="json") | {
        "doc_number": "湖政发〔2026〕30号",
        "title": "湖州市人民政府关于废止《湖州市加快推进制造业高质量发展若干政策》的决定",
        "source_url": "https://www.huzhou.gov.cn/art/2026/11/20/art_1229_1.html",
        "published_at": "2026-11-20T10:00:00+08:00",
        "issued_on": "2026-11-18",
        "repeals": [{"doc_number": base.doc_number, "issuer": base.issuer}],
        "articles": [
            {"number": "一、", "text": "决定废止《湖州市加快推进制造业高质量发展若干政策》。"}
        ],
        "attachments": [],
    }
    bad = await policy_feed_simulator.post("/v1/_simulator/publications", json={"title": "x"})
    assert bad.status_code == 422
    published = await policy_feed_simulator.post("/v1/_simulator/publications", json=repeal)
    assert published.status_code == 201 and published.json()["position"] == len(publications())

    report = await harvest_all(session, feed, "feed-story")
    assert (report.publications, report.new_documents, report.alerts) == (1, 1, 1)
    (alert,) = (await api.get(f"{INTAKE}/alerts", headers=staff)).json()["items"]
    assert alert["item_code"] == "HZ-STORY-01" and alert["kind"] == "repealed"
