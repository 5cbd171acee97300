"""Enterprise registry services: listing, detail, and the facts the rules read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.bulk import cyclic_gc_paused, stream_rows
from core.db import Reader, upsert
from domain.access import firm_filter, require_firm_reader
from domain.engine.arrays import FactTable, FactTableBuilder
from domain.engine.rules import KnownFact, invalid_fact
from domain.errors import NotFound
from domain.registry import facts_snapshot
from models.facts import FACT_KINDS, FactKind, coerce_fact_value
from models.reference import Actor
from models.registry import (
    KEPT_CHANGES,
    BankAccount,
    BankAccountPublic,
    Enterprise,
    EnterpriseDetail,
    EnterprisePublic,
    Fact,
    FactPublic,
    FactsChange,
    FactsSnapshot,
    FactsVersion,
    mask_account,
)
from models.types import utcnow

log = structlog.get_logger()


async def get_enterprise(session: AsyncSession, uscc: str) -> Enterprise:
    enterprise = await session.get(Enterprise, uscc)
    if enterprise is None:
        raise NotFound(f"enterprise {uscc} not found")
    return enterprise


async def list_enterprises(
    session: AsyncSession,
    actor: Actor,
    *,
    region_code: str | None,
    industry_prefix: str | None,
    q: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[EnterprisePublic]]:
    # A firm lists itself; staff the firms of their unit's region (domain.access).
    query = select(Enterprise).where(await firm_filter(session, actor))
    if region_code:
        query = query.where(Enterprise.region_code == region_code)
    if industry_prefix:
        query = query.where(col(Enterprise.industry_code).startswith(industry_prefix))
    if q:
        query = query.where(
            sa.or_(col(Enterprise.name).contains(q), col(Enterprise.uscc).startswith(q))
        )
    total = await session.scalar(select(sa.func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(col(Enterprise.uscc)).offset(offset).limit(limit))
    return int(total or 0), [EnterprisePublic.model_validate(r, from_attributes=True) for r in rows]


async def enterprise_detail(session: AsyncSession, actor: Actor, uscc: str) -> EnterpriseDetail:
    await require_firm_reader(session, actor, uscc)
    enterprise = await get_enterprise(session, uscc)
    accounts = await session.scalars(
        select(BankAccount).where(BankAccount.uscc == uscc).order_by(col(BankAccount.id))
    )
    facts = await latest_facts(session, [uscc])
    return EnterpriseDetail(
        **EnterprisePublic.model_validate(enterprise, from_attributes=True).model_dump(),
        accounts=[
            BankAccountPublic(
                id=a.id or 0,
                bank_name=a.bank_name,
                account_name=a.account_name,
                account_number_masked=mask_account(a.account_number),
                is_default=a.is_default,
                verified_at=a.verified_at,
            )
            for a in accounts
        ],
        facts=[
            FactPublic(
                kind=f.kind,
                label=FACT_KINDS[f.kind].label,
                value=f.value,
                period=f.period,
                source=f.source,
                fetched_at=f.fetched_at,
            )
            for f in sorted(facts.get(uscc, {}).values(), key=lambda f: f.kind)
        ],
    )


async def latest_facts(session: AsyncSession, usccs: Iterable[str]) -> dict[str, dict[str, Fact]]:
    """For each firm, the fact of each kind with the latest period (newer supersedes older)."""
    wanted = list(usccs)
    out: dict[str, dict[str, Fact]] = {u: {} for u in wanted}
    for chunk in _chunks(wanted):
        for fact in await session.scalars(latest_facts_query(chunk)):
            out[fact.uscc][fact.kind] = fact
    return out


def latest_facts_query(usccs: list[str] | None) -> SelectOfScalar[Fact]:
    """Each firm's latest fact of each kind: the latest period's end, and of two facts
    for the same end the one written last (the higher id), the rule `load_fact_table`
    follows, so that a firm's page, evidence and the engine read the same fact."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(col(Fact.uscc), col(Fact.kind)),
            order_by=(col(Fact.period_end).desc(), col(Fact.id).desc()),
        )
        .label("rank")
    )
    ranked = select(Fact, rank)
    if usccs is not None:
        ranked = ranked.where(col(Fact.uscc).in_(usccs))
    table = ranked.subquery()
    latest = aliased(Fact, table)
    return select(latest).where(table.c.rank == 1)


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def load_fact_table(
    session: AsyncSession, usccs: list[str] | None = None
) -> tuple[FactTable, dict[str, str]]:
    """Every firm's facts (or those of `usccs`) streamed straight into columns: the
    profile and the latest fact of each kind. The engine reads all firms through it,
    and `known_facts` one firm, so both always see the same facts. A stored value that
    fails its kind's type or range is kept as an invalid fact (`FactTable.invalid_facts`),
    which reads as unknown; a fact of a kind no rule can name is passed over."""
    with cyclic_gc_paused():
        return await _load_fact_table(session, usccs)


async def _load_fact_table(
    session: AsyncSession, usccs: list[str] | None
) -> tuple[FactTable, dict[str, str]]:
    builder = FactTableBuilder()
    latest = _LatestFacts(builder)
    regions: dict[str, str] = {}
    chunks: list[list[str] | None] = [None] if usccs is None else [*_chunks(usccs)]
    profile = sa.select(
        col(Enterprise.uscc),
        col(Enterprise.region_code),
        col(Enterprise.industry_code),
        col(Enterprise.size_class),
        col(Enterprise.established_on),
    ).order_by(col(Enterprise.uscc))
    # Reading every firm is seconds of CPU between the reads: done on a thread, so that
    # the event loop (an API process's other requests) is not held for that long.
    few = usccs is not None and len(usccs) <= ON_THREAD_FROM
    work = _inline if few else _on_thread
    for chunk in chunks:
        query = profile if chunk is None else profile.where(col(Enterprise.uscc).in_(chunk))
        async with aclosing(_parts(session, query, few)) as parts:
            async for part in parts:
                await work(_add_firms, builder, regions, part)
        facts = sa.select(
            col(Fact.uscc),
            col(Fact.kind),
            sa.func.coalesce(sa.cast(col(Fact.value), sa.Text), ""),
            col(Fact.period_end),
            col(Fact.id),
        )
        if chunk is not None:
            facts = facts.where(col(Fact.uscc).in_(chunk))
        async with aclosing(_parts(session, facts, few)) as batches:
            async for batch in batches:
                await work(latest.add, batch)
    await work(latest.finish)
    return await work(builder.finish), regions


async def _parts(
    session: AsyncSession, query: sa.Select[*tuple[Any, ...]], few: bool
) -> AsyncGenerator[Sequence[Sequence[Any]], None]:
    """The query's rows in parts: a few firms' in one, through the session, whose cache
    of compiled statements spares compiling the query anew (a sixth of the CPU of one
    firm's eligibility request); many firms' streamed (`stream_rows`). No part is
    empty. Read it inside `contextlib.aclosing`, as `stream_rows`."""
    if few:
        rows = (await session.execute(query)).all()
        if rows:
            yield rows
        return
    async with aclosing(stream_rows(session, query)) as parts:
        async for part in parts:
            yield part


_T = TypeVar("_T")
ON_THREAD_FROM = 1_000  # firms read from which the CPU work leaves the event loop


async def _on_thread(function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.to_thread(function, *args)


async def _inline(function: Callable[..., _T], *args: Any) -> _T:
    return function(*args)


def _add_firms(
    builder: FactTableBuilder, regions: dict[str, str], part: Sequence[Sequence[Any]]
) -> None:
    """A part of the firms' profiles into the table's columns."""
    firms, region, industry, size, established = zip(*part, strict=True)
    rows = builder.add_firms(firms)
    regions.update(zip(firms, region, strict=True))
    builder.add_texts("region_code", rows, region)
    builder.add_texts("industry_code", rows, industry)
    builder.add_texts("size_class", rows, size)
    no_period = np.zeros(len(rows), dtype=np.int32)
    builder.add_many("established_on", rows, _ordinals(established), no_period)


@dataclass(frozen=True)
class _Kept:
    token: str
    seq: int
    table: FactTable
    regions: dict[str, str]


class FactTableCache:
    """Every firm's facts kept in memory between requests of one process, brought up
    to date when the database's `FactsVersion` has changed since (an import, a default
    recorded, a firm's profile edited), so that what reads them all (budget preview)
    costs a query of one row rather than a read of millions of facts.

    Brought up to date, the copy reads again only the facts of the firms the changes
    since touched (`FactsChange`), up to `PATCH_UP_TO` firms; more, or changes that
    could not name their firms or are no longer kept, read everything again.

    A process without a copy starts from the stored snapshot (`FactsSnapshot`, one
    row) where it can be brought up to date that way, and reads everything only
    where it cannot. Given sessions to write in (`store`: the worker's match runs,
    which no one waits for), a process that has read everything stores its copy as
    the snapshot, and one whose copy is `RESTORE_AFTER` changes past the stored one
    stores it again, so that a cold process finds one to start from however long the
    platform has run. Requests never store: on SQLite the write would wait for the one
    write lock, which an import holds for minutes.

    `session` must only read: on SQLite a session that may write holds the write lock
    from its start (`core/db.py`), which storing the snapshot would wait for.

    The version is read before the facts: a write landing between the two leaves a
    copy newer than its version, whose firms are read again once too often, never one
    older. One copy per database. Two requests that find it stale at once both read;
    the later one's copy is kept."""

    PATCH_UP_TO = 20_000  # firms
    RESTORE_AFTER = KEPT_CHANGES // 4  # changes past the stored snapshot

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}
        self._stored_seq: dict[str, int] = {}  # the seq of the snapshot last seen usable
        self._unreadable: dict[str, int] = {}  # the seq of a snapshot found unreadable
        self.last_read: Literal["kept", "stored", "patched", "whole"] | None = None
        self.from_snapshot = False  # whether the last copy read started from it

    def clear(self) -> None:
        """Forget every copy (a benchmark's cold start)."""
        self._kept.clear()
        self._stored_seq.clear()
        self._unreadable.clear()

    async def load(
        self, session: AsyncSession, store: Reader | None = None
    ) -> tuple[FactTable, dict[str, str]]:
        database = session.get_bind().engine.url.render_as_string(hide_password=True)
        version = (
            await session.execute(
                select(FactsVersion.token, FactsVersion.seq).where(FactsVersion.id == 1)
            )
        ).one_or_none()
        if version is None:  # a database not migrated by us: nothing to keep by
            self.last_read, self.from_snapshot = "whole", False
            return await load_fact_table(session)
        token, seq = version
        clock = time.perf_counter()
        kept = self._kept.get(database)
        cold = kept is None
        if kept is None:
            kept = await self._snapshot(session, database, token, seq)
        if kept is not None and kept.token == token:
            self._kept[database] = kept
            if cold:
                self._read("stored", True, kept.table, clock)
            else:
                self.last_read, self.from_snapshot = "kept", False
            return kept.table, kept.regions
        changed = None if kept is None else await self._changed(session, kept, seq)
        how: Literal["patched", "whole"]
        if kept is not None and changed is not None:
            fresh = await load_fact_table(session, sorted(changed))
            table, regions = await _on_thread(_patched, kept, fresh, changed)
            how = "patched"
        else:
            table, regions = await load_fact_table(session)
            how, cold = "whole", False
        fresh_copy = self._kept[database] = _Kept(token, seq, table, regions)
        self._read(how, cold, table, clock)
        if store is not None:
            # Read whole: the snapshot may be one no copy can be patched forward from
            # (behind a change that named no firms), so stored unless one as new is.
            gap = 1 if how == "whole" else self.RESTORE_AFTER
            stored = self._stored_seq.get(database)
            if stored is None or seq - stored >= gap:
                await self._store(session, store, database, fresh_copy, gap)
        return table, regions

    def _read(
        self, how: Literal["stored", "patched", "whole"], cold: bool, table: FactTable, clock: float
    ) -> None:
        """Note how a copy that is not the kept one was read, and log it."""
        self.last_read, self.from_snapshot = how, cold
        seconds = round(time.perf_counter() - clock, 3)
        log.info("facts.read", how=how, from_snapshot=cold, firms=len(table), seconds=seconds)

    async def _snapshot(
        self, session: AsyncSession, database: str, token: str, seq: int
    ) -> _Kept | None:
        """The stored snapshot as a copy, where this code can read it and it can be
        brought up to date (at the version, or within the changes kept)."""
        header = await _snapshot_header(session)
        if header is None:
            return None
        stored_token, stored_seq, layout = header
        usable = stored_token == token or 0 < seq - stored_seq <= KEPT_CHANGES
        if layout != facts_snapshot.LAYOUT or not usable:
            return None
        data = await session.scalar(
            select(FactsSnapshot.data).where(
                FactsSnapshot.id == 1, col(FactsSnapshot.seq) == stored_seq
            )
        )
        if data is None:  # replaced between the two reads
            return None
        try:
            table, regions = await _on_thread(facts_snapshot.load, data)
        except facts_snapshot.Unfit:
            log.warning("facts.snapshot_unreadable", seq=stored_seq, exc_info=True)
            self._unreadable[database] = stored_seq
            return None
        self._stored_seq[database] = stored_seq
        return _Kept(stored_token, stored_seq, table, regions)

    async def _store(
        self, session: AsyncSession, store: Reader, database: str, kept: _Kept, gap: int
    ) -> None:
        """The copy as the stored snapshot, unless the one stored (by another process,
        say; read through `session`, which takes no lock) is readable and less than
        `gap` changes older. A failure only costs the next cold process a whole read:
        logged, not raised."""
        try:
            current = await _snapshot_header(session)
            if current is not None and current.layout == facts_snapshot.LAYOUT:
                stored_seq = current.seq
                readable = self._unreadable.get(database) != stored_seq
                if readable and kept.seq - stored_seq < gap:  # newer than that already
                    self._stored_seq[database] = stored_seq
                    return
            data = await _on_thread(facts_snapshot.dump, kept.table, kept.regions)
            async with store() as writing:
                row = upsert(writing, FactsSnapshot).values(
                    id=1,
                    token=kept.token,
                    seq=kept.seq,
                    layout=facts_snapshot.LAYOUT,
                    data=data,
                    written_at=utcnow(),
                )
                columns = ("token", "seq", "layout", "data", "written_at")
                await writing.execute(
                    row.on_conflict_do_update(
                        index_elements=[col(FactsSnapshot.id)],
                        set_={c: row.excluded[c] for c in columns},
                        # Never an older copy over a newer one; one as new replaces
                        # it (it may be unreadable), and so does one of this layout
                        # over another release's, which this one cannot read.
                        where=(col(FactsSnapshot.seq) <= row.excluded.seq)
                        | (col(FactsSnapshot.layout) != row.excluded.layout),
                    )
                )
                await writing.commit()
        except Exception:  # whatever it was, a snapshot not stored costs only a whole read
            log.warning("facts.snapshot_not_stored", seq=kept.seq, exc_info=True)
            return
        self._stored_seq[database] = kept.seq
        self._unreadable.pop(database, None)
        log.info("facts.snapshot_stored", seq=kept.seq, firms=len(kept.table), bytes=len(data))

    async def _changed(self, session: AsyncSession, kept: _Kept, seq: int) -> set[str] | None:
        """The firms the changes after `kept`'s, up to `seq`, touched; None where they
        must all be read again. Read one change at a time, and no further than needed."""
        if not 0 < seq - kept.seq <= KEPT_CHANGES:
            return None
        changes = await session.stream(
            select(FactsChange.seq, FactsChange.token, FactsChange.usccs)
            .where(col(FactsChange.seq) >= kept.seq, col(FactsChange.seq) <= seq)
            .order_by(col(FactsChange.seq))
        )
        firms: set[str] = set()
        expected = kept.seq
        try:
            async for change in changes:
                if change.seq != expected:
                    return None  # pruned (or, at the first, not the copy's)
                if change.seq == kept.seq:
                    if change.token != kept.token:
                        return None  # another database's copy
                elif change.usccs is None:
                    return None
                else:
                    firms.update(change.usccs)
                    if len(firms) > self.PATCH_UP_TO:
                        return None
                expected += 1
        finally:
            await changes.close()
        return firms if expected == seq + 1 else None


async def _snapshot_header(session: AsyncSession) -> sa.Row[str, int, str] | None:
    """The stored snapshot's (token, seq, layout), without its bytes."""
    query = select(FactsSnapshot.token, FactsSnapshot.seq, FactsSnapshot.layout)
    return (await session.execute(query.where(FactsSnapshot.id == 1))).one_or_none()


def _patched(
    kept: _Kept, fresh: tuple[FactTable, dict[str, str]], changed: set[str]
) -> tuple[FactTable, dict[str, str]]:
    """The kept copy with the changed firms' facts read again (`fresh`); those of them
    not read are no longer in the registry."""
    table, regions = fresh
    gone = changed.difference(regions)
    patched = {u: r for u, r in kept.regions.items() if u not in gone}
    patched.update(regions)
    return kept.table.patched(table, gone), patched


FACT_TABLES = FactTableCache()  # this process's


_KINDS = list(FACT_KINDS)
COMPACT_FROM = 4_000_000  # facts held before the first compaction of `_LatestFacts`
_KIND_INDEX = {name: i for i, name in enumerate(_KINDS)}
_UNIX_DAY_ZERO = date(1970, 1, 1).toordinal()


class _LatestFacts:
    """Stored facts read in batches straight into arrays, then each firm's latest of
    each kind (the last by period end, then by id) put into the table's columns.

    Millions of facts pass through here in a full run: each batch is read as columns
    (the firm's row and the kind by dictionary, the value checked by `plain_many`, the
    period end parsed by numpy), and the choice of the latest is a sort, made again
    whenever what is held has doubled (so memory follows firms × kinds, not the
    history kept). A value that
    is not plainly valid (a date, an escape, out of range, not JSON) is kept as text
    and, if it is the latest, read by `read_fact`, which explains what is wrong: an
    invalid latest fact spoils its kind for that firm, as the evaluator expects."""

    def __init__(self, builder: FactTableBuilder) -> None:
        self.builder = builder
        self._parts: list[tuple[npt.NDArray[Any], ...]] = []
        self._texts: dict[int, tuple[str, date]] = {}  # position -> value not plain
        self._count = 0  # facts read
        self._held = 0  # facts in `_parts`
        self._latest = 0  # of them, the latest of each firm and kind at the last compaction

    def add(self, batch: Sequence[Sequence[Any]]) -> None:
        usccs, kinds, stored, ends, ids = zip(*batch, strict=True)
        n = len(usccs)
        rows = _indexes(self.builder.row_of, usccs)
        kind = _indexes(_KIND_INDEX, kinds)
        days = _ordinals(ends)
        values = np.zeros(n, dtype=np.int64)
        plain = np.zeros(n, dtype=np.bool_)
        texts = np.asarray(stored, dtype=object)
        for k in np.unique(kind).tolist():
            if k < 0:
                continue  # a kind no rule can name
            at = np.flatnonzero(kind == k)
            values[at], plain[at] = self.builder.plain_many(_KINDS[k], texts[at].tolist())
        keep = (rows >= 0) & (kind >= 0)  # facts of firms not read are passed over
        for i in np.flatnonzero(~plain & keep).tolist():
            self._texts[self._count + i] = (stored[i], date.fromordinal(int(days[i])))
        position = np.arange(self._count, self._count + n, dtype=np.int64)
        ids_ = np.asarray(ids, dtype=np.int64)
        part = tuple(a[keep] for a in (rows, kind, days, ids_, values, ~plain, position))
        self._parts.append(part)
        self._count += n
        self._held += len(part[0])
        if self._held > max(2 * self._latest, COMPACT_FROM):
            self._compact()

    def _compact(self) -> None:
        """Keep only the latest fact of each firm and kind (by period end, then id),
        in firm and kind order: what is held stays bounded by firms × kinds, however
        many periods the database keeps."""
        rows, kind, days, ids, values, textual, position = (
            np.concatenate(column) for column in zip(*self._parts, strict=True)
        )
        order = np.lexsort((ids, days, kind, rows))
        rows, kind = rows[order], kind[order]
        last = np.ones(len(rows), dtype=np.bool_)
        last[:-1] = (rows[:-1] != rows[1:]) | (kind[:-1] != kind[1:])
        chosen = order[last]
        latest = (
            rows[last],
            kind[last],
            *(a[chosen] for a in (days, ids, values, textual, position)),
        )
        self._parts = [latest]
        self._held = self._latest = len(chosen)
        if self._texts:
            textual, position = latest[5], latest[6]
            self._texts = {p: self._texts[p] for p in position[textual].tolist()}

    def finish(self) -> None:
        if not self._parts:
            return
        self._compact()
        rows, kind, days, _ids, values, textual, position = self._parts[0]
        for k in np.unique(kind).tolist():
            name, fact_kind = _KINDS[k], FACT_KINDS[_KINDS[k]]
            chosen = np.flatnonzero(kind == k)
            simple = chosen[~textual[chosen]]
            ends = np.zeros(len(simple), dtype=np.int32) if fact_kind.profile else days[simple]
            self.builder.add_many(name, rows[simple], values[simple], ends)
            for i in chosen[textual[chosen]].tolist():
                stored, end = self._texts[int(position[i])]
                self.builder.add(int(rows[i]), name, read_fact(fact_kind, stored, end))
        self._parts.clear()
        self._texts.clear()


def _indexes(index: dict[str, int], keys: Sequence[str]) -> npt.NDArray[np.int32]:
    """Each key's index, -1 where it has none (a firm not read, a kind unknown)."""
    try:  # the common case, at C speed: every key known
        return np.fromiter(map(index.__getitem__, keys), np.int32, len(keys))
    except KeyError:
        return np.fromiter((index.get(k, -1) for k in keys), np.int32, len(keys))


def _ordinals(days: Sequence[date | str]) -> npt.NDArray[np.int64]:
    """A date column as day ordinals (SQLite's dates are ISO text: numpy parses them)."""
    if days and isinstance(days[0], str):
        return np.asarray(days, dtype="datetime64[D]").astype(np.int64) + _UNIX_DAY_ZERO
    return np.fromiter((d.toordinal() for d in days), np.int64, len(days))  # type: ignore[union-attr]


def read_fact(kind: FactKind, stored: str | None, end: date | None) -> KnownFact:
    """A stored fact value (JSON text) as the evaluator reads it: valid, or invalid
    with the reason."""
    try:
        raw = None if stored is None else json.loads(stored)
    except (ValueError, RecursionError):
        return invalid_fact(stored, "is not a JSON value", end)
    try:
        return KnownFact(coerce_fact_value(kind, raw), end)
    except ValueError as exc:
        return invalid_fact(raw, str(exc), end)


async def known_facts(session: AsyncSession, uscc: str) -> dict[str, KnownFact]:
    """Everything the rule evaluator may read about one firm."""
    table, _regions = await load_fact_table(session, [uscc])
    if not len(table):  # the registry holds no such firm
        raise NotFound(f"enterprise {uscc} not found")
    return table.known_facts(0)
