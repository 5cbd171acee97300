"""Authorization, generated from the OpenAPI: every route × every user, reads and writes,
against fixed targets (an item of 市经信局, a firm in 吴兴区 and one in 南浔区).

The expectations below are written per rule name from the rules as stated (README, "Who
may read and do what"), not from domain/access.py. A route that declares no rule, or a
rule this table does not know, fails: a new route cannot slip in unchecked. "Allowed"
means neither 401 nor 403 (and no crash): with an empty body an allowed write is a 422,
and one that reaches Temporal a 503 here. "Denied" means 403, which the route's rule
gives before the body is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.main import create_app
from core.settings import Environment, Settings
from domain.access import ACCESS_EXTENSION
from domain.matching import match_library
from domain.policy import library
from models.cases import CaseRecord
from models.matching import MatchResult, PolicyPush
from models.policy import ItemCreate
from models.reference import Actor, Role, User
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload, new_uscc

ITEM = "AUTHZ-JXJ-01"  # a city item of 市经信局: reviewed by it, then by 市财政局
OTHER_ITEM = "AUTHZ-KJJ-01"  # a city item of 市科技局
WUXING, NANXUN = "wuxing", "nanxun"  # the firm targets: one in 吴兴区, one in 南浔区

USERS = (
    "admin",
    "auditor",
    "jxj_staff",
    "jxj_head",
    "kjj_staff",
    "kjj_head",
    "czj_staff",
    "czj_head",  # 市财政局 head: reads like finance, and alone waives a recovery
    "wx_czj_staff",  # 吴兴区财政局
    "wx_jxj_staff",  # 吴兴区经信局: a district policy unit (added here)
    "nx_czj_staff",  # 南浔区财政局 (added here)
    "qiye",  # the firm in 吴兴区
    "qiye2",  # the firm in 南浔区 (added here)
    "ops",  # operations: the codec server, nothing else
)
STAFF = {
    "jxj_staff",
    "jxj_head",
    "kjj_staff",
    "kjj_head",
    "czj_staff",
    "wx_czj_staff",
    "wx_jxj_staff",
    "nx_czj_staff",
}
READ_ALL = {"admin", "auditor"}
CITY_UNITS = {"jxj_staff", "jxj_head", "kjj_staff", "kjj_head", "czj_staff"}
ITEM_UNITS = {"jxj_staff", "jxj_head", "czj_staff"}  # its department, and finance on its stages
FINANCE_HEAD = {"czj_head"}

Expected = set[str] | dict[str, set[str]]  # allowed users, or per firm target
EXPECTED: dict[str, Expected] = {
    "public": set(USERS),
    "signed_in": set(USERS),
    "enterprise": {"qiye", "qiye2"},
    "staff": STAFF,
    "reader": STAFF | READ_ALL | FINANCE_HEAD,
    "admin": {"admin"},
    # The body is a new item of 市经信局.
    "item.create": {"jxj_staff", "jxj_head"},
    "item.edit": {"jxj_staff", "jxj_head"},
    "item.review": {"jxj_head", "czj_staff"},
    "item.quota": {"czj_staff"},
    "item.oversight": ITEM_UNITS | READ_ALL | FINANCE_HEAD,
    # Finance of other regions read the item's matches of their own firms.
    "item.matches": ITEM_UNITS | READ_ALL | FINANCE_HEAD | {"wx_czj_staff", "nx_czj_staff"},
    # City units read every firm; district units theirs; a firm itself.
    "firm.read": {
        WUXING: CITY_UNITS | READ_ALL | FINANCE_HEAD | {"wx_czj_staff", "wx_jxj_staff", "qiye"},
        NANXUN: CITY_UNITS | READ_ALL | FINANCE_HEAD | {"nx_czj_staff", "qiye2"},
    },
    # A department reads its own items' cases; finance its region's; a firm its own.
    "item_firm.read": {
        WUXING: ITEM_UNITS | READ_ALL | FINANCE_HEAD | {"wx_czj_staff", "qiye"},
        NANXUN: ITEM_UNITS | READ_ALL | FINANCE_HEAD | {"nx_czj_staff", "qiye2"},
    },
    "case.decide": ITEM_UNITS,
    "case.applicant": {WUXING: {"qiye"}, NANXUN: {"qiye2"}},
    "case.withdraw": {WUXING: {"qiye", "czj_staff"}, NANXUN: {"qiye2", "czj_staff"}},
    "case.waive": FINANCE_HEAD,
    "ops": {"ops"},
    "audit": READ_ALL,
}

METHODS = {"get", "post", "put", "patch", "delete"}
OPENAPI = create_app(Settings(environment=Environment.TEST)).openapi()
ROUTES = sorted((path, method) for path, ops in OPENAPI["paths"].items() for method in ops)
# Values for the path parameters of the fixed targets (the firm is filled in per target).
PATH_VALUES = {
    "category": "application",
    "code": ITEM,
    "item_code": ITEM,
    "version": "1",
    "year": "2026",
    "period": "2026",
    "notice_id": "1",
    "finding_id": "1",
    "run_id": "1",
    "number": "1",
    "document_id": "1",
    "proposal_id": "1",
    "alert_id": "1",  # with the item ITEM (`code`)
    "name": "jxj_staff",  # a user (the admin routes that deactivate and activate one)
}


@dataclass(frozen=True)
class World:
    firms: Mapping[str, str]  # target → credit code


@pytest.fixture
async def world(session: AsyncSession) -> World:
    wuxing = await create_enterprise(session, region_code="330502")
    nanxun = await create_enterprise(session, region_code="330503")
    await create_users(session, enterprise_uscc=wuxing.uscc)
    session.add_all(
        [
            User(
                name="wx_jxj_staff",
                display_name="吴兴区经信局经办人",
                role=Role.DEPARTMENT_CASEWORKER,
                department_code="330502-JXJ",
                region_code="330502",
            ),
            User(
                name="nx_czj_staff",
                display_name="南浔区财政局经办人",
                role=Role.FINANCE_CASEWORKER,
                department_code="330503-CZJ",
                region_code="330503",
            ),
            User(
                name="qiye2",
                display_name="南浔企业经办人",
                role=Role.ENTERPRISE,
                enterprise_uscc=nanxun.uscc,
            ),
        ]
    )
    await session.flush()
    for code, author, department in (
        (ITEM, "jxj_staff", "330500-JXJ"),
        (OTHER_ITEM, "kjj_staff", "330500-KJJ"),
    ):
        user = await session.get(User, author)
        assert user is not None
        body = ItemCreate.model_validate(item_payload(code, department_code=department))
        await library.create_item(session, Actor.of(user), body)
    return World(firms={WUXING: wuxing.uscc, NANXUN: nanxun.uscc})


def _url(path: str, uscc: str | None) -> str:
    values = dict(PATH_VALUES, uscc=uscc or "")
    try:
        return path.format(**values)
    except KeyError as exc:
        raise AssertionError(f"{path}: give the test a value for path parameter {exc}") from None


def _body(rule: str, operation: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """A minimal body of the kind the route declares (validation then refuses it, unless
    the route's rule refused first)."""
    content = operation.get("requestBody", {}).get("content", {})
    if rule == "item.create" and path.endswith("/adopt"):  # a draft of 市经信局's from a proposal
        adoption = {"code": "AUTHZ-NEW-02", "department_code": "330500-JXJ"}
        return {"json": adoption | {"region_code": "330500", "annual_quota_fen": 1000}}
    if rule == "item.create":
        return {"json": item_payload("AUTHZ-NEW-01")}
    if "application/json" in content:
        return {"json": {}}
    if content:  # a form or an upload
        return {"files": {"placeholder": ("empty.txt", b"")}}
    return {}


def test_every_route_declares_a_known_rule() -> None:
    missing = [
        f"{method.upper()} {path}"
        for path, method in ROUTES
        if OPENAPI["paths"][path][method].get(ACCESS_EXTENSION) not in EXPECTED
    ]
    assert not missing, f"routes without a rule this test knows: {missing}"
    assert {method for _path, method in ROUTES} <= METHODS


@pytest.mark.parametrize(
    ("path", "method"), ROUTES, ids=[f"{method.upper()} {path}" for path, method in ROUTES]
)
async def test_route_allows_exactly_whom_its_rule_names(
    api: httpx.AsyncClient, settings: Settings, world: World, path: str, method: str
) -> None:
    operation = OPENAPI["paths"][path][method]
    rule = operation.get(ACCESS_EXTENSION)
    assert rule in EXPECTED, f"{method.upper()} {path} declares no known access rule ({rule})"
    expected, body = EXPECTED[rule], _body(rule, operation, path)
    targets = [WUXING, NANXUN] if "{uscc}" in path else [None]
    wrong = []
    for target in targets:
        assert target is not None or isinstance(expected, set), f"{rule} needs a firm target"
        allowed = expected if isinstance(expected, set) else expected[target or ""]
        url = _url(path, world.firms[target] if target else None)
        anonymous = await api.request(method.upper(), url, **body)
        # This client is on the loopback address, where outside production the codec
        # server (ops) serves the embedded stack's UI without a token; tests/test_codec.py
        # shows it wants one from elsewhere, and always in production.
        if (anonymous.status_code == 401) == (rule in ("public", "ops")):
            wrong.append(f"without a token: {anonymous.status_code} {anonymous.text[:160]}")
        for user in USERS:
            response = await api.request(method.upper(), url, headers=auth(settings, user), **body)
            status = response.status_code
            if user in allowed:
                ok = (status not in (401, 403) and status < 500) or status == 503
            else:
                ok = status == 403 and response.json()["detail"] != ""
            if not ok:
                verdict = "allowed" if user in allowed else "denied"
                wrong.append(
                    f"{user} on {target or url} should be {verdict}: {status} {response.text[:160]}"
                )
    assert not wrong, f"{method.upper()} {path} ({rule}):\n" + "\n".join(wrong)


# ----- what a reader sees in lists ----------------------------------------------------------


async def _seen(api: httpx.AsyncClient, settings: Settings, user: str, url: str) -> Any:
    response = await api.get(url, headers=auth(settings, user))
    assert response.status_code == 200, (user, url, response.text)
    return response.json()


async def test_firm_lists_show_the_readers_region(
    api: httpx.AsyncClient, settings: Settings, world: World
) -> None:
    a, b = world.firms[WUXING], world.firms[NANXUN]
    expected = {
        "admin": {a, b},
        "auditor": {a, b},
        "jxj_staff": {a, b},
        "czj_staff": {a, b},
        "wx_czj_staff": {a},
        "wx_jxj_staff": {a},
        "nx_czj_staff": {b},
        "qiye": {a},
        "qiye2": {b},
    }
    for user, firms in expected.items():
        listed = await _seen(api, settings, user, "/api/v1/enterprises?limit=200")
        assert {e["uscc"] for e in listed["items"]} & {a, b} == firms, user
        assert listed["total"] == len(listed["items"])  # the count is filtered as well


async def test_an_unknown_firm_is_refused_like_one_outside_the_region(
    api: httpx.AsyncClient, settings: Settings, world: World
) -> None:
    unknown = new_uscc("330502")
    for url in (f"/api/v1/enterprises/{unknown}", f"/api/v1/enterprises/{world.firms[NANXUN]}"):
        refused = await api.get(url, headers=auth(settings, "wx_czj_staff"))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "not registered in the region of 330502-CZJ" in refused.json()["detail"]
    missing = await api.get(f"/api/v1/enterprises/{unknown}", headers=auth(settings, "czj_staff"))
    assert missing.status_code == 404  # the city's finance may know it does not exist


async def test_case_list_shows_the_readers_cases(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings, world: World
) -> None:
    a, b = world.firms[WUXING], world.firms[NANXUN]
    regions = {a: "330502", b: "330503"}
    cases = {"jxj-a": (ITEM, a), "jxj-b": (ITEM, b), "kjj-b": (OTHER_ITEM, b)}
    for name, (item, uscc) in cases.items():
        session.add(
            CaseRecord(
                case_id=f"application/{item}/2026/{uscc}/{name}",
                category="application",
                item_code=item,
                version=1,
                period="2026",
                uscc=uscc,
                region_code=regions[uscc],
                stage="department_review",
            )
        )
    await session.flush()
    expected = {
        "admin": {"jxj-a", "jxj-b", "kjj-b"},
        "auditor": {"jxj-a", "jxj-b", "kjj-b"},
        "czj_staff": {"jxj-a", "jxj-b", "kjj-b"},  # on every item's finance stage
        "jxj_staff": {"jxj-a", "jxj-b"},
        "kjj_head": {"kjj-b"},
        "wx_czj_staff": {"jxj-a"},
        "nx_czj_staff": {"jxj-b", "kjj-b"},
        "wx_jxj_staff": set(),  # a district unit, and not the department of these items
    }
    for user, names in expected.items():
        listed = await _seen(api, settings, user, "/api/v1/cases?limit=200")
        seen = {c["case_id"].rsplit("/", 1)[1] for c in listed["items"] if "AUTHZ" in c["case_id"]}
        assert seen == names, user


async def test_match_views_show_the_readers_firms(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings, world: World
) -> None:
    a, b = world.firms[WUXING], world.firms[NANXUN]
    for item, uscc, region in ((ITEM, a, "330502"), (ITEM, b, "330503"), (OTHER_ITEM, b, "330503")):
        session.add(
            MatchResult(
                item_code=item,
                uscc=uscc,
                version=1,
                verdict="eligible",
                amount_fen=5_000_000,
                outcomes="P",
                region_code=region,
            )
        )
        session.add(PolicyPush(uscc=uscc, item_code=item, version=1, verdict="eligible"))
    await session.flush()
    await match_library.count_library(session)  # as the run that wrote them does

    for user, firms in {"jxj_staff": {a, b}, "wx_czj_staff": {a}, "nx_czj_staff": {b}}.items():
        view = await _seen(api, settings, user, f"/api/v1/items/{ITEM}/matches")
        assert view["eligible"] == len(firms), user
        assert {r["region_code"] for r in view["by_region"]} == {
            "330502" if f == a else "330503" for f in firms
        }
        listed = await _seen(api, settings, user, f"/api/v1/items/{ITEM}/matches/firms")
        assert {f["uscc"] for f in listed["items"]} == firms, user
        stats = await _seen(api, settings, user, f"/api/v1/items/{ITEM}/push-stats")
        assert stats["pushed"] == len(firms), user

    # One firm's policies: a department sees those of its own items.
    for user, items in {
        "jxj_staff": {ITEM},
        "kjj_staff": {OTHER_ITEM},
        "nx_czj_staff": {ITEM, OTHER_ITEM},
        "qiye2": {ITEM, OTHER_ITEM},
    }.items():
        listed = await _seen(api, settings, user, f"/api/v1/enterprises/{b}/policies")
        assert {p["item_code"] for p in listed["items"]} == items, user
        assert listed["total"] == len(items), user
    total = await session.scalar(sa.select(sa.func.count()).select_from(MatchResult))
    assert total == 3
