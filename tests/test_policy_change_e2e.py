"""The whole library-change path on the real Temporal dev server: API, worker with the
real activities, a committed SQLite database; then the history replays on current code."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from api.main import create_app
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.settings import Environment, Settings
from core.workdays import WorkingCalendar
from domain.library import change_workflow_id
from domain.reference_data import demo_users, ensure_reference_data, ensure_users
from models.policy import PolicyItem, VersionStatus
from tests.conftest import auth, item_payload
from workers.main import WORKFLOWS, build_worker
from workflows.policy_change import PolicyChangeWorkflow


@pytest.fixture
async def stack(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = Settings(
        environment=Environment.TEST,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}",
        task_queue=f"e2e-{uuid.uuid4()}",
        temporal_namespace=dev_server.client.namespace,
    )
    await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        await ensure_reference_data(session)
        await ensure_users(session, demo_users(None))
    app = create_app(settings, temporal=dev_server.client)
    worker = build_worker(dev_server.client, settings.task_queue, sessionmaker, WorkingCalendar())
    async with (
        worker,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e2e") as client,
    ):
        yield client, settings
    await engine.dispose()


async def test_submitted_draft_is_approved_and_published(
    stack: tuple[httpx.AsyncClient, Settings], dev_server: WorkflowEnvironment
) -> None:
    api, settings = stack
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

    history = await handle.fetch_history()
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        history
    )
    assert PolicyChangeWorkflow in WORKFLOWS
    assert PolicyItem.__tablename__ == "policy_item"
