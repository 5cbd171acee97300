"""The match library (政策匹配库): running the engine over the database and reading it.

A run loads the published item versions and the firms in its scope, evaluates them
(`domain.engine.arrays`) and replaces the library rows of that scope in one transaction:
every published item × every firm (full, nightly), one item × every firm (on
publication), or every item × the firms whose data changed (after an import).

Bad data stops no run. An item version whose rules cannot be read or evaluated is
skipped (its library rows stay as they were) and a stored fact that fails its kind's
type or range reads as unknown for its firm; either is recorded as a `MatchError` of
the run, counted in its summary, logged (`matching.item_failed`,
`matching.fact_invalid`), shown to the item's department (`item_matches`, and a
stage warning with a notice) and to ops (`match_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from core.bulk import fetch_rows, insert_rows, rebuilt_after
from core.db import Reader, on_engine, reader_of
from core.workdays import SHANGHAI
from domain import access
from domain.access import require_enterprise_access
from domain.eligibility import assess
from domain.engine.arrays import (
    OUTCOME_CODE,
    CompiledItem,
    FactTable,
    FirmMatcher,
    ItemFailure,
    ItemMatches,
    MaskContext,
    PairMatch,
    RowEvaluator,
    exact_sum,
    failure_message,
    item_pairs,
    leaves,
    match_items,
    match_pair,
)
from domain.engine.rules import (
    InvalidRule,
    KnownFact,
    ManualCondition,
    describe,
    parse_rule,
)
from domain.errors import NotFound
from domain.notices import raise_stage_warning, texts
from domain.policy.versions import UnevaluableVersion, load_published, load_version
from domain.registry.enterprises import FACT_TABLES, load_fact_table
from models.eligibility import Outcome, Verdict
from models.matching import (
    MAX_RECORDED_ERRORS,
    BudgetPreview,
    ConditionView,
    Gap,
    GapReport,
    ItemMatchView,
    MatchedFirm,
    MatchError,
    MatchErrorView,
    MatchRequest,
    MatchResult,
    MatchRun,
    MatchRunView,
    MatchScope,
    MatchSummary,
    MatchTally,
    PolicyForMe,
    PolicyPush,
    RegionCount,
)
from models.policy import PolicyItem, PolicyItemVersion, StageWarning
from models.reference import Actor, Role
from models.registry import Enterprise, Fact
from models.types import utcnow

log = structlog.get_logger()

# Up to this many firms, a run evaluates firm by firm (`FirmMatcher`: about 12 ms to
# compile a thousand items, then half a millisecond a firm); beyond it, the
# array engine's fixed cost is the smaller one.
ROW_PATH_LIMIT = 64
# Firms named in one IN list (SQLite allows 32,766 parameters, PostgreSQL 32,767).
IN_LIST = 500
_LETTER = {code: outcome for outcome, code in OUTCOME_CODE.items()}


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
    # Versions in force whose stored rules cannot be read: skipped, rows kept.
    failures: list[ItemFailure] = field(default_factory=list)


class InvalidMatchRequest(ValueError):
    """A run asked for something no retry can give."""


async def load(
    session: AsyncSession, request: MatchRequest, snapshots: Reader | None = None
) -> Loaded:
    """What a run evaluates: the published items, and the facts of every firm (the
    process's kept copy, `FACT_TABLES`, brought up to date; stored as the snapshot a
    cold process starts from in a session of `snapshots`) or of those an import
    changed."""
    if request.scope is MatchScope.ITEM and not request.item_code:
        raise InvalidMatchRequest("an item run needs item_code")
    if request.scope is MatchScope.FIRMS and request.changed_since is None:
        raise InvalidMatchRequest("a firms run needs changed_since")
    item_code = request.item_code if request.scope is MatchScope.ITEM else None
    items, failures = await load_published(session, item_code)
    usccs = None
    if request.scope is MatchScope.FIRMS:
        assert request.changed_since is not None
        usccs = await changed_firms(session, request.changed_since)
    if usccs is None:
        table, regions = await FACT_TABLES.load(session, snapshots)
    else:
        table, regions = await load_fact_table(session, usccs)
    return Loaded(items, table, regions, failures)


class Evaluated:
    """A run's verdicts, kept compact (packed masks per item) until each item's rows
    are written, so that a full run never holds every pair as an object at once."""

    def __init__(self, loaded: Loaded, as_of: date, threads: int) -> None:
        table, items = loaded.table, loaded.items
        self.failures: list[ItemFailure] = []  # items that could not be evaluated
        self._by_item: dict[str, list[PairMatch]] | None = None
        self._results: dict[str, ItemMatches] = {}
        self._usccs: np.ndarray[Any, np.dtype[np.object_]] | None = None  # by table row
        self._regions: np.ndarray[Any, np.dtype[np.object_]] | None = None
        if len(table) <= ROW_PATH_LIMIT:
            self._by_item = self._firm_by_firm(table, items, as_of)
        else:
            self._context = MaskContext(table, as_of)
            results = match_items(table, items, as_of, threads, self._context, self.failures)
            self._results = {r.item.item_code: r for r in results}

    def _firm_by_firm(
        self, table: FactTable, items: list[CompiledItem], as_of: date
    ) -> dict[str, list[PairMatch]]:
        """A few firms: each against every item at once (`FirmMatcher`). Items it cannot
        compile, or every item if a firm's facts or an amount rule raise there, are
        matched one item at a time, so that one item's error fails only that item."""
        firms = [(u, table.known_facts(r)) for r, u in enumerate(table.uscc)]
        by_item: dict[str, list[PairMatch]] = {}
        try:
            matcher = FirmMatcher(items, as_of)
            rest = matcher.uncompiled
            compiled = {item.item_code for item in items} - {item.item_code for item in rest}
            by_item = {code: [] for code in compiled}
            for uscc, facts in firms:
                for match in matcher.match_compiled(uscc, facts):
                    by_item[match.item.item_code].append(match)
        except Exception:  # isolation boundary: found per item below
            by_item, rest = {}, items
        evaluators = [(uscc, facts, RowEvaluator(facts, as_of)) for uscc, facts in firms]
        for item in rest:
            try:
                by_item[item.item_code] = [
                    pair
                    for uscc, facts, evaluator in evaluators
                    if (pair := match_pair(evaluator, uscc, facts, item)) is not None
                ]
            except Exception as exc:  # isolation boundary: one item, whatever went wrong
                self._failed(item, exc)
        return by_item

    def pairs(self, item: CompiledItem) -> list[PairMatch] | None:
        """The item's library rows; None if it could not be evaluated (see `failures`)."""
        if self._by_item is not None:
            return self._by_item.get(item.item_code)
        result = self._results.get(item.item_code)
        if result is None:
            return None
        try:
            return item_pairs(self._context, result)
        except Exception as exc:  # isolation boundary: one item, whatever went wrong
            self._failed(item, exc)
            return None

    def rows(self, item: CompiledItem, regions: dict[str, str]) -> list[LibraryRow] | None:
        """The item's library rows as plain tuples in firm order (credit code order);
        None if it could not be evaluated (see `failures`). Built column by column from
        the arrays: a full run has millions, too many for an object each."""
        if self._by_item is not None:
            pairs = self._by_item.get(item.item_code)
            if pairs is None:
                return None
            return sorted(
                (p.uscc, item.version, p.verdict.value, p.amount_fen, p.outcomes, regions[p.uscc])
                for p in pairs
            )
        result = self._results.get(item.item_code)
        if result is None:
            return None
        try:
            context = self._context
            matched = result.matched(context.table)
            letters = context.leaf_outcomes(item.rule, matched.rows)
            if self._usccs is None:
                self._usccs = np.array(context.table.uscc, dtype=object)
                self._regions = np.array([regions[u] for u in context.table.uscc], dtype=object)
            assert self._regions is not None
            verdicts = _VERDICTS[matched.eligible.astype(np.intp)]
            amounts = matched.amount_fen.astype(object)  # Python ints, and None where unknown
            amounts[~matched.amount_known] = None
            return list(
                zip(
                    self._usccs[matched.rows].tolist(),
                    itertools.repeat(item.version),
                    verdicts.tolist(),
                    amounts.tolist(),
                    letters,
                    self._regions[matched.rows].tolist(),
                    strict=False,  # the version repeats without end
                )
            )
        except Exception as exc:  # isolation boundary: one item, whatever went wrong
            self._failed(item, exc)
            return None

    def _failed(self, item: CompiledItem, exc: Exception) -> None:
        self.failures.append(ItemFailure(item.item_code, item.version, failure_message(exc)))

    def counts(self) -> tuple[int, int]:
        """(eligible, possibly eligible) pairs."""
        if self._by_item is not None:
            pairs = [p for item in self._by_item.values() for p in item]
            eligible = sum(1 for p in pairs if p.verdict is Verdict.ELIGIBLE)
            return eligible, len(pairs) - eligible
        results = self._results.values()
        return sum(r.eligible_count for r in results), sum(r.possible_count for r in results)


_COMPARED = ("version", "verdict", "amount_fen", "outcomes", "region_code")
_COMPARED_COLUMNS = [col(getattr(MatchResult, name)) for name in _COMPARED]
# A library row as it is compared and written: (uscc, *_COMPARED).
LibraryRow = tuple[str, int, str, int | None, str, str]
_VERDICTS = np.array([Verdict.POSSIBLY_ELIGIBLE.value, Verdict.ELIGIBLE.value], dtype=object)


async def store(
    session: AsyncSession, request: MatchRequest, loaded: Loaded, evaluated: Evaluated
) -> tuple[int, int]:
    """Bring the library rows of the run's scope in line with the run, writing only the
    differences (a nightly run mostly confirms what is there), one item at a time;
    returns (added, removed) pairs."""
    now = utcnow()
    # Items that could not be evaluated are still in force: their rows stay as they were.
    codes = [item.item_code for item in loaded.items] + [f.item_code for f in loaded.failures]
    firm_chunks: list[list[str]] | None = None
    if request.scope is MatchScope.FIRMS:
        firms = loaded.table.uscc
        firm_chunks = [firms[i : i + IN_LIST] for i in range(0, len(firms), IN_LIST)]
    added = removed = changed = 0
    present = await _library_items(session)  # as the run found the library
    # The first full run writes millions of rows: with the indexes built afterwards.
    first = request.scope is MatchScope.FULL and not present
    digests = (
        None
        if first or firm_chunks is not None
        else await _stored_digests(session, [item.item_code for item in loaded.items])
    )
    async with rebuilt_after(session, "match_result") if first else contextlib.nullcontext():
        for item in loaded.items:
            rows = evaluated.rows(item, loaded.regions)
            if rows is None:
                continue
            if digests is not None and digests.get(item.item_code) == _digest(rows):
                continue  # the nightly case: the item's rows are stored as they are
            a, r, c = await _store_item(session, item.item_code, firm_chunks, rows, now)
            added, removed, changed = added + a, removed + r, changed + c
    # Items no longer in force (suspended, expired, superseded) leave the library. A
    # first write started from an empty library: nothing in it can be stale.
    if not first:
        removed += await _remove_stale(session, request, codes, firm_chunks, present)
    if first or added or removed or changed:
        await count_library(
            session, request.item_code if request.scope is MatchScope.ITEM else None
        )
    return added, removed


async def _remove_stale(
    session: AsyncSession,
    request: MatchRequest,
    codes: list[str],
    firm_chunks: list[list[str]] | None,
    present: list[str],
) -> int:
    """Delete the scope's rows of items not among `codes` (the library held `present`
    before the run); returns how many."""
    if firm_chunks is None:
        # Full or item run: by item, through the primary key.
        in_force = set(codes)
        stale_items = [code for code in present if code not in in_force]
        if request.scope is MatchScope.ITEM:
            stale_items = [code for code in stale_items if code == request.item_code]
        if not stale_items:
            return 0
        result = await session.execute(
            sa.delete(MatchResult).where(col(MatchResult.item_code).in_(stale_items))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
    stale: sa.ColumnElement[bool] = col(MatchResult.item_code).not_in(codes) if codes else sa.true()
    removed = 0
    for chunk in firm_chunks:
        result = await session.execute(
            sa.delete(MatchResult).where(stale, col(MatchResult.uscc).in_(chunk))
        )
        removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return removed


# The distinct items of the library by skipping through the primary key's index, one
# probe per item (both databases run it as written; a DISTINCT would read every row).
_LIBRARY_ITEMS = sa.text(
    "WITH RECURSIVE present(code) AS ("
    " SELECT min(item_code) FROM match_result"
    " UNION ALL"
    " SELECT (SELECT min(item_code) FROM match_result WHERE item_code > present.code)"
    " FROM present WHERE present.code IS NOT NULL)"
    " SELECT code FROM present WHERE code IS NOT NULL"
)


async def _library_items(session: AsyncSession) -> list[str]:
    return list(await session.scalars(_LIBRARY_ITEMS))


def _digest(rows: list[LibraryRow]) -> str:
    """The MD5 of an item's library rows as `_stored_digests` has PostgreSQL write them:
    one line per row, in credit code order, fields joined by "|" and an unknown amount
    empty. Every field is a code, a number or outcome letters: none holds "|" or a
    line break."""
    text = "\n".join(
        f"{uscc}|{version}|{verdict}|{'' if amount is None else amount}|{outcomes}|{region}"
        for uscc, version, verdict, amount, outcomes, region in rows
    )
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


async def _stored_digests(session: AsyncSession, codes: list[str]) -> dict[str, str] | None:
    """Each item's stored rows as one MD5 (see `_digest`), computed by PostgreSQL in
    one pass: an unchanged item is then confirmed without sending its rows (a nightly
    run over 2.8 M pairs reads 30 digests, not 2.8 M rows). None on SQLite, which has
    no MD5: there the rows are compared as read."""
    if session.get_bind().dialect.name != "postgresql" or not codes:
        return None
    rows = await session.execute(_STORED_DIGESTS, {"codes": codes})
    return {str(code): str(digest) for code, digest in rows}


_STORED_DIGESTS = sa.text(
    "SELECT item_code, md5(string_agg("
    " concat_ws('|', uscc, version, verdict, coalesce(amount_fen::text, ''), outcomes,"
    " region_code), E'\\n' ORDER BY uscc COLLATE \"C\"))"
    " FROM match_result WHERE item_code = ANY(:codes) GROUP BY item_code"
)


async def count_library(session: AsyncSession, item_code: str | None = None) -> None:
    """Count the library again, for one item or all (`MatchTally`), in the transaction
    that changed it."""
    delete = sa.delete(MatchTally)
    rows = sa.select(
        col(MatchResult.item_code),
        col(MatchResult.region_code),
        col(MatchResult.verdict),
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(col(MatchResult.amount_fen)), 0),
    )
    if item_code is not None:
        delete = delete.where(col(MatchTally.item_code) == item_code)
        rows = rows.where(col(MatchResult.item_code) == item_code)
    rows = rows.group_by(
        col(MatchResult.item_code), col(MatchResult.region_code), col(MatchResult.verdict)
    )
    await session.execute(delete)
    await session.execute(
        sa.insert(MatchTally).from_select(
            ["item_code", "region_code", "verdict", "firms", "amount_fen"], rows
        )
    )


async def _store_item(
    session: AsyncSession,
    code: str,
    firm_chunks: list[list[str]] | None,
    rows: list[LibraryRow],
    now: datetime,
) -> tuple[int, int, int]:
    """Bring one item's library rows in line with `rows` (in credit code order);
    returns how many rows were added, removed and changed."""
    existing: list[LibraryRow] = []
    chunks: list[list[str] | None] = [*firm_chunks] if firm_chunks is not None else [None]
    for chunk in chunks:
        query = (
            sa.select(col(MatchResult.uscc), *_COMPARED_COLUMNS)
            .where(col(MatchResult.item_code) == code)
            .order_by(col(MatchResult.uscc))
        )
        if chunk is not None:
            query = query.where(col(MatchResult.uscc).in_(chunk))
        existing.extend(await fetch_rows(session, query))
    if existing == rows:  # the nightly case: one comparison of two lists
        return 0, 0, 0
    stored = {row[0]: row for row in existing}
    wanted = {row[0]: row for row in rows}
    gone = sorted(stored.keys() - wanted.keys())
    new = [row for row in rows if row[0] not in stored]
    changed = [row for row in rows if row[0] in stored and stored[row[0]] != row]
    for start in range(0, len(gone), IN_LIST):
        await session.execute(
            sa.delete(MatchResult).where(
                col(MatchResult.item_code) == code,
                col(MatchResult.uscc).in_(gone[start : start + IN_LIST]),
            )
        )
    # New rows past the ORM (COPY on PostgreSQL): a first run writes millions.
    await insert_rows(
        session,
        MatchResult.__table__,  # type: ignore[attr-defined]
        ("item_code", "uscc", *_COMPARED),
        ((code, *row) for row in new),
        {"first_matched_at": now, "matched_at": now},
    )
    for start in range(0, len(changed), 5000):
        # ORM bulk UPDATE by primary key: one statement, many parameter sets.
        await session.execute(
            sa.update(MatchResult),
            [
                {"item_code": code, **dict(zip(("uscc", *_COMPARED), row, strict=True))}
                | {"matched_at": now}
                for row in changed[start : start + 5000]
            ],
        )
    return len(new), len(gone), len(changed)


async def run(
    sessionmaker: async_sessionmaker[AsyncSession],
    request: MatchRequest,
    workflow_id: str,
    as_of: date,
    threads: int,
) -> MatchSummary:
    """Load, evaluate and store one run; the evaluation is timed on its own."""
    started = utcnow()
    # The snapshot is stored by an engine's sessions, never in a test's transaction.
    snapshots = sessionmaker if on_engine(sessionmaker) else None
    async with reader_of(sessionmaker)() as session:
        loaded = await load(session, request, snapshots)
    clock = time.perf_counter()
    # numpy does the work outside the event loop, which keeps serving other activities.
    evaluated = await asyncio.to_thread(Evaluated, loaded, as_of, threads)
    compute_ms = round((time.perf_counter() - clock) * 1000)
    eligible, possible = evaluated.counts()
    invalid = loaded.table.invalid_facts()
    async with sessionmaker.begin() as session:
        added, removed = await store(session, request, loaded, evaluated)
        failures = [*loaded.failures, *evaluated.failures]
        record = MatchRun(
            scope=request.scope.value,
            item_code=request.item_code,
            workflow_id=workflow_id,
            firms=len(loaded.table),
            items=len(loaded.items) + len(loaded.failures),
            eligible=eligible,
            possible=possible,
            added=added,
            removed=removed,
            compute_ms=compute_ms,
            item_errors=len(failures),
            fact_errors=len(invalid),
            started_at=started,
        )
        session.add(record)
        await session.flush()
        assert record.id is not None
        await _record_errors(session, record.id, failures, invalid)
        await _warn_departments(session, loaded, failures)
        summary = MatchSummary.model_validate({**record.model_dump(), "run_id": record.id})
    log.info("matching.run", scope=request.scope.value, **summary.model_dump())
    return summary


async def _record_errors(
    session: AsyncSession,
    run_id: int,
    failures: list[ItemFailure],
    invalid: list[tuple[str, str, KnownFact]],
) -> None:
    """Log every error; store the first MAX_RECORDED_ERRORS (items first)."""
    rows: list[dict[str, object]] = []
    now = utcnow()
    for failure in failures:
        log.error(
            "matching.item_failed",
            run_id=run_id,
            item_code=failure.item_code,
            version=failure.version,
            error=failure.message,
        )
        rows.append(
            {
                "item_code": failure.item_code,
                "version": failure.version,
                "message": failure.message,
            }
        )
    for uscc, fact, known in invalid[: max(0, MAX_RECORDED_ERRORS - len(rows))]:
        log.warning(
            "matching.fact_invalid", run_id=run_id, uscc=uscc, fact=fact, error=known.invalid
        )
        message = f"{fact} = {known.value}: {known.invalid}"
        rows.append({"uscc": uscc, "fact": fact, "message": message})
    if len(failures) + len(invalid) > len(rows):
        log.warning(
            "matching.errors_not_recorded",
            run_id=run_id,
            recorded=len(rows),
            total=len(failures) + len(invalid),
        )
    rows = rows[:MAX_RECORDED_ERRORS]
    for start in range(0, len(rows), 500):
        await session.execute(
            sa.insert(MatchError),
            [{"run_id": run_id, "at": now, **row} for row in rows[start : start + 500]],
        )


MATCHING_STAGE = "matching"


def _warning_subject(item_code: str) -> str:
    return f"match/{item_code}"


async def _warn_departments(
    session: AsyncSession, loaded: Loaded, failures: list[ItemFailure]
) -> None:
    """Warn the department of each item the run could not evaluate (once while the
    problem lasts), and close the warnings of items that evaluate again."""
    now = utcnow()
    failed = {f.item_code: f for f in failures}
    rows = await session.execute(
        sa.select(col(PolicyItem.code), col(PolicyItem.department_code)).where(
            col(PolicyItem.code).in_(sorted(failed))
        )
    )
    departments = {code: department for code, department in rows}
    for code, failure in failed.items():
        await raise_stage_warning(
            session,
            subject=_warning_subject(code),
            stage=MATCHING_STAGE,
            department_code=departments[code],
            due_at=now,
            text=texts.match_failed_warning(code, failure.version, failure.message),
        )
    evaluated = {_warning_subject(i.item_code) for i in loaded.items if i.item_code not in failed}
    open_warnings = await session.scalars(
        select(StageWarning).where(
            col(StageWarning.stage) == MATCHING_STAGE, col(StageWarning.resolved_at).is_(None)
        )
    )
    for warning in open_warnings:
        if warning.subject in evaluated:
            warning.resolved_at = now
    await session.flush()


# ----- reading the library -------------------------------------------------------------


def condition_views(rule_json: object, outcomes: str) -> list[ConditionView]:
    """The stored letters back into readable conditions. A stored rule that no longer
    reads (or letters that do not fit it) gives one line saying so, not an error: the
    rest of the firm's list stays readable."""
    try:
        described = _described(json.dumps(rule_json, sort_keys=True, ensure_ascii=False))
        letters = [_LETTER[letter] for letter in outcomes]
        if len(letters) != len(described):
            raise InvalidRule([])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("matching.conditions_unreadable", error=failure_message(exc))
        return [
            ConditionView(
                path="$",
                description="该版本的条件暂无法读取，请以主管部门审核结果为准",
                outcome=Outcome.UNKNOWN,
            )
        ]
    return [
        ConditionView(path=path, description=text, outcome=outcome)
        for (path, text), outcome in zip(described, letters, strict=True)
    ]


@functools.lru_cache(maxsize=4096)
def _described(rule_text: str) -> tuple[tuple[str, str], ...]:
    """Each condition of a rule (JSON text) as its path and its text. A firm's list
    describes the same few rules again and again (a quarter of its CPU): each is parsed
    and described once per process. A rule that does not read raises, and is not kept."""
    out = []
    for leaf in leaves(parse_rule(json.loads(rule_text))):
        node = leaf.node
        text = node.manual if isinstance(node, ManualCondition) else describe(node)
        if leaf.negated and not isinstance(node, ManualCondition):
            text = "并非：" + text
        out.append((leaf.path, text))
    return tuple(out)


async def policies_for(
    session: AsyncSession, actor: Actor, uscc: str, offset: int, limit: int
) -> tuple[int, list[PolicyForMe]]:
    await access.require_firm_reader(session, actor, uscc)
    # Staff see the firm's matches under the items they read (domain.access).
    readable = await access.item_firm_pairs_filter(
        session,
        actor,
        item_code=col(MatchResult.item_code),
        uscc=col(MatchResult.uscc),
        region_code=col(MatchResult.region_code),
    )
    total = (
        await session.scalar(
            select(sa.func.count())
            .select_from(MatchResult)
            .where(col(MatchResult.uscc) == uscc, readable)
        )
        or 0
    )
    return total, await _policies(session, uscc, None, offset, limit, readable)


async def _policies(
    session: AsyncSession,
    uscc: str,
    item_code: str | None,
    offset: int,
    limit: int,
    readable: sa.ColumnElement[bool] | None = None,
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
    if readable is not None:
        query = query.where(readable)
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
    """What would make a firm eligible under the item's published version: each failing
    or unknown condition and the value it needs (assessed now, so always current)."""
    await access.require_item_firm_reader(session, actor, item_code, uscc)
    assessment = await assess(session, item_code, uscc, as_of)
    return GapReport(
        item_code=item_code,
        version=assessment.version,
        uscc=uscc,
        verdict=assessment.verdict,
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
            for c in assessment.conditions
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
    if reason == "invalid":
        return f"需更正数据后满足：{description}"
    return f"需满足：{description}"


async def readable_matches(
    session: AsyncSession, actor: Actor, item_code: str
) -> tuple[PolicyItem, sa.ColumnElement[bool]]:
    """The item, and which of its library rows the actor reads: all of them for its
    departments, its region's finance, auditors and admins; a finance unit of another
    region the firms of its region (domain.access decides)."""
    item, reach = await access.require_item_reader(session, actor, item_code)
    readable = await access.item_firm_filter(
        session, actor, reach, uscc=col(MatchResult.uscc), region_code=col(MatchResult.region_code)
    )
    return item, readable


async def item_matches(session: AsyncSession, actor: Actor, item_code: str) -> ItemMatchView:
    """Counts by region and verdict from the tally (`MatchTally`, a few rows per region),
    not from the library (a hundred thousand rows per item at city scale: 55 ms of CPU a
    request). A reader of part of the item's firms reads those of its regions."""
    item, reach = await access.require_item_reader(session, actor, item_code)
    readable = await access.item_firm_filter(
        session, actor, reach, uscc=col(MatchResult.uscc), region_code=col(MatchTally.region_code)
    )
    rows = await session.execute(
        select(MatchTally.region_code, MatchTally.verdict, MatchTally.firms, MatchTally.amount_fen)
        .where(col(MatchTally.item_code) == item_code, readable)
        .order_by(col(MatchTally.region_code))
    )
    regions: dict[str, RegionCount] = {}
    eligible_amount = 0
    for region, verdict, count, amount in rows:
        entry = regions.setdefault(
            region, RegionCount(region_code=region, eligible=0, possibly_eligible=0)
        )
        if verdict == Verdict.ELIGIBLE:
            entry.eligible += count
            eligible_amount += amount
        else:
            entry.possibly_eligible += count
    return ItemMatchView(
        item_code=item_code,
        version=item.published_version,
        eligible=sum(r.eligible for r in regions.values()),
        possibly_eligible=sum(r.possibly_eligible for r in regions.values()),
        eligible_amount_fen=eligible_amount,
        by_region=list(regions.values()),
        errors=await _item_errors(session, actor, item),
    )


ITEM_ERRORS_SHOWN = 100


async def _item_errors(
    session: AsyncSession, actor: Actor, item: PolicyItem
) -> list[MatchErrorView]:
    """The errors of the latest run that covered the item: the item's own, and the
    invalid stored facts its rule reads, of the firms the actor reads."""
    covering = sa.or_(
        col(MatchRun.scope).in_([MatchScope.FULL.value, MatchScope.FIRMS.value]),
        sa.and_(col(MatchRun.scope) == MatchScope.ITEM.value, col(MatchRun.item_code) == item.code),
    )
    run_id = await session.scalar(
        select(MatchRun.id).where(covering).order_by(col(MatchRun.id).desc()).limit(1)
    )
    if run_id is None:
        return []
    about: sa.ColumnElement[bool] = col(MatchError.item_code) == item.code
    facts: set[str] = set()
    if item.published_version is not None:
        try:
            compiled = await load_version(session, item.code, item.published_version)
            facts = {
                leaf.node.fact
                for leaf in leaves(compiled.rule)
                if not isinstance(leaf.node, ManualCondition)
            }
        except UnevaluableVersion:
            pass  # the item's own error says why
    if facts:
        _item, reach = await access.require_item_reader(session, actor, item.code)
        uscc = sa.type_coerce(col(MatchError.uscc), sa.String)
        firms = await access.item_firm_filter(session, actor, reach, uscc=uscc)
        about = sa.or_(about, sa.and_(col(MatchError.fact).in_(sorted(facts)), firms))
    rows = await session.scalars(
        select(MatchError)
        .where(col(MatchError.run_id) == run_id, about)
        .order_by(col(MatchError.id))
        .limit(ITEM_ERRORS_SHOWN)
    )
    return [MatchErrorView.model_validate(e, from_attributes=True) for e in rows]


async def matched_firms(
    session: AsyncSession,
    actor: Actor,
    item_code: str,
    verdict: Verdict | None,
    region_code: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[MatchedFirm]]:
    _item, readable = await readable_matches(session, actor, item_code)
    where = [col(MatchResult.item_code) == item_code, readable]
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
    session: AsyncSession,
    actor: Actor,
    item_code: str,
    version: int,
    as_of: date,
    threads: int,
    facts: Reader,
) -> BudgetPreview:
    """How many firms a version (typically a draft) would match today, and what they
    would receive, against its annual quota. Every firm's facts are read through a
    session of `facts` (`FACT_TABLES` keeps them between calls; a process without a
    copy starts from the snapshot the worker's match runs store)."""
    await access.require_item_reader(session, actor, item_code, whole=True)
    compiled = await load_version(session, item_code, version)
    quota = await session.scalar(
        select(PolicyItemVersion.annual_quota_fen).where(
            col(PolicyItemVersion.item_code) == item_code,
            col(PolicyItemVersion.version) == version,
        )
    )
    assert quota is not None  # the version exists: load_version found it
    async with facts() as reading:
        table, _regions = await FACT_TABLES.load(reading)
    failures: list[ItemFailure] = []
    results = match_items(table, [compiled], as_of, threads, failures=failures)
    if failures:
        raise UnevaluableVersion(item_code, version, failures[0].message)
    [result] = results
    matched = result.matched(table)
    known = matched.amount_known
    eligible_amount = exact_sum(matched.amount_fen[matched.eligible & known])
    possible_amount = exact_sum(matched.amount_fen[~matched.eligible & known])
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
    return (now or utcnow()).astimezone(SHANGHAI).date()


# ----- for ops ---------------------------------------------------------------------------


async def match_runs(
    session: AsyncSession, actor: Actor, offset: int, limit: int
) -> tuple[int, list[MatchRunView]]:
    """Matching runs, newest first, with their error counts (errors: `match_run`)."""
    access.require_role(actor, Role.ADMIN)
    total = await session.scalar(select(sa.func.count()).select_from(MatchRun)) or 0
    rows = await session.scalars(
        select(MatchRun).order_by(col(MatchRun.id).desc()).offset(offset).limit(limit)
    )
    return total, [MatchRunView.model_validate(r, from_attributes=True) for r in rows]


async def match_run(session: AsyncSession, actor: Actor, run_id: int) -> MatchRunView:
    """One run with every error it recorded (at most MAX_RECORDED_ERRORS)."""
    access.require_role(actor, Role.ADMIN)
    record = await session.get(MatchRun, run_id)
    if record is None:
        raise NotFound(f"match run {run_id} not found")
    errors = await session.scalars(
        select(MatchError).where(col(MatchError.run_id) == run_id).order_by(col(MatchError.id))
    )
    return MatchRunView.model_validate(
        {
            **record.model_dump(),
            "errors": [MatchErrorView.model_validate(e, from_attributes=True) for e in errors],
        }
    )
