"""Recognition batches and cases end to end on the real dev server: the API, a worker
with the real activities, a committed database (SQLite and PostgreSQL) and the budget
system and message channel simulators."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import openpyxl
import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from domain.matching import match_library
from domain.money import budget
from domain.policy import library
from models.budget import BudgetQuota
from models.cases import CaseClaim, CaseRecord, CaseState
from models.matching import MatchRequest, MatchScope
from models.notices import Notice
from models.policy import ItemCreate
from models.recognition import recognition_case_id
from models.reference import Role, User
from models.registry import BankAccount
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload, new_uscc
from tests.fixtures.stack import Stack
from tests.history_store import keep_history

AMOUNT = 1_000_000
# Each test's item matches only its own firms (the live database is shared by every
# test): they carry an industry code no other firm has, a profile fact every firm has,
# so every other firm is ruled out, never merely possibly eligible.
INDUSTRY: dict[str, str] = {}


def rule(industry: str) -> dict[str, Any]:
    return {
        "all": [
            {"fact": "industry_code", "op": "eq", "value": industry},
            {"fact": "credit_rating", "op": "in", "value": ["A", "B"]},
        ]
    }


async def firm(
    stack: Stack, code: str, *, rating: str = "A", known: bool = True, verified: bool = False
) -> str:
    """A firm for the item `code` with a user of its own (named after its credit code);
    `known=False`: its credit rating is unknown, so it is only possibly eligible."""
    facts: dict[str, tuple[Any, str]] = {"credit_rating": (rating, "2025")} if known else {}
    async with stack.sessionmaker.begin() as session:
        enterprise = await create_enterprise(session, industry_code=INDUSTRY[code], facts=facts)
        session.add(
            User(
                name=f"u{enterprise.uscc}",
                display_name="企业用户",
                role=Role.ENTERPRISE,
                enterprise_uscc=enterprise.uscc,
            )
        )
        if verified:
            await session.execute(
                sa.update(BankAccount)
                .where(col(BankAccount.uscc) == enterprise.uscc)
                .values(verified_at=datetime(2025, 6, 30, tzinfo=UTC))
            )
    return enterprise.uscc


async def recognition_item(
    stack: Stack, *, terms: dict[str, Any], quota_fen: int = 100_000_000
) -> str:
    code = f"RCG-{uuid.uuid4().hex[:6].upper()}"
    INDUSTRY[code] = f"C{uuid.uuid4().int % 10**4:04d}"
    async with stack.sessionmaker.begin() as session:
        users = await create_users(session)
        payload = item_payload(
            code,
            category="recognition",
            eligibility=rule(INDUSTRY[code]),
            amount_rule={"kind": "fixed", "amount_fen": AMOUNT},
            quota_fen=quota_fen,
        )
        payload["recognition"] = terms
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
        await budget.set_quota(session, code, 2026, quota_fen, "czj_staff")
    return code


async def match(stack: Stack, code: str) -> None:
    await match_library.run(
        stack.sessionmaker,
        MatchRequest(scope=MatchScope.ITEM, item_code=code),
        f"test-match-{code}",
        datetime.now(UTC).date(),
        1,
    )


async def upload(stack: Stack, code: str, name: str, content: bytes) -> httpx.Response:
    """The department of `code` (jxj_staff) uploads a list for period 2026."""
    media = "text/csv" if name.endswith(".csv") else "application/octet-stream"
    return await stack.api.post(
        f"/api/v1/items/{code}/recognition-batches/upload",
        data={"period": "2026"},
        files={"file": (name, io.BytesIO(content), media)},
        headers=auth(stack.settings, "jxj_staff"),
    )


def case_handle(env: WorkflowEnvironment, case_id: str) -> WorkflowHandle[Any, Any]:
    return env.client.get_workflow_handle(case_id)


async def reach(
    env: WorkflowEnvironment, case_id: str, stage: str, seconds: float = 30
) -> CaseState:
    state: CaseState | None = None
    for _ in range(int(seconds * 10)):
        try:
            state = await case_handle(env, case_id).query("state", result_type=CaseState)
        except Exception:  # not started yet
            await asyncio.sleep(0.1)
            continue
        if state.stage.value == stage:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"{case_id} never reached {stage}: {state and state.stage.value}")


async def batch_phase(stack: Stack, path: str, phase: str, seconds: float = 30) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(int(seconds * 10)):
        read = await stack.api.get(path, headers=auth(stack.settings, "jxj_staff"))
        assert read.status_code == 200, read.text
        body = read.json()
        if body["phase"] == phase:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch never reached {phase}: {body}")


async def test_straight_through_batch_from_the_library(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    """A straight-through item: a firm with a verified account is paid without doing
    anything; one without confirms first; a possibly-eligible firm is listed apart
    until the department includes it, then reviewed alone; finance verifies the list
    against its total; the firm declines and its reservation goes back."""
    api, settings = stack.api, stack.settings
    code = await recognition_item(
        stack, terms={"straight_through": True, "confirmation": "unless_verified"}
    )
    verified = await firm(stack, code, verified=True)
    confirming = await firm(stack, code)
    possible = await firm(stack, code, known=False)  # its rating is unknown
    await firm(stack, code, rating="D")  # not eligible
    await match(stack, code)

    started = await api.post(
        f"/api/v1/items/{code}/recognition-batches",
        json={"item_code": code, "period": "2026"},
        headers=auth(settings, "jxj_staff"),
    )
    assert started.status_code == 201, started.text
    batch = f"/api/v1/items/{code}/recognition-batches/2026/1"
    again = await api.post(
        f"/api/v1/items/{code}/recognition-batches",
        json={"item_code": code, "period": "2026"},
        headers=auth(settings, "jxj_staff"),
    )
    assert again.status_code == 409, again.text  # one open batch per item and period

    # Straight through: paid within seconds, no step by the firm, recorded as the system's.
    paid = await reach(dev_server, recognition_case_id(code, "2026", verified), "paid")
    assert paid.paid_amount_fen == AMOUNT
    actions = [(e.actor, e.action) for e in paid.timeline]
    assert ("system", "department_verified") in actions
    assert ("system", "finance_verified") in actions
    assert {"entitled", "identified", "instructed", "paid"} <= set(paid.moments)
    # Time to money runs from the data the batch identified the firm on to the receipt.
    record = None
    for _ in range(50):
        async with stack.sessionmaker() as session:
            record = await session.get(CaseRecord, paid.case_id)
        if record is not None and record.paid_at is not None:
            break
        await asyncio.sleep(0.1)
    assert record is not None and record.paid_at is not None
    assert record.entitled_at == paid.moments["entitled"] and record.year == 2026

    waiting = await reach(dev_server, recognition_case_id(code, "2026", confirming), "confirmation")
    assert waiting.confirm_by is not None
    case = f"/api/v1/cases/recognition/{code}/2026/{confirming}"
    other = await api.post(f"{case}/confirmation", json={}, headers=auth(settings, f"u{verified}"))
    assert other.status_code == 403, other.text
    corrected = await api.post(
        f"{case}/confirmation",
        json={
            "account": {
                "bank_name": "湖州银行",
                "account_name": "更正后的户名",
                "account_number": "6222000099998888777",
            }
        },
        headers=auth(settings, f"u{confirming}"),
    )
    assert corrected.status_code == 200, corrected.text
    await reach(dev_server, recognition_case_id(code, "2026", confirming), "paid")

    # The possibly-eligible firm waits, listed apart, for the department.
    progress = await batch_phase(stack, batch, "department_verification")
    assert progress["possible"] == 1 and progress["identified"] == 3
    firms = await api.get(
        f"{batch}/firms", params={"status": "possible"}, headers=auth(settings, "jxj_staff")
    )
    [listed_apart] = firms.json()["items"]
    assert listed_apart["uscc"] == possible
    assert any(c["outcome"] == "unknown" for c in listed_apart["conditions"])

    bad = await api.post(
        f"{batch}/department-verification",
        json={"exceptions": [{"uscc": new_uscc(), "disposition": "drop", "reason": "重复"}]},
        headers=auth(settings, "jxj_staff"),
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "exceptions[0].uscc"
    by_finance = await api.post(
        f"{batch}/department-verification", json={}, headers=auth(settings, "czj_staff")
    )
    assert by_finance.status_code == 403, by_finance.text
    verified_list = await api.post(
        f"{batch}/department-verification",
        json={"include": [{"uscc": possible, "reason": "信用等级经人工核实为 A 级"}]},
        headers=auth(settings, "jxj_staff"),
    )
    assert verified_list.status_code == 200, verified_list.text
    assert verified_list.json()["phase"] == "finance_verification"

    wrong_total = await api.post(
        f"{batch}/finance-verification",
        json={"action": "approve", "expected_total_fen": 1},
        headers=auth(settings, "czj_staff"),
    )
    assert wrong_total.status_code == 422, wrong_total.text
    assert wrong_total.json()["errors"][0]["field"] == "expected_total_fen"
    approved = await api.post(
        f"{batch}/finance-verification",
        json={"action": "approve", "expected_total_fen": 0},
        headers=auth(settings, "czj_staff"),
    )
    assert approved.status_code == 200, approved.text

    # The included firm is reviewed on its own, then asked to confirm; it declines.
    possible_id = recognition_case_id(code, "2026", possible)
    await reach(dev_server, possible_id, "department_review")
    case = f"/api/v1/cases/recognition/{code}/2026/{possible}"
    no_amount = await api.post(
        f"{case}/decisions",
        json={"action": "return", "reason": "x", "corrections": ["y"]},
        headers=auth(settings, "jxj_staff"),
    )
    assert no_amount.status_code == 422, no_amount.text
    for reviewer in ("jxj_staff", "czj_staff"):
        decided = await api.post(
            f"{case}/decisions", json={"action": "approve"}, headers=auth(settings, reviewer)
        )
        assert decided.status_code == 200, decided.text
    await reach(dev_server, possible_id, "confirmation")
    declined = await api.post(
        f"{case}/decline", json={"reason": "本年度不再申领"}, headers=auth(settings, f"u{possible}")
    )
    assert declined.status_code == 200, declined.text
    await reach(dev_server, possible_id, "declined")

    done = await batch_phase(stack, batch, "done")
    assert done["paid"] == 2 and done["declined"] == 1
    assert done["paid_fen"] == 2 * AMOUNT
    async with stack.sessionmaker() as session:
        quota = await session.get(BudgetQuota, (code, 2026), populate_existing=True)
        assert quota is not None
        assert (quota.paid_fen, quota.reserved_fen) == (2 * AMOUNT, 0)
        notices = list(
            await session.scalars(
                select(Notice.title).where(col(Notice.recipient) == f"u{confirming}")
            )
        )
        assert any("确认收款账户" in t for t in notices), notices
        claim = await session.scalar(
            select(CaseClaim.state).where(col(CaseClaim.case_id) == possible_id)
        )
        assert claim == "declined"  # the period stays taken: declined is declined

    # The firm sees the recognition case beside any other.
    mine = await api.get("/api/v1/my/cases", headers=auth(settings, f"u{confirming}"))
    assert [c["category"] for c in mine.json()["items"]] == ["recognition"]

    # A second batch for the same period finds every firm already paid or declined.
    second = await api.post(
        f"/api/v1/items/{code}/recognition-batches",
        json={"item_code": code, "period": "2026"},
        headers=auth(settings, "jxj_staff"),
    )
    assert second.status_code == 201, second.text
    second_batch = await batch_phase(
        stack, f"/api/v1/items/{code}/recognition-batches/2026/2", "done"
    )
    assert second_batch["already_claimed"] == 3  # two paid, one declined
    # The auditor's story of the confirmed case: its result, its payment, its batch's
    # verification in the timeline; replayed identically.
    story = await api.get(
        f"/api/v1/audit/cases/recognition/{code}/2026/{confirming}",
        headers=auth(settings, "auditor"),
    )
    assert story.status_code == 200, story.text
    told = story.json()
    assert (told["state_source"], told["state"]["stage"]) == ("result", "paid")
    assert told["state"]["batch_id"] == f"recognition-batch/{code}/2026/1"
    assert {w["workflow_type"] for w in told["workflows"]} == {
        "RecognitionCaseWorkflow",
        "PaymentWorkflow",
    }
    replay = await api.get(
        f"/api/v1/audit/cases/recognition/{code}/2026/{confirming}/replay",
        headers=auth(settings, "auditor"),
    )
    assert replay.json()["identical"] == replay.json()["replayed"] == 2
    await keep_history(
        dev_server.client, case_handle(dev_server, possible_id), "recognition-reviewed-declined"
    )
    await keep_history(
        dev_server.client,
        case_handle(dev_server, recognition_case_id(code, "2026", confirming)),
        "recognition-confirmed-paid",
    )
    await keep_history(
        dev_server.client,
        dev_server.client.get_workflow_handle(f"recognition-batch/{code}/2026/1"),
        "recognition-batch",
    )


async def test_an_upload_with_a_bad_row_starts_nothing(stack: Stack) -> None:
    api, settings = stack.api, stack.settings
    code = await recognition_item(stack, terms={})
    good = await firm(stack, code)
    ineligible = await firm(stack, code, rating="D")
    csv = f"统一社会信用代码,企业名称\n{good},甲\n{ineligible},乙\n{new_uscc()},丙\nNOTACODE,丁\n"
    refused = await upload(stack, code, "名单.csv", csv.encode())
    assert refused.status_code == 422, refused.text
    fields = {e["field"] for e in refused.json()["errors"]}
    assert "line 5.uscc" in fields, fields
    listed = await api.get(
        f"/api/v1/items/{code}/recognition-batches", headers=auth(settings, "jxj_staff")
    )
    assert listed.json()["total"] == 0
    async with stack.sessionmaker() as session:
        claims = await session.scalar(
            select(sa.func.count()).select_from(CaseClaim).where(col(CaseClaim.item_code) == code)
        )
        assert claims == 0

    # The same list without the bad rows starts a batch of the one good firm.
    csv = f"统一社会信用代码\n{good}\n"
    accepted = await upload(stack, code, "名单.csv", csv.encode())
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["identified"] == 1
    again = await upload(stack, code, "名单.csv", csv.encode())
    assert again.status_code in (409, 422), again.text  # open batch, or the firm claimed


async def test_uploaded_figures_decide_eligibility_and_amount(stack: Stack) -> None:
    """The department vouches for the figures it uploads: they are evaluated (dated
    today) by the rule and the amount, in CSV as in XLSX."""
    api, settings = stack.api, stack.settings
    code = f"RCG-{uuid.uuid4().hex[:6].upper()}"
    INDUSTRY[code] = f"C{uuid.uuid4().int % 10**4:04d}"
    async with stack.sessionmaker.begin() as session:
        users = await create_users(session)
        payload = item_payload(
            code,
            category="recognition",
            eligibility={
                "all": [
                    {"fact": "industry_code", "op": "eq", "value": INDUSTRY[code]},
                    {"fact": "rd_expense_fen", "op": "gte", "value": 100_000_000},
                ]
            },
            amount_rule={"kind": "rate", "fact": "rd_expense_fen", "rate": "0.1", "cap_fen": 10**9},
        )
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
    rich, poor = await firm(stack, code), await firm(stack, code)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["统一社会信用代码", "研发费用"])
    sheet.append([rich, 150_000_000])
    sheet.append([poor, 1_000])
    content = io.BytesIO()
    book.save(content)
    refused = await upload(stack, code, "名单.xlsx", content.getvalue())
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["line 3.uscc"]
    csv = f"统一社会信用代码,rd_expense_fen\n{rich},150000000\n"
    accepted = await upload(stack, code, "名单.csv", csv.encode())
    assert accepted.status_code == 201, accepted.text
    progress = accepted.json()
    assert (progress["identified"], progress["possible"]) == (1, 0)
    assert progress["listed_total_fen"] == 15_000_000  # 10% of the uploaded figure
    firms = await api.get(
        f"/api/v1/items/{code}/recognition-batches/2026/1/firms",
        headers=auth(settings, "jxj_staff"),
    )
    [entry] = firms.json()["items"]
    assert {f["kind"]: f["source"] for f in entry["facts"]}["rd_expense_fen"] == "upload"
