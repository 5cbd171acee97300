"""A commitment over HTTP on the real dev server, as the firm, the department, finance
and an auditor use it: the letter, committing with odd input, the joint review in both
units' inboxes, the prepayment through the budget-system simulator, progress, the
extension, and the case as everyone reads it."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from core.workdays import SHANGHAI
from domain.policy import library
from models.budget_system import recovery_key
from models.reference import Role, User
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise
from tests.fixtures.stack import Stack
from tests.test_commitment_workflow import COMMITTED, COMMITTED_FEN, PREPAID_FEN, commitment_item


async def firm_of(stack: Stack, code: str) -> str:
    async with stack.sessionmaker.begin() as session:
        industry = (await library.get_version(session, code, 1)).summary
        enterprise = await create_enterprise(session, industry_code=industry)
        session.add(
            User(
                name=f"u{enterprise.uscc}",
                display_name="企业用户",
                role=Role.ENTERPRISE,
                enterprise_uscc=enterprise.uscc,
            )
        )
    return enterprise.uscc


def body(code: str, sha256: str, **project: Any) -> dict[str, Any]:
    today = datetime.now(SHANGHAI).date()
    return {
        "item_code": code,
        "period": "2026",
        "project": {
            "name": "智能装备技改项目",
            "location": "湖州市吴兴区",
            "committed": dict(COMMITTED),
            "completion_date": (today + timedelta(days=400)).isoformat(),
            **project,
        },
        "letter": {"letter_sha256": sha256, "accepted": True},
    }


async def state_at(stack: Stack, path: str, user: str, stage: str) -> dict[str, Any]:
    read: dict[str, Any] = {}
    for _ in range(300):
        response = await stack.api.get(path, headers=auth(stack.settings, user))
        if response.status_code == 200:
            read = response.json()
            if read["stage"] == stage:
                return read
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never reached {stage}: {read.get('stage')}")


async def in_inbox(stack: Stack, unit: str, case_id: str) -> bool:
    for _ in range(50):
        inbox = await stack.api.get("/api/v1/inbox", headers=auth(stack.settings, unit))
        if case_id in [c["case_id"] for c in inbox.json()["items"]]:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_firm_commits_and_both_units_approve_over_http(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = await commitment_item(stack)
    uscc = await firm_of(stack, code)
    firm = auth(stack.settings, f"u{uscc}")
    letter = await stack.api.get(f"/api/v1/items/{code}/commitment-letter", headers=firm)
    assert letter.status_code == 200, letter.text
    sha = letter.json()["sha256"]
    assert "承诺" in letter.json()["text"] and len(sha) == 64

    # Odd input: each a 422 naming its field, and nothing claimed.
    wrong = [
        (body(code, "0" * 64), "letter.letter_sha256"),
        (body(code, sha, committed={"tax_paid_fen": 1}), "project.committed"),
        (body(code, sha, committed={**COMMITTED, "tax_paid_fen": -5}), "project.committed"),
        (body(code, sha, completion_date="2020-01-01"), "project.completion_date"),
        (body(code, sha, completion_date="2035-01-01"), "project.completion_date"),
        ({**body(code, sha), "period": "2031"}, "period"),
    ]
    for payload, field in wrong:
        refused = await stack.api.post("/api/v1/commitments", json=payload, headers=firm)
        assert refused.status_code == 422, (field, refused.text)
        named = [e["field"] for e in refused.json()["errors"]]
        assert any(n.startswith(field) for n in named), (field, named)
    as_department = await stack.api.post(
        "/api/v1/commitments", json=body(code, sha), headers=auth(stack.settings, "jxj_staff")
    )
    assert as_department.status_code == 403

    made = await stack.api.post("/api/v1/commitments", json=body(code, sha), headers=firm)
    assert made.status_code == 201, made.text
    again = await stack.api.post("/api/v1/commitments", json=body(code, sha), headers=firm)
    assert again.status_code == 200 and again.json()["case_id"] == made.json()["case_id"]
    path = f"/api/v1/cases/commitment/{code}/2026/{uscc}"
    state = await state_at(stack, path, f"u{uscc}", "joint_review")
    signature = state["commitment"]["signature"]
    assert signature["letter_sha256"] == sha and signature["signer"] == f"u{uscc}"
    assert state["commitment"]["committed_fen"] == COMMITTED_FEN

    # Both units see it in their inbox at once (parallel review), once the projection
    # the workflow writes on entering the stage is in (a page refreshed a moment later).
    for unit in ("jxj_staff", "czj_staff"):
        assert await in_inbox(stack, unit, state["case_id"]), unit
    approve = {"action": "approve"}
    first = await stack.api.post(
        f"{path}/decisions", json=approve, headers=auth(stack.settings, "czj_staff")
    )
    assert first.status_code == 200, first.text
    twice = await stack.api.post(
        f"{path}/decisions", json=approve, headers=auth(stack.settings, "czj_staff")
    )
    assert twice.status_code == 409  # finance decided this round already
    higher = await stack.api.post(
        f"{path}/decisions",
        json={"action": "approve", "amount_fen": COMMITTED_FEN + 1},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert higher.status_code == 422 and higher.json()["errors"][0]["field"] == "amount_fen"
    second = await stack.api.post(
        f"{path}/decisions", json=approve, headers=auth(stack.settings, "jxj_staff")
    )
    assert second.status_code == 200, second.text

    state = await state_at(stack, path, f"u{uscc}", "project")
    assert state["paid_amount_fen"] == PREPAID_FEN
    progress = await stack.api.post(
        f"{path}/progress", json={"note": "设备安装完成 70%"}, headers=firm
    )
    assert progress.status_code == 200, progress.text
    completion_date = date.fromisoformat(state["commitment"]["completion_date"])
    extension = await stack.api.post(
        f"{path}/extension",
        json={
            "completion_date": (completion_date + timedelta(days=60)).isoformat(),
            "reason": "设备延期到货",
        },
        headers=firm,
    )
    assert extension.status_code == 200, extension.text
    no_reason = await stack.api.post(
        f"{path}/extension-decision",
        json={"approve": True, "reason": ""},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert no_reason.status_code == 422  # a decision needs its reason
    by_finance = await stack.api.post(
        f"{path}/extension-decision",
        json={"approve": True, "reason": "属实"},
        headers=auth(stack.settings, "czj_staff"),
    )
    assert by_finance.status_code == 403
    decided = await stack.api.post(
        f"{path}/extension-decision",
        json={"approve": True, "reason": "供应商原因属实"},
        headers=auth(stack.settings, "jxj_staff"),
    )
    assert decided.status_code == 200, decided.text
    moved = decided.json()["commitment"]["completion_date"]
    assert moved == (completion_date + timedelta(days=60)).isoformat()
    # Nothing to waive or plan yet; the recovery routes say so.
    waive = await stack.api.post(
        f"{path}/recovery/waiver", json={"reason": "x"}, headers=auth(stack.settings, "czj_head")
    )
    assert waive.status_code == 409, waive.text
    audit = await stack.api.get(path, headers=auth(stack.settings, "auditor"))
    assert audit.status_code == 200
    actions = [e["action"] for e in audit.json()["timeline"]]
    assert (
        actions[:4] == ["signed", "checked", "reviewed", "approve"]
        and "extension_decided" in actions
    )
    # The prepayment went through the budget system: reconciled, nothing recovered yet.
    statement = await stack.budget_http.get("/v1/recoveries")
    assert recovery_key(state["case_id"]) not in [r["idempotency_key"] for r in statement.json()]
    # The auditor's story of the running case: its live state, the prepayment's workflow,
    # ledger and budget-system record, and a replay of both on the current code.
    auditor = auth(stack.settings, "auditor")
    story = await stack.api.get(
        f"/api/v1/audit/cases/commitment/{code}/2026/{uscc}", headers=auditor
    )
    assert story.status_code == 200, story.text
    told = story.json()
    assert (told["state_source"], told["state"]["stage"]) == ("query", "project")
    assert {w["workflow_type"] for w in told["workflows"]} == {
        "CommitmentWorkflow",
        "PaymentWorkflow",
    }
    assert "prepayment" in [line["kind"] for line in told["ledger"]]
    assert [r["amount_fen"] for r in told["budget_system"]] == [PREPAID_FEN]
    assert told["policy_version"]["commitment_terms"] is not None
    replay = await stack.api.get(
        f"/api/v1/audit/cases/commitment/{code}/2026/{uscc}/replay", headers=auditor
    )
    assert replay.json()["identical"] == replay.json()["replayed"] == 2
    await dev_server.client.get_workflow_handle(state["case_id"]).terminate("test over")
