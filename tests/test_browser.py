"""The web pages in a real browser (Debian's Chromium through Playwright) against the
whole stack served over TCP: the dev server, a worker with the real activities, the
simulators and a committed SQLite database filled through the API. Every page, as a
department caseworker, finance, an auditor and a firm, must answer 200, log no console
error or uncaught exception, send nothing off the machine and draw its charts; on the
way the console's forms are used as people use them: a caseworker approves a case, the
department and finance verify a recognition batch, a firm confirms its accounts.

`ZHIDA_SCREENSHOTS=1` also saves each page at 1440×900 under docs/screenshots/."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect
from temporalio.testing import WorkflowEnvironment

from core.security import issue_token
from core.settings import Settings
from models.reference import Role, User
from models.uscc import make_uscc
from seed.reference import demo_users, ensure_users
from tests.fixtures.api import auth
from tests.fixtures.browser import (
    Watch,
    chromium,
    needs_chromium,
    require_chromium,
    require_cjk_font,
    watch,
)
from tests.fixtures.database import migrated_database
from tests.fixtures.factories import item_payload
from tests.fixtures.stack import Stack, live_stack

SCREENSHOTS = Path(__file__).parent.parent / "docs" / "screenshots"
YEAR = "2026"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def site(
    dev_server: WorkflowEnvironment,
    budget_simulator: httpx.AsyncClient,
    channel_simulator: httpx.AsyncClient,
    data_platform_simulator: httpx.AsyncClient,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """The live stack on a SQLite database of its own, the app served over TCP. The page
    render tests cover both databases; a browser needs only one."""
    require_chromium()  # under ZHIDA_BROWSER_REQUIRED=1: a failure naming the package
    async with (
        migrated_database("sqlite", tmp_path) as url,
        live_stack(
            dev_server,
            url,
            budget_simulator,
            channel_simulator,
            data_platform_simulator,
            over_tcp=True,
        ) as stack,
    ):
        yield stack


# --- sample data, through the API ------------------------------------------------------

# Eight firms in three districts: (region, name, legal representative, revenue in yuan).
FIRMS = [
    ("330502", "湖州织里童装制造有限公司", "沈建国", 48_000_000),
    ("330502", "吴兴精密机械有限公司", "钱晓东", 126_000_000),
    ("330502", "湖州太湖新材料科技有限公司", "孙丽华", 83_000_000),
    ("330503", "南浔木业家居股份有限公司", "周志强", 215_000_000),
    ("330503", "南浔电机配件有限公司", "吴海燕", 37_000_000),
    ("330503", "浙江双林智能装备有限公司", "郑立明", 96_000_000),
    ("330521", "德清地理信息科技有限公司", "王建平", 64_000_000),
    ("330521", "德清莫干山生物医药有限公司", "冯晓芸", 158_000_000),
]


@dataclass(frozen=True)
class Item:
    code: str
    title: str
    department: str  # of the item, e.g. 330500-JXJ
    staff: str  # the department's caseworker and head
    head: str
    category: str
    amount_fen: int
    quota_fen: int


# Quotas chosen so that one item is nearly used up (a warning on the dashboard).
TECH = Item(
    "JXJ-JSGZ-01", "工业企业技术改造补助", "330500-JXJ", "jxj_staff", "jxj_head",
    "application", 30_000_000, 500_000_000,
)  # fmt: skip
RD = Item(
    "KJJ-YFTR-01", "企业研发投入奖励", "330500-KJJ", "kjj_staff", "kjj_head",
    "application", 12_000_000, 40_000_000,
)  # fmt: skip
SPECIAL = Item(
    "JXJ-ZJTX-01", "专精特新中小企业认定奖励", "330500-JXJ", "jxj_staff", "jxj_head",
    "recognition", 20_000_000, 400_000_000,
)  # fmt: skip


@dataclass
class Sample:
    """What the pages are opened on: business keys (`application/{item}/{period}/{uscc}`
    for a case, `{item}/{period}/{number}` for a batch)."""

    firms: list[str]  # credit codes, in the order of FIRMS; the first is qiye's
    paid: list[str]  # the paid cases
    returned: str  # qiye's case whose payment the bank returned: the firm must confirm
    waiting: str  # the case left in jxj_staff's inbox
    waiting_id: str
    batch: str  # the recognition batch waiting for the department's verification

    @property
    def batch_api(self) -> str:
        item, period_number = self.batch.split("/", 1)
        return f"/api/v1/items/{item}/recognition-batches/{period_number}"


def _fact(uscc: str, kind: str, value: Any, period: str) -> dict[str, Any]:
    return {
        "record": "fact",
        "uscc": uscc,
        "kind": kind,
        "value": value,
        "period": period,
        "source": "公共数据平台",
        "fetched_at": "2026-11-02T09:00:00+08:00",
    }


def registry_file(firms: list[str]) -> bytes:
    """The data platform's export of the eight firms: profile, two years of figures
    (so the policy-effect page has a before and an after) and a bank account each."""
    lines: list[dict[str, Any]] = []
    for n, (uscc, (region, name, _rep, revenue)) in enumerate(zip(firms, FIRMS, strict=True)):
        lines.append(
            {
                "record": "enterprise",
                "uscc": uscc,
                "name": name,
                "region_code": region,
                "industry_code": "C3411" if n % 2 else "C1811",
                "size_class": "medium" if revenue > 100_000_000 else "small",
                "established_on": f"{2008 + n}-0{1 + n % 9}-15",
            }
        )
        lines.append(_fact(uscc, "credit_rating", "A" if n % 3 else "B", "2025"))
        for period, growth in (("2025", 100), ("2026", 104 + 3 * n)):
            lines.append(_fact(uscc, "revenue_fen", revenue * growth, period))
            lines.append(_fact(uscc, "tax_paid_fen", revenue * growth // 20, period))
            headcount = 40 + 7 * n + growth // 10
            lines.append(_fact(uscc, "social_security_headcount", headcount, period))
        lines.append(
            {
                "record": "account",
                "uscc": uscc,
                "bank_name": "湖州银行",
                "account_name": name,
                "account_number": f"62220000{n:03d}11112222",
                "is_default": True,
            }
        )
    return "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()


def platform_records(firms: list[str]) -> list[dict[str, Any]]:
    """What the public data platform (simulator) holds of the firms, for the review."""
    return [
        {
            "uscc": uscc,
            "facts": {
                "credit_rating": {"value": "A" if n % 3 else "B", "as_of": "2025-12-31"},
                "revenue_fen": {"value": revenue * (104 + 3 * n), "as_of": "2026-10-31"},
            },
            "legal_representative": rep,
        }
        for n, (uscc, (_region, _name, rep, revenue)) in enumerate(zip(firms, FIRMS, strict=True))
    ]


async def ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), f"{response.request.url}: {response.text}"
    return response.json()


class Api:
    """The demo users' calls, each with a fresh idempotency key."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def headers(self, user: str) -> dict[str, str]:
        return auth(self.stack.settings, user) | {"Idempotency-Key": str(uuid.uuid4())}

    async def get(self, user: str, path: str) -> Any:
        return await ok(await self.stack.api.get(path, headers=self.headers(user)))

    async def post(self, user: str, path: str, body: Any = None) -> Any:
        return await ok(await self.stack.api.post(path, json=body, headers=self.headers(user)))

    async def put(self, user: str, path: str, body: Any) -> Any:
        return await ok(await self.stack.api.put(path, json=body, headers=self.headers(user)))


async def publish(api: Api, item: Item) -> None:
    """The department drafts and submits the item, its head and finance approve it."""
    payload = item_payload(
        item.code,
        department_code=item.department,
        category=item.category,
        amount_rule={"kind": "fixed", "amount_fen": item.amount_fen},
        quota_fen=item.quota_fen,
    )
    payload["title"] = item.title
    if item.category == "recognition":  # firms paid before are paid without confirming
        payload["recognition"] = {"confirmation": "unless_verified"}
    payload["summary"] = f"{item.title}：对符合条件的企业按规定给予资金支持。"
    await api.post(item.staff, "/api/v1/items", payload)
    await api.post(item.staff, f"/api/v1/items/{item.code}/versions/1/submit")
    await api.post(item.head, f"/api/v1/items/{item.code}/versions/1/approve", {"comment": "同意"})
    published = await api.post(
        "czj_staff", f"/api/v1/items/{item.code}/versions/1/approve", {"comment": "资金已落实"}
    )
    assert published["stage"] == "published"
    quota = {"quota_fen": item.quota_fen}
    await api.put("czj_staff", f"/api/v1/items/{item.code}/quota/{YEAR}", quota)


def case_key(item: Item, uscc: str) -> str:
    return f"{item.category}/{item.code}/{YEAR}/{uscc}"


async def stage_of(api: Api, key: str, stages: set[str], seconds: float = 30) -> str:
    """Wait until the case stands at one of `stages`, as a reader of its page would."""
    stage = None
    for _ in range(int(seconds * 10)):
        response = await api.stack.api.get(f"/api/v1/cases/{key}", headers=api.headers("auditor"))
        if response.status_code == 200:
            stage = response.json()["stage"]
            if stage in stages:
                return str(stage)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key} never reached {stages}; it is at {stage}")


async def apply(api: Api, item: Item, firm_user: str, uscc: str) -> tuple[str, str]:
    """The firm applies; returns the case's key and id once it waits on the department."""
    case = await api.post(firm_user, "/api/v1/cases", {"item_code": item.code, "period": YEAR})
    key = case_key(item, uscc)
    await stage_of(api, key, {"department_review"})
    return key, str(case["case_id"])


async def paid(
    api: Api, item: Item, firm_user: str, uscc: str, reduced: bool = False, stage: str = "paid"
) -> str:
    """Applied, approved by the department (possibly for less) and finance, and paid
    through the budget-system simulator; returns the case's key."""
    key, _ = await apply(api, item, firm_user, uscc)
    decision: dict[str, Any] = {"action": "approve"}
    if reduced:
        decision |= {"amount_fen": item.amount_fen * 4 // 5, "reason": "部分设备不在支持范围"}
    await api.post(item.staff, f"/api/v1/cases/{key}/decisions", decision)
    await stage_of(api, key, {"finance_review"})
    await api.post("czj_staff", f"/api/v1/cases/{key}/decisions", {"action": "approve"})
    await stage_of(api, key, {stage})
    return key


async def returned(api: Api, item: Item, firm_user: str, uscc: str) -> str:
    """A case whose payment the bank returns (退票): it waits for the firm's account."""
    budget = api.stack.budget_http
    dial = {"seed": 7, "receipt_delay_s": 0.2}
    assert (await budget.put("/v1/_simulator/config", json=dial | {"return_rate": 1})).is_success
    try:
        return await paid(api, item, firm_user, uscc, stage="account_correction")
    finally:
        assert (await budget.put("/v1/_simulator/config", json=dial)).is_success


async def sample(stack: Stack) -> Sample:
    """Firms, items, quotas, paid cases, one waiting in the inbox and a batch to verify."""
    api = Api(stack)
    firms = [make_uscc("91", region, f"BRW{n:06d}") for n, (region, *_rest) in enumerate(FIRMS)]
    report = await ok(
        await stack.api.post(
            "/api/v1/imports/enterprises",
            files={"file": ("export.jsonl", registry_file(firms), "application/x-ndjson")},
            headers=api.headers("admin"),
        )
    )
    assert report["enterprises_created"] == len(firms), report
    records = platform_records(firms)
    loaded = await stack.platform_http.put("/v1/_simulator/enterprises", json=records)
    assert loaded.status_code == 200, loaded.text
    # Users are seeded as `make run` seeds the demo users: qiye is the first firm's,
    # and each other firm gets one of its own to apply with.
    async with stack.sessionmaker.begin() as session:
        await ensure_users(
            session,
            [
                *demo_users(firms[0]),
                *(
                    User(
                        name=f"firm{n}",
                        display_name=FIRMS[n][1],
                        role=Role.ENTERPRISE,
                        enterprise_uscc=uscc,
                    )
                    for n, uscc in enumerate(firms)
                    if n
                ),
            ],
        )
    users = ["qiye", *(f"firm{n}" for n in range(1, len(firms)))]

    await asyncio.gather(*(publish(api, item) for item in (TECH, RD, SPECIAL)))
    done = await asyncio.gather(
        *(paid(api, TECH, users[n], firms[n], reduced=n == 3) for n in (0, 1, 3, 4, 6)),
        *(paid(api, RD, users[n], firms[n]) for n in (2, 5)),
    )
    bounced = await returned(api, RD, users[0], firms[0])
    waiting, waiting_id = await apply(api, TECH, users[7], firms[7])
    batch = await api.post(
        "jxj_staff",
        f"/api/v1/items/{SPECIAL.code}/recognition-batches",
        {"item_code": SPECIAL.code, "period": YEAR},
    )
    data = Sample(
        firms=firms,
        paid=list(done),
        returned=bounced,
        waiting=waiting,
        waiting_id=waiting_id,
        batch=str(batch["batch_id"]).removeprefix("recognition-batch/"),
    )
    # Identified from the match library, the batch then waits on a person.
    await batch_phase(api, data, {"department_verification"})
    return data


async def batch_phase(api: Api, data: Sample, phases: set[str], paid: int = 0) -> Any:
    """Wait (up to 30 s) until the batch is in one of `phases` with `paid` firms paid."""
    progress = None
    for _ in range(300):
        progress = await api.get("auditor", data.batch_api)
        if progress["phase"] in phases and progress["paid"] >= paid:
            return progress
        await asyncio.sleep(0.1)
    raise AssertionError(f"the batch is not in {phases} with {paid} paid: {progress}")


# --- the browser -----------------------------------------------------------------------


async def sign_in(page: Page, seen: Watch, base: str, settings: Settings, user: str) -> None:
    """Paste the user's token into the sign-in page, as a person would."""
    await page.goto(f"{base}/ui/logout")
    await visit(page, seen, f"{base}/ui/login", shot="login" if user == "jxj_staff" else None)
    await page.locator("[name=token]").fill(issue_token(settings, user))
    async with page.expect_navigation(wait_until="load"):
        await page.locator("form:has([name=token]) [type=submit]").click()
    assert "/ui/login" not in page.url, f"{user} was not signed in: {page.url}"
    seen.assert_clean(f"sign-in as {user}")


async def visit(page: Page, seen: Watch, url: str, shot: str | None = None) -> int:
    """Open `url`: 200, clean, every chart drawn; saved as `shot`.png when asked.
    Returns how many charts it drew. What `seen` holds is never cleared, so anything a
    page does after it loaded still fails the test at the next check."""
    response = await page.goto(url, wait_until="load")
    assert response is not None, url
    assert response.status == 200, f"{url}: {response.status}"
    try:
        charts = await charts_drawn(page, url)
    finally:
        seen.assert_clean(url)  # a chart that failed to draw has usually said why
    if shot:
        await screenshot(page, shot)
    return charts


# Each chart (the pages' `div.chart`, which BokehJS fills) with the canvases inside it,
# in open shadow roots too (BokehJS draws inside its own): their size and how many of
# their pixels are not transparent.
CHARTS = "div.chart[data-source]"
CHARTS_JS = """
(selector) => [...document.querySelectorAll(selector)].map((chart) => {
  const canvases = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') canvases.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(chart);
  return {
    id: chart.id,
    drawn: chart.dataset.drawn === 'true',
    canvases: canvases.map((c) => {
      let inked = 0;
      try {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) inked++;
      } catch (e) { inked = -1; }
      return {width: c.width, height: c.height, inked};
    }),
  };
})
"""


def drawn(chart: dict[str, Any]) -> bool:
    canvases = chart["canvases"]
    return (
        bool(chart["drawn"] and canvases)
        and all(c["width"] > 0 and c["height"] > 0 for c in canvases)
        and any(c["inked"] > 0 for c in canvases)
    )


async def charts_drawn(page: Page, url: str, within_s: float = 5) -> int:
    """Every chart has its canvases, each with a size, and ink on them; returns how many
    charts. BokehJS draws after the page loads, so it gets a few seconds."""
    charts: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while True:
        charts = await page.evaluate(CHARTS_JS, CHARTS)
        if all(drawn(chart) for chart in charts) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    blank = [chart for chart in charts if not drawn(chart)]
    assert not blank, f"{url}: charts not drawn: {blank}"
    return len(charts)


def test_a_missing_browser_skips_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "/nonexistent/chromium"
    monkeypatch.delenv("ZHIDA_BROWSER_REQUIRED", raising=False)
    skip = needs_chromium(missing)  # decided before the stack's fixtures start
    assert skip.args == (True,) and "apt-get install chromium" in skip.kwargs["reason"]
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install chromium"):
        require_chromium(missing)
    monkeypatch.setenv("ZHIDA_BROWSER_REQUIRED", "1")
    assert needs_chromium(missing).args == (False,)  # left to fail, not skipped
    with pytest.raises(pytest.fail.Exception, match=r"ZHIDA_BROWSER_REQUIRED=1"):
        require_chromium(missing)


@needs_chromium()
async def test_the_watch_and_the_chart_check_catch_what_they_must() -> None:
    """The checks themselves, on a page made here: a request off the machine is seen
    and aborted, console errors and uncaught exceptions are seen, a blank chart fails."""
    require_chromium()
    async with chromium() as context:
        seen = await watch(context)
        page = await context.new_page()
        await page.set_content(
            '<script src="http://203.0.113.7/cdn/bokeh.min.js"></script>'
            '<div class="chart" id="blank" data-source="x" data-drawn="true">'
            '<canvas width="40" height="20"></canvas></div>'
            "<script>console.error('boom');"
            "setTimeout(() => { throw new Error('late'); });</script>"
        )
        await page.wait_for_timeout(200)
        assert seen.outside() == ["http://203.0.113.7/cdn/bokeh.min.js"]
        assert any("boom" in m for m in seen.console_errors)
        assert any("late" in m for m in seen.page_errors)
        with pytest.raises(AssertionError, match="requests leaving the machine"):
            seen.assert_clean("the made page")
        with pytest.raises(AssertionError, match="charts not drawn"):
            await charts_drawn(page, "the made page", within_s=0.3)
        await page.evaluate(
            "() => document.querySelector('#blank canvas').getContext('2d').fillRect(0, 0, 4, 4)"
        )
        assert await charts_drawn(page, "the made page") == 1


# The dashboards, as a caseworker and as an auditor; (path, screenshot, charts at least).
DASHBOARDS = [
    ("/ui/dashboard", "dashboard", 4),
    ("/ui/warnings", "warnings", 0),
    ("/ui/time-to-money", "time-to-money", 1),
    ("/ui/bulletin", "bulletin", 0),
    ("/ui/policy-effect", "policy-effect", 0),
]
FIRM_PAGES = [
    ("/ui/my/policies", "firm-policies"),
    ("/ui/my/cases", "firm-cases"),
    ("/ui/my/notices", "firm-notices"),
]


@needs_chromium()
async def test_every_page_in_a_real_browser(site: Stack) -> None:
    if screenshots():
        require_cjk_font()
    started = time.monotonic()
    data = await sample(site)
    seeded = time.monotonic() - started
    async with chromium() as context:
        seen = await watch(context)
        page = await context.new_page()
        await visit(page, seen, f"{site.base_url}/docs")  # the offline Swagger UI, too
        assert await page.locator(".swagger-ui").count() == 1

        await as_caseworker(site, page, seen, data)
        await as_finance(site, page, seen, data)
        await as_auditor(site, page, seen, data)
        await as_firm(site, page, seen, data)
        await page.wait_for_load_state("networkidle")
        seen.assert_clean("the last page")
    assert seen.requests, "the watch saw no request at all"
    took = time.monotonic() - started
    assert took < 120, f"the browser test took {took:.0f} s ({seeded:.0f} s to seed)"


async def submit(page: Page, seen: Watch, form: str, what: str) -> None:
    """Send `form` and follow it to the page it returns to, which must say it worked."""
    async with page.expect_navigation(wait_until="load"):
        await page.locator(f"{form} [type=submit]").click()
    seen.assert_clean(what)
    assert await page.locator(".flash-error").count() == 0, await page.inner_text("main")


async def as_caseworker(site: Stack, page: Page, seen: Watch, data: Sample) -> None:
    """jxj_staff decides the waiting case and verifies the recognition batch through the
    console, then reads the pages of the unit's scope."""
    base, api = site.base_url, Api(site)
    await sign_in(page, seen, base, site.settings, "jxj_staff")
    await visit(page, seen, f"{base}/ui/inbox", "inbox")
    async with page.expect_navigation(wait_until="load"):
        await page.locator(f"a[href$='{data.waiting}']").first.click()
    assert page.url == f"{base}/ui/cases/{data.waiting}"
    seen.assert_clean("the waiting case")
    await screenshot(page, "case")
    form = page.locator("#decision-form")
    await form.locator("#action-approve").check()
    await form.locator("[name=amount_yuan]").fill("250000")
    await form.locator("[name=reason]").fill("按核定投资额的一定比例给予补助")
    await submit(page, seen, "#decision-form", "the decision")
    await expect(page.locator("main")).to_contain_text("财政审核")
    assert await stage_of(api, data.waiting, {"finance_review"}) == "finance_review"
    inbox = await api.get("jxj_staff", "/api/v1/inbox")
    assert data.waiting_id not in [c["case_id"] for c in inbox["items"]]
    finance = await api.get("czj_staff", "/api/v1/inbox")
    assert [c["approved_amount_fen"] for c in finance["items"]] == [25_000_000]

    await visit(page, seen, f"{base}/ui/batches", "batches")
    await visit(page, seen, f"{base}/ui/batches/{data.batch}", "batch-verification")
    await page.locator("#comment").fill("名单与认定条件核对无误")
    await submit(page, seen, "#department-verification-form", "the department's verification")
    await batch_phase(api, data, {"finance_verification"})

    await visit(page, seen, f"{base}/ui/cases")
    await visit(page, seen, f"{base}/ui/cases/{data.paid[0]}")
    for path, _shot, charts in DASHBOARDS:  # the unit's own scope
        assert await visit(page, seen, base + path) >= charts, f"{path}: too few charts"


async def as_finance(site: Stack, page: Page, seen: Watch, data: Sample) -> None:
    """czj_staff verifies the batch's total: firms paid before are paid at once."""
    base, api = site.base_url, Api(site)
    await sign_in(page, seen, base, site.settings, "czj_staff")
    await visit(page, seen, f"{base}/ui/inbox")
    await visit(page, seen, f"{base}/ui/batches/{data.batch}", "batch-finance")
    progress = await api.get("czj_staff", data.batch_api)
    total = progress["department_verified_total_fen"]
    assert total == SPECIAL.amount_fen * len(FIRMS), progress
    await page.locator("#finance-approve").check()
    await page.locator("#expected_total_yuan").fill(f"{total / 100:.2f}")
    await page.locator("#finance-reason").fill("额度充足，同意拨付")
    await submit(page, seen, "#finance-verification-form", "finance's verification")
    # The six firms whose accounts earlier payments verified are paid without
    # confirming; qiye's (returned) and the waiting firm's are not.
    await batch_phase(api, data, {"disbursing", "done"}, paid=6)


async def as_firm(site: Stack, page: Page, seen: Watch, data: Sample) -> None:
    """qiye reads its policies and cases, and confirms its account after the bank
    returned a payment: the case is paid again."""
    base = site.base_url
    await sign_in(page, seen, base, site.settings, "qiye")
    for path, shot in FIRM_PAGES:
        await visit(page, seen, base + path, shot)
    for key in data.paid:
        if key.endswith(data.firms[0]):
            await visit(page, seen, f"{base}/ui/cases/{key}")
    # Its account was no longer verified when the batch was (a payment came back), so
    # its recognition case waits for it: it confirms the account on file.
    recognition = f"recognition/{SPECIAL.code}/{YEAR}/{data.firms[0]}"
    await visit(page, seen, f"{base}/ui/cases/{recognition}", "firm-confirm-recognition")
    await submit(page, seen, "#confirmation-form", "the firm's confirmation")
    assert await stage_of(Api(site), recognition, {"paid"}) == "paid"

    await visit(page, seen, f"{base}/ui/cases/{data.returned}", "firm-confirm-account")
    await submit(page, seen, "#account-confirmation-form", "the firm's account confirmation")
    assert await stage_of(Api(site), data.returned, {"paid"}) == "paid"


async def as_auditor(site: Stack, page: Page, seen: Watch, data: Sample) -> None:
    """The auditor reads every dashboard over the whole city (the screenshots), every
    case of both departments and the batch."""
    base = site.base_url
    await sign_in(page, seen, base, site.settings, "auditor")
    for path, shot, charts in DASHBOARDS:
        assert await visit(page, seen, base + path, shot) >= charts, f"{path}: too few charts"
    # A filter narrows the charts (one district, one year) and they still draw.
    await visit(page, seen, f"{base}/ui/dashboard")
    await page.locator("#filter-form [name=region_code]").select_option("330503")
    await page.locator("#filter-form [name=year]").fill(YEAR)
    async with page.expect_navigation(wait_until="load"):
        await page.locator("#filter-form [type=submit]").click()
    assert "region_code=330503" in page.url
    assert await charts_drawn(page, page.url) >= 1
    seen.assert_clean(page.url)
    await expect(page.locator("main")).to_contain_text("南浔区")
    bulletin = await page.request.get(f"{base}/ui/bulletin.xlsx")  # the page's download
    assert bulletin.status == 200
    assert "spreadsheet" in bulletin.headers["content-type"]

    for n, key in enumerate([*data.paid, data.returned, data.waiting]):
        await visit(page, seen, f"{base}/ui/cases/{key}", None if n else "case-paid")
    await visit(page, seen, f"{base}/ui/cases", "cases")
    await visit(page, seen, f"{base}/ui/batches/{data.batch}", "batch")


def screenshots() -> bool:
    return os.environ.get("ZHIDA_SCREENSHOTS") == "1"


async def screenshot(page: Page, name: str) -> None:
    if screenshots():
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
