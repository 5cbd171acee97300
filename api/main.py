"""The FastAPI application: thin routes over domain services and Temporal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from adapters.budget_system import BudgetSystemClient
from api.access import access
from api.audit_trail import AuditTrailMiddleware
from api.deps import (
    SessionDep,
    TemporalConnectionDep,
    refuse_nul_in_query,
    require_readable_body,
)
from api.errors import RETRY_AFTER_S, install_error_handlers
from api.idempotency import IdempotencyMiddleware
from api.middleware import (
    MAX_BODY_BYTES,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    describe_size,
)
from api.openapi import install_openapi
from api.routers import (
    audit,
    cases,
    codec,
    commitments,
    dashboard,
    intake,
    matching,
    policy,
    public,
    recognition,
    reference,
    registry,
    review,
)
from api.web.pages import router as web_pages
from api.web.public import router as public_pages
from core.codec import EncryptionCodec, key_ring
from core.db import make_engine, make_read_sessionmaker, make_sessionmaker, make_sqlite_reader
from core.logging import configure_logging
from core.oidc import OidcVerifier
from core.settings import Environment, Settings, get_settings
from core.temporal import connect_for_requests
from domain.access import Rule
from domain.recognition import upload
from domain.registry.enterprises import FACT_TABLES

log = structlog.get_logger()


# The import's file may be 200 MiB; its multipart framing needs a little more.
IMPORT_BODY_BYTES = registry.MAX_IMPORT_BYTES + 2**20
# A recognition list (up to 100,000 firms) and a list verification naming up to 5,000
# firms each way with a reason each.
UPLOAD_BODY_BYTES = upload.MAX_UPLOAD_BYTES + 2**20
VERIFICATION_BODY_BYTES = 24 * 2**20
# The database's pool wait of a request (core/db.py has the connect timeout).
POOL_TIMEOUT_S = 2.0
# What is kept of a request once its work is done (its audit event, the answer stored
# under its Idempotency-Key) has a small pool of its own that waits longer: a write done
# must not lose its trail because requests took every connection (seen under load:
# "audit.write_not_logged"). Claiming a key, before the work, fails fast like a request.
BOOKKEEPING_POOL_SIZE = 4
BOOKKEEPING_POOL_TIMEOUT_S = 30.0


class TemporalConnection:
    """Connects on first use, so the API starts without Temporal. After a failed attempt
    it tries again only once RETRY_AFTER_S seconds have passed: meanwhile requests that
    need Temporal are answered 503 at once, not each held up by another attempt."""

    CONNECT_TIMEOUT_S = 2.0

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None

    def _waiting(self) -> bool:
        return self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER_S

    async def get(self) -> Client | None:
        if self._client is not None or self._waiting():
            return self._client
        async with self._lock:
            if self._client is None and not self._waiting():
                try:
                    self._client = await asyncio.wait_for(
                        connect_for_requests(self._settings, identity="zhida-api"),
                        timeout=self.CONNECT_TIMEOUT_S,
                    )
                    self._failed_at = None
                except Exception as exc:
                    self._failed_at = time.monotonic()
                    log.warning(
                        "temporal.unreachable",
                        address=self._settings.temporal_address,
                        error=str(exc) or type(exc).__name__,
                        retry_in_s=RETRY_AFTER_S,
                    )
        return self._client


class Health(BaseModel):
    ok: bool
    database: dict[str, Any]
    temporal: dict[str, Any]


async def _preload_facts(readers: async_sessionmaker[AsyncSession]) -> None:
    """Every firm's facts into this process's copy (`FACT_TABLES`), before the first
    budget preview asks: from the snapshot the worker's match runs store, where there
    is one. A failure is logged and left to that request to meet again."""
    clock = time.perf_counter()
    try:
        async with readers() as session:
            table, _regions = await FACT_TABLES.load(session)
    except Exception:
        log.exception("facts.preload_failed")
        return
    log.info("facts.preloaded", firms=len(table), seconds=round(time.perf_counter() - clock, 1))


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        engine = make_engine(
            settings.database_url, echo=settings.sql_echo, pool_timeout_s=POOL_TIMEOUT_S
        )
        bookkeeping = make_engine(
            settings.database_url,
            echo=settings.sql_echo,
            pool_timeout_s=BOOKKEEPING_POOL_TIMEOUT_S,
            pool_size=BOOKKEEPING_POOL_SIZE,
        )
        app.state.settings = settings
        app.state.dashboard_figures = dashboard.Figures(settings.dashboard_max_age_s)
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.bookkeeping = make_sessionmaker(bookkeeping)
        # On SQLite a writer holds its pooled connection while it waits for the one write
        # lock: reads get connections of their own, so that queued writers never take
        # them all (in WAL mode a read needs no lock), and run on the event loop's
        # thread, not aiosqlite's (core/db.py). PostgreSQL shares one pool.
        # Reads of everything (a version's budget preview, the dashboards' figures) take
        # seconds of SQLite's work: on aiosqlite's threads they use the second core and
        # leave the loop free, so they get a pool of those (`bulk_read_sessionmaker`).
        readers = bulk_readers = engine
        if engine.dialect.name == "sqlite":
            readers = make_sqlite_reader(
                settings.database_url, echo=settings.sql_echo, pool_timeout_s=POOL_TIMEOUT_S
            )
            bulk_readers = make_engine(
                settings.database_url, echo=settings.sql_echo, pool_timeout_s=POOL_TIMEOUT_S
            )
        app.state.read_sessionmaker = make_read_sessionmaker(readers)
        app.state.bulk_read_sessionmaker = make_read_sessionmaker(bulk_readers)
        app.state.facts_preload = None
        if settings.preload_facts:
            app.state.facts_preload = asyncio.create_task(
                _preload_facts(app.state.bulk_read_sessionmaker)
            )
        app.state.temporal = TemporalConnection(settings, temporal)
        app.state.codec = EncryptionCodec(key_ring(settings))
        app.state.oidc = OidcVerifier(settings) if settings.oidc_issuer else None
        # The budget system's records, for auditors' stories and the cross-check.
        async with httpx.AsyncClient(
            base_url=settings.budget_system_url, timeout=settings.budget_system_timeout_s
        ) as budget_http:
            app.state.budget = BudgetSystemClient(budget_http)
            try:
                yield
            finally:
                if app.state.facts_preload is not None:
                    app.state.facts_preload.cancel()
                    await asyncio.gather(app.state.facts_preload, return_exceptions=True)
        await engine.dispose()
        await bookkeeping.dispose()
        if readers is not engine:
            await readers.dispose()
            await bulk_readers.dispose()

    app = FastAPIOffline(  # /docs and /redoc from the installed package, not a CDN
        title="zhida 直达",
        description=(
            "财政惠企资金一键兑付直达快享 — policy library, enterprise registry, cases.\n\n"
            f"- 请求体上限 {describe_size(MAX_BODY_BYTES)}（企业数据导入 "
            "`POST /api/v1/imports/enterprises`：文件最多 "
            f"{describe_size(registry.MAX_IMPORT_BYTES)}，连同 multipart 封装的请求体最多 "
            f"{describe_size(IMPORT_BODY_BYTES)}；认定名单上传最多 "
            f"{describe_size(UPLOAD_BODY_BYTES)}，部门名单核定最多 "
            f"{describe_size(VERIFICATION_BODY_BYTES)}），超出即 413，边接收边计数；"
            "带 JSON 请求体的接口只接受 `application/json`，否则 415。\n"
            "- 所有错误响应均为 RFC 9457 `application/problem+json`（`Problem`），"
            "含 `correlation_id`；每个响应都带 `X-Request-ID` 头（可由客户端提供）。\n"
            "- 数据库或流程引擎（Temporal）不可用时，约 2 秒内返回 503 与 `Retry-After`。"
        ),
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(require_readable_body), Depends(refuse_nul_in_query)],
        swagger_ui_parameters={"validatorUrl": None},  # no call to the online validator
    )
    install_error_handlers(app)
    # Added before any body-size limit, so that the limit wraps it.
    app.add_middleware(IdempotencyMiddleware)
    app.include_router(policy.router)
    app.include_router(registry.router)
    app.include_router(recognition.router)
    app.include_router(reference.router)
    app.include_router(cases.router)
    app.include_router(commitments.router)
    app.include_router(matching.router)
    app.include_router(codec.router)
    app.include_router(audit.router)
    app.include_router(review.router)
    app.include_router(dashboard.router)
    app.include_router(public.router)
    app.include_router(intake.router)
    app.include_router(web_pages)  # the web pages (/ui), over the API above
    app.include_router(public_pages)  # the public catalogue (/public), no sign-in
    # Outermost last: the correlation id and last-resort renderer wrap the body limit,
    # which wraps the idempotency store (it holds the body to hash it).
    body_limits = {
        app.url_path_for("import_enterprises"): IMPORT_BODY_BYTES,
        recognition.BATCHES + "/upload": UPLOAD_BODY_BYTES,
        recognition.BATCH + "/department-verification": VERIFICATION_BODY_BYTES,
    }
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_BODY_BYTES,
        limits={("POST", path): limit for path, limit in body_limits.items()},
    )
    # Browsers may call the API only from the origins named (the Temporal UI calls the
    # codec server); production refuses to start with "*" (core/settings.py).
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace", "Idempotency-Key"],
        allow_credentials=True,
        max_age=600,
    )
    # Inside the correlation id (it logs it), outside the rest (it logs every outcome).
    app.add_middleware(AuditTrailMiddleware)
    app.add_middleware(RequestContextMiddleware)
    # Outside the correlation id's renderer, so that a last-resort 500 carries them too.
    app.add_middleware(
        SecurityHeadersMiddleware, hsts=settings.environment is Environment.PRODUCTION
    )
    install_openapi(app, body_limit=MAX_BODY_BYTES, body_limits=body_limits)

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="健康检查：数据库与流程引擎（Temporal）是否可用",
        responses={
            200: {"model": Health, "description": "都可用"},
            503: {"model": Health, "description": "至少一项不可用"},
        },
        **access(Rule.PUBLIC),
    )
    async def healthz(session: SessionDep, request_temporal: TemporalConnectionDep) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            await session.execute(sa.text("SELECT 1"))
            checks["database"] = {"ok": True, "backend": session.get_bind().dialect.name}
        except Exception as exc:
            checks["database"] = {"ok": False, "error": str(exc)}
        client = await request_temporal.get()
        if client is None:
            checks["temporal"] = {"ok": False, "error": "not connected"}
        else:
            try:
                await asyncio.wait_for(client.service_client.check_health(), timeout=3)
                checks["temporal"] = {"ok": True, "namespace": client.namespace}
            except Exception as exc:
                checks["temporal"] = {"ok": False, "error": str(exc)}
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"ok": ok, **checks}, status_code=200 if ok else 503)

    return app
