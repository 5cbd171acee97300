"""Enterprise registry services: listing, detail, and the facts the rules read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from domain.access import firm_filter, require_firm_reader
from domain.engine.arrays import FactTable, FactTableBuilder
from domain.engine.rules import KnownFact, invalid_fact
from domain.errors import NotFound
from models.facts import FACT_KINDS, FactKind, coerce_fact_value
from models.reference import Actor
from models.registry import (
    BankAccount,
    BankAccountPublic,
    Enterprise,
    EnterpriseDetail,
    EnterprisePublic,
    Fact,
    FactPublic,
    FactsVersion,
    mask_account,
)


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
    builder = FactTableBuilder()
    regions: dict[str, str] = {}
    chunks: list[list[str] | None] = [None] if usccs is None else [*_chunks(usccs)]
    profile = sa.select(
        col(Enterprise.uscc),
        col(Enterprise.region_code),
        col(Enterprise.industry_code),
        col(Enterprise.size_class),
        col(Enterprise.established_on),
    ).order_by(col(Enterprise.uscc))
    for chunk in chunks:
        query = profile if chunk is None else profile.where(col(Enterprise.uscc).in_(chunk))
        async for part in _streamed(session, query):
            for uscc, region, industry, size, established in part:
                row = builder.add_firm(uscc)
                regions[uscc] = region
                builder.add(row, "region_code", KnownFact(region))
                builder.add(row, "industry_code", KnownFact(industry))
                builder.add(row, "size_class", KnownFact(size))
                builder.add(row, "established_on", KnownFact(established))
        # Every fact, each firm's and kind's oldest first, the latest kept: one pass in
        # the index's order, where a query for the latest of each is a join of the
        # table with itself. The value as text, decoded here: one that does not
        # decode spoils its own fact, not the query.
        facts = sa.select(
            col(Fact.uscc), col(Fact.kind), sa.cast(col(Fact.value), sa.Text), col(Fact.period_end)
        ).order_by(col(Fact.uscc), col(Fact.kind), col(Fact.period_end), col(Fact.id))
        if chunk is not None:
            facts = facts.where(col(Fact.uscc).in_(chunk))
        latest = None
        async for batch in _streamed(session, facts):
            for fact in batch:
                if latest is not None and (latest[0] != fact[0] or latest[1] != fact[1]):
                    _add_fact(builder, *latest)
                latest = fact
        if latest is not None:
            _add_fact(builder, *latest)
    return builder.finish(), regions


class FactTableCache:
    """Every firm's facts kept in memory between requests of one process, reloaded
    when the database's `FactsVersion` token has changed since (an import, a default
    recorded, a firm's profile edited), so that what reads them all (budget preview)
    costs a query of one row rather than a read of millions of facts.

    The token is read before the facts: a write landing between the two leaves a copy
    newer than its token, reloaded once too often, never one older. One copy per
    database. Two requests that find it stale at once both load it; the later one's is
    kept."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[str, FactTable, dict[str, str]]] = {}

    async def load(self, session: AsyncSession) -> tuple[FactTable, dict[str, str]]:
        database = session.get_bind().engine.url.render_as_string(hide_password=True)
        token = await session.scalar(select(FactsVersion.token).where(FactsVersion.id == 1))
        kept = self._kept.get(database)
        if kept is not None and token is not None and kept[0] == token:
            return kept[1], kept[2]
        table, regions = await load_fact_table(session)
        if token is not None:
            self._kept[database] = (token, table, regions)
        return table, regions


FACT_TABLES = FactTableCache()  # this process's


def _add_fact(
    builder: FactTableBuilder, uscc: str, kind: str, stored: str | None, end: date | None
) -> None:
    firm = builder.row_of.get(uscc)
    fact_kind = FACT_KINDS.get(kind)
    if firm is None or fact_kind is None:
        return  # a fact of a firm not read, or of a kind no rule can name
    if not builder.add_stored(firm, kind, stored, end):
        builder.add(firm, kind, read_fact(fact_kind, stored, end))


async def _streamed(session: AsyncSession, query: sa.Executable) -> AsyncIterator[Sequence[Any]]:
    """A query's rows in parts, its cursor closed once read: PostgreSQL refuses some DDL
    (the match library's first write) on a table that an open cursor of the session
    still reads."""
    result = await session.stream(query)
    try:
        async for part in result.partitions(10_000):
            yield part
    finally:
        await result.close()


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
    await get_enterprise(session, uscc)  # 404 for an unknown firm
    table, _regions = await load_fact_table(session, [uscc])
    return table.known_facts(0)
