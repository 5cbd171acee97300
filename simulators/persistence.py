"""Keeping a simulator's records across restarts, as the real systems would.

The dev stack stops its simulators with SIGTERM; they write their records to a
file on the way out and read them back at start, so a second `make run` finds the
payments and messages of the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter


def keep_records(
    path: Path | None, adapter: TypeAdapter[Any], get: Callable[[], Any], put: Callable[[Any], None]
) -> Callable[[FastAPI], Any]:
    def load() -> None:
        if path is not None and path.exists():
            put(adapter.validate_json(path.read_bytes()))

    def save() -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(adapter.dump_json(get()))
            temporary.replace(path)  # a crash mid-write leaves the previous file whole

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(load)
        yield
        await asyncio.to_thread(save)

    return lifespan
