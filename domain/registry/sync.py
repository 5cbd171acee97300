"""The scheduled sync of firms' figures from the public data platform (横向对接).

A page of the platform's change feed is stored in one transaction with the cursor after
it (`store_changes`): a crash before the commit leaves the cursor where it was, and the
page is fetched again; storing it again changes nothing. Each figure is checked as the
importer checks a row (`FactRow`: a known kind, a value of its type and range, a period)
and written by the importer's own upsert. A firm's record with a figure that fails, or
of a firm the registry does not hold, is reported and skipped whole (never half-written)
and never stops the rest.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.workdays import SHANGHAI
from domain.registry.importer import ImportReport, ValidRows, write_rows
from models.data_platform import FactChangesPage, FirmFacts
from models.facts import FACT_KINDS
from models.policy_feed import FeedCursor
from models.registry import Enterprise, Fact, FactRow
from models.types import utcnow

FEED_ID = "data-platform-facts"
# A figure is for a day from this one to today: older or later ones are no reading.
EARLIEST_AS_OF = date(2000, 1, 1)
MAX_REPORTED = 50  # skipped figures named in a report; the rest are counted


class Skipped(BaseModel):
    uscc: str
    kind: str | None
    reason: str


class SyncReport(BaseModel):
    firms: int = 0
    readings: int = 0
    facts_created: int = 0
    facts_updated: int = 0
    unchanged: int = 0
    ignored: int = 0  # kinds the platform serves that no rule reads (patents, penalties)
    skipped: int = 0  # firms whose record was not written: unknown, or a figure failed
    skips: list[Skipped] = []  # why, figure by figure (the first MAX_REPORTED)
    has_more: bool = False
    # When the first figure changed in this sync (the re-match asks for firms changed
    # since then); None when none changed.
    changed_since: datetime | None = None
    # The run that re-matches the firms it changed (started by the sync's workflow).
    match_run: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.facts_created or self.facts_updated)

    def add(self, other: SyncReport) -> None:
        for name in (
            "firms",
            "readings",
            "facts_created",
            "facts_updated",
            "unchanged",
            "ignored",
            "skipped",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skips = (self.skips + other.skips)[:MAX_REPORTED]
        self.has_more = other.has_more
        if self.changed_since is None:
            self.changed_since = other.changed_since


def period_of(kind: str, as_of: date) -> str:
    """The period a reading is for: a year's figure (as of 31 December) is that year's,
    any other the month's."""
    if as_of.month == 12 and as_of.day == 31:
        return str(as_of.year)
    return f"{as_of.year}-{as_of.month:02d}"


async def cursor_of(session: AsyncSession, feed: str = FEED_ID) -> str | None:
    row = await session.get(FeedCursor, feed)
    return None if row is None else row.cursor


async def start_at(session: AsyncSession, cursor: str, feed: str = FEED_ID) -> bool:
    """Start the feed's cursor at `cursor` (the platform's end, `DataPlatformClient.
    end_cursor`) unless it has one: for a registry just loaded from the platform's own
    export (the embedded stack's sample), whose figures the sync need not read again.
    Whether it was set."""
    if await cursor_of(session, feed) is not None:
        return False
    session.add(FeedCursor(feed=feed, cursor=cursor))
    await session.flush()
    return True


def _rows(firm: FirmFacts, fetched_at: datetime, report: SyncReport) -> list[FactRow]:
    """The firm's figures as rows, or none when any of them fails: a firm's record is
    written whole or not at all, never half."""
    rows: list[FactRow] = []
    failed = False
    latest = fetched_at.astimezone(SHANGHAI).date()
    for reading in firm.readings:
        report.readings += 1
        kind = FACT_KINDS.get(reading.kind)
        if kind is None or kind.profile:
            report.ignored += 1
            continue
        if not EARLIEST_AS_OF <= reading.as_of <= latest:
            _reason(
                report,
                firm.uscc,
                reading.kind,
                f"as_of {reading.as_of} is not between {EARLIEST_AS_OF} and today ({latest})",
            )
            failed = True
            continue
        try:
            rows.append(
                FactRow(
                    uscc=firm.uscc,
                    kind=reading.kind,
                    value=reading.value,
                    period=period_of(reading.kind, reading.as_of),
                    source=reading.source,
                    fetched_at=fetched_at,
                )
            )
        except ValidationError as exc:
            message = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            _reason(report, firm.uscc, reading.kind, message)
            failed = True
    if failed:
        report.skipped += 1
        return []
    return rows


def _reason(report: SyncReport, uscc: str, kind: str | None, reason: str) -> None:
    if len(report.skips) < MAX_REPORTED:
        report.skips.append(Skipped(uscc=uscc, kind=kind, reason=reason[:200]))


async def _changed_only(
    session: AsyncSession, rows: list[FactRow], report: SyncReport
) -> list[FactRow]:
    """The rows whose value differs from the one held for the firm, kind and period (a
    figure the platform sends again unchanged, whatever source it names, is left)."""
    held = {
        (f.uscc, f.kind, f.period): f.value
        for f in await session.scalars(
            select(Fact).where(col(Fact.uscc).in_(sorted({r.uscc for r in rows})))
        )
    }
    changed = []
    for row in rows:
        if (
            held.get((row.uscc, row.kind, row.period), _ABSENT)
            == row.model_dump(mode="json")["value"]
        ):
            report.unchanged += 1
        else:
            changed.append(row)
    return changed


_ABSENT = object()


async def store_changes(
    session: AsyncSession, feed: str, after: str | None, page: FactChangesPage
) -> SyncReport:
    """Store a page fetched with the cursor `after` and move the feed's cursor past it;
    nothing when the stored cursor moved on meanwhile (another sync stored it first)."""
    row = await session.get(FeedCursor, feed, with_for_update=True)
    if (None if row is None else row.cursor) != after:
        return SyncReport(has_more=True)
    report = SyncReport(firms=len(page.changes), has_more=page.has_more)
    fetched_at = utcnow()
    usccs = [firm.uscc for firm in page.changes]
    known = set(
        await session.scalars(select(Enterprise.uscc).where(col(Enterprise.uscc).in_(usccs)))
    )
    valid = ValidRows()
    for firm in page.changes:
        if firm.uscc not in known:
            report.readings += len(firm.readings)
            report.skipped += 1
            _reason(report, firm.uscc, None, "the registry holds no such firm")
            continue
        valid.facts.extend(_rows(firm, fetched_at, report))
    valid.facts = await _changed_only(session, valid.facts, report)
    if valid.facts:
        written = ImportReport(rows=len(valid.facts))
        await write_rows(session, valid, written)
        report.facts_created = written.facts_created
        report.facts_updated = written.facts_updated
        report.unchanged += written.unchanged
        if written.changed:
            report.changed_since = written.written_at
    if row is None:
        row = FeedCursor(feed=feed, cursor=page.next_cursor)
        session.add(row)
    row.cursor = page.next_cursor
    row.pages += 1
    row.items += len(page.changes)
    row.updated_at = utcnow()
    await session.flush()
    return report
