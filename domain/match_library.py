"""The match library (政策匹配库): running the engine over the database and reading it.

A run loads the published item versions and the firms in its scope, evaluates them
(`domain.matching`) and replaces the library rows of that scope in one transaction:
every published item × every firm (full, nightly), one item × every firm (on
publication), or every item × the firms whose data changed (after an import).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from domain.access import require_enterprise_access, require_staff_or_reader
from domain.amounts import parse_amount_rule
from domain.enterprises import known_facts, load_fact_table
from domain.errors import Forbidden, NotFound
from domain.library import get_item, get_version
from domain.matching import (
    OUTCOME_CODE,
    CompiledItem,
    FactTable,
    ItemMatches,
    MaskContext,
    PairMatch,
    item_pairs,
    leaves,
    match_firm,
    match_items,
)
from domain.rules import (
    ManualCondition,
    Outcome,
    Verdict,
    describe,
    evaluate,
    parse_rule,
)
from models.enterprise import Enterprise, Fact
from models.matching import (
    BudgetPreview,
    ConditionView,
    Gap,
    GapReport,
    ItemMatchView,
    MatchedFirm,
    MatchRequest,
    MatchResult,
    MatchRun,
    MatchScope,
    MatchSummary,
    PolicyForMe,
    PolicyPush,
    RegionCount,
)
from models.policy import PolicyItem, PolicyItemVersion, VersionStatus
from models.reference import Actor, Role
from models.types import utcnow

log = structlog.get_logger()

# Up to this many firms, a run evaluates firm by firm (a few ms each); beyond it, the
# array engine's fixed cost is the smaller one.
ROW_PATH_LIMIT = 64
_LETTER = {code: outcome for outcome, code in OUTCOME_CODE.items()}


def compile_version(row: PolicyItemVersion) -> CompiledItem:
    return CompiledItem(
        row.item_code, row.version, parse_rule(row.eligibility), parse_amount_rule(row.amount_rule)
    )


async def published_items(
    session: AsyncSession, item_code: str | None = None
) -> list[CompiledItem]:
    """The version in force of every published item (or of one)."""
    query = (
        select(PolicyItemVersion)
        .join(
            PolicyItem,
            sa.and_(
                col(PolicyItem.code) == col(PolicyItemVersion.item_code),
                col(PolicyItem.published_version) == col(PolicyItemVersion.version),
            ),
        )
        .where(col(PolicyItemVersion.status) == VersionStatus.PUBLISHED)
        .order_by(col(PolicyItemVersion.item_code))
    )
    if item_code is not None:
        query = query.where(col(PolicyItemVersion.item_code) == item_code)
    return [compile_version(row) for row in await session.scalars(query)]


async def changed_firms(session: AsyncSession, since: datetime) -> list[str]:
    """Firms whose profile or facts were written at or after `since`."""
    profile = select(Enterprise.uscc).where(col(Enterprise.updated_at) >= since)
    facts = select(Fact.uscc).where(col(Fact.imported_at) >= since)
    return sorted(set(await session.scalars(profile)) | set(await session.scalars(facts)))


@dataclass(frozen=True)
class Loaded:
    items: list[CompiledItem]
    table: FactTable
    regions: dict[str, str]


async def load(session: AsyncSession, request: MatchRequest) -> Loaded:
    item_code = request.item_code if request.scope is MatchScope.ITEM else None
    items = await published_items(session, item_code)
    usccs = None
    if request.scope is MatchScope.FIRMS:
        assert request.changed_since is not None
        usccs = await changed_firms(session, request.changed_since)
    table, regions = await load_fact_table(session, usccs)
    return Loaded(items, table, regions)


class Evaluated:
    """A run's verdicts, kept compact (packed masks per item) until each item's rows
    are written, so that a full run never holds every pair as an object at once."""

    def __init__(self, loaded: Loaded, as_of: date, threads: int) -> None:
        table, items = loaded.table, loaded.items
        self._by_item: dict[str, list[PairMatch]] | None = None
        self._results: dict[str, ItemMatches] = {}
        if len(table) <= ROW_PATH_LIMIT:
            self._by_item = {item.item_code: [] for item in items}
            for row, uscc in enumerate(table.uscc):
                for pair in match_firm(uscc, table.known_facts(row), items, as_of):
                    self._by_item[pair.item.item_code].append(pair)
        else:
            self._context = MaskContext(table, as_of)
            results = match_items(table, items, as_of, threads, self._context)
            self._results = {r.item.item_code: r for r in results}

    def pairs(self, item_code: str) -> list[PairMatch]:
        if self._by_item is not None:
            return self._by_item[item_code]
        return item_pairs(self._context, self._results[item_code])

    def counts(self) -> tuple[int, int]:
        """(eligible, possibly eligible) pairs."""
        if self._by_item is not None:
            pairs = [p for item in self._by_item.values() for p in item]
            eligible = sum(1 for p in pairs if p.verdict is Verdict.ELIGIBLE)
            return eligible, len(pairs) - eligible
        results = self._results.values()
        return sum(r.eligible_count for r in results), sum(r.possible_count for r in results)


_COMPARED = ("version", "verdict", "amount_fen", "outcomes", "region_code")


async def store(
    session: AsyncSession, request: MatchRequest, loaded: Loaded, evaluated: Evaluated
) -> tuple[int, int]:
    """Bring the library rows of the run's scope in line with the run, writing only the
    differences (a nightly run mostly confirms what is there), one item at a time;
    returns (added, removed) pairs."""
    now = utcnow()
    codes = [item.item_code for item in loaded.items]
    firm_chunks: list[list[str]] | None = None
    if request.scope is MatchScope.FIRMS:
        firms = loaded.table.uscc
        firm_chunks = [firms[i : i + 500] for i in range(0, len(firms), 500)]
    added = removed = 0
    for code in codes:
        a, r = await _store_item(session, code, firm_chunks, loaded, evaluated.pairs(code), now)
        added, removed = added + a, removed + r
    # Items no longer in force (suspended, expired, superseded) leave the library.
    stale: sa.ColumnElement[bool] = col(MatchResult.item_code).not_in(codes) if codes else sa.true()
    if request.scope is MatchScope.ITEM:
        stale = sa.and_(col(MatchResult.item_code) == request.item_code, stale)
    chunks: list[list[str] | None] = [*firm_chunks] if firm_chunks is not None else [None]
    for chunk in chunks:
        where = stale if chunk is None else sa.and_(stale, col(MatchResult.uscc).in_(chunk))
        result = await session.execute(sa.delete(MatchResult).where(where))
        removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return added, removed


async def _store_item(
    session: AsyncSession,
    code: str,
    firm_chunks: list[list[str]] | None,
    loaded: Loaded,
    pairs: list[PairMatch],
    now: datetime,
) -> tuple[int, int]:
    existing: dict[str, tuple[object, ...]] = {}
    columns = [col(getattr(MatchResult, name)) for name in _COMPARED]
    chunks: list[list[str] | None] = [*firm_chunks] if firm_chunks is not None else [None]
    for chunk in chunks:
        where: sa.ColumnElement[bool] = col(MatchResult.item_code) == code
        if chunk is not None:
            where = sa.and_(where, col(MatchResult.uscc).in_(chunk))
        rows = await session.execute(sa.select(col(MatchResult.uscc), *columns).where(where))
        existing.update({row[0]: tuple(row[1:]) for row in rows})
    wanted = {
        p.uscc: (p.item.version, p.verdict.value, p.amount_fen, p.outcomes, loaded.regions[p.uscc])
        for p in pairs
    }
    gone = sorted(existing.keys() - wanted.keys())
    new = [uscc for uscc in wanted if uscc not in existing]
    changed = [uscc for uscc in wanted if uscc in existing and existing[uscc] != wanted[uscc]]
    for start in range(0, len(gone), 500):
        await session.execute(
            sa.delete(MatchResult).where(
                col(MatchResult.item_code) == code,
                col(MatchResult.uscc).in_(gone[start : start + 500]),
            )
        )

    def row(uscc: str) -> dict[str, object]:
        return {"item_code": code, "uscc": uscc, **dict(zip(_COMPARED, wanted[uscc], strict=True))}

    for start in range(0, len(new), 5000):
        await session.execute(
            sa.insert(MatchResult),
            [
                {**row(u), "first_matched_at": now, "matched_at": now}
                for u in new[start : start + 5000]
            ],
        )
    for start in range(0, len(changed), 5000):
        # ORM bulk UPDATE by primary key: one statement, many parameter sets.
        await session.execute(
            sa.update(MatchResult),
            [{**row(u), "matched_at": now} for u in changed[start : start + 5000]],
        )
    return len(new), len(gone)


async def run(
    sessionmaker: async_sessionmaker[AsyncSession],
    request: MatchRequest,
    workflow_id: str,
    as_of: date,
    threads: int,
) -> MatchSummary:
    """Load, evaluate and store one run; the evaluation is timed on its own."""
    started = utcnow()
    async with sessionmaker() as session:
        loaded = await load(session, request)
    clock = time.perf_counter()
    # numpy does the work outside the event loop, which keeps serving other activities.
    evaluated = await asyncio.to_thread(Evaluated, loaded, as_of, threads)
    compute_ms = round((time.perf_counter() - clock) * 1000)
    eligible, possible = evaluated.counts()
    async with sessionmaker.begin() as session:
        added, removed = await store(session, request, loaded, evaluated)
        record = MatchRun(
            scope=request.scope.value,
            item_code=request.item_code,
            workflow_id=workflow_id,
            firms=len(loaded.table),
            items=len(loaded.items),
            eligible=eligible,
            possible=possible,
            added=added,
            removed=removed,
            compute_ms=compute_ms,
            started_at=started,
        )
        session.add(record)
        await session.flush()
        assert record.id is not None
        summary = MatchSummary.model_validate({**record.model_dump(), "run_id": record.id})
    log.info("matching.run", scope=request.scope.value, **summary.model_dump())
    return summary


# ----- reading the library -------------------------------------------------------------


def condition_views(rule_json: object, outcomes: str) -> list[ConditionView]:
    """The stored letters back into readable conditions."""
    out = []
    for leaf, letter in zip(leaves(parse_rule(rule_json)), outcomes, strict=True):
        node = leaf.node
        text = node.manual if isinstance(node, ManualCondition) else describe(node)
        if leaf.negated and not isinstance(node, ManualCondition):
            text = "并非：" + text
        out.append(ConditionView(path=leaf.path, description=text, outcome=_LETTER[letter]))
    return out


async def policies_for(
    session: AsyncSession, actor: Actor, uscc: str, offset: int, limit: int
) -> tuple[int, list[PolicyForMe]]:
    require_enterprise_access(actor, uscc)
    total = (
        await session.scalar(
            select(sa.func.count()).select_from(MatchResult).where(col(MatchResult.uscc) == uscc)
        )
        or 0
    )
    return total, await _policies(session, uscc, None, offset, limit)


async def _policies(
    session: AsyncSession, uscc: str, item_code: str | None, offset: int, limit: int
) -> list[PolicyForMe]:
    query = (
        select(MatchResult, PolicyItemVersion, PolicyItem, PolicyPush.pushed_at)
        .join(
            PolicyItemVersion,
            sa.and_(
                col(PolicyItemVersion.item_code) == col(MatchResult.item_code),
                col(PolicyItemVersion.version) == col(MatchResult.version),
            ),
        )
        .join(PolicyItem, col(PolicyItem.code) == col(MatchResult.item_code))
        .outerjoin(
            PolicyPush,
            sa.and_(
                col(PolicyPush.uscc) == col(MatchResult.uscc),
                col(PolicyPush.item_code) == col(MatchResult.item_code),
            ),
        )
        .where(col(MatchResult.uscc) == uscc)
    )
    if item_code is not None:
        query = query.where(col(MatchResult.item_code) == item_code)
    rows = await session.execute(
        # Eligible first, then the larger amounts.
        query.order_by(
            col(MatchResult.verdict),
            sa.desc(sa.func.coalesce(col(MatchResult.amount_fen), 0)),
            col(MatchResult.item_code),
        )
        .offset(offset)
        .limit(limit)
    )
    return [
        PolicyForMe(
            item_code=match.item_code,
            version=match.version,
            title=version.title,
            category=str(version.category),
            department_code=item.department_code,
            verdict=Verdict(match.verdict),
            amount_fen=match.amount_fen,
            conditions=condition_views(version.eligibility, match.outcomes),
            pushed_at=pushed_at,
            matched_at=match.matched_at,
        )
        for match, version, item, pushed_at in rows
    ]


async def policy_for(
    session: AsyncSession, actor: Actor, uscc: str, item_code: str
) -> PolicyForMe | None:
    require_enterprise_access(actor, uscc)
    return next(
        (p for p in (await _policies(session, uscc, item_code, 0, 1)) if p.item_code == item_code),
        None,
    )


async def gaps(
    session: AsyncSession, actor: Actor, item_code: str, uscc: str, as_of: date
) -> GapReport:
    """What would make a firm eligible: each failing or unknown condition and the value
    it needs (from the single-pair evaluator, so always current)."""
    require_enterprise_access(actor, uscc)
    item = await get_item(session, item_code)
    if item.published_version is None:
        raise NotFound(f"policy item {item_code} has no published version")
    version = await get_version(session, item_code, item.published_version)
    rule = parse_rule(version.eligibility)
    evaluation = evaluate(rule, await known_facts(session, uscc), as_of)
    return GapReport(
        item_code=item_code,
        version=version.version,
        uscc=uscc,
        verdict=evaluation.verdict,
        gaps=[
            Gap(
                path=c.path,
                description=c.description,
                outcome=c.outcome,
                fact=c.fact,
                needed=_needed(c.description, c.reason.value if c.reason else None),
                expected=c.expected,
                actual=c.actual,
                reason=c.reason,
            )
            for c in evaluation.conditions
            if c.outcome is not Outcome.PASS
        ],
    )


def _needed(description: str, reason: str | None) -> str:
    if reason == "manual":
        return f"需人工核实：{description}"
    if reason == "missing":
        return f"需补充数据后满足：{description}"
    if reason == "stale":
        return f"需更新数据后满足：{description}"
    return f"需满足：{description}"


async def require_item_reader(session: AsyncSession, actor: Actor, item_code: str) -> PolicyItem:
    """Department staff see their own department's items; finance, auditors and admins
    see all; firms see none of this."""
    require_staff_or_reader(actor)
    item = await get_item(session, item_code)
    department_staff = actor.role in (Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD)
    if department_staff and actor.department_code != item.department_code:
        raise Forbidden(f"item {item_code} belongs to department {item.department_code}")
    return item


async def item_matches(session: AsyncSession, actor: Actor, item_code: str) -> ItemMatchView:
    item = await require_item_reader(session, actor, item_code)
    rows = await session.execute(
        select(
            MatchResult.region_code,
            MatchResult.verdict,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(MatchResult.amount_fen), 0),
        )
        .where(col(MatchResult.item_code) == item_code)
        .group_by(col(MatchResult.region_code), col(MatchResult.verdict))
        .order_by(col(MatchResult.region_code))
    )
    regions: dict[str, RegionCount] = {}
    eligible_amount = 0
    for region, verdict, count, amount in rows:
        entry = regions.setdefault(
            region, RegionCount(region_code=region, eligible=0, possibly_eligible=0)
        )
        if verdict == Verdict.ELIGIBLE:
            entry.eligible += count
            eligible_amount += int(amount or 0)
        else:
            entry.possibly_eligible += count
    return ItemMatchView(
        item_code=item_code,
        version=item.published_version,
        eligible=sum(r.eligible for r in regions.values()),
        possibly_eligible=sum(r.possibly_eligible for r in regions.values()),
        eligible_amount_fen=eligible_amount,
        by_region=list(regions.values()),
    )


async def matched_firms(
    session: AsyncSession,
    actor: Actor,
    item_code: str,
    verdict: Verdict | None,
    region_code: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[MatchedFirm]]:
    await require_item_reader(session, actor, item_code)
    where = [col(MatchResult.item_code) == item_code]
    if verdict is not None:
        where.append(col(MatchResult.verdict) == verdict.value)
    if region_code is not None:
        where.append(col(MatchResult.region_code) == region_code)
    total = (
        await session.scalar(select(sa.func.count()).select_from(MatchResult).where(*where)) or 0
    )
    rows = await session.execute(
        select(MatchResult, Enterprise.name)
        .join(Enterprise, col(Enterprise.uscc) == col(MatchResult.uscc))
        .where(*where)
        .order_by(
            col(MatchResult.verdict),
            sa.desc(sa.func.coalesce(col(MatchResult.amount_fen), 0)),
            col(MatchResult.uscc),
        )
        .offset(offset)
        .limit(limit)
    )
    return total, [
        MatchedFirm(
            uscc=m.uscc,
            name=name,
            region_code=m.region_code,
            verdict=Verdict(m.verdict),
            amount_fen=m.amount_fen,
            matched_at=m.matched_at,
        )
        for m, name in rows
    ]


async def budget_preview(
    session: AsyncSession, actor: Actor, item_code: str, version: int, as_of: date, threads: int
) -> BudgetPreview:
    """How many firms a version (typically a draft) would match today, and what they
    would receive, against its annual quota."""
    await require_item_reader(session, actor, item_code)
    row = await get_version(session, item_code, version)
    compiled = compile_version(row)
    table, _regions = await load_fact_table(session)
    [result] = match_items(table, [compiled], as_of, threads)
    matched = result.matched(table)
    known = matched.amount_known
    eligible_amount = int(matched.amount_fen[matched.eligible & known].sum())
    possible_amount = int(matched.amount_fen[~matched.eligible & known].sum())
    quota = row.annual_quota_fen
    covers: Literal["eligible_and_possible", "eligible_only", "neither"] = "neither"
    if eligible_amount + possible_amount <= quota:
        covers = "eligible_and_possible"
    elif eligible_amount <= quota:
        covers = "eligible_only"
    return BudgetPreview(
        item_code=item_code,
        version=version,
        as_of=as_of,
        firms=len(table),
        eligible=result.eligible_count,
        possibly_eligible=result.possible_count,
        eligible_amount_fen=eligible_amount,
        possible_amount_fen=possible_amount,
        unknown_amount=int((matched.eligible & ~known).sum()),
        annual_quota_fen=quota,
        covers=covers,
    )


def today_in_shanghai(now: datetime | None = None) -> date:
    from core.workdays import SHANGHAI

    return (now or utcnow()).astimezone(SHANGHAI).date()
