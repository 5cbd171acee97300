"""Activities of recognition batches and cases: the snapshot, its verification, the
pages of cases to start, the firm's notices and account."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import business_errors
from activities.review import PLATFORM_ATTEMPTS
from adapters.data_platform import DataPlatformClient, DataPlatformUnavailable
from adapters.message_channel import ChannelRefused, MessageChannelClient
from core.db import reader_of
from core.workdays import SHANGHAI
from domain import notices
from domain.errors import NotFound
from domain.notices import texts
from domain.policy.library import get_version
from domain.recognition import batches
from domain.recognition import cases as recognition
from models.message_channel import OutgoingMessage
from models.recognition import (
    AccountChange,
    BatchFailure,
    BatchOpening,
    BatchPhase,
    BatchProgress,
    CaseOpening,
    CasePageRequest,
    CaseStartPage,
    EntryStatus,
    RecognitionCaseInput,
    RecognitionNotice,
    VerificationRecord,
)

log = structlog.get_logger()
HEARTBEAT_EVERY_S = 10.0
UNCOMMITTED_ATTEMPTS = 8  # about a minute of retries (workflows/options.py)


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat from a task of its own while a long step runs on the event loop."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RecognitionActivities:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        channel: MessageChannelClient,
        data_platform: DataPlatformClient,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._reader = reader_of(sessionmaker)
        self._channel = channel
        self._platform = data_platform

    async def _related(self, usccs: Sequence[str]) -> dict[str, dict[str, str]] | None:
        """Each firm's related firms from the public data platform. While it does not
        answer the activity fails and is retried (the batch waits), up to
        PLATFORM_ATTEMPTS; then None: the batch goes on with every firm flagged for a
        person, as the firm group check could not be made."""
        try:
            parties = await self._platform.related_parties_many(usccs)
        except DataPlatformUnavailable:
            if activity.info().attempt < PLATFORM_ATTEMPTS:
                raise
            log.warning("recognition.related_parties_unavailable", firms=len(usccs))
            return None
        return {p.uscc: {r.uscc: r.relation.value for r in p.related} for p in parties}

    # ----- the batch ----------------------------------------------------------------------

    @activity.defn
    async def identify_batch(self, batch_id: str) -> BatchOpening:
        """Freeze the batch's snapshot (a no-op for one identified already, as an upload
        is) and return what the batch workflow needs of it."""
        today = datetime.now(SHANGHAI).date()
        with business_errors():
            async with heartbeating(), self._sessionmaker.begin() as session:
                try:
                    batch = await batches.identify(
                        session, batch_id, today, related_of=self._related
                    )
                except NotFound:
                    # The request that starts a batch starts its workflow just before it
                    # commits: wait a little for the commit before calling it missing.
                    if activity.info().attempt < UNCOMMITTED_ATTEMPTS:
                        raise ApplicationError(
                            f"batch {batch_id} is not recorded yet", type="BatchNotRecorded"
                        ) from None
                    raise
                log.info(
                    "recognition.identified",
                    batch_id=batch_id,
                    listed=batch.listed,
                    possible=batch.possible,
                    already_claimed=batch.already_claimed,
                )
            async with self._reader() as session:
                return await batches.opening(session, batch_id)

    @activity.defn
    async def abandon_batch(self, record: BatchFailure) -> None:
        async with self._sessionmaker.begin() as session:
            await batches.abandon(session, record.batch_id, record.reason)
        log.error("recognition.batch_failed", batch_id=record.batch_id, reason=record.reason)

    @activity.defn
    async def apply_verification(self, record: VerificationRecord) -> BatchPhase:
        with business_errors():
            async with self._sessionmaker.begin() as session:
                return await batches.apply_verification(session, record)

    @activity.defn
    async def case_page(self, request: CasePageRequest) -> CaseStartPage:
        async with self._reader() as session:
            rows = await batches.case_page(
                session, request.batch_id, request.start_round, request.after_uscc, request.limit
            )
            batch = await batches.get_batch(session, request.batch_id)
        return CaseStartPage(
            cases=[
                RecognitionCaseInput(
                    case_id=row.case_id,
                    batch_id=row.batch_id,
                    item_code=batch.item_code,
                    version=batch.version,
                    period=batch.period,
                    uscc=row.uscc,
                    attempt=row.attempt,
                    individual_review=row.status == EntryStatus.INDIVIDUAL_REVIEW,
                )
                for row in rows
            ],
            last_uscc=rows[-1].uscc if rows else request.after_uscc,
        )

    @activity.defn
    async def finish_starting(self, batch_id: str) -> BatchPhase:
        async with self._sessionmaker.begin() as session:
            return await batches.finish_starting(session, batch_id)

    @activity.defn
    async def batch_progress(self, batch_id: str) -> BatchProgress:
        async with self._reader() as session:
            return await recognition.progress(session, batch_id)

    @activity.defn
    async def open_batch_cases(self, batch_id: str) -> int:
        async with self._reader() as session:
            return await recognition.open_cases(session, batch_id)

    @activity.defn
    async def close_batch(self, batch_id: str) -> None:
        async with self._sessionmaker.begin() as session:
            await recognition.close_batch(session, batch_id)

    # ----- a case -------------------------------------------------------------------------

    @activity.defn
    async def open_recognition_case(self, case: RecognitionCaseInput) -> CaseOpening:
        with business_errors():
            async with self._reader() as session:
                return await recognition.open_case(session, case.case_id)

    @activity.defn
    async def record_account(self, change: AccountChange) -> None:
        with business_errors():
            async with self._sessionmaker.begin() as session:
                await recognition.record_account(session, change)

    @activity.defn
    async def notify_firm(self, notice: RecognitionNotice) -> None:
        """Tell the firm, in the platform and through the message channel; once per case
        and kind of notice, however often retried. A message the channel refuses is
        logged: the in-app notice stands."""
        key = f"zhida:recognition:{notice.case_id}:{notice.kind}"
        async with self._sessionmaker.begin() as session:
            title = (await get_version(session, notice.item_code, notice.version)).title
            text = _text(notice, title)
            await notices.notify_enterprise(
                session, uscc=notice.uscc, subject=notice.case_id, text=text, dedupe_key=key
            )
        try:
            await self._channel.send(
                OutgoingMessage(
                    idempotency_key=key[:128],
                    recipient=notice.uscc,
                    title=text.title,
                    body=text.body,
                )
            )
        except ChannelRefused as exc:
            log.error("recognition.notice_refused", case_id=notice.case_id, error=str(exc))


def _text(notice: RecognitionNotice, title: str) -> texts.Text:
    amount = notice.amount_fen or 0
    if notice.kind == "identified":
        return texts.recognition_identified(title, notice.period, amount, notice.deadline)
    if notice.kind == "reminder":
        assert notice.deadline is not None
        return texts.recognition_reminder(title, notice.period, amount, notice.deadline)
    return texts.recognition_expired(title, notice.period)
