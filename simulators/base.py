"""What every simulator of an external system shares, whatever its protocol.

Its dials, set at start and changed at run time through `/v1/_simulator/config`
(latency and a 5xx before any work, a seed for every chance it takes); its records,
journaled before the request that made them is answered (simulators/persistence.py);
a lock that makes "look up the key, else record it" one step; and the way it renders
an error. Each simulator adds its own dials, its record type and its protocol's routes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter

from simulators.persistence import RecordJournal


class Cursor:
    """An opaque cursor over a place in a feed, as a real system would give one: its
    clients keep it and send it back, and one it never gave is a 400."""

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix

    def encode(self, position: int) -> str:
        return base64.urlsafe_b64encode(self._prefix + str(position).encode()).decode()

    def decode(self, cursor: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raw = b""
        digits = raw.removeprefix(self._prefix)
        if not raw.startswith(self._prefix) or not digits.isdigit() or len(digits) > 12:
            raise HTTPException(400, "cursor: not a cursor this system gave")
        return int(digits)


class Dials(BaseModel):
    """The dials every simulator has; a simulator's config model adds its own."""

    latency_ms: int = Field(default=0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="5xx before any work")
    seed: int | None = None


C = TypeVar("C", bound=Dials)
R = TypeVar("R")


class Simulator(Generic[C, R]):
    """One simulator's state: its dials, its records by idempotency key, its chances."""

    def __init__(
        self,
        config: C,
        state_file: Path | None,
        record_format: TypeAdapter[dict[str, R]],
        busy: str,
    ) -> None:
        self.config = config
        self.records: dict[str, R] = {}
        self.lock = asyncio.Lock()
        self.rng = random.Random(config.seed)
        self._journal = RecordJournal(state_file, record_format)
        self._busy = busy  # the detail of the 503 that `failure_rate` dials

    async def misbehave(self) -> None:
        """Wait `latency_ms`, then fail with a 503 at `failure_rate`, before any work."""
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if self.rng.random() < self.config.failure_rate:
            raise HTTPException(503, self._busy)

    async def keep(self, key: str, record: R) -> None:
        """Hold a new or changed record, on disk first: no reply tells of a record a crash
        could lose (a changed one replaces its key's record, keeping its place in order)."""
        await asyncio.to_thread(self._journal.write, key, record)
        self.records[key] = record

    async def forget_all(self) -> None:
        """Drop every record, journal included (a tester's clean start)."""
        await asyncio.to_thread(self._journal.clear)
        self.records.clear()

    def reconfigure(self, config: C) -> None:
        self.config = config
        if config.seed is not None:
            self.rng.seed(config.seed)

    def app(
        self,
        title: str,
        protocol: APIRouter,
        restored: Callable[[dict[str, R]], None] | None = None,
    ) -> FastAPI:
        """The simulator's process: its protocol's routes, then the dials' routes. The
        records journaled by an earlier run are restored at start (and handed to
        `restored`, for a simulator that indexes them another way too)."""

        def restore(saved: dict[str, R]) -> None:
            self.records.update(saved)
            if restored is not None:
                restored(saved)

        app = FastAPI(title=title, lifespan=self._journal.lifespan(restore))
        app.include_router(protocol)
        config_type = type(self.config)

        @app.get("/v1/_simulator/config", response_model=config_type)
        async def get_config() -> C:
            return self.config

        async def put_config(new: C) -> C:
            self.reconfigure(new)
            return new

        # FastAPI reads the body's model from the annotation, and a TypeVar names none.
        put_config.__annotations__["new"] = config_type
        app.put("/v1/_simulator/config", response_model=config_type)(put_config)

        @app.exception_handler(HTTPException)
        async def _problem(_: Request, exc: HTTPException) -> JSONResponse:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

        return app
