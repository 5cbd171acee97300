"""Keeping a simulator's records across restarts and crashes, as the real systems would.

Records are written to a journal file as they are made, before the request that
made them is answered: one JSON object per line, `{key: record}`. A simulator that
is killed outright (a crash, SIGKILL, the machine losing power) therefore finds at
its next start every instruction or message it ever acknowledged, and a retried
request with the same key gets the same answer. Most records never change (their state
follows from their time stamps); one that does (a recovery order when money arrives or
it closes) is written again whole under its key, and the last line for a key wins. So
the journal only grows.

A line cut short by a crash in the middle of a write was never acknowledged: it is
dropped at the next start. The single-object snapshot that older versions wrote at
shutdown reads as a journal of one line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

import structlog
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

log = structlog.get_logger()

R = TypeVar("R")


class RecordJournal(Generic[R]):
    """An append-only file of `{key: record}` lines; with no path, it keeps nothing."""

    def __init__(self, path: Path | None, adapter: TypeAdapter[dict[str, R]]) -> None:
        self.path = path
        self._adapter = adapter
        self._file: BinaryIO | None = None
        self._opened = False

    def open(self) -> dict[str, R]:
        """Every record written so far; later writes go to the end of the file (which
        is created by the first)."""
        self._opened = True
        records: dict[str, R] = {}
        if self.path is None or not self.path.exists():
            return records
        content = self.path.read_bytes()
        lines = content.split(b"\n")
        kept = 0  # bytes of whole, readable lines
        for number, line in enumerate(lines, start=1):
            last = number == len(lines)
            if line.strip():
                try:
                    records.update(self._adapter.validate_json(line))
                except ValidationError:
                    if not last:
                        raise ValueError(f"{self.path}: line {number} is not a record") from None
                    log.warning("simulator.journal_tail_dropped", path=str(self.path))
                    break
            kept += len(line) + (0 if last else 1)
        self._file = self.path.open("r+b")
        self._file.truncate(kept)
        self._file.seek(kept)
        if kept and not content[:kept].endswith(b"\n"):
            self._file.write(b"\n")  # a snapshot of older versions has no newline
        return records

    def write(self, key: str, record: R) -> None:
        """Append one record and have it on disk before returning."""
        if self.path is None:
            return
        if not self._opened:
            raise RuntimeError("the journal is not open")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(self._adapter.dump_json({key: record}) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def clear(self) -> None:
        """Forget every record, on disk too."""
        if self.path is None:
            return
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)
            self._file.flush()
            os.fsync(self._file.fileno())
        elif self.path.exists():
            self.path.write_bytes(b"")

    def close(self) -> None:
        self._opened = False
        if self._file is not None:
            self._file.close()
            self._file = None

    def lifespan(
        self, restore: Callable[[dict[str, R]], None]
    ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
        """A FastAPI lifespan that hands the records read at start to `restore`."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            restore(await asyncio.to_thread(self.open))
            try:
                yield
            finally:
                self.close()

        return lifespan
