"""Money safety of application cases over HTTP, on the real dev server, worker and
budget-system simulator: one period spelled one way, paid at most once; re-application
after an unpaid close; and no case stranded by a payment that can never go out."""

import uuid
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from domain.policy import library
from models.budget import LedgerEntry, LedgerKind
from models.cases import CaseClaim, application_case_id
from models.notices import Notice
from models.policy import ItemCreate, StageWarning
from models.registry import BankAccount
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload
from tests.fixtures.stack import Stack
from tests.history_store import keep_history
from tests.test_application_e2e import (
    AMOUNT,
    _setup,
    apply_and_wait,
    case_handle,
    ledger_kinds,
    reach,
)


async def _apply(stack: Stack, code: str, period: str) -> tuple[int, dict[str, Any]]:
    response = await stack.api.post(
        "/api/v1/cases",
        json={"item_code": code, "period": period},
        headers=auth(stack.settings, "qiye"),
    )
    return response.status_code, response.json()


async def _approve_both(stack: Stack, base: str) -> None:
    for user in ("jxj_staff", "czj_staff"):
        response = await stack.api.post(
            f"{base}/decisions", json={"action": "approve"}, headers=auth(stack.settings, user)
        )
        assert response.status_code == 200, response.text


async def test_one_annual_item_pays_a_firm_once_whatever_the_period_is_called(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)  # annual, valid 2026-01-01 to 2027-12-31
    handle = await apply_and_wait(stack, dev_server, code, uscc)
    await _approve_both(stack, f"/api/v1/cases/application/{code}/2026/{uscc}")
    assert (await handle.result()).stage.value == "paid"
    await keep_history(dev_server.client, handle, "application-paid")

    status, body = await _apply(stack, code, "2026")
    assert status == 200 and body["stage"] == "paid"  # the paid case, not a new one
    for period, why in (
        ("2026-Q4", "annual"),  # another scheme's spelling of part of the same year
        ("2026-11", "annual"),
        ("once", "annual"),
        ("2025", "validity"),  # before the item was valid: no quota row appears either
        ("2027", "not begun"),
        ("2028", "validity"),
    ):
        status, body = await _apply(stack, code, period)
        assert status == 422, (period, body)
        assert body["errors"][0]["field"] == "period", body
        assert why in body["errors"][0]["message"], body
    for period in ("2026-Q5", "2026-13", "26", "2026-q1"):
        status, body = await _apply(stack, code, period)
        assert status == 422 and "period" in str(body), (period, body)
    async with stack.sessionmaker() as session:
        claims = list(await session.scalars(select(CaseClaim.period).where(CaseClaim.uscc == uscc)))
        instructed = await session.scalar(
            select(sa.func.count())
            .select_from(LedgerEntry)
            .where(col(LedgerEntry.item_code) == code, col(LedgerEntry.kind) == LedgerKind.INSTRUCT)
        )
    assert claims == ["2026"] and instructed == 1


async def test_a_quarterly_item_takes_quarters_only_and_keeps_its_scheme(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = f"QTR-{uuid.uuid4().hex[:6].upper()}"
    async with stack.sessionmaker.begin() as session:
        firm = await create_enterprise(session, facts={"credit_rating": ("A", "2025")})
        users = await create_users(session, enterprise_uscc=firm.uscc)
        payload = {**item_payload(code), "period_scheme": "quarterly"}
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
    status, body = await _apply(stack, code, "2026")
    assert status == 422 and body["errors"][0]["field"] == "period"
    status, body = await _apply(stack, code, "2026-Q3")
    assert status == 201, body
    # Once published, the rhythm cannot change: periods of two schemes never overlap.
    draft = await stack.api.put(
        f"/api/v1/items/{code}/draft",
        json={
            **{k: v for k, v in item_payload(code).items() if k not in _CREATE_ONLY},
            "period_scheme": "annual",
            "change_reason": "改为按年兑付",
        },
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert draft.status_code == 422, draft.text
    assert draft.json()["errors"][0]["field"] == "period_scheme"


_CREATE_ONLY = ("code", "document", "department_code", "region_code")


async def test_a_rejected_firm_may_apply_again_for_the_same_period(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    first = await apply_and_wait(stack, dev_server, code, uscc)
    rejected = await stack.api.post(
        f"{base}/decisions",
        json={"action": "reject", "reason": "材料与申报主体不符"},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert rejected.status_code == 200, rejected.text
    assert (await first.result()).stage.value == "rejected"

    status, body = await _apply(stack, code, "2026")
    assert status == 201, body
    second_id = application_case_id(code, "2026", uscc, attempt=2)
    assert body["case_id"] == second_id
    second = case_handle(dev_server, second_id)
    await reach(second, "department_review")
    # The business key's route now leads to the new attempt, which pays once.
    current = await stack.api.get(base, headers=auth(stack.settings, "qiye"))
    assert current.json()["case_id"] == second_id
    await _approve_both(stack, base)
    assert (await second.result()).paid_amount_fen == AMOUNT
    status, body = await _apply(stack, code, "2026")
    assert (status, body["case_id"]) == (200, second_id)


async def test_possibly_eligible_goes_to_review_marked_and_zero_is_no_approval(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = f"POSS-{uuid.uuid4().hex[:6].upper()}"
    async with stack.sessionmaker.begin() as session:
        firm = await create_enterprise(session)  # no credit rating on file: unknown
        users = await create_users(session, enterprise_uscc=firm.uscc)
        payload = item_payload(code, amount_rule={"kind": "fixed", "amount_fen": AMOUNT})
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
    status, body = await _apply(stack, code, "2026")
    assert status == 201, body
    handle = case_handle(dev_server, application_case_id(code, "2026", firm.uscc))
    state = await reach(handle, "department_review")
    assert state.verdict is not None and state.verdict.value == "possibly_eligible"
    assert state.approved_amount_fen is None and state.computed_amount_fen == AMOUNT
    assert any("公共信用评价等级" in line for line in state.to_verify)
    base = f"/api/v1/cases/application/{code}/2026/{firm.uscc}"
    zero = await stack.api.post(
        f"{base}/decisions",
        json={"action": "approve", "amount_fen": 0},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert zero.status_code == 422 and zero.json()["errors"][0]["field"] == "amount_fen"
    huge = await stack.api.post(
        f"{base}/decisions",
        json={"action": "approve", "amount_fen": 10**16},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert huge.status_code == 422
    # What the case itself refuses names the field too, like any other 422.
    for decision, field in (
        ({"action": "approve", "amount_fen": AMOUNT + 1}, "amount_fen"),
        ({"action": "approve", "amount_fen": AMOUNT - 1}, "reason"),
        ({"action": "reject"}, "reason"),
        ({"action": "return", "reason": "缺材料"}, "corrections"),
    ):
        refused = await stack.api.post(
            f"{base}/decisions", json=decision, headers=auth(stack.settings, "jxj_staff")
        )
        assert refused.status_code == 422, refused.text
        assert [e["field"] for e in refused.json()["errors"]] == [field], refused.text


async def test_an_instruction_that_can_never_be_made_leaves_the_case_with_finance(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    # An account number the budget system's format refuses (past the importer's check).
    code, uscc = await _setup(stack, account="62220000-1111-X")
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    handle = await apply_and_wait(stack, dev_server, code, uscc)
    await _approve_both(stack, base)
    failed = await reach(handle, "payment_failed")
    assert failed.waiting_for_department == "330500-CZJ"
    assert failed.failure_reason is not None and "payee_account" in failed.failure_reason
    async with stack.sessionmaker() as session:
        warnings = list(
            await session.scalars(
                select(StageWarning.department_code).where(
                    col(StageWarning.subject) == failed.case_id
                )
            )
        )
        titles = list(
            await session.scalars(select(Notice.title).where(col(Notice.subject) == failed.case_id))
        )
    assert warnings == ["330500-CZJ"] and "资金支付未能发出" in titles
    # The firm corrects its account and confirms: paid under the next instalment.
    async with stack.sessionmaker.begin() as session:
        await session.execute(
            sa.update(BankAccount)
            .where(col(BankAccount.uscc) == uscc)
            .values(account_number="6222000011112222")
        )
    confirmed = await stack.api.post(
        f"{base}/account-confirmation", headers=auth(stack.settings, "qiye")
    )
    assert confirmed.status_code == 200, confirmed.text
    final = await handle.result()
    assert (final.stage.value, final.instalment, final.paid_amount_fen) == ("paid", 2, AMOUNT)
    kinds = await ledger_kinds(stack, final.case_id)
    assert kinds == [
        LedgerKind.RESERVE,
        LedgerKind.REFUSED,
        LedgerKind.RELEASE,
        LedgerKind.RESERVE,
        LedgerKind.INSTRUCT,
        LedgerKind.RECEIPT,
    ]


async def test_a_refused_instruction_can_be_cancelled_and_releases_the_budget(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    account = "6222000099998888"
    code, uscc = await _setup(stack, account=account)
    await stack.budget_http.put("/v1/_simulator/config", json={"refuse_accounts": [account]})
    try:
        base = f"/api/v1/cases/application/{code}/2026/{uscc}"
        handle = await apply_and_wait(stack, dev_server, code, uscc)
        await _approve_both(stack, base)
        failed = await reach(handle, "payment_failed")
        assert failed.failure_reason is not None and "422" in failed.failure_reason
        # In the budget system's words, not its raw answer: the firm and finance read it.
        assert "收款账户已冻结" in failed.failure_reason and "{" not in failed.failure_reason
    finally:
        await stack.budget_http.put("/v1/_simulator/config", json={"refuse_accounts": []})
    firm_cannot = await stack.api.post(
        f"{base}/decisions", json={"action": "approve"}, headers=auth(stack.settings, "jxj_staff")
    )
    assert firm_cannot.status_code == 403
    cancelled = await stack.api.post(
        f"{base}/withdrawal",
        json={"reason": "收款账户冻结，企业无法提供其他账户"},
        headers=auth(stack.settings, "czj_staff"),
    )
    assert cancelled.status_code == 200, cancelled.text
    final = await handle.result()
    assert (final.stage.value, final.paid_amount_fen) == ("cancelled", 0)
    await keep_history(dev_server.client, handle, "application-payment-refused-cancelled")
    quota = await stack.api.get(
        f"/api/v1/items/{code}/quota/2026", headers=auth(stack.settings, "auditor")
    )
    assert quota.status_code == 200, quota.text
    assert (quota.json()["reserved_fen"], quota.json()["paid_fen"]) == (0, 0)


async def test_no_quota_set_waits_with_a_warning_and_finance_can_close_it(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code, uscc = await _setup(stack)
    async with stack.sessionmaker.begin() as session:  # as if finance never set 2026
        await session.execute(sa.text("DELETE FROM quota_change WHERE item_code = :c"), {"c": code})
        await session.execute(sa.text("DELETE FROM budget_quota WHERE item_code = :c"), {"c": code})
    base = f"/api/v1/cases/application/{code}/2026/{uscc}"
    handle = await apply_and_wait(stack, dev_server, code, uscc)
    await _approve_both(stack, base)
    waiting = await reach(handle, "awaiting_budget")
    assert waiting.waiting_for_department == "330500-CZJ"
    missing = await stack.api.get(
        f"/api/v1/items/{code}/quota/2026", headers=auth(stack.settings, "czj_staff")
    )
    assert missing.status_code == 404
    listed = await stack.api.get(
        f"/api/v1/cases?item={code}&stage=awaiting_budget", headers=auth(stack.settings, "auditor")
    )
    assert [c["case_id"] for c in listed.json()["items"]] == [waiting.case_id]
    cancelled = await stack.api.post(
        f"{base}/withdrawal",
        json={"reason": "本年度无预算"},
        headers=auth(stack.settings, "czj_staff"),
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (await handle.result()).stage.value == "cancelled"
