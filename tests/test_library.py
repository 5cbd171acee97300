"""Policy library services against a real database."""

from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from domain import cases
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.policy import library
from models.cases import ApplicationRequest
from models.policy import DraftUpdate, ItemCreate, VersionStatus
from models.reference import Actor
from tests.fixtures.factories import create_enterprise, create_users, item_payload

DAYS = {"head_review_days": 3, "finance_review_days": 5}


def _draft(**changes: object) -> DraftUpdate:
    body = {
        k: v
        for k, v in item_payload().items()
        if k not in {"code", "document", "department_code", "region_code"}
    }
    body.update(changes)
    return DraftUpdate.model_validate(body)


async def _published_item(session: AsyncSession, staff: Actor) -> None:
    await library.create_item(session, staff, ItemCreate.model_validate(item_payload()))
    await library.submit_version(session, staff, "TEST-ITEM-01", 1, **DAYS)
    await library.publish_version(session, "TEST-ITEM-01", 1)


async def test_submitted_version_is_frozen_and_new_money_needs_finance(
    session: AsyncSession,
) -> None:
    users = await create_users(session)
    staff = users["jxj_staff"]
    await library.create_item(session, staff, ItemCreate.model_validate(item_payload()))
    first = await library.submit_version(session, staff, "TEST-ITEM-01", 1, **DAYS)
    assert first.money_changed is True  # nothing published yet: finance must see it
    assert first.finance_department_code == "330500-CZJ"
    with pytest.raises(Conflict, match="under review"):
        await library.update_draft(session, staff, "TEST-ITEM-01", _draft(title="改名"))
    retried = await library.submit_version(session, staff, "TEST-ITEM-01", 1, **DAYS)
    assert retried == first  # a retried submission hands back the same workflow input


async def test_published_version_never_changes_edits_open_a_new_version(
    session: AsyncSession,
) -> None:
    users = await create_users(session)
    staff = users["jxj_staff"]
    await _published_item(session, staff)

    title_only = await library.update_draft(
        session, staff, "TEST-ITEM-01", _draft(title="新标题", change_reason="措辞")
    )
    assert (title_only.version, title_only.status) == (2, VersionStatus.DRAFT)
    v1 = await library.get_version(session, "TEST-ITEM-01", 1)
    assert (v1.title, v1.status) == ("测试补助", VersionStatus.PUBLISHED)
    change = await library.submit_version(session, staff, "TEST-ITEM-01", 2, **DAYS)
    assert change.money_changed is False  # head approval is enough

    await library.publish_version(session, "TEST-ITEM-01", 2)
    raised = await library.update_draft(
        session, staff, "TEST-ITEM-01", _draft(annual_quota_fen=200_000_000, change_reason="追加")
    )
    assert raised.version == 3
    change = await library.submit_version(session, staff, "TEST-ITEM-01", 3, **DAYS)
    assert change.money_changed is True
    assert (
        await library.get_version(session, "TEST-ITEM-01", 1)
    ).status == VersionStatus.SUPERSEDED


async def test_suspend_by_own_department_only(session: AsyncSession) -> None:
    users = await create_users(session)
    await _published_item(session, users["jxj_staff"])
    for name in ("kjj_staff", "czj_staff", "auditor", "admin"):
        with pytest.raises(Forbidden):
            await library.suspend_item(session, users[name], "TEST-ITEM-01", "暂停")
    suspended = await library.suspend_item(session, users["jxj_head"], "TEST-ITEM-01", "预算调整")
    assert suspended.status == VersionStatus.SUSPENDED
    with pytest.raises(Conflict, match="version 1 of TEST-ITEM-01 is suspended"):
        await library.suspend_item(session, users["jxj_head"], "TEST-ITEM-01", "再次")
    # A suspended item takes no application: a field of the body, so a 422 naming it.
    firm = await create_enterprise(session)
    users = await create_users(session, enterprise_uscc=firm.uscc)
    request = ApplicationRequest(item_code="TEST-ITEM-01", period="2026")
    with pytest.raises(InvalidInput) as refused:
        await cases.admit_application(session, users["qiye"], request, date(2026, 6, 1))
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("item_code", "TEST-ITEM-01 is suspended")
    ]


async def test_rejection_returns_the_version_to_draft(session: AsyncSession) -> None:
    users = await create_users(session)
    staff = users["jxj_staff"]
    await library.create_item(session, staff, ItemCreate.model_validate(item_payload()))
    await library.submit_version(session, staff, "TEST-ITEM-01", 1, **DAYS)
    await library.record_review(
        session,
        "TEST-ITEM-01",
        1,
        "department_head_review",
        False,
        users["jxj_head"],
        "依据不足",
        "wf",
    )
    version = await library.get_version(session, "TEST-ITEM-01", 1)
    assert version.status == VersionStatus.DRAFT
    detail = await library.item_detail(session, users["auditor"], "TEST-ITEM-01")
    assert [(h.action, h.actor, h.reason) for h in detail.history][-1] == (
        "rejected",
        "jxj_head",
        "依据不足",
    )
