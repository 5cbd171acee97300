"""Smart review end to end: API, worker with the real activities, the database, the
budget-system and public data platform simulators. Exclusivity (就高不重复) in both
orders of arrival, four-eyes clearing, evidence beside the declared figures, and a
data platform that does not answer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from domain.money import budget
from domain.policy import library
from models.policy import ItemCreate, PolicyItemVersion
from models.recognition import recognition_case_id
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload
from tests.fixtures.stack import Stack
from tests.history_store import keep_history
from tests.test_application_e2e import case_handle, final_id, reach
from tests.test_recognition_e2e import batch_phase, match
from tests.test_recognition_e2e import reach as reach_recognition
from workflows.application import ApplicationWorkflow

LOW, HIGH = 3_000_000, 5_000_000


async def publish(stack: Stack, amount: int, **extra: Any) -> str:
    code = f"REV-{uuid.uuid4().hex[:6].upper()}"
    async with stack.sessionmaker.begin() as session:
        users = await create_users(session)
        payload = item_payload(code, amount_rule={"kind": "fixed", "amount_fen": amount})
        payload.update(extra)
        await library.create_item(session, users["jxj_staff"], ItemCreate.model_validate(payload))
        await library.submit_version(
            session, users["jxj_staff"], code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)
        await budget.set_quota(session, code, 2026, 100_000_000, "czj_staff")
    return code


async def group_pair(stack: Stack) -> tuple[str, str]:
    """Two published application items of one exclusivity group: LOW and HIGH."""
    group = f"G-{uuid.uuid4().hex[:6]}"
    return (
        await publish(stack, LOW, exclusivity_group=group),
        await publish(stack, HIGH, exclusivity_group=group),
    )


async def firm(
    stack: Stack, platform: dict[str, Any] | None = None, industry: str = "C3411"
) -> str:
    """A firm that meets the items (credit A), the demo firm user's; and its record on the
    data platform (`platform`: its facts there; None: the platform does not know it)."""
    async with stack.sessionmaker.begin() as session:
        made = await create_enterprise(
            session,
            industry_code=industry,
            facts={"credit_rating": ("A", "2025"), "tax_paid_fen": (80_000_000, "2025")},
        )
        await create_users(session, enterprise_uscc=made.uscc)
    if platform is not None:
        record = {"uscc": made.uscc, "legal_representative": f"LR-{made.uscc}", "facts": platform}
        put = await stack.platform_http.put("/v1/_simulator/enterprises", json=[record])
        assert put.status_code < 300, put.text
    return made.uscc


async def start_batch(stack: Stack, code: str, seconds: float = 30) -> tuple[str, Any]:
    """The department starts the item's 2026 batch from the match library; returns its
    path and its progress once it waits for the department's verification."""
    started = await stack.api.post(
        f"/api/v1/items/{code}/recognition-batches",
        json={"item_code": code, "period": "2026"},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert started.status_code == 201, started.text
    batch = f"/api/v1/items/{code}/recognition-batches/2026/1"
    return batch, await batch_phase(stack, batch, "department_verification", seconds)


async def apply(stack: Stack, code: str, **body: Any) -> httpx.Response:
    return await stack.api.post(
        "/api/v1/cases",
        json={"item_code": code, "period": "2026", **body},
        headers=auth(stack.settings, "qiye"),
    )


async def decide(stack: Stack, code: str, uscc: str, user: str, **body: Any) -> httpx.Response:
    return await stack.api.post(
        f"/api/v1/cases/application/{code}/2026/{uscc}/decisions",
        json=body,
        headers=auth(stack.settings, user),
    )


async def pay(stack: Stack, env: WorkflowEnvironment, code: str, uscc: str, **approve: Any) -> Any:
    """Department and finance approve; returns the paid state."""
    handle = case_handle(env, final_id(code, uscc))
    await reach(handle, "department_review")
    approved = await decide(stack, code, uscc, "jxj_staff", action="approve", **approve)
    assert approved.status_code == 200, approved.text
    await reach(handle, "finance_review")
    assert (await decide(stack, code, uscc, "czj_staff", action="approve")).status_code == 200
    return await reach(handle, "paid")


async def test_higher_entitlement_after_a_lower_one_paid_gets_only_the_difference(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    low, high = await group_pair(stack)
    uscc = await firm(stack, {"credit_rating": {"value": "A", "as_of": "2026-06-30"}})
    assert (await apply(stack, low)).status_code == 201
    paid_low = await pay(stack, dev_server, low, uscc)
    assert paid_low.paid_amount_fen == LOW and paid_low.findings == []

    assert (await apply(stack, high)).status_code == 201
    handle = case_handle(dev_server, final_id(high, uscc))
    state = await reach(handle, "department_review")
    [finding] = state.findings
    assert finding.dimension.value == "exclusivity" and finding.status.value == "open"
    assert (finding.excess_fen, finding.suggested_fen) == (LOW, HIGH - LOW)
    assert finding.counterparts[0].case_id == final_id(low, uscc)
    assert any(e.action == "reviewed" and "就高不重复" in e.detail for e in state.timeline)

    # The finding holds the case: no approval that ignores it, none above what it leaves.
    refused = await decide(stack, high, uscc, "jxj_staff", action="approve")
    assert refused.status_code == 409 and f"finding {finding.id}" in refused.text
    too_much = await decide(
        stack,
        high,
        uscc,
        "jxj_staff",
        action="approve",
        amount_fen=HIGH,
        findings=[finding.id],
        reason="就高",
    )
    assert too_much.status_code == 422 and "amount_fen" in too_much.text
    paid = await pay(
        stack,
        dev_server,
        high,
        uscc,
        amount_fen=HIGH - LOW,
        findings=[finding.id],
        reason="就高不重复：已享受低档，补差额",
    )
    assert paid.paid_amount_fen == HIGH - LOW  # LOW + (HIGH - LOW): the highest, once
    assert paid.findings[0].status.value == "upheld"
    assert any(e.action == "finding_upheld" for e in paid.timeline)

    # Listed for finance and auditors, with the money by dimension.
    for user in ("czj_staff", "auditor", "jxj_staff"):
        listed = await stack.api.get(
            "/api/v1/findings", params={"item_code": high}, headers=auth(stack.settings, user)
        )
        assert listed.status_code == 200 and listed.json()["total"] == 1, (user, listed.text)
    summary = await stack.api.get(
        "/api/v1/findings/summary",
        params={"item_code": high},
        headers=auth(stack.settings, "auditor"),
    )
    assert summary.json() == [
        {
            "dimension": "exclusivity",
            "status": "upheld",
            "findings": 1,
            "cases": 1,
            "amount_held_fen": HIGH,
            "excess_fen": LOW,
            "dimension_label": "同组政策就高不重复",
        }
    ]
    other = await stack.api.get("/api/v1/findings", headers=auth(stack.settings, "kjj_staff"))
    assert all(f["item_code"] != high for f in other.json()["items"])
    await keep_history(dev_server.client, handle, "application-smart-review")


async def test_lower_entitlement_after_a_higher_one_paid_is_rejected_citing_it(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    low, high = await group_pair(stack)
    uscc = await firm(stack, {})
    assert (await apply(stack, high)).status_code == 201
    await pay(stack, dev_server, high, uscc)
    assert (await apply(stack, low)).status_code == 201
    handle = case_handle(dev_server, final_id(low, uscc))
    [finding] = (await reach(handle, "department_review")).findings
    assert finding.suggested_fen == 0
    # Nothing is due: any approval citing it is above what it leaves.
    approve = await decide(
        stack,
        low,
        uscc,
        "jxj_staff",
        action="approve",
        amount_fen=1,
        findings=[finding.id],
        reason="x",
    )
    assert approve.status_code == 422
    rejected = await decide(
        stack,
        low,
        uscc,
        "jxj_staff",
        action="reject",
        findings=[finding.id],
        reason="已享受同组较高政策",
    )
    assert rejected.status_code == 200, rejected.text
    state = await reach(handle, "rejected")
    assert state.findings[0].status.value == "upheld" and state.paid_amount_fen == 0


async def test_clearing_a_finding_takes_two_reviewers(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    first, second = await publish(stack, LOW), await publish(stack, HIGH)
    uscc = await firm(stack, {})
    bought = {"name": "研发设备购置", "location": "吴兴区织里镇1号", "invoices": ["04412345"]}
    assert (await apply(stack, first, project=bought)).status_code == 201
    await pay(stack, dev_server, first, uscc)
    other = {
        "name": "厂房屋顶光伏",
        "location": "吴兴区织里镇1号",
        "invoices": ["0441 2345", "777"],
    }
    assert (await apply(stack, second, project=other)).status_code == 201
    handle = case_handle(dev_server, final_id(second, uscc))
    [finding] = (await reach(handle, "department_review")).findings
    assert finding.dimension.value == "invoice" and finding.evidence["invoices"] == ["04412345"]
    clear = f"/api/v1/cases/application/{second}/2026/{uscc}/findings/{finding.id}/clearance"
    headers = {u: auth(stack.settings, u) for u in ("jxj_staff", "jxj_head", "qiye", "kjj_staff")}

    assert (
        await stack.api.post(clear, json={"reason": ""}, headers=headers["jxj_staff"])
    ).status_code == 422
    assert (
        await stack.api.post(clear, json={"reason": "x"}, headers=headers["qiye"])
    ).status_code == 403
    assert (
        await stack.api.post(clear, json={"reason": "x"}, headers=headers["kjj_staff"])
    ).status_code == 403
    proposed = await stack.api.post(
        clear,
        json={"reason": "发票号系票据代码部分相同，实为不同发票"},
        headers=headers["jxj_staff"],
    )
    assert proposed.status_code == 200, proposed.text
    assert proposed.json()["findings"][0]["status"] == "clearing"
    again = await stack.api.post(clear, json={"reason": "确认"}, headers=headers["jxj_staff"])
    assert again.status_code == 403 and "second person" in again.text
    held = await decide(stack, second, uscc, "jxj_staff", action="approve")
    assert held.status_code == 409
    confirmed = await stack.api.post(
        clear, json={"reason": "复核属实"}, headers=headers["jxj_head"]
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["findings"][0]["status"] == "cleared"
    done = await stack.api.post(clear, json={"reason": "x"}, headers=headers["jxj_head"])
    assert done.status_code == 409
    paid = await pay(stack, dev_server, second, uscc)
    assert paid.paid_amount_fen == HIGH
    actions = [e.action for e in paid.timeline]
    assert actions.index("finding_clear_proposed") < actions.index("finding_cleared")
    cleared = next(e for e in paid.timeline if e.action == "finding_cleared")
    assert "jxj_staff" in cleared.detail and cleared.actor == "jxj_head"


async def test_evidence_from_data_beside_the_declared_figures(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = await publish(
        stack,
        LOW,
        review={"evidence_facts": ["tax_paid_fen", "social_security_headcount", "patent_count"]},
    )
    uscc = await firm(
        stack,
        {
            "credit_rating": {"value": "A", "as_of": "2026-06-30"},
            "tax_paid_fen": {"value": 50_000_000, "as_of": "2025-12-31"},
            "patent_count": {"value": 3, "as_of": "2020-12-31"},
        },
    )
    assert (await apply(stack, code, declared={"patent_count": 3})).status_code == 201
    state = await reach(case_handle(dev_server, final_id(code, uscc)), "department_review")
    evidence = {e.kind: e for e in state.evidence}
    assert evidence["credit_rating"].status.value == "confirmed"
    assert evidence["credit_rating"].source == "市信用办" and evidence["credit_rating"].retrieved_at
    tax = evidence["tax_paid_fen"]  # the registry says 80,000,000
    assert (tax.status.value, tax.declared, tax.data) == ("mismatch", 80_000_000, 50_000_000)
    assert tax.declared_source == "企业库"
    assert evidence["patent_count"].status.value == "stale"
    assert evidence["patent_count"].declared_source == "企业申报"
    assert evidence["social_security_headcount"].status.value == "missing"
    shown = "\n".join(state.to_verify)
    assert "实缴税金" in shown and "社保参保人数" in shown and "有效专利数" in shown


async def test_a_data_platform_that_does_not_answer_is_waited_for_then_marked_unknown(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = await publish(stack, LOW)
    uscc = await firm(stack, {"credit_rating": {"value": "A", "as_of": "2026-06-30"}})
    await stack.platform_http.put("/v1/_simulator/config", json={"failure_rate": 1})
    try:
        assert (await apply(stack, code)).status_code == 201
        handle = case_handle(dev_server, final_id(code, uscc))
        await asyncio.sleep(1.5)
        waiting = await handle.query(ApplicationWorkflow.state)
        assert waiting.stage.value == "check"  # the review waits for the platform
        state = await reach(handle, "department_review")  # ...then goes on, marked
    finally:
        await stack.platform_http.put("/v1/_simulator/config", json={"failure_rate": 0})
    credit = next(e for e in state.evidence if e.kind == "credit_rating")
    assert credit.status.value == "unavailable" and "公共数据平台暂不可用" in credit.reason
    assert any("信用" in line and "不可用" in line for line in state.to_verify)


async def test_a_recognition_batch_lists_a_duplicate_apart_and_its_review_pays_the_difference(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    """A firm already paid under an item of the group is listed apart with its finding;
    included by name, its own review is held by the finding until the department
    upholds it, approving only the difference."""
    group, industry = f"G-{uuid.uuid4().hex[:6]}", f"C{uuid.uuid4().int % 10**4:04d}"
    application = await publish(stack, LOW, exclusivity_group=group)
    recognition = await publish(
        stack,
        HIGH,
        exclusivity_group=group,
        category="recognition",
        eligibility={"all": [{"fact": "industry_code", "op": "eq", "value": industry}]},
        stages=item_payload("X", category="recognition")["stages"],
    )
    duplicate = await firm(stack, {}, industry=industry)
    assert (await apply(stack, application)).status_code == 201
    await pay(stack, dev_server, application, duplicate)
    clean = await firm(stack, {}, industry=industry)
    await match(stack, recognition)
    headers = {u: auth(stack.settings, u) for u in ("jxj_staff", "czj_staff", "auditor")}
    batch, progress = await start_batch(stack, recognition)
    assert (progress["identified"], progress["possible"]) == (2, 1)
    apart = await stack.api.get(
        f"{batch}/firms", params={"status": "possible"}, headers=headers["jxj_staff"]
    )
    [entry] = apart.json()["items"]
    assert entry["uscc"] == duplicate and any("[查重]" in f for f in entry["flags"])

    async def finding() -> dict[str, Any]:
        listed = await stack.api.get(
            "/api/v1/findings", params={"item_code": recognition}, headers=headers["auditor"]
        )
        [one] = listed.json()["items"]
        return dict(one)

    first = await finding()
    assert (first["dimension"], first["status"], first["uscc"]) == (
        "exclusivity",
        "open",
        duplicate,
    )
    assert first["suggested_fen"] == HIGH - LOW
    included = await stack.api.post(
        f"{batch}/department-verification",
        json={"include": [{"uscc": duplicate, "reason": "已享受低档，本批次只补差额"}]},
        headers=headers["jxj_staff"],
    )
    assert included.status_code == 200, included.text
    assert (await finding())["status"] == "open"  # including a firm decides nothing about it
    progress = await batch_phase(stack, batch, "finance_verification")
    approved = await stack.api.post(
        f"{batch}/finance-verification",
        json={"action": "approve", "expected_total_fen": progress["department_verified_total_fen"]},
        headers=headers["czj_staff"],
    )
    assert approved.status_code == 200, approved.text
    assert clean != duplicate

    # Reviewed on its own, the firm's case is held by the finding.
    case_id = recognition_case_id(recognition, "2026", duplicate)
    state = await reach_recognition(dev_server, case_id, "department_review")
    assert [f.status.value for f in state.findings] == ["open"]
    assert any(e.action == "reviewed" and "就高不重复" in e.detail for e in state.timeline)
    decisions = f"/api/v1/cases/recognition/{recognition}/2026/{duplicate}/decisions"
    held = await stack.api.post(decisions, json={"action": "approve"}, headers=headers["jxj_staff"])
    assert held.status_code == 409, held.text
    upheld = await stack.api.post(
        decisions,
        json={
            "action": "approve",
            "amount_fen": HIGH - LOW,
            "findings": [first["id"]],
            "reason": "就高不重复，补差额",
        },
        headers=headers["jxj_staff"],
    )
    assert upheld.status_code == 200, upheld.text
    assert upheld.json()["approved_amount_fen"] == HIGH - LOW
    assert (await finding())["status"] == "upheld"
    rejected = await stack.api.post(
        decisions, json={"action": "reject", "reason": "测试结束"}, headers=headers["czj_staff"]
    )
    assert rejected.status_code == 200, rejected.text
    await reach_recognition(dev_server, case_id, "rejected")
    handle = dev_server.client.get_workflow_handle(case_id)
    await keep_history(dev_server.client, handle, "recognition-smart-review-upheld")


async def test_related_firms_in_one_batch_past_the_cap_are_listed_apart(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    """Two firms sharing a legal representative (the data platform says so), both found
    by one batch, together past the per-firm cap: both listed apart; an unrelated firm is
    listed."""
    industry = f"C{uuid.uuid4().int % 10**4:04d}"
    code = await publish(
        stack,
        HIGH,
        category="recognition",
        eligibility={"all": [{"fact": "industry_code", "op": "eq", "value": industry}]},
        stages=item_payload("X", category="recognition")["stages"],
        review={"dimensions": ["firm_group"], "firm_group_cap_fen": HIGH + HIGH // 2},
    )
    sisters = [await firm(stack, {}, industry=industry) for _ in range(2)]
    alone = await firm(stack, {}, industry=industry)
    shared = [{"uscc": u, "legal_representative": "LR-SHARED", "facts": {}} for u in sisters]
    assert (await stack.platform_http.put("/v1/_simulator/enterprises", json=shared)).is_success
    await match(stack, code)
    _batch, progress = await start_batch(stack, code)
    assert (progress["identified"], progress["possible"]) == (3, 2)
    listed = await stack.api.get(
        "/api/v1/findings", params={"item_code": code}, headers=auth(stack.settings, "auditor")
    )
    found = {f["uscc"]: f for f in listed.json()["items"]}
    assert sorted(found) == sorted(sisters) and alone not in found
    one = found[sisters[0]]
    assert one["dimension"] == "firm_group" and one["excess_fen"] == HIGH // 2
    assert one["evidence"]["related"][0]["uscc"] == sisters[1]


async def test_a_finding_lapses_when_its_case_is_withdrawn(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    low, high = await group_pair(stack)
    uscc = await firm(stack, {})
    assert (await apply(stack, high)).status_code == 201
    # The higher claim reviewed first: a check sees the claims of reviews made before it.
    await reach(case_handle(dev_server, final_id(high, uscc)), "department_review")
    assert (await apply(stack, low)).status_code == 201
    handle = case_handle(dev_server, final_id(low, uscc))
    [finding] = (await reach(handle, "department_review")).findings
    assert finding.status.value == "open"
    withdrawn = await stack.api.post(
        f"/api/v1/cases/application/{low}/2026/{uscc}/withdrawal",
        json={"reason": "已申报同组较高档"},
        headers=auth(stack.settings, "qiye"),
    )
    assert withdrawn.status_code == 200, withdrawn.text
    await reach(handle, "withdrawn")
    for _ in range(50):  # the projection is written just after the stage changes
        listed = await stack.api.get(
            "/api/v1/findings", params={"item_code": low}, headers=auth(stack.settings, "auditor")
        )
        if listed.json()["items"][0]["status"] == "lapsed":
            break
        await asyncio.sleep(0.1)
    assert listed.json()["items"][0]["status"] == "lapsed"


async def test_a_review_that_cannot_be_done_leaves_the_case_to_a_person(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    """Review checks planted unreadable in the database: the case is not stranded at its
    check, it goes to review with what was not done marked."""
    code = await publish(stack, LOW)
    async with stack.sessionmaker.begin() as session:
        await session.execute(
            sa.update(PolicyItemVersion)
            .where(col(PolicyItemVersion.item_code) == code)
            .values(review_checks={"dimensions": ["no-such-dimension"]})
        )
    uscc = await firm(stack, {})
    assert (await apply(stack, code)).status_code == 201
    state = await reach(case_handle(dev_server, final_id(code, uscc)), "department_review")
    assert any("智能审核未能完成" in line for line in state.to_verify)
    assert any(e.action == "review_failed" for e in state.timeline)


async def test_a_batch_whose_firm_groups_cannot_be_checked_lists_every_firm_apart(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    """The data platform does not answer: the batch waits, then lists its firms apart,
    each with a finding saying the firm group check was not made."""
    industry = f"C{uuid.uuid4().int % 10**4:04d}"
    code = await publish(
        stack,
        HIGH,
        category="recognition",
        eligibility={"all": [{"fact": "industry_code", "op": "eq", "value": industry}]},
        stages=item_payload("X", category="recognition")["stages"],
        review={"dimensions": ["firm_group"]},
    )
    firms = [await firm(stack, {}, industry=industry) for _ in range(2)]
    await match(stack, code)
    await stack.platform_http.put("/v1/_simulator/config", json={"failure_rate": 1})
    try:
        _batch, progress = await start_batch(stack, code, seconds=40)
    finally:
        await stack.platform_http.put("/v1/_simulator/config", json={"failure_rate": 0})
    assert (progress["identified"], progress["possible"]) == (2, 2)
    listed = await stack.api.get(
        "/api/v1/findings", params={"item_code": code}, headers=auth(stack.settings, "auditor")
    )
    assert sorted(f["uscc"] for f in listed.json()["items"]) == sorted(firms)
    assert all("未核查" in f["summary"] for f in listed.json()["items"])
