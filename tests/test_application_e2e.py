"""Application cases end to end on the real dev server: API, worker with the real
activities, a committed SQLite database and the budget-system simulator process."""

import asyncio
import uuid

import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from adapters.budget_system import BudgetSystemClient
from core.workdays import WorkingCalendar
from domain.money import budget
from domain.policy import library
from models.budget import LedgerEntry, LedgerKind
from models.cases import CaseFirm, CaseRecord, CaseState, application_case_id
from models.notices import Notice
from models.policy import ItemCreate
from models.registry import BankAccount
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload
from tests.fixtures.stack import Stack
from tests.history_store import keep_history
from workflows.application import ApplicationWorkflow

AMOUNT = 5_000_000


async def reach(handle: WorkflowHandle[ApplicationWorkflow, CaseState], stage: str) -> CaseState:
    """Wait (up to 20 s) until the case stands at `stage`, as a user's page would."""
    for _ in range(200):
        state = await handle.query(ApplicationWorkflow.state)
        if state.stage.value == stage:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"case never reached {stage}; it is at {state.stage.value}")


async def listed_stages(stack: Stack, user: str, expected: list[str]) -> list[str]:
    """The firm's case list, once the projection has caught up with the workflow (an
    activity writes it just after the stage changes): `expected`, or what it shows
    after two seconds."""
    for _ in range(40):
        listed = await stack.api.get("/api/v1/my/cases", headers=auth(stack.settings, user))
        stages = [c["stage"] for c in listed.json()["items"]]
        if stages == expected:
            break
        await asyncio.sleep(0.05)
    return stages


async def apply_and_wait(
    stack: Stack, env: WorkflowEnvironment, code: str, uscc: str
) -> WorkflowHandle[ApplicationWorkflow, CaseState]:
    """The firm (demo user qiye) applies; returns the case once it awaits department review.

    A 503 is sent again, as its answer asks: the route's 2 s wait for the new case's
    state can run out on a machine busy with other tests, after the case has started
    (applying again then answers 200 with that case)."""
    for _ in range(3):
        applied = await stack.api.post(
            "/api/v1/cases",
            json={"item_code": code, "period": "2026"},
            headers=auth(stack.settings, "qiye"),
        )
        if applied.status_code != 503:
            break
    assert applied.status_code in (200, 201), applied.text
    handle = case_handle(env, final_id(code, uscc))
    await reach(handle, "department_review")
    return handle


async def ledger_kinds(stack: Stack, case_id: str) -> list[LedgerKind]:
    """The case's ledger movements, in the order they were written."""
    async with stack.sessionmaker() as session:
        return list(
            await session.scalars(
                select(LedgerEntry.kind)
                .where(col(LedgerEntry.case_id) == case_id)
                .order_by(col(LedgerEntry.id))
            )
        )


def final_id(code: str, uscc: str) -> str:
    return application_case_id(code, "2026", uscc)


def case_handle(
    env: WorkflowEnvironment, case_id: str
) -> WorkflowHandle[ApplicationWorkflow, CaseState]:
    return env.client.get_workflow_handle_for(ApplicationWorkflow.run, case_id)


async def _setup(
    stack: Stack, *, quota_fen: int = 100_000_000, account: str | None = None
) -> tuple[str, str]:
    """A published application item and a firm that meets it; returns (item, uscc)."""
    code = f"APP-{uuid.uuid4().hex[:6].upper()}"
    async with stack.sessionmaker.begin() as session:
        firm = await create_enterprise(session, facts={"credit_rating": ("A", "2025")})
        if account is not None:
            await session.execute(
                sa.update(BankAccount)
                .where(col(BankAccount.uscc) == firm.uscc)
                .values(account_number=account)
            )
        users = await create_users(session, enterprise_uscc=firm.uscc)
        payload = item_payload(
            code, quota_fen=quota_fen, amount_rule={"kind": "fixed", "amount_fen": AMOUNT}
        )
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
        await budget.set_quota(session, code, 2026, quota_fen, "czj_staff")
    return code, firm.uscc


async def test_apply_review_correct_pay_and_reconcile(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    api, settings = stack.api, stack.settings
    code, uscc = await _setup(stack)
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"

    applied = await api.post(
        "/api/v1/cases",
        json={"item_code": code, "period": "2026", "materials": {"申请表": "a.pdf"}},
        headers=auth(settings, "qiye"),
    )
    assert applied.status_code == 201, applied.text
    started = applied.json()  # the case as it starts, not waiting for the worker
    assert started["case_id"] == application_case_id(code, "2026", uscc)
    assert (started["stage"], started["uscc"], started["period"]) == ("check", uscc, "2026")
    assert started["timeline"] == [] and started["approved_amount_fen"] is None
    again = await api.post(
        "/api/v1/cases", json={"item_code": code, "period": "2026"}, headers=auth(settings, "qiye")
    )
    assert again.status_code == 200  # the same business key finds the same case
    assert again.json()["case_id"] == application_case_id(code, "2026", uscc)

    handle = case_handle(dev_server, application_case_id(code, "2026", uscc))
    state = await reach(handle, "department_review")
    assert state.stage.value == "department_review"
    assert state.computed_amount_fen == AMOUNT

    wrong = await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "kjj_staff")
    )
    assert wrong.status_code == 403
    too_much = await api.post(
        f"{base}/decisions",
        json={"action": "approve", "amount_fen": AMOUNT + 1},
        headers=auth(settings, "jxj_staff"),
    )
    assert too_much.status_code == 422

    key = {"Idempotency-Key": f"req-{uuid.uuid4()}"}
    reduced = await api.post(
        f"{base}/decisions",
        json={"action": "approve", "amount_fen": 4_000_000, "reason": "部分设备不在支持范围"},
        headers=auth(settings, "jxj_staff") | key,
    )
    assert reduced.status_code == 200, reduced.text
    assert (reduced.json()["stage"], reduced.json()["approved_amount_fen"]) == (
        "finance_review",
        4_000_000,
    )
    repeated = await api.post(
        f"{base}/decisions",
        json={"action": "approve", "amount_fen": 4_000_000, "reason": "部分设备不在支持范围"},
        headers=auth(settings, "jxj_staff") | key,
    )
    assert repeated.json()["stage"] == "finance_review"  # answered, not applied to finance

    inbox = (await api.get("/api/v1/inbox", headers=auth(settings, "czj_staff"))).json()
    # The live database is shared by the session's tests: this test's item only.
    mine = [c["case_id"] for c in inbox["items"] if c["item_code"] == code]
    assert mine == [application_case_id(code, "2026", uscc)]

    returned = await api.post(
        f"{base}/decisions",
        json={"action": "return", "reason": "缺发票", "corrections": ["补充设备发票"]},
        headers=auth(settings, "czj_staff"),
    )
    assert returned.json()["stage"] == "correction"
    assert returned.json()["corrections"] == ["补充设备发票"]
    other_firm = await api.post(
        f"{base}/resubmit", json={"materials": {}}, headers=auth(settings, "jxj_staff")
    )
    assert other_firm.status_code == 403
    back = await api.post(
        f"{base}/resubmit",
        json={"materials": {"发票": "invoice.pdf"}, "note": "已补充"},
        headers=auth(settings, "qiye"),
    )
    assert back.json()["stage"] == "finance_review"  # back to the stage that returned it

    approved = await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "czj_staff")
    )
    assert approved.status_code == 200, approved.text
    final = await handle.result()
    assert (final.stage.value, final.paid_amount_fen, final.instalment) == ("paid", 4_000_000, 1)

    mine = (await api.get("/api/v1/my/cases", headers=auth(settings, "qiye"))).json()
    assert [(c["stage"], c["paid_amount_fen"]) for c in mine["items"]] == [("paid", 4_000_000)]
    # The firm heard of the return (with what to correct) and of the money, once each.
    told = (await api.get("/api/v1/me/notices", headers=auth(settings, "qiye"))).json()
    told = [n for n in told if n["subject"] == final.case_id]
    assert sorted(n["title"] for n in told) == ["申报材料需补正", "补助资金已拨付"]
    assert any("补充设备发票" in n["body"] for n in told)
    assert any("40,000.00元" in n["body"] for n in told)

    async with stack.sessionmaker() as session:
        kinds = list(
            await session.scalars(
                select(LedgerEntry.kind)
                .where(col(LedgerEntry.case_id) == final.case_id)
                .order_by(col(LedgerEntry.id))
            )
        )
        assert kinds == [LedgerKind.RESERVE, LedgerKind.INSTRUCT, LedgerKind.RECEIPT]
        # Time to money runs from the application to the receipt in the ledger.
        record = await session.get(CaseRecord, final.case_id)
        receipt = await session.scalar(
            select(LedgerEntry.at).where(
                col(LedgerEntry.case_id) == final.case_id,
                col(LedgerEntry.kind) == LedgerKind.RECEIPT,
            )
        )
        assert record is not None and receipt is not None
        assert (record.year, record.paid_at) == (2026, receipt)
        assert record.entitled_at is not None and record.entitled_at <= receipt
        assert record.days_to_money == WorkingCalendar().working_days_between(
            record.entitled_at, receipt
        )
        firm = await session.get(CaseFirm, (code, record.uscc, 2026))
        assert firm is not None and (firm.approved, firm.paid, firm.first_paid_at) == (
            True,
            True,
            receipt,
        )
        quota = await budget.quota_status(session, code, 2026)
        assert (quota.paid_fen, quota.reserved_fen) == (4_000_000, 0)
        statement = await BudgetSystemClient(stack.budget_http).statement()
        mine_only = [
            s for s in statement if s.idempotency_key.startswith(f"zhida:{final.case_id}:")
        ]
        report = await budget.reconcile(session, mine_only)
    # The shared database holds other tests' payments too: this case's must agree.
    assert [d for d in report.differences if d.case_id in (final.case_id, None)] == []
    assert report.paid_fen_theirs == 4_000_000

    await keep_history(dev_server.client, handle, "application-corrected-paid")


async def test_not_eligible_firm_is_rejected_with_reasons(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, _ = await _setup(stack)
    async with stack.sessionmaker.begin() as session:
        firm = await create_enterprise(session, facts={"credit_rating": ("D", "2025")})
        await create_users(session, enterprise_uscc=firm.uscc)
    response = await stack.api.post(
        "/api/v1/cases",
        json={"item_code": code, "period": "2026"},
        headers=auth(stack.settings, "qiye"),
    )
    assert response.status_code == 201
    handle = case_handle(dev_server, application_case_id(code, "2026", firm.uscc))
    final = await handle.result()
    assert final.stage.value == "rejected"
    assert final.verdict is not None and final.verdict.value == "not_eligible"
    assert "公共信用评价等级" in final.timeline[-1].detail
    told = (await stack.api.get("/api/v1/me/notices", headers=auth(stack.settings, "qiye"))).json()
    rejected = [n for n in told if n["subject"] == final.case_id]
    assert [n["title"] for n in rejected] == ["申报未通过"]
    assert "公共信用评价等级" in rejected[0]["body"]


async def test_returned_payment_is_paid_again_after_the_firm_fixes_its_account(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack, account="6222000011110000")  # a closed account
    api, settings = stack.api, stack.settings
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    handle = await apply_and_wait(stack, dev_server, code, uscc)
    await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "jxj_staff")
    )
    await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "czj_staff")
    )

    premature = await api.post(f"{base}/account-confirmation", headers=auth(settings, "qiye"))
    assert premature.status_code == 409  # nothing has come back yet
    returned = await reach(handle, "account_correction")
    assert returned.waiting_for_role == "enterprise"
    assert returned.timeline[-1].action == "returned"
    expected = ["account_correction"]
    assert await listed_stages(stack, "qiye", expected) == expected
    # The firm fixes its account, then confirms it; the payment goes out again.
    async with stack.sessionmaker.begin() as session:
        await session.execute(
            sa.update(BankAccount)
            .where(col(BankAccount.uscc) == uscc)
            .values(account_number="6222000011112222")
        )
    confirmed = await api.post(f"{base}/account-confirmation", headers=auth(settings, "qiye"))
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["stage"], confirmed.json()["instalment"]) == ("payment", 2)
    final = await handle.result()
    assert (final.stage.value, final.instalment, final.paid_amount_fen) == ("paid", 2, AMOUNT)
    await keep_history(dev_server.client, handle, "application-payment-returned-repaid")
    kinds = await ledger_kinds(stack, final.case_id)
    assert kinds == [
        LedgerKind.RESERVE,
        LedgerKind.INSTRUCT,
        LedgerKind.RETURN,
        LedgerKind.RELEASE,
        LedgerKind.RESERVE,
        LedgerKind.INSTRUCT,
        LedgerKind.RECEIPT,
    ]


async def test_case_waits_for_budget_until_finance_adds_quota(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack, quota_fen=AMOUNT - 1)
    api, settings = stack.api, stack.settings
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    handle = await apply_and_wait(stack, dev_server, code, uscc)
    await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "jxj_staff")
    )
    await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "czj_staff")
    )
    state = await reach(handle, "awaiting_budget")
    assert state.stage.value == "awaiting_budget"

    refused = await api.put(
        f"/api/v1/items/{code}/quota/2026",
        json={"quota_fen": AMOUNT},
        headers=auth(settings, "jxj_head"),
    )
    assert refused.status_code == 403
    added = await api.put(
        f"/api/v1/items/{code}/quota/2026",
        json={"quota_fen": AMOUNT * 2},
        headers=auth(settings, "czj_staff"),
    )
    assert added.status_code == 200, added.text
    assert added.json()["available_fen"] == AMOUNT * 2
    final = await handle.result()
    assert (final.stage.value, final.paid_amount_fen) == ("paid", AMOUNT)
    await keep_history(dev_server.client, handle, "application-awaiting-budget-paid")


async def test_firm_withdraws_and_only_the_right_people_may_end_a_case(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)
    api, settings = stack.api, stack.settings
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    handle = await apply_and_wait(stack, dev_server, code, uscc)

    reviewer = await api.post(f"{base}/withdrawal", json={}, headers=auth(settings, "jxj_staff"))
    assert reviewer.status_code == 403  # a reviewer rejects; only finance cancels
    finance = await api.post(
        f"{base}/withdrawal", json={"reason": "撤销"}, headers=auth(settings, "czj_staff")
    )
    assert finance.status_code == 409  # nothing stands in the way of paying it yet
    unknown = await api.post(
        f"{base}/withdrawal", json={"why": "x"}, headers=auth(settings, "qiye")
    )
    assert unknown.status_code == 422

    withdrawn = await api.post(
        f"{base}/withdrawal", json={"reason": "项目延期"}, headers=auth(settings, "qiye")
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["stage"] == "withdrawn"
    late = await api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, "jxj_staff")
    )
    assert late.status_code == 409
    assert await listed_stages(stack, "qiye", ["withdrawn"]) == ["withdrawn"]
    await keep_history(dev_server.client, handle, "application-withdrawn")


async def test_finance_cancels_a_returned_payment_and_the_reservation_is_released(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack, account="6222000011110000")  # a closed account
    api, settings = stack.api, stack.settings
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    handle = await apply_and_wait(stack, dev_server, code, uscc)
    for user in ("jxj_staff", "czj_staff"):
        await api.post(
            f"{base}/decisions", json={"action": "approve"}, headers=auth(settings, user)
        )
    await reach(handle, "account_correction")
    async with stack.sessionmaker() as session:
        held = await budget.quota_status(session, code, 2026)
    assert held.reserved_fen == AMOUNT  # held for the next instalment

    no_reason = await api.post(f"{base}/withdrawal", json={}, headers=auth(settings, "czj_staff"))
    assert no_reason.status_code == 422
    cancelled = await api.post(
        f"{base}/withdrawal",
        json={"reason": "企业已注销，账户无法更正"},
        headers=auth(settings, "czj_staff"),
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["stage"] == "cancelled"
    final = await handle.result()
    assert (final.stage.value, final.paid_amount_fen) == ("cancelled", 0)
    async with stack.sessionmaker() as session:
        entries = list(
            await session.execute(
                select(LedgerEntry.kind, LedgerEntry.instalment)
                .where(col(LedgerEntry.case_id) == final.case_id)
                .order_by(col(LedgerEntry.id))
            )
        )
        quota = await budget.quota_status(session, code, 2026)
        notices = list(
            await session.scalars(select(Notice.title).where(col(Notice.subject) == final.case_id))
        )
    assert [tuple(e) for e in entries] == [
        (LedgerKind.RESERVE, 1),
        (LedgerKind.INSTRUCT, 1),
        (LedgerKind.RETURN, 1),
        (LedgerKind.RELEASE, 1),
        (LedgerKind.RESERVE, 2),
        (LedgerKind.RELEASE, 2),
    ]
    assert (quota.paid_fen, quota.reserved_fen) == (0, 0)
    assert "申报事项已撤销" in notices
