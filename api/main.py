"""The FastAPI application: thin routes over domain services and Temporal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from temporalio.client import Client

from api.deps import SessionDep, TemporalConnectionDep
from api.errors import install_error_handlers
from api.routers import cases, enterprises, items, matching, reference
from core.db import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.temporal import connect

log = structlog.get_logger()


class TemporalConnection:
    """Connects on first use and again after a failure, so the API starts without Temporal."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def get(self) -> Client | None:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect(self._settings, identity="zhida-api"), timeout=5
                    )
                except Exception as exc:
                    log.warning("temporal.unreachable", error=str(exc))
        return self._client


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        engine = make_engine(settings.database_url, echo=settings.sql_echo)
        app.state.settings = settings
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.temporal = TemporalConnection(settings, temporal)
        yield
        await engine.dispose()

    app = FastAPI(
        title="zhida 直达",
        description="财政惠企资金一键兑付直达快享 — policy library, enterprise registry, cases.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(items.router)
    app.include_router(enterprises.router)
    app.include_router(reference.router)
    app.include_router(cases.router)
    app.include_router(matching.router)

    @app.get("/healthz", tags=["ops"])
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
