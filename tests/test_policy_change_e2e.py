"""The whole library-change path on the real Temporal dev server: API, worker with the
real activities, a committed SQLite database; then the history replays on current code."""

import asyncio
import uuid

from sqlmodel import col, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cli.schedules import ensure_schedules
from domain.policy import library
from domain.policy.library import change_workflow_id
from models.matching import MatchRun
from models.policy import ItemCreate, VersionStatus
from tests.fixtures.api import auth
from tests.fixtures.factories import create_users, item_payload
from tests.fixtures.stack import Stack
from tests.fixtures.temporal import drop_schedules
from tests.history_store import keep_history
from workflows.library_expiry import SCHEDULE_ID
from workflows.starts import start_library_expiry


async def test_submitted_draft_is_approved_and_published(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    api, settings = stack.api, stack.settings
    code = f"E2E-{uuid.uuid4().hex[:6].upper()}"
    created = await api.post(
        "/api/v1/items", json=item_payload(code), headers=auth(settings, "jxj_staff")
    )
    assert created.status_code == 201, created.text

    submitted = await api.post(
        f"/api/v1/items/{code}/versions/1/submit", headers=auth(settings, "jxj_staff")
    )
    assert submitted.status_code == 200, submitted.text
    again = await api.post(
        f"/api/v1/items/{code}/versions/1/submit", headers=auth(settings, "jxj_staff")
    )
    assert again.status_code == 200  # a retried submit finds the same workflow

    refused = await api.post(
        f"/api/v1/items/{code}/versions/1/approve",
        json={"comment": "越权"},
        headers=auth(settings, "czj_staff"),
    )
    assert refused.status_code == 403
    assert "department_head" in refused.json()["detail"]

    head = auth(settings, "jxj_head") | {"Idempotency-Key": f"req-{uuid.uuid4()}"}
    first = await api.post(
        f"/api/v1/items/{code}/versions/1/approve", json={"comment": "同意"}, headers=head
    )
    assert first.status_code == 200, first.text
    assert first.json()["stage"] == "finance_review"
    assert first.json()["due_at"] is not None
    repeat = await api.post(
        f"/api/v1/items/{code}/versions/1/approve", json={"comment": "同意"}, headers=head
    )
    assert repeat.json() == first.json()  # the same request id is answered, not applied twice

    finance = await api.post(
        f"/api/v1/items/{code}/versions/1/approve",
        json={"comment": "资金已落实"},
        headers=auth(settings, "czj_staff"),
    )
    assert finance.status_code == 200, finance.text
    assert finance.json()["stage"] == "published"

    handle = dev_server.client.get_workflow_handle(change_workflow_id(code, 1))
    await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    detail = (await api.get(f"/api/v1/items/{code}", headers=auth(settings, "auditor"))).json()
    assert detail["published_version"] == 1
    assert detail["versions"][0]["status"] == VersionStatus.PUBLISHED
    assert [(h["action"], h["actor"]) for h in detail["history"]] == [
        ("created", "jxj_staff"),
        ("submitted", "jxj_staff"),
        ("approved", "jxj_head"),
        ("approved", "czj_staff"),
        ("published", "system"),
    ]
    late = await api.post(
        f"/api/v1/items/{code}/versions/1/approve",
        json={"comment": "迟到"},
        headers=auth(settings, "czj_staff"),
    )
    assert late.status_code == 409

    await keep_history(dev_server.client, handle, "policy-change-published")

    # The publication started a match run for this item alone.
    for _ in range(100):
        async with stack.sessionmaker() as session:
            run = await session.scalar(select(MatchRun).where(col(MatchRun.item_code) == code))
        if run is not None:
            break
        await asyncio.sleep(0.1)
    assert run is not None
    assert (run.scope, run.workflow_id, run.items) == ("item", f"match/item/{code}/v1", 1)


async def test_nightly_schedule_expires_lapsed_versions(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    code = f"E2E-{uuid.uuid4().hex[:6].upper()}"
    async with stack.sessionmaker.begin() as session:
        staff = (await create_users(session))["jxj_staff"]
        payload = item_payload(code) | {"valid_from": "2024-01-01", "valid_to": "2025-12-31"}
        await library.create_item(session, staff, ItemCreate.model_validate(payload))
        await library.submit_version(
            session, staff, code, 1, head_review_days=3, finance_review_days=5
        )
        await library.publish_version(session, code, 1)

    await ensure_schedules(dev_server.client, stack.settings.task_queue)
    await ensure_schedules(dev_server.client, stack.settings.task_queue)  # idempotent
    schedule = await dev_server.client.get_schedule_handle(SCHEDULE_ID).describe()
    await drop_schedules(dev_server.client)
    assert schedule.schedule.spec.time_zone_name == "Asia/Shanghai"

    expiry = await start_library_expiry(
        dev_server.client, stack.settings.task_queue, str(uuid.uuid4())
    )
    expired = await expiry.result()
    await keep_history(dev_server.client, expiry, "library-expiry")
    assert f"{code}/v1" in expired
    async with stack.sessionmaker() as session:
        version = await library.get_version(session, code, 1)
        assert version.status == VersionStatus.EXPIRED
