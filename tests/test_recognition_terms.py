"""Recognition terms on item versions, and bank accounts verified by a payment."""

import dataclasses
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.payments import PaymentActivities
from adapters.budget_system import BudgetSystemClient
from core.settings import Settings
from core.temporal_errors import ErrorType
from domain import cases
from domain.money import budget
from domain.policy import library
from domain.policy.versions import recognition_terms
from models.payments import PaymentOutcome, PaymentRequest
from models.policy import ItemCreate
from models.recognition import ConfirmationRule, RecognitionTerms
from models.reference import Actor
from models.registry import BankAccount, Enterprise
from seed.sample import generate, load_policies
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload

DAYS = {"head_review_days": 3, "finance_review_days": 5}
YEAR = 2026
STRAIGHT = {
    "straight_through": True,
    "confirmation": "unless_verified",
    "remind_after_days": 5,
    "expire_after_days": 20,
}


def _edit(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {
        k: v
        for k, v in payload.items()
        if k not in {"code", "document", "department_code", "region_code"}
    }
    return body | {"change_reason": "调整认定条款"} | changes


# ----- terms on the item version ----------------------------------------------------


async def test_a_recognition_item_gets_the_default_terms(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    created = await api.post(
        "/api/v1/items",
        json=item_payload(category="recognition"),
        headers=auth(settings, "jxj_staff"),
    )
    assert created.status_code == 201, created.text
    assert created.json()["versions"][0]["recognition"] == RecognitionTerms().model_dump(
        mode="json"
    )
    read = await api.get("/api/v1/items/TEST-ITEM-01", headers=auth(settings, "jxj_staff"))
    assert read.json()["versions"][0]["recognition"] == {
        "straight_through": False,
        "confirmation": "always",
        "remind_after_days": 7,
        "expire_after_days": 30,
    }


async def test_other_items_have_no_terms_and_may_not_set_them(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    refused = await api.post(
        "/api/v1/items",
        json=item_payload() | {"recognition": STRAIGHT},
        headers=auth(settings, "jxj_staff"),
    )
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"field": "recognition", "message": "recognition terms apply only to recognition items"}
    ]
    created = await api.post(
        "/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff")
    )
    assert created.json()["versions"][0]["recognition"] is None


async def test_a_reminder_must_come_before_expiry(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    response = await api.post(
        "/api/v1/items",
        json=item_payload(category="recognition")
        | {"recognition": {"remind_after_days": 30, "expire_after_days": 30}},
        headers=auth(settings, "jxj_staff"),
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["recognition"]
    assert "remind_after_days must be less than" in response.json()["detail"]


async def test_the_terms_are_published_with_the_version_and_changed_by_a_new_one(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    firm = await create_enterprise(session)
    users = await create_users(session, enterprise_uscc=firm.uscc)
    staff = users["jxj_staff"]
    payload = item_payload(category="recognition") | {"recognition": STRAIGHT}
    await library.create_item(session, staff, ItemCreate.model_validate(payload))
    await library.submit_version(session, staff, "TEST-ITEM-01", 1, **DAYS)
    await library.publish_version(session, "TEST-ITEM-01", 1)

    published = await library.get_version(session, "TEST-ITEM-01", 1)
    terms = recognition_terms(published)
    assert terms == RecognitionTerms.model_validate(STRAIGHT)
    assert terms.confirmation is ConfirmationRule.UNLESS_VERIFIED
    detail = await api.get("/api/v1/items/TEST-ITEM-01", headers=auth(settings, "qiye"))
    assert detail.status_code == 200, detail.text
    assert detail.json()["versions"][0]["recognition"] == STRAIGHT

    # Terms are content: the published version keeps its own, a new draft changes them,
    # and finance reviews the change (straight through skips its check of the list).
    edited = await api.put(
        "/api/v1/items/TEST-ITEM-01/draft",
        json=_edit(payload, recognition={"straight_through": False}),
        headers=auth(settings, "jxj_staff"),
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["version"], edited.json()["recognition"]["straight_through"]) == (
        2,
        False,
    )
    assert recognition_terms(published).straight_through is True
    change = await library.submit_version(session, staff, "TEST-ITEM-01", 2, **DAYS)
    assert change.money_changed is True
    history = (
        await api.get("/api/v1/items/TEST-ITEM-01", headers=auth(settings, "auditor"))
    ).json()["history"]
    assert history[-2]["details"] == {"from_version": 1, "fields": ["recognition"]}


async def test_a_version_stored_without_terms_reads_as_the_defaults(session: AsyncSession) -> None:
    users = await create_users(session)
    await library.create_item(
        session,
        users["jxj_staff"],
        ItemCreate.model_validate(item_payload(category="recognition")),
    )
    row = await library.get_version(session, "TEST-ITEM-01", 1)
    row.recognition_terms = None  # as a row written before items had terms
    assert recognition_terms(row) == RecognitionTerms()
    assert library.version_public(row).recognition == RecognitionTerms()


async def test_the_sample_library_carries_its_terms(session: AsyncSession) -> None:
    await create_users(session)
    await load_policies(session)
    giant = await library.get_version(session, "HZ-JXJ-02", 1)
    assert recognition_terms(giant) == RecognitionTerms(
        straight_through=True, confirmation=ConfirmationRule.UNLESS_VERIFIED
    )
    high_tech = await library.get_version(session, "HZ-KJJ-02", 1)
    assert (
        high_tech.recognition_terms["remind_after_days"],
        high_tech.recognition_terms["expire_after_days"],
    ) == (5, 20)
    assert (await library.get_version(session, "HZ-JXJ-04", 1)).recognition_terms == (
        RecognitionTerms().model_dump(mode="json")
    )
    assert (await library.get_version(session, "HZ-JXJ-01", 1)).recognition_terms is None


def test_about_half_the_sample_accounts_were_verified_by_a_payment() -> None:
    as_of = date(2026, 12, 3)
    verified = [a["verified_at"] for _e, _f, a in generate(400, as_of)]
    assert 120 < sum(v is not None for v in verified) < 280
    assert {v for v in verified if v is not None} == {datetime(2025, 12, 15, 2, tzinfo=UTC)}


# ----- accounts verified by a payment -------------------------------------------------


@pytest.fixture
async def payments(
    session: AsyncSession, budget_simulator: httpx.AsyncClient, budget_simulator_url: str
) -> Any:
    """The real payment activities, on the test's transaction and the budget simulator
    (receipts at once)."""
    await budget_simulator.put("/v1/_simulator/config", json={"seed": 7, "receipt_delay_s": 0})
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=5) as http:
        yield PaymentActivities(
            async_sessionmaker(
                session.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            ),
            BudgetSystemClient(http),
        )


async def _published_item(session: AsyncSession, staff: Actor, code: str) -> None:
    await library.create_item(session, staff, ItemCreate.model_validate(item_payload(code)))
    await library.submit_version(session, staff, code, 1, **DAYS)
    await library.publish_version(session, code, 1)
    await budget.set_quota(session, code, YEAR, 100_000_000, "czj_staff")


async def _firm(session: AsyncSession, account_number: str | None = None) -> Enterprise:
    firm = await create_enterprise(session, account=account_number is None)
    if account_number is not None:
        await _add_account(session, firm, account_number)
    return firm


async def _add_account(session: AsyncSession, firm: Enterprise, number: str) -> BankAccount:
    await session.execute(
        sa.update(BankAccount).where(col(BankAccount.uscc) == firm.uscc).values(is_default=False)
    )
    account = BankAccount(
        uscc=firm.uscc,
        bank_name="湖州银行",
        account_name=firm.name,
        account_number=number,
        is_default=True,
    )
    session.add(account)
    await session.flush()
    return account


async def _pay(
    session: AsyncSession, payments: PaymentActivities, firm: Enterprise, code: str
) -> tuple[PaymentRequest, PaymentOutcome]:
    """Reserve, instruct and wait for the instalment's settlement, as the payment
    workflow does; returns how it settled (not yet recorded)."""
    request = PaymentRequest(
        case_id=f"application/{code}/{YEAR}/{firm.uscc}",
        instalment=1,
        item_code=code,
        year=YEAR,
        uscc=firm.uscc,
        amount_fen=5_000_000,
        purpose="测试补助",
    )
    await budget.reserve(session, request.case_id, 1, code, YEAR, request.amount_fen)
    env = ActivityEnvironment()
    await env.run(payments.send_instruction, request)
    for _ in range(50):
        try:
            outcome: PaymentOutcome = await env.run(payments.await_settlement, request)
            return request, outcome
        except ApplicationError as exc:
            assert exc.type == ErrorType.NOT_SETTLED
    raise AssertionError("the simulator never settled the payment")


async def _verified(session: AsyncSession, uscc: str) -> bool:
    session.expire_all()  # the activities wrote through sessions of their own
    return await cases.verified_account(session, uscc)


def _execution(env: ActivityEnvironment, case_id: str) -> ActivityEnvironment:
    env.info = dataclasses.replace(
        env.info, workflow_id=f"{case_id}/payment-1", workflow_run_id="run-1", activity_id="9"
    )
    return env


async def test_a_receipt_verifies_the_account_it_was_paid_into(
    session: AsyncSession, payments: PaymentActivities
) -> None:
    users = await create_users(session)
    await _published_item(session, users["jxj_staff"], "VERIFY-1")
    firm = await _firm(session)
    assert await cases.verified_account(session, firm.uscc) is False

    request, outcome = await _pay(session, payments, firm, "VERIFY-1")
    assert outcome.state == "paid"
    assert await cases.verified_account(session, firm.uscc) is False  # instructed is not paid
    for _ in range(2):  # a retried activity changes nothing
        await ActivityEnvironment().run(payments.record_receipt, request, outcome)
    uscc = firm.uscc
    assert await _verified(session, uscc) is True
    _, account = await cases.default_payee(session, uscc)
    assert account.verified_at is not None and account.verified_at.tzinfo is not None


async def test_the_paid_account_is_verified_not_a_newer_default(
    session: AsyncSession, payments: PaymentActivities
) -> None:
    users = await create_users(session)
    await _published_item(session, users["jxj_staff"], "VERIFY-2")
    firm = await _firm(session, "6222000033334444555")
    request, outcome = await _pay(session, payments, firm, "VERIFY-2")
    newer = await _add_account(session, firm, "6222000066667777888")  # changed meanwhile
    await ActivityEnvironment().run(payments.record_receipt, request, outcome)

    assert await _verified(session, firm.uscc) is False
    await session.refresh(newer)
    assert newer.verified_at is None
    paid = await session.scalar(
        select(BankAccount).where(BankAccount.account_number == "6222000033334444555")
    )
    assert paid is not None and paid.verified_at is not None


async def test_a_returned_payment_never_verifies_and_unverifies(
    session: AsyncSession, payments: PaymentActivities
) -> None:
    users = await create_users(session)
    await _published_item(session, users["jxj_staff"], "VERIFY-3")
    firm = await _firm(session, "62220000111100000")  # closed: the simulator returns it
    await create_users(session, enterprise_uscc=firm.uscc)  # the firm is told of the return
    _, account = await cases.default_payee(session, firm.uscc)
    account.verified_at = datetime(2025, 12, 15, 2, tzinfo=UTC)  # by an earlier payment
    await session.flush()
    assert await cases.verified_account(session, firm.uscc) is True

    request, outcome = await _pay(session, payments, firm, "VERIFY-3")
    assert outcome.state == "returned"
    env = _execution(ActivityEnvironment(), request.case_id)
    await env.run(payments.record_returned_payment, request, outcome)
    assert await _verified(session, firm.uscc) is False


async def test_an_instruction_recorded_without_its_account_verifies_nothing(
    session: AsyncSession,
) -> None:
    users = await create_users(session)
    await _published_item(session, users["jxj_staff"], "VERIFY-4")
    firm = await _firm(session)
    case_id = f"application/VERIFY-4/{YEAR}/{firm.uscc}"
    await budget.reserve(session, case_id, 1, "VERIFY-4", YEAR, 1_000)
    # As an instruction made before the ledger kept the payee account.
    await budget.record_instruction(session, case_id, 1, f"zhida:{case_id}:1", "V1")
    await budget.consume(session, case_id, 1, voucher_no="V1", bank_serial="B1")
    await cases.record_paid_account(session, firm.uscc, case_id, 1, datetime.now(UTC))
    assert await budget.instructed_account(session, case_id, 1) is None
    assert await cases.verified_account(session, firm.uscc) is False


async def test_a_firm_without_an_account_is_not_verified(session: AsyncSession) -> None:
    firm = await create_enterprise(session, account=False)
    assert await cases.verified_account(session, firm.uscc) is False


async def test_the_firm_sees_which_account_is_verified(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    firm = await create_enterprise(session)
    await create_users(session, enterprise_uscc=firm.uscc)
    _, account = await cases.default_payee(session, firm.uscc)
    account.verified_at = datetime(2025, 12, 15, 2, tzinfo=UTC)
    await session.flush()
    detail = await api.get(f"/api/v1/enterprises/{firm.uscc}", headers=auth(settings, "qiye"))
    assert detail.status_code == 200, detail.text
    assert detail.json()["accounts"][0]["verified_at"] == "2025-12-15T02:00:00Z"
