"""The public catalogue and the policy calculator over HTTP with no token, on both
databases: what a visitor finds by region, industry, unit, category, level and keyword;
an item's page in plain Chinese; the calculator's verdicts and refusals; and that no
public answer carries a draft, a quota or anything about a firm, and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from core.settings import Settings
from models.audit import AuditEvent
from models.policy import PolicyItem, PolicyItemVersion, VersionStatus
from models.registry import Enterprise, Fact
from seed.sample import load_policies, sample_policies
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload

BASE = "/api/v1/public"
DRAFT_TITLE = "草稿事项不应公开ZX91"
FIRM_NAME = "公开页面不应出现的企业ZX92"


async def library(api: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> str:
    """The sample library published, a draft item, a firm with facts; the firm's code."""
    await create_users(session)
    await load_policies(session)
    draft = item_payload("TEST-DRAFT-01") | {"title": DRAFT_TITLE}
    created = await api.post("/api/v1/items", json=draft, headers=auth(settings, "jxj_staff"))
    assert created.status_code == 201, created.text
    firm = await create_enterprise(
        session, facts={"credit_rating": ("A", "2026"), "tax_paid_fen": (987_654_321, "2025")}
    )
    firm.name = FIRM_NAME
    await session.flush()
    return firm.uscc


async def codes(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get(f"{BASE}/policies", params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return [p["code"] for p in body["items"]]


async def test_the_catalogue_lists_every_item_in_force_without_a_token(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await library(api, session, settings)
    published = sorted(spec["code"] for spec in sample_policies()["items"])
    assert await codes(api) == published  # the draft is not there

    suspended = await published_row(session, "HZ-SWJ-02")
    suspended.status = VersionStatus.SUSPENDED
    await session.flush()
    assert "HZ-SWJ-02" not in await codes(api)
    assert (await api.get(f"{BASE}/policies/HZ-SWJ-02")).status_code == 404
    assert (await api.get(f"{BASE}/policies/TEST-DRAFT-01")).status_code == 404
    assert (await api.get(f"{BASE}/policies/TEST-DRAFT-01/check")).status_code == 404


async def published_row(session: AsyncSession, code: str) -> PolicyItemVersion:
    item = await session.get(PolicyItem, code)
    assert item is not None
    found = await session.scalar(
        select(PolicyItemVersion).where(
            PolicyItemVersion.item_code == code,
            PolicyItemVersion.version == item.published_version,
        )
    )
    assert found is not None
    return found


async def test_a_visitor_finds_items_by_region_industry_unit_category_level_and_keyword(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await library(api, session, settings)
    everything = await codes(api)

    # A firm in 吴兴区 gets the city's items and 吴兴's own, not another district's.
    wuxing = await codes(api, region_code="330502")
    assert "WX-JXJ-01" in wuxing and "HZ-JXJ-01" in wuxing
    assert not {"NX-JXJ-01", "DQ-JXJ-01", "AJ-JXJ-01", "NTH-JXJ-01"} & set(wuxing)
    # 南太湖新区 is a zone under the city: its own item and the city's.
    zone = await codes(api, region_code="NTH")
    assert "NTH-JXJ-01" in zone and "HZ-JXJ-01" in zone and "WX-JXJ-01" not in zone
    assert await codes(api, region_code="999999") == []

    # The technical renovation subsidy asks for manufacturing (industry prefix C).
    software = await codes(api, industry_code="I6510")
    manufacturing = await codes(api, industry_code="C3411")
    assert "HZ-JXJ-01" in manufacturing and "HZ-JXJ-01" not in software
    assert set(software) < set(everything)

    assert set(await codes(api, category="commitment")) == {
        s["code"] for s in sample_policies()["items"] if s["category"] == "commitment"
    }
    data = sample_policies()
    provincial = {d["doc_number"] for d in data["documents"] if d["level"] == "province"}
    province = await codes(api, level="province")
    assert province == sorted(s["code"] for s in data["items"] if s["document"] in provincial)
    assert set(await codes(api, department_code="330500-KJJ")) == {
        "HZ-KJJ-01",
        "HZ-KJJ-02",
        "HZ-KJJ-03",
        "HZ-KJJ-04",
    }
    assert "HZ-JXJ-01" in await codes(api, q="技术改造")
    assert await codes(api, q="浙政办发〔2023〕31号") == province  # by its document
    assert await codes(api, q="没有这样的政策") == []

    paged = (await api.get(f"{BASE}/policies", params={"limit": 5, "offset": 5})).json()
    assert paged["total"] == len(everything)
    assert [p["code"] for p in paged["items"]] == everything[5:10]

    for bad in (
        {"category": "grant"},
        {"level": "planet"},
        {"limit": 0},
        {"q": "x" * 65},
        {"region_code": ""},
    ):
        refused = await api.get(f"{BASE}/policies", params=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["errors"][0]["field"] == next(iter(bad))

    facets = (await api.get(f"{BASE}/facets")).json()
    assert {"330502", "NTH"} <= {r["code"] for r in facets["regions"]}
    assert "330500-KJJ" in {d["code"] for d in facets["departments"]}
    assert {c["name"] for c in facets["categories"]} == {"免申即享", "承诺制", "申报制"}


async def test_an_items_page_states_its_conditions_amount_units_and_contact_in_chinese(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await library(api, session, settings)
    item = (await api.get(f"{BASE}/policies/HZ-JXJ-01")).json()
    assert item["url"] == "/public/policies/HZ-JXJ-01"
    assert item["document"]["doc_number"] == "湖政发〔2024〕8号"
    assert item["level"] == "city" and item["how_to_get"].startswith("申报制")
    assert item["period_name"] == "按年度：每家企业每年最多享受一次"
    lines = [line["text"] for line in item["conditions"]]
    assert "国民经济行业分类 以此开头 C" in lines
    assert "公共信用评价等级 属于 A级、B级" in lines
    assert "并非：列入严重失信名单 = 是" in lines
    assert "技改设备投资额 ≥ 5,000,000.00元" in lines
    assert "技改项目已完成竣工验收（由主管部门审核）" in lines
    # Codes read as words: a region by its name, a level or size by its Chinese.
    district = (await api.get(f"{BASE}/policies/WX-JXJ-01")).json()
    assert "所在区县 = 吴兴区" in [line["text"] for line in district["conditions"]]
    giant = (await api.get(f"{BASE}/policies/HZ-JXJ-02")).json()
    assert "专精特新等级 = 国家级" in [line["text"] for line in giant["conditions"]]
    assert item["amount"] == "按技改设备投资额的 8% 计算，最高 5,000,000.00元"
    assert [(s["stage_name"], s["unit_name"], s["working_days"]) for s in item["stages"]] == [
        ("部门审核", "湖州市经济和信息化局", 10),
        ("财政审核", "湖州市财政局", 5),
        ("拨付", "湖州市财政局", 5),
    ]
    assert item["contact"] == {
        "unit_name": "湖州市经济和信息化局",
        "contact": "企业服务处 0572-2398601",
    }
    assert [i["name"] for i in item["inputs"]] == [
        "industry_code",
        "credit_rating",
        "env_credit_colour",
        "renovation_investment_fen",
        "blacklisted",
    ]


async def test_the_calculator_judges_typed_figures_and_names_a_bad_one(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await library(api, session, settings)
    url = f"{BASE}/policies/HZ-JXJ-01/check"
    figures: dict[str, str | int] = {
        "industry_code": "C3411",
        "credit_rating": "A",
        "env_credit_colour": "green",
        "blacklisted": "false",
        "renovation_investment_fen": 2_000_000_000,
    }
    answer = (await api.get(url, params=figures)).json()
    # Every figure given, only the manual condition is left to the department.
    assert answer["verdict"] == "possibly_eligible"
    assert answer["amount_fen"] == 160_000_000  # 8% of 20,000,000 元, under the cap
    assert answer["missing"] == []
    assert [c["reason"] for c in answer["conditions"] if c["outcome"] == "unknown"] == ["manual"]

    capped = (await api.get(url, params=figures | {"renovation_investment_fen": 10**11})).json()
    assert capped["amount_fen"] == 500_000_000

    short = (await api.get(url, params={"credit_rating": "A"})).json()
    assert short["verdict"] == "possibly_eligible"
    assert [m["name"] for m in short["missing"]] == [
        "industry_code",
        "env_credit_colour",
        "renovation_investment_fen",
        "blacklisted",
    ]
    assert short["amount_fen"] is None

    ruled_out = (await api.get(url, params=figures | {"credit_rating": "D"})).json()
    assert ruled_out["verdict"] == "not_eligible" and ruled_out["amount_fen"] is None
    assert ruled_out["missing"] == []  # settled: nothing more is worth typing in

    # Outside the item's validity (2026–2027) nobody qualifies, whatever the figures.
    for day in ("2025-12-31", "2030-01-01"):
        late = (await api.get(url, params=figures | {"as_of": day})).json()
        assert late["in_force"] is False and late["verdict"] == "not_eligible", late
        assert late["amount_fen"] is None and "不在有效期内" in late["amount_explanation"]
    assert (await api.get(url, params=figures | {"as_of": "2026-03-01"})).json()["in_force"]

    # An alternative met: the other alternative's figure is not asked for.
    either = f"{BASE}/policies/HZ-KJJ-01/check"
    met: dict[str, str | int] = {
        "rd_expense_fen": 100_000_000,
        "high_tech": "true",
        "blacklisted": "false",
    }
    answer = (await api.get(either, params=met)).json()
    assert answer["verdict"] == "eligible" and answer["missing"] == []
    # Regions by name in every outcome; a per-head rate in yuan; below the lowest tier a
    # firm is not eligible for nothing.
    region = (
        await api.get(f"{BASE}/policies/WX-JXJ-01/check", params={"region_code": "330503"})
    ).json()
    assert "所在区县 = 吴兴区" in [c["description"] for c in region["conditions"]]
    per_head = (
        await api.get(
            f"{BASE}/policies/HZ-RSJ-02/check",
            params={"social_security_headcount": 20, "credit_rating": "A", "blacklisted": "false"},
        )
    ).json()
    assert per_head["amount_fen"] == 1_000_000 and "每人 500.00元" in per_head["amount_explanation"]
    tiers: dict[str, str | int] = {
        "industry_code": "C13",
        "mu_grade": "A",
        "credit_rating": "A",
        "blacklisted": "false",
        "tax_per_mu_fen": 100,
    }
    below = (await api.get(f"{BASE}/policies/HZ-JXJ-04/check", params=tiers)).json()
    assert below["verdict"] == "not_eligible" and below["amount_fen"] is None
    assert "未达到最低档" in below["amount_explanation"]
    # A founding date is any day a firm could have been founded on (1900–2099).
    founded = await api.get(url, params={"established_on": "1997-12-11"})
    assert founded.status_code == 200, founded.text

    for bad, field in (
        ({"renovation_investment_fen": -1}, "renovation_investment_fen"),
        ({"renovation_investment_fen": "1e9"}, "renovation_investment_fen"),
        ({"renovation_investment_fen": 10**30}, "renovation_investment_fen"),
        ({"credit_rating": "AAA"}, "credit_rating"),
        ({"blacklisted": "perhaps"}, "blacklisted"),
        ({"established_on": "2026-02-30"}, "established_on"),
        ({"established_on": "1899-12-31"}, "established_on"),
        ({"established_on": "0"}, "established_on"),
        ({"established_on": "86400"}, "established_on"),
        ({"as_of": "1066-10-14"}, "as_of"),
        ({"salary": 1}, "salary"),
    ):
        refused = await api.get(url, params=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert field in [e["field"] for e in refused.json()["errors"]], refused.text


async def test_no_public_answer_carries_a_draft_a_quota_or_a_firm_and_nothing_is_stored(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    uscc = await library(api, session, settings)
    counts_before = await counts(session)
    answers = [
        await api.get(f"{BASE}/policies", params={"limit": 200}),
        await api.get(f"{BASE}/facets"),
    ]
    for code in await codes(api):
        answers.append(await api.get(f"{BASE}/policies/{code}"))
        answers.append(
            await api.get(f"{BASE}/policies/{code}/check", params={"credit_rating": "A"})
        )
    for answer in answers:
        assert answer.status_code == 200, answer.text
        text = answer.text
        assert DRAFT_TITLE not in text and FIRM_NAME not in text and uscc not in text
        assert "987654321" not in text
        keys = set(all_keys(answer.json()))
        assert not {k for k in keys if "quota" in k or "uscc" in k or "author" in k}, keys
        assert not {"status", "history", "change_reason", "review_workflow_id"} & keys
    assert await counts(session) == counts_before


async def counts(session: AsyncSession) -> tuple[int, ...]:
    return tuple(
        [
            int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (AuditEvent, Enterprise, Fact, PolicyItemVersion)
        ]
    )


def all_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in all_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in all_keys(v)]
    return []


async def test_the_public_pages_search_show_and_calculate_without_signing_in(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await library(api, session, settings)
    start = await api.get("/public")
    assert start.status_code == 303 and start.headers["location"] == "/public/policies"

    listing = await api.get("/public/policies", params={"region_code": "330503", "q": "-JXJ-01"})
    assert listing.status_code == 200
    assert 'data-testid="public-policy-NX-JXJ-01"' in listing.text
    assert 'data-testid="public-policy-WX-JXJ-01"' not in listing.text
    assert DRAFT_TITLE not in listing.text
    refused = await api.get("/public/policies", params={"category": "grant"})
    assert refused.status_code == 422 and 'data-testid="refused"' in refused.text

    item = await api.get("/public/policies/HZ-JXJ-01")
    assert item.status_code == 200
    assert "并非：列入严重失信名单 = 是" in item.text
    assert "企业服务处 0572-2398601" in item.text
    assert "按技改设备投资额的 8% 计算" in item.text

    # Money is typed in 元 (full-width digits too) and judged in fen.
    typed = {
        "industry_code": "C3411",
        "credit_rating": "A",
        "env_credit_colour": "green",
        "blacklisted": "false",
        "renovation_investment_fen": "２0,000,000",
        "unrelated": "ignored",
    }
    result = await api.get("/public/policies/HZ-JXJ-01/check", params=typed)
    assert result.status_code == 200, result.text
    assert "1,600,000.00 元" in result.text
    assert 'data-testid="calculator-verdict">可能符合' in result.text

    for bad, message in (
        ({"renovation_investment_fen": "-5"}, "技改设备投资额不能为负数"),
        ({"renovation_investment_fen": "12.345"}, "最多保留两位小数"),
        ({"credit_rating": "Z"}, "公共信用评价等级"),
    ):
        wrong = await api.get("/public/policies/HZ-JXJ-01/check", params=bad)
        assert wrong.status_code == 422, (bad, wrong.text)
        assert message in wrong.text and 'data-testid="calculator-errors"' in wrong.text

    assert (await api.get("/public/policies/TEST-DRAFT-01")).status_code == 404
    assert (await api.get("/public/policies/%2E%2E%2Fitems")).status_code == 404
    assert (await api.get("/public/policies/HZ-JXJ-01/check?x=%00")).status_code in (400, 422)
