"""The web pages (/ui) over the real app, on both databases: sign-in, each role's pages
and navigation, scope (a district sees its district), refusals as pages, CSRF, forms
that check amounts before anything is sent, odd query strings; and, on the live stack,
a case decided through its page and a firm's own pages.

Dashboard data is the small city of tests/test_dashboard.py, written as the workflows
would leave it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.testing import WorkflowEnvironment

from api.web.format import FieldInvalid, parse_yuan
from core.security import issue_token
from core.settings import Settings
from models.audit import AuditEvent
from tests import test_dashboard
from tests.fixtures.stack import Stack
from tests.test_application_e2e import case_handle, final_id, reach
from tests.test_dashboard import JXJ_ITEM, KJJ_ITEM, City
from tests.test_review_e2e import firm, publish

ORIGIN = "http://test"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# The dashboards' small city (two items, three firms in two districts, cases at every
# step), as a fixture of this module.
town = test_dashboard.city


def cookie(settings: Settings, user: str, flash: httpx.Response | None = None) -> dict[str, str]:
    """The page cookie of `user`, with the outcome a form left for the next page."""
    cookies = f"zhida_ui_token={issue_token(settings, user)}"
    if flash is not None:
        cookies += f"; zhida_ui_flash={flash.cookies.get('zhida_ui_flash')}"
    return {"Cookie": cookies}


async def view(api: httpx.AsyncClient, settings: Settings, user: str, path: str) -> httpx.Response:
    return await api.get(path, headers=cookie(settings, user))


async def view_once_shown(
    api: httpx.AsyncClient, settings: Settings, user: str, path: str, shown: str
) -> httpx.Response:
    """`view`, once the page shows `shown` (or after 5 s): pages read the projection,
    which an activity writes just after the workflow's stage changes."""
    for _ in range(50):
        page = await view(api, settings, user, path)
        if shown in page.text:
            break
        await asyncio.sleep(0.1)
    return page


async def posted(
    api: httpx.AsyncClient,
    settings: Settings,
    user: str,
    path: str,
    form: dict[str, Any],
    origin: str | None = ORIGIN,
) -> httpx.Response:
    headers = cookie(settings, user)
    if origin is not None:
        headers["Origin"] = origin
    sent = await api.post(path, data=form, headers=headers)
    api.cookies.clear()  # the flash stays with this response; each request says who sends it
    return sent


def flash_of(response: httpx.Response) -> str:
    """The outcome a form left for the next page (its one-shot cookie), decoded."""
    import base64

    raw = response.cookies.get("zhida_ui_flash") or ""
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode() if raw else ""


def key_in(html: str, form_id: str) -> str:
    form = html[html.index(f'id="{form_id}"') :]
    found = re.search(r'name="idempotency_key" value="([^"]+)"', form)
    assert found is not None
    return found.group(1)


# ----- sign-in, start pages, navigation ---------------------------------------------


async def test_sign_in_keeps_the_token_in_a_strict_cookie_and_each_role_starts_at_its_page(
    api: httpx.AsyncClient, settings: Settings, town: City
) -> None:
    assert (await api.get("/ui/login")).status_code == 200
    token = issue_token(settings, "jxj_staff")
    signed = await api.post("/ui/login", data={"token": token}, headers={"Origin": ORIGIN})
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/ui/inbox"
    set_cookie = signed.headers["set-cookie"].lower()
    for part in ("zhida_ui_token=", "httponly", "samesite=strict", "path=/ui"):
        assert part in set_cookie
    api.cookies.clear()  # each request below says who sends it
    refused = await api.post("/ui/login", data={"token": "x.y.z"}, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert "令牌无效" in refused.text
    foreign = await api.post(
        "/ui/login", data={"token": token}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    assert "zhida_ui_token" not in foreign.headers.get("set-cookie", "")

    starts = {
        "qiye": "/ui/my/policies",
        "jxj_staff": "/ui/inbox",
        "czj_head": "/ui/dashboard",
        "auditor": "/ui/dashboard",
    }
    for user, start in starts.items():
        home = await view(api, settings, user, "/ui/")
        assert (home.status_code, home.headers["location"]) == (303, start), user
    assert (await view(api, settings, "ops", "/ui/")).status_code == 403
    anonymous = await api.get("/ui/dashboard?year=2026")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/ui/login?next=%2Fui%2Fdashboard%3Fyear%3D2026"
    out = await view(api, settings, "auditor", "/ui/logout")
    assert out.status_code == 303
    assert 'zhida_ui_token=""' in out.headers["set-cookie"]


async def test_navigation_shows_only_the_pages_a_role_can_use(
    api: httpx.AsyncClient, settings: Settings, town: City
) -> None:
    firm_page = await view(api, settings, "qiye", "/ui/my/policies")
    assert firm_page.status_code == 200
    assert 'data-testid="nav-my-cases"' in firm_page.text
    assert 'data-testid="nav-dashboard"' not in firm_page.text
    assert 'id="user-role">企业<' in firm_page.text
    staff = await view(api, settings, "jxj_staff", "/ui/inbox")
    assert staff.status_code == 200
    assert 'data-testid="nav-inbox"' in staff.text and 'data-testid="nav-dashboard"' in staff.text
    assert 'data-testid="nav-my-policies"' not in staff.text
    assert "经济和信息化局</span>" in staff.text  # the unit by its name, not its code
    auditor = await view(api, settings, "auditor", "/ui/dashboard")
    assert 'data-testid="nav-inbox"' not in auditor.text
    assert 'data-testid="nav-cases"' in auditor.text


# ----- dashboards -------------------------------------------------------------------


async def test_dashboards_render_for_readers_each_within_their_scope(
    api: httpx.AsyncClient, settings: Settings, town: City
) -> None:
    page = await view(api, settings, "auditor", "/ui/dashboard")
    assert page.status_code == 200, page.text
    for testid in ("chart-by-region", "chart-by-department", "chart-by-category", "chart-by-month"):
        assert f'data-testid="{testid}"' in page.text
    assert f'data-testid="funnel-{JXJ_ITEM}"' in page.text
    assert "吴兴区" in page.text and "南浔区" in page.text
    assert "1,800.00 元" in page.text  # 180,000 fen committed, exactly
    assert '<script src="/ui/static/bokeh/bokeh.min.js" defer>' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy
    assert page.headers["referrer-policy"] == "same-origin"

    district = await view(api, settings, "wx_czj_staff", "/ui/dashboard")
    assert district.status_code == 200
    table = district.text[district.text.index('data-testid="by-region-table"') :]
    assert "吴兴区" in table and "南浔区" not in table
    department = await view(api, settings, "kjj_staff", "/ui/dashboard")
    assert f'data-testid="funnel-{KJJ_ITEM}"' in department.text
    assert f'data-testid="funnel-{JXJ_ITEM}"' not in department.text

    for path, marker in (
        ("/ui/warnings", 'data-testid="warnings-overdue"'),
        ("/ui/time-to-money", 'data-testid="median-days"'),
        ("/ui/bulletin?year=2026&quarter=1", 'data-testid="bulletin-districts"'),
        ("/ui/policy-effect", 'data-testid="caveats"'),
        ("/ui/cases", 'data-testid="cases-table"'),
        ("/ui/batches", "认定批次"),
    ):
        shown = await view(api, settings, "auditor", path)
        assert shown.status_code == 200, (path, shown.text[:2000])
        assert marker in shown.text, path
    speed = await view(api, settings, "auditor", "/ui/time-to-money")
    assert 'data-testid="chart-speed-by-category"' in speed.text
    assert "2.5" in speed.text  # the median, in working days
    overdue = await view(api, settings, "auditor", "/ui/warnings")
    assert f'href="/ui/cases/application/{JXJ_ITEM}/2026/{town.nanxun}"' in overdue.text
    workbook = await view(api, settings, "auditor", "/ui/bulletin.xlsx?year=2026&quarter=1")
    assert workbook.status_code == 200
    assert workbook.headers["content-type"] == XLSX
    assert workbook.content[:2] == b"PK"


async def test_firms_are_refused_staff_pages_and_staff_the_firms(
    api: httpx.AsyncClient, settings: Settings, town: City
) -> None:
    for path in ("/ui/dashboard", "/ui/inbox", "/ui/cases", "/ui/warnings", "/ui/batches"):
        refused = await view(api, settings, "qiye", path)
        assert refused.status_code == 403, path
        assert "无权访问" in refused.text
    mine = await view(api, settings, "jxj_staff", "/ui/my/policies")
    assert mine.status_code == 403
    other = await view(
        api, settings, "qiye", f"/ui/cases/application/{JXJ_ITEM}/2026/{town.nanxun}"
    )
    assert other.status_code == 403  # another firm's case


ODD = [
    "year=abc",
    "year=99999",
    "year=2026&year=2025",
    "region_code=%00",
    "region_code=%3Cscript%3E",
    "department_code=" + "x" * 5000,
    "category=grant",
    "quarter=9",
    "quarter=-1&year=",
    "offset=-1",
    "offset=99999999999",
    "item_code=..%2F..%2Fadmin",
    "item=%E2%80%AE&stage=nope&overdue=maybe",
    "status=weird&uscc=123",
    "next=%2F%2Fevil.example",
]
PAGES = [
    "/ui/dashboard",
    "/ui/warnings",
    "/ui/time-to-money",
    "/ui/bulletin",
    "/ui/bulletin.xlsx",
    "/ui/policy-effect",
    "/ui/inbox",
    "/ui/cases",
    "/ui/batches",
    "/ui/batches/NO-SUCH/2026/1",
    "/ui/batches/..%2F/x/y",
    "/ui/cases/application/NO-SUCH/2026/123",
    "/ui/cases/%2E%2E/x/y/z",
    "/ui/login",
    "/ui/nowhere",
    "/ui/my/policies",
    "/ui/my/cases",
]


async def test_no_page_answers_500_to_odd_query_strings(
    api: httpx.AsyncClient, settings: Settings, town: City
) -> None:
    for path in PAGES:
        for query in ODD:
            # Readers meet every filter; a firm is refused first, whatever it asks.
            user = "qiye" if path.startswith("/ui/my") else "czj_staff"
            shown = await view(api, settings, user, f"{path}?{query}")
            # Temporal is down in this app: a case page says so (503, 服务暂不可用).
            down = shown.status_code == 503 and "服务暂不可用" in shown.text
            assert shown.status_code < 500 or down, (path, query, user, shown.text[:500])
    bad = await view(api, settings, "auditor", "/ui/dashboard?year=abc")
    assert bad.status_code == 422
    assert "year" in bad.text and 'data-testid="refused"' in bad.text
    assert (await view(api, settings, "auditor", "/ui/nowhere")).status_code == 404


async def test_static_files_are_served_by_the_platform(api: httpx.AsyncClient) -> None:
    for path, kind in (
        ("/ui/static/web.css", "text/css"),
        ("/ui/static/web.js", "text/javascript"),
        ("/ui/static/bokeh/bokeh.min.js", "text/javascript"),
    ):
        served = await api.get(path)
        assert served.status_code == 200, path
        assert served.headers["content-type"].startswith(kind)
    for path in ("/ui/static/nope.js", "/ui/static/bokeh/bokeh-api.js", "/ui/static/..%2Fpages.py"):
        assert (await api.get(path)).status_code == 404, path


# ----- forms: CSRF and amounts -------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "fen"),
    [
        ("1", 100),
        ("1234.5", 123_450),
        ("1,234.56", 123_456),
        (" 0.01 ", 1),
        ("10000000000000", 10**15),
        ("１２３．４５", 12_345),  # full-width, as a Chinese input method types it
        ("１，０００。５", 100_050),
    ],
)
def test_yuan_become_fen_exactly(typed: str, fen: int) -> None:
    assert parse_yuan(typed, "amount_yuan", "批准金额") == fen


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("1.234", "两位小数"),
        ("-5", "负数"),
        ("abc", "须为数字"),
        ("1e5", "须为数字"),
        ("0", "大于 0"),
        ("10000000000000.01", "上限"),
        ("99999999999999999999999", "上限"),
        ("NaN", "须为数字"),
        ("١٢٣", "须为数字"),  # digits, but of another script
        ("1２3 4", "须为数字"),
    ],
)
def test_bad_yuan_are_refused_naming_the_field(typed: str, says: str) -> None:
    with pytest.raises(FieldInvalid) as refused:
        parse_yuan(typed, "amount_yuan", "批准金额")
    assert refused.value.field == "amount_yuan"
    assert says in refused.value.message and "批准金额" in refused.value.message


async def test_a_bad_amount_or_a_foreign_origin_writes_nothing(
    api: httpx.AsyncClient, settings: Settings, session: AsyncSession, town: City
) -> None:
    action = f"/ui/cases/application/{JXJ_ITEM}/2026/{town.nanxun}/decision"
    before = await session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    form = {"action": "approve", "idempotency_key": "0f0e4f9c-1111-4a3e-9d7e-3c2a1b0c9d8e"}
    for amount in ("1.234", "-5", "abc", "1" * 30):
        sent = await posted(api, settings, "czj_staff", action, {**form, "amount_yuan": amount})
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/ui/cases/application/{JXJ_ITEM}/2026/{town.nanxun}"
        told = flash_of(sent)
        assert "amount_yuan" in told and "批准金额" in told, told
    for origin in ("http://evil.example", "null", None):
        refused = await posted(
            api, settings, "czj_staff", action, {**form, "amount_yuan": "1"}, origin=origin
        )
        assert refused.status_code == 403
        assert "跨站" in refused.text
    stale = await posted(api, settings, "czj_staff", action, {"action": "approve"})
    assert "表单已失效" in flash_of(stale)
    after = await session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    assert after == before  # no request reached the API's write routes


# ----- the live stack: a case decided through its page ------------------------------


async def test_a_case_is_decided_through_its_page_and_the_firm_follows_it(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    api, settings = stack.api, stack.settings
    code = await publish(stack, 5_000_000)
    uscc = await firm(stack)
    applied = await api.post(
        "/api/v1/cases",
        json={"item_code": code, "period": "2026"},
        headers={"Authorization": f"Bearer {issue_token(settings, 'qiye')}"},
    )
    assert applied.status_code == 201, applied.text
    handle = case_handle(dev_server, final_id(code, uscc))
    await reach(handle, "department_review")
    here = f"/ui/cases/application/{code}/2026/{uscc}"
    origin = str(api.base_url).rstrip("/")

    inbox = await view_once_shown(api, settings, "jxj_staff", "/ui/inbox", f'href="{here}"')
    assert inbox.status_code == 200
    assert f'href="{here}"' in inbox.text
    assert "<td>吴兴区</td>" in inbox.text  # the firm's region by its name
    page = await view(api, settings, "jxj_staff", here)
    assert page.status_code == 200, page.text
    assert 'id="decision-form"' in page.text and 'data-stage="department_review"' in page.text
    assert "50,000.00 元" in page.text  # the computed amount
    assert 'data-testid="timeline"' in page.text and 'data-testid="conditions"' in page.text
    # Another department sees the case (it is in the city) but draws no form.
    assert 'id="decision-form"' not in (await view(api, settings, "czj_staff", here)).text

    key = key_in(page.text, "decision-form")
    refused = await posted(
        api,
        settings,
        "jxj_staff",
        f"{here}/decision",
        {"action": "approve", "amount_yuan": "49999.999", "idempotency_key": key},
        origin=origin,
    )
    assert "两位小数" in flash_of(refused)
    assert (await reach(handle, "department_review")).approved_amount_fen is None

    form = {
        "action": "approve",
        "amount_yuan": "40,000.50",
        "reason": "按实际投入调减",
        "idempotency_key": key,
    }
    done = await posted(api, settings, "jxj_staff", f"{here}/decision", form, origin=origin)
    assert done.status_code == 303
    assert "审核决定已提交" in flash_of(done)
    state = await reach(handle, "finance_review")
    assert state.approved_amount_fen == 4_000_050
    # The same form sent twice (a double click): applied once, the same answer.
    again = await posted(api, settings, "jxj_staff", f"{here}/decision", form, origin=origin)
    assert "审核决定已提交" in flash_of(again)
    state = await reach(handle, "finance_review")
    assert len([t for t in state.timeline if t.actor == "jxj_staff"]) == 1
    decided = await api.get(here, headers=cookie(settings, "jxj_staff", flash=done))
    assert 'data-testid="flash-success"' in decided.text
    assert "40,000.50 元" in decided.text

    # Finance's page shows the form now; a decision the API refuses comes back named.
    finance = await view(api, settings, "czj_staff", here)
    assert 'id="decision-form"' in finance.text
    key = key_in(finance.text, "decision-form")
    wrong = await posted(
        api,
        settings,
        "czj_staff",
        f"{here}/decision",
        {"action": "approve", "amount_yuan": "40000.51", "idempotency_key": key},
        origin=origin,
    )
    assert "未提交" in flash_of(wrong)
    assert (await reach(handle, "finance_review")).approved_amount_fen == 4_000_050

    mine = await view(api, settings, "qiye", "/ui/my/cases")
    assert mine.status_code == 200 and f'href="{here}"' in mine.text
    seen = await view(api, settings, "qiye", here)
    assert seen.status_code == 200 and 'id="decision-form"' not in seen.text
    # Reviewers' notes, evidence and findings are for staff, not the firm.
    for staff_only in (
        'data-testid="to-verify"',
        'data-testid="evidence"',
        'data-testid="findings"',
    ):
        assert staff_only not in seen.text
    staff_view = await view(api, settings, "czj_staff", here)
    assert 'data-testid="evidence"' in staff_view.text
    policies = await view(api, settings, "qiye", "/ui/my/policies")
    assert policies.status_code == 200
    notices = await view(api, settings, "qiye", "/ui/my/notices")
    assert notices.status_code == 200
