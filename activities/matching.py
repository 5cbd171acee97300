"""Activities of the matching workflow: the engine over our database, and the push."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import sqlalchemy.exc
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.message_channel import (
    ChannelRefused,
    ChannelUnavailable,
    MessageChannelClient,
    push_key,
)
from core.db import reader_of
from core.temporal_errors import ErrorType
from domain.matching import match_library, push
from domain.notices.texts import policy_pushed
from domain.policy.library import get_version
from models.eligibility import Verdict
from models.matching import MatchRequest, MatchSummary, PolicyPush, PushStatus, PushSummary
from models.message_channel import MessageState, MessageStatus, OutgoingMessage

log = structlog.get_logger()

SEND_CONCURRENCY = 10
# How often a matching run heartbeats (its heartbeat timeout is in workflows/options.py).
HEARTBEAT_EVERY_S = 10.0
# A unique-key clash or a deadlock is most likely a concurrent run writing the same
# library rows: worth a few more attempts, not endless ones.
CONFLICT_ATTEMPTS = 5
_TRANSPORT_ERRORS = (
    OSError,  # connection refused or reset (ConnectionError), timeouts
    sqlalchemy.exc.OperationalError,  # the database went away, locked, serialization
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection in time
    sqlalchemy.exc.DisconnectionError,
)


class MatchingActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        channel: MessageChannelClient,
        push_per_week: int,
        threads: int,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._reader = reader_of(sessionmaker)
        self._channel = channel
        self._per_week = push_per_week
        self._threads = threads

    @activity.defn
    async def run_match(self, request: MatchRequest) -> MatchSummary:
        """One run. Items and facts it cannot evaluate are recorded and skipped by the
        run itself; anything else that fails for a reason other than transport is a
        data error no retry can cure, so it fails the run without retrying."""
        as_of = request.as_of or match_library.today_in_shanghai()
        try:
            async with _heartbeating():
                return await match_library.run(
                    self._sessionmaker,
                    request,
                    activity.info().workflow_id or "",
                    as_of,
                    self._threads,
                )
        except Exception as exc:
            if _retryable(exc, activity.info().attempt):
                raise
            log.error("matching.run_failed", error=str(exc), error_type=type(exc).__name__)
            raise ApplicationError(
                f"{type(exc).__name__}: {exc}", type=ErrorType.MATCH_DATA_ERROR, non_retryable=True
            ) from exc

    @activity.defn
    async def plan_pushes(self) -> PushSummary:
        async with self._sessionmaker.begin() as session:
            summary = await push.plan_pushes(session, self._per_week)
        log.info("push.planned", **summary.model_dump())
        return summary

    @activity.defn
    async def send_pushes(self, batch: int) -> int:
        """Send up to `batch` planned pushes through the channel; returns how many were
        sent. A retried send reuses the push's key, so the firm gets one message."""
        async with self._reader() as session:
            todo = await push.pending(session, batch)
            titles = {
                key: (await get_version(session, *key)).title
                for key in {(p.item_code, p.version) for p in todo}
            }
        texts = {
            p.id: policy_pushed(titles[(p.item_code, p.version)], Verdict(p.verdict), p.amount_fen)
            for p in todo
        }
        limit = asyncio.Semaphore(SEND_CONCURRENCY)
        failures: list[Exception] = []

        async def one(record: PolicyPush) -> tuple[int, MessageStatus | None]:
            assert record.id is not None
            title, body = texts[record.id]
            async with limit:
                try:
                    status = await self._channel.send(
                        OutgoingMessage(
                            idempotency_key=push_key(record.uscc, record.item_code),
                            recipient=record.uscc,
                            title=title,
                            body=body,
                        )
                    )
                except ChannelUnavailable as exc:
                    failures.append(exc)
                    return record.id, None
                except ChannelRefused as exc:
                    log.error("push.refused", push_id=record.id, error=str(exc))
                    return record.id, _refused(record)
            return record.id, status

        results = await asyncio.gather(*(one(r) for r in todo))
        async with self._sessionmaker.begin() as session:
            for push_id, status in results:
                if status is not None:
                    await push.record_sent(session, push_id, status)
        sent = sum(1 for _id, status in results if status is not None)
        log.info("push.sent", sent=sent, failed=len(failures))
        if failures:  # what went out is recorded; the rest goes again on retry
            raise ApplicationError(str(failures[0]), type=ErrorType.CHANNEL_UNAVAILABLE)
        return sent

    @activity.defn
    async def collect_receipts(self, batch: int) -> int:
        """Ask the channel about every sent push, `batch` at a time; returns how many
        still await a receipt."""
        after, waiting = 0, 0
        limit = asyncio.Semaphore(SEND_CONCURRENCY)

        async def ask(record: PolicyPush) -> tuple[int, MessageStatus]:
            assert record.id is not None and record.message_id is not None
            async with limit:
                try:
                    status = await self._channel.status(record.message_id)
                except ChannelUnavailable as exc:
                    raise ApplicationError(str(exc), type=ErrorType.CHANNEL_UNAVAILABLE) from exc
                except ChannelRefused as exc:  # e.g. a message the channel no longer knows
                    log.error("push.receipt_refused", push_id=record.id, error=str(exc))
                    return record.id, _refused(record)
            activity.heartbeat(after)  # a batch is many answers: each one is progress
            return record.id, status

        while True:
            async with self._reader() as session:
                todo = await push.awaiting_receipt(session, batch, after=after)
            if not todo:
                return waiting
            statuses = await asyncio.gather(*(ask(r) for r in todo))
            async with self._sessionmaker.begin() as session:
                for push_id, status in statuses:
                    current = await session.get(PolicyPush, push_id)
                    if current is not None and current.status == PushStatus.SENT:
                        await push.record_receipt(session, current, status)
                        waiting += current.status == PushStatus.SENT
            after = max(r.id or 0 for r in todo)
            activity.heartbeat(after)


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the block runs: a run is one long call into the match library,
    which has no steps to heartbeat between. The evaluation runs in a thread, so the
    event loop is free to beat."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


def _retryable(exc: BaseException, attempt: int) -> bool:
    """Transport failures are retried; a unique-key clash a few times; nothing else."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.IntegrityError) or _concurrency_failure(exc):
        return attempt < CONFLICT_ATTEMPTS
    return isinstance(exc, _TRANSPORT_ERRORS)


def _concurrency_failure(exc: BaseException) -> bool:
    """PostgreSQL's serialization failure or deadlock: the other transaction won."""
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in {"40001", "40P01"}


def _refused(record: PolicyPush) -> MessageStatus:
    """A message the channel will never take counts as undeliverable."""
    return MessageStatus(
        message_id=f"refused-{record.id}",
        idempotency_key=push_key(record.uscc, record.item_code),
        recipient=record.uscc,
        state=MessageState.UNDELIVERABLE,
        accepted_at=datetime.now(UTC),
    )
