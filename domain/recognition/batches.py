"""Recognition batches: starting one, freezing its snapshot, verifying it as a list.

A batch is identified once (`identify`): its candidates (the match library's firms for
the item, or the department's uploaded list) are assessed against today's facts by the
array engine, and every firm that is eligible or possibly eligible becomes an entry
with its amount, each condition's outcome and each fact read (value, period, source,
retrieval time). Each entry claims the firm's period (`CaseClaim`) in the same
transaction, so no other batch can take the same firm for the same period; a firm whose
period is already claimed is counted and left out. Possibly-eligible firms are listed
apart and only ever included by a department naming them.

Verification is by list (名单核定): the department verifies every listed firm except those
it names (each sent to an individual review or dropped, with its reason), then finance
verifies the list and its total. On a straight-through item the system verifies the
clean entries (every condition passed, no duplicate-funding flag) at identification.
Every verification is recorded on each entry it covered: who and when.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from domain.access import require_department_staff, require_role
from domain.cases.admission import admissible_period
from domain.engine.amounts import FixedAmount, RateAmount, TieredAmount
from domain.engine.arrays import FactTable, MaskContext, leaves, match_items
from domain.engine.rules import Condition, KnownFact
from domain.errors import Conflict, FieldError, InvalidInput, NotFound
from domain.money import budget
from domain.policy.versions import (
    NotInForce,
    NotPublished,
    load_version,
    recognition_terms,
    version_in_force,
)
from domain.recognition.upload import UploadedRow
from domain.registry.enterprises import latest_facts_query, load_fact_table
from domain.review import review_checks
from domain.review.batch import check_batch
from domain.review.claims import record_claims
from domain.review.duplicates import ClaimRow
from domain.review.findings import decide_case_findings, store_batch_findings
from models.cases import CaseClaim, ClaimState
from models.matching import MatchResult
from models.policy import Category, PolicyItem, PolicyItemVersion, Stage, StageLimit
from models.recognition import (
    BatchOpening,
    BatchPhase,
    BatchSource,
    DepartmentVerification,
    Disposition,
    EntryStatus,
    FinanceAction,
    FinanceVerification,
    RecognitionBatch,
    RecognitionEntry,
    VerificationRecord,
    batch_id_of,
    recognition_case_id,
)
from models.reference import Actor, Role
from models.review import HOLDING, Dimension, FindingDraft, FindingStatus, ReviewFinding
from models.types import utcnow

# Each firm's related firms and how (the public data platform's answer), for the firm
# group check; the caller that can reach the platform passes it.
# None: the platform could not be asked.
RelatedOf = Callable[[Sequence[str]], Awaitable[dict[str, dict[str, str]] | None]]
UNCHECKED_GROUPS = "关联企业关系暂无法从公共数据平台获取，关联企业拆分未核查"

INSERT_CHUNK = 1_000
SYSTEM = "system"


# ----- starting a batch ---------------------------------------------------------------


async def start_batch(
    session: AsyncSession,
    actor: Actor,
    item_code: str,
    period_text: str,
    today: date,
    source: BatchSource,
) -> RecognitionBatch:
    """Record a new batch of a published recognition item for one period (flushed, not
    committed). A library batch is identified by its workflow; an upload is identified
    by the caller at once (`identify`), in the same transaction."""
    require_role(actor, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD)
    item = await session.get(PolicyItem, item_code)
    if item is None:
        raise NotFound(f"policy item {item_code} not found")
    require_department_staff(actor, item.department_code)
    try:
        version = await version_in_force(session, item_code)
    except NotPublished:
        raise InvalidInput.field("item_code", f"{item_code} is not published") from None
    except NotInForce as exc:
        raise InvalidInput.field("item_code", f"{item_code} is {exc.row.status}") from exc
    if version.category != Category.RECOGNITION:
        raise InvalidInput.field(
            "item_code", f"{item_code} is a {version.category} item, not a recognition item"
        )
    if not version.valid_from <= today <= version.valid_to:
        raise InvalidInput.field("item_code", f"{item_code} is not in force on {today}")
    period = admissible_period(period_text, version, today)
    stages = _stages(version)
    numbers = await session.scalar(
        select(sa.func.max(RecognitionBatch.number)).where(
            col(RecognitionBatch.item_code) == item_code,
            col(RecognitionBatch.period) == period.text,
        )
    )
    number = int(numbers or 0) + 1
    batch = RecognitionBatch(
        batch_id=batch_id_of(item_code, period.text, number),
        item_code=item_code,
        version=version.version,
        period=period.text,
        number=number,
        budget_year=period.start.year if period.start is not None else today.year,
        source=source,
        department_code=item.department_code,
        finance_department_code=stages[Stage.FINANCE_REVIEW].department_code,
        straight_through=recognition_terms(version).straight_through,
        phase=BatchPhase.IDENTIFYING,
        open_key=f"{item_code}/{period.text}",
        started_by=actor.name,
    )
    try:
        async with session.begin_nested():
            session.add(batch)
    except IntegrityError:
        open_batch = await session.scalar(
            select(RecognitionBatch.batch_id).where(
                col(RecognitionBatch.open_key) == f"{item_code}/{period.text}"
            )
        )
        raise Conflict(
            f"batch {open_batch} of {item_code} {period.text} is still being identified, "
            "verified or started; start another once its cases have started"
        ) from None
    return batch


def _stages(version: PolicyItemVersion) -> dict[Stage, StageLimit]:
    limits = [StageLimit.model_validate(s) for s in version.stages]
    return {limit.stage: limit for limit in limits}


async def get_batch(session: AsyncSession, batch_id: str) -> RecognitionBatch:
    batch = await session.get(RecognitionBatch, batch_id, populate_existing=True)
    if batch is None:
        raise NotFound(f"batch {batch_id} not found")
    return batch


async def opening(session: AsyncSession, batch_id: str) -> BatchOpening:
    batch = await get_batch(session, batch_id)
    version = await session.scalar(
        select(PolicyItemVersion).where(
            col(PolicyItemVersion.item_code) == batch.item_code,
            col(PolicyItemVersion.version) == batch.version,
        )
    )
    assert version is not None
    stages = _stages(version)
    return BatchOpening(
        batch_id=batch.batch_id,
        item_code=batch.item_code,
        period=batch.period,
        department_code=batch.department_code,
        finance_department_code=batch.finance_department_code,
        straight_through=batch.straight_through,
        department_working_days=stages[Stage.DEPARTMENT_REVIEW].working_days,
        finance_working_days=stages[Stage.FINANCE_REVIEW].working_days,
        phase=batch.phase,
    )


# ----- the snapshot -------------------------------------------------------------------


def _rule_facts(rule: Any, amount_rule: Any) -> list[str]:
    """The fact kinds an item's rule and amount read, in a stable order."""
    kinds = [leaf.node.fact for leaf in leaves(rule) if isinstance(leaf.node, Condition)]
    if isinstance(amount_rule, RateAmount | TieredAmount):
        kinds.append(amount_rule.fact)
    return list(dict.fromkeys(kinds))


def amount_figures(amount_rule: Any) -> list[str]:
    """The figures an uploaded list must give: the facts the amount depends on."""
    if isinstance(amount_rule, FixedAmount):
        return []
    return [amount_rule.fact]


async def figure_kinds(session: AsyncSession, item_code: str) -> list[str]:
    version = await version_in_force(session, item_code)
    compiled = await load_version(session, item_code, version.version)
    return amount_figures(compiled.amount_rule)


async def identify(
    session: AsyncSession,
    batch_id: str,
    today: date,
    uploaded: Sequence[UploadedRow] | None = None,
    related_of: RelatedOf | None = None,
) -> RecognitionBatch:
    """Freeze the batch's snapshot (once: a batch already identified is returned as it
    is). An uploaded list is refused whole, with every bad row named, when a firm is
    not in the registry or not eligible on today's facts; nothing is written then."""
    batch = await get_batch(session, batch_id)
    if batch.identified_at is not None:
        return batch
    compiled = await load_version(session, batch.item_code, batch.version)
    kinds = _rule_facts(compiled.rule, compiled.amount_rule)
    if uploaded is None:
        candidates = list(
            await session.scalars(
                select(MatchResult.uscc)
                .where(col(MatchResult.item_code) == batch.item_code)
                .order_by(col(MatchResult.uscc))
            )
        )
    else:
        candidates = [row.uscc for row in uploaded]
    table, regions = await load_fact_table(session, candidates)
    figures: dict[str, dict[str, Any]] = {}
    errors: list[FieldError] = []
    if uploaded is not None:
        errors = [
            FieldError(f"line {row.line}.uscc", f"{row.uscc} is not in the enterprise registry")
            for row in uploaded
            if row.uscc not in table.row_of
        ]
        figures = {row.uscc: dict(row.figures) for row in uploaded if row.uscc in table.row_of}
        # An uploaded figure stands as of today: the department vouches for it now.
        table = FactTable.build(
            (
                uscc,
                {
                    **table.known_facts(table.row_of[uscc]),
                    **{k: KnownFact(v, today) for k, v in figures[uscc].items()},
                },
            )
            for uscc in figures
        )
    context = MaskContext(table, today)
    [result] = match_items(table, [compiled], today, threads=1, context=context)
    matched = result.matched(table)
    letters = context.leaf_outcomes(compiled.rule, matched.rows)
    found: dict[str, tuple[bool, int | None, str]] = {}
    for row, eligible, amount, known, outcome in zip(
        matched.rows.tolist(),
        matched.eligible.tolist(),
        matched.amount_fen.tolist(),
        matched.amount_known.tolist(),
        letters,
        strict=True,
    ):
        found[table.uscc[row]] = (bool(eligible), int(amount) if known else None, outcome)
    if uploaded is not None:
        claimed_rows = await _claimed(session, batch.item_code, batch.period, list(figures))
        for row in uploaded:
            if row.uscc not in figures:
                continue
            if row.uscc in claimed_rows:
                errors.append(
                    FieldError(
                        f"line {row.line}.uscc",
                        f"{row.uscc} already has case {claimed_rows[row.uscc]} for "
                        f"{batch.item_code} {batch.period}",
                    )
                )
            elif row.uscc not in found or found[row.uscc][1] == 0:
                errors.append(
                    FieldError(
                        f"line {row.line}.uscc",
                        f"{row.uscc} is not eligible for {batch.item_code} on today's facts "
                        "with the figures given",
                    )
                )
        if errors:
            raise _rejected(sorted(errors, key=lambda e: int(e.field.split()[1].split(".")[0])))
    claimed = await _claimed(session, batch.item_code, batch.period, list(found))
    attempts = await _attempts(session, batch.item_code, batch.period, list(found))
    group, findings = await _duplicate_findings(
        session,
        batch,
        related_of,
        {
            uscc: (
                recognition_case_id(batch.item_code, batch.period, uscc, attempts.get(uscc, 0) + 1),
                amount,
            )
            for uscc, (_eligible, amount, _outcome) in found.items()
            if uscc not in claimed and amount != 0
        },
    )
    flags = {uscc: [f"[查重] {d.summary}" for d in drafts] for uscc, drafts in findings.items()}
    evidence = await _evidence(session, list(found), kinds)
    now = utcnow()
    entries: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    counts = {"listed": 0, "possible": 0, "total": 0}
    for uscc, (eligible, amount, outcome) in found.items():
        if uscc in claimed or amount == 0:
            continue
        attempt = attempts.get(uscc, 0) + 1
        case_id = recognition_case_id(batch.item_code, batch.period, uscc, attempt)
        firm_flags = flags.get(uscc, [])
        # Listed apart, for a person to include by name: a condition the data could not
        # decide, an amount it could not compute, or a duplicate-funding flag.
        listed = eligible and amount is not None and not firm_flags
        status = EntryStatus.LISTED if listed else EntryStatus.POSSIBLE
        clean = listed and batch.straight_through
        facts = evidence.get(uscc, {})
        for kind, value in figures.get(uscc, {}).items():
            facts[kind] = [value, "", "upload", now.isoformat()]
        fetched = [datetime.fromisoformat(f[3]) for f in facts.values()]
        entry: dict[str, Any] = {
            "batch_id": batch.batch_id,
            "uscc": uscc,
            "case_id": case_id,
            "attempt": attempt,
            "region_code": regions.get(uscc, ""),
            "verdict": "eligible" if eligible else "possibly_eligible",
            "amount_fen": amount,
            "amount_explanation": "" if amount is not None else "金额所需数据缺失，需人工核定",
            "outcomes": outcome,
            "facts": facts,
            "figures": figures.get(uscc),
            "flags": firm_flags,
            "entitled_at": max(fetched) if uploaded is None and fetched else batch.started_at,
            "status": EntryStatus.VERIFIED if clean else status,
            "department_by": SYSTEM if clean else None,
            "department_at": now if clean else None,
            "finance_by": SYSTEM if clean else None,
            "finance_at": now if clean else None,
            "reason": "直通：条件全部满足、无重复享受标记，系统自动核定" if clean else "",
            "start_round": 1 if clean else None,
        }
        entries.append(entry)
        claims.append(
            {
                "case_id": case_id,
                "category": Category.RECOGNITION.value,
                "item_code": batch.item_code,
                "uscc": uscc,
                "period": batch.period,
                "attempt": attempt,
                "state": ClaimState.OPEN.value,
                "created_at": now,
            }
        )
        counts["listed" if status is EntryStatus.LISTED else "possible"] += 1
        if status is EntryStatus.LISTED:
            counts["total"] += amount or 0
    for start in range(0, len(entries), INSERT_CHUNK):
        await session.execute(sa.insert(CaseClaim), claims[start : start + INSERT_CHUNK])
        await session.execute(sa.insert(RecognitionEntry), entries[start : start + INSERT_CHUNK])
    await _keep_review(session, batch, group, entries, findings)
    waiting = sum(1 for e in entries if e["status"] is not EntryStatus.VERIFIED)
    batch.candidates = len(candidates)
    batch.listed, batch.possible = counts["listed"], counts["possible"]
    batch.listed_total_fen = counts["total"]
    batch.already_claimed = len(claimed)
    batch.not_eligible = len(candidates) - len(found) + sum(1 for f in found.values() if f[1] == 0)
    batch.identified_at = now
    batch.phase = BatchPhase.DEPARTMENT_VERIFICATION if waiting else BatchPhase.STARTING
    await session.flush()
    return batch


def _rejected(errors: list[FieldError]) -> InvalidInput:
    shown = errors[:1000]
    if len(errors) > len(shown):
        shown.append(FieldError("file", f"… and {len(errors) - len(shown)} more"))
    return InvalidInput(f"{len(errors)} rows are invalid; no batch was started", shown)


async def _claimed(
    session: AsyncSession, item_code: str, period: str, usccs: list[str]
) -> dict[str, str]:
    """Firms whose period of this item an open or paid case already holds."""
    out: dict[str, str] = {}
    for start in range(0, len(usccs), 500):
        rows = await session.execute(
            select(CaseClaim.uscc, CaseClaim.case_id).where(
                col(CaseClaim.item_code) == item_code,
                col(CaseClaim.period) == period,
                col(CaseClaim.state) != ClaimState.CLOSED,
                col(CaseClaim.uscc).in_(usccs[start : start + 500]),
            )
        )
        out.update({uscc: case_id for uscc, case_id in rows})
    return out


async def _attempts(
    session: AsyncSession, item_code: str, period: str, usccs: list[str]
) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(usccs), 500):
        rows = await session.execute(
            select(CaseClaim.uscc, sa.func.max(CaseClaim.attempt))
            .where(
                col(CaseClaim.item_code) == item_code,
                col(CaseClaim.period) == period,
                col(CaseClaim.uscc).in_(usccs[start : start + 500]),
            )
            .group_by(col(CaseClaim.uscc))
        )
        out.update({uscc: int(n) for uscc, n in rows})
    return out


async def _duplicate_findings(
    session: AsyncSession,
    batch: RecognitionBatch,
    related_of: RelatedOf | None,
    firms: dict[str, tuple[str, int | None]],
) -> tuple[str | None, dict[str, list[FindingDraft]]]:
    """The smart review's duplicate check of every firm the batch would list (uscc ->
    its case id and amount): the item's group and the findings by firm. A firm with a
    finding is listed apart, for the department to include by name (which proposes to
    clear it) and finance to confirm (the second person)."""
    version = await session.scalar(
        select(PolicyItemVersion).where(
            col(PolicyItemVersion.item_code) == batch.item_code,
            col(PolicyItemVersion.version) == batch.version,
        )
    )
    assert version is not None
    group = version.exclusivity_group
    rows = [
        ClaimRow(
            uscc=uscc,
            case_id=case_id,
            item_code=batch.item_code,
            group=group,
            period=batch.period,
            amount_fen=amount,
        )
        for uscc, (case_id, amount) in firms.items()
    ]
    checks = review_checks(version.review_checks)
    related: dict[str, dict[str, str]] | None = {}
    if Dimension.FIRM_GROUP in checks.dimensions and related_of is not None and rows:
        related = await related_of(sorted(firms))
    found = await check_batch(session, rows, checks, related or {})
    if related is None:  # never a silent pass: every firm waits for a person
        for row in rows:
            found.setdefault(row.case_id, []).append(
                FindingDraft(
                    dimension=Dimension.FIRM_GROUP,
                    key="firm_group:unchecked",
                    score=0,
                    summary=UNCHECKED_GROUPS,
                    evidence={},
                    counterparts=[],
                    amount_fen=row.amount_fen,
                    excess_fen=0,
                    suggested_fen=None,
                )
            )
    by_case = {row.case_id: row.uscc for row in rows}
    return group, {by_case[case_id]: drafts for case_id, drafts in found.items()}


async def _keep_review(
    session: AsyncSession,
    batch: RecognitionBatch,
    group: str | None,
    entries: list[dict[str, Any]],
    findings: dict[str, list[FindingDraft]],
) -> None:
    """What the batch's firms claim (so later cases see them) and their findings."""
    await record_claims(
        session,
        Category.RECOGNITION.value,
        [
            ClaimRow(
                case_id=e["case_id"],
                uscc=e["uscc"],
                item_code=batch.item_code,
                group=group,
                period=batch.period,
                amount_fen=e["amount_fen"],
            )
            for e in entries
        ],
    )
    rows = [
        {
            "case_id": e["case_id"],
            "category": Category.RECOGNITION.value,
            "item_code": batch.item_code,
            "department_code": batch.department_code,
            "region_code": e["region_code"],
            "uscc": e["uscc"],
            "period": batch.period,
            "dimension": d.dimension.value,
            "key": d.key,
            "score": d.score,
            "summary": d.summary,
            "evidence": d.evidence,
            "counterparts": [c.model_dump(mode="json") for c in d.counterparts],
            "amount_fen": d.amount_fen,
            "excess_fen": d.excess_fen,
            "suggested_fen": d.suggested_fen,
            "status": FindingStatus.OPEN.value,
            "raised_at": utcnow(),
        }
        for e in entries
        for d in findings.get(e["uscc"], [])
    ]
    await store_batch_findings(session, rows)


async def _evidence(
    session: AsyncSession, usccs: list[str], kinds: list[str]
) -> dict[str, dict[str, list[Any]]]:
    """Each firm's facts that the rule and amount read: value, period, source and
    retrieval time (profile facts come from the registry entry)."""
    out: dict[str, dict[str, list[Any]]] = {u: {} for u in usccs}
    if not kinds or not usccs:
        return out
    for start in range(0, len(usccs), 500):
        chunk = usccs[start : start + 500]
        latest = latest_facts_query(chunk).subquery()
        rows = await session.execute(
            sa.select(
                latest.c.uscc,
                latest.c.kind,
                latest.c.value,
                latest.c.period,
                latest.c.source,
                latest.c.fetched_at,
            ).where(latest.c.kind.in_(kinds))
        )
        for uscc, kind, value, period, source, fetched_at in rows:
            out[uscc][kind] = [value, period, source, fetched_at.isoformat()]
    return out


# ----- verification -------------------------------------------------------------------


async def check_department(
    session: AsyncSession, batch: RecognitionBatch, decision: DepartmentVerification
) -> None:
    """Every firm named is on the batch's list (an exception) or listed apart (an
    inclusion): else a 422 naming the entry."""
    errors: list[FieldError] = []
    statuses = await _statuses(
        session,
        batch.batch_id,
        [e.uscc for e in decision.exceptions] + [i.uscc for i in decision.include],
    )
    for n, exception in enumerate(decision.exceptions):
        status = statuses.get(exception.uscc)
        if status != EntryStatus.LISTED:
            errors.append(FieldError(f"exceptions[{n}].uscc", _not_listed(exception.uscc, status)))
    for n, inclusion in enumerate(decision.include):
        status = statuses.get(inclusion.uscc)
        if status != EntryStatus.POSSIBLE:
            errors.append(
                FieldError(
                    f"include[{n}].uscc",
                    f"{inclusion.uscc} is not listed apart (it is "
                    f"{status.value if status else 'not in this batch'})",
                )
            )
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors[:20]), errors)


def _not_listed(uscc: str, status: EntryStatus | None) -> str:
    if status is None:
        return f"{uscc} is not in this batch"
    if status == EntryStatus.POSSIBLE:
        return f"{uscc} is listed apart: include it by name, or leave it out"
    if status == EntryStatus.VERIFIED:
        return f"{uscc} was verified already (straight-through, by the system)"
    return f"{uscc} is not on the list waiting for verification (it is {status.value})"


def require_phase(batch: RecognitionBatch, wanted: BatchPhase) -> None:
    """A verification sent at another phase: a 409 saying where the batch stands."""
    if batch.phase != wanted:
        raise Conflict(f"batch {batch.batch_id} is at {batch.phase}, not {wanted.value}")


async def _statuses(
    session: AsyncSession, batch_id: str, usccs: list[str]
) -> dict[str, EntryStatus]:
    out: dict[str, EntryStatus] = {}
    for start in range(0, len(usccs), 500):
        rows = await session.execute(
            select(RecognitionEntry.uscc, RecognitionEntry.status).where(
                col(RecognitionEntry.batch_id) == batch_id,
                col(RecognitionEntry.uscc).in_(usccs[start : start + 500]),
            )
        )
        out.update({uscc: EntryStatus(status) for uscc, status in rows})
    return out


async def list_total(session: AsyncSession, batch_id: str, status: EntryStatus) -> int:
    total = await session.scalar(
        select(sa.func.coalesce(sa.func.sum(RecognitionEntry.amount_fen), 0)).where(
            col(RecognitionEntry.batch_id) == batch_id, col(RecognitionEntry.status) == status
        )
    )
    return int(total or 0)


async def check_finance(
    session: AsyncSession, batch: RecognitionBatch, decision: FinanceVerification
) -> int:
    """The list's total now; a 422 naming the field when the decision does not fit."""
    total = await list_total(session, batch.batch_id, EntryStatus.DEPARTMENT_VERIFIED)
    if decision.action is FinanceAction.REJECT and not decision.reason:
        raise InvalidInput.field("reason", "a rejection needs a reason")
    if decision.action is FinanceAction.APPROVE and decision.expected_total_fen is None:
        raise InvalidInput.field(
            "expected_total_fen", "approving a list states the total verified (in fen)"
        )
    if decision.expected_total_fen is not None and decision.expected_total_fen != total:
        raise InvalidInput.field(
            "expected_total_fen",
            f"is not the total of the list verified by the department "
            f"({decision.expected_total_fen} fen given); read it from the batch's progress",
        )
    return total


async def apply_verification(session: AsyncSession, record: VerificationRecord) -> BatchPhase:
    """Apply a department's or finance's verification to the snapshot (once: a repeat
    of an applied verification changes nothing) and return the batch's next phase."""
    batch = await get_batch(session, record.batch_id)
    if record.department is not None:
        if batch.phase != BatchPhase.DEPARTMENT_VERIFICATION:
            return batch.phase
        await check_department(session, batch, record.department)
        await _apply_department(session, batch, record, record.department)
    elif record.finance is not None:
        if batch.phase != BatchPhase.FINANCE_VERIFICATION:
            return batch.phase
        total = await check_finance(session, batch, record.finance)
        await _apply_finance(session, batch, record, record.finance, total)
    await session.flush()
    return batch.phase


async def _apply_department(
    session: AsyncSession,
    batch: RecognitionBatch,
    record: VerificationRecord,
    decision: DepartmentVerification,
) -> None:
    entries = col(RecognitionEntry.batch_id) == batch.batch_id
    by = {"department_by": record.actor, "department_at": record.at}
    named: dict[EntryStatus, list[tuple[str, str]]] = {
        EntryStatus.INDIVIDUAL_REVIEW: [],
        EntryStatus.DROPPED: [],
    }
    for exception in decision.exceptions:
        status = (
            EntryStatus.INDIVIDUAL_REVIEW
            if exception.disposition is Disposition.INDIVIDUAL_REVIEW
            else EntryStatus.DROPPED
        )
        named[status].append((exception.uscc, exception.reason))
    for inclusion in decision.include:
        named[EntryStatus.INDIVIDUAL_REVIEW].append((inclusion.uscc, f"纳入：{inclusion.reason}"))
    for status, firms in named.items():
        for uscc, reason in firms:
            await session.execute(
                sa.update(RecognitionEntry)
                .where(entries, col(RecognitionEntry.uscc) == uscc)
                .values(status=status, reason=reason, **by)
            )
    await session.execute(
        sa.update(RecognitionEntry)
        .where(entries, col(RecognitionEntry.status) == EntryStatus.LISTED)
        .values(status=EntryStatus.DEPARTMENT_VERIFIED, **by)
    )
    await session.execute(
        sa.update(RecognitionEntry)
        .where(entries, col(RecognitionEntry.status) == EntryStatus.POSSIBLE)
        .values(status=EntryStatus.DROPPED, reason="可能符合条件，部门未纳入（未确认的条件）", **by)
    )
    await _close_dropped_claims(session, batch.batch_id)
    await _decide_findings(session, batch.batch_id, record.actor)
    counts = await _status_counts(session, batch.batch_id)
    batch.department_decision = {
        "actor": record.actor,
        "at": record.at.isoformat(),
        "verified": counts.get(EntryStatus.DEPARTMENT_VERIFIED, 0),
        "individual_review": counts.get(EntryStatus.INDIVIDUAL_REVIEW, 0),
        "dropped": counts.get(EntryStatus.DROPPED, 0),
        **decision.model_dump(mode="json"),
    }
    waiting = counts.get(EntryStatus.DEPARTMENT_VERIFIED, 0) + counts.get(
        EntryStatus.INDIVIDUAL_REVIEW, 0
    )
    batch.phase = BatchPhase.FINANCE_VERIFICATION if waiting else BatchPhase.STARTING


async def _apply_finance(
    session: AsyncSession,
    batch: RecognitionBatch,
    record: VerificationRecord,
    decision: FinanceVerification,
    total: int,
) -> None:
    entries = col(RecognitionEntry.batch_id) == batch.batch_id
    by = {"finance_by": record.actor, "finance_at": record.at}
    try:
        quota = await budget.quota_status(session, batch.item_code, batch.budget_year)
        available: int | None = quota.available_fen
    except NotFound:
        available = None
    if decision.action is FinanceAction.APPROVE:
        await session.execute(
            sa.update(RecognitionEntry)
            .where(entries, col(RecognitionEntry.status) == EntryStatus.DEPARTMENT_VERIFIED)
            .values(status=EntryStatus.VERIFIED, start_round=2, **by)
        )
        await session.execute(
            sa.update(RecognitionEntry)
            .where(entries, col(RecognitionEntry.status) == EntryStatus.INDIVIDUAL_REVIEW)
            .values(start_round=2, **by)
        )
    else:
        await session.execute(
            sa.update(RecognitionEntry)
            .where(
                entries,
                col(RecognitionEntry.status).in_(
                    [EntryStatus.DEPARTMENT_VERIFIED, EntryStatus.INDIVIDUAL_REVIEW]
                ),
            )
            .values(status=EntryStatus.DROPPED, reason=f"财政退回名单：{decision.reason}", **by)
        )
        await _close_dropped_claims(session, batch.batch_id)
    await _decide_findings(session, batch.batch_id, record.actor)
    batch.finance_decision = {
        "actor": record.actor,
        "at": record.at.isoformat(),
        "total_fen": total,
        "quota_available_fen": available,
        **decision.model_dump(mode="json"),
    }
    batch.phase = BatchPhase.STARTING


async def _decide_findings(session: AsyncSession, batch_id: str, actor: str) -> None:
    """A firm dropped from the list, or left out, upholds its findings. One included by
    name keeps them open: they hold its individual review, where reviewers clear them
    (two people) or uphold them (reject, or approve only what stays due)."""
    dropped = select(RecognitionEntry.case_id, RecognitionEntry.reason).where(
        col(RecognitionEntry.batch_id) == batch_id,
        col(RecognitionEntry.status) == EntryStatus.DROPPED,
        col(RecognitionEntry.case_id).in_(
            select(ReviewFinding.case_id).where(col(ReviewFinding.status).in_(list(HOLDING)))
        ),
    )
    for case_id, reason in (await session.execute(dropped)).all():
        await decide_case_findings(session, case_id, FindingStatus.UPHELD, actor, reason or "")


async def _close_dropped_claims(session: AsyncSession, batch_id: str) -> None:
    dropped = select(RecognitionEntry.case_id).where(
        col(RecognitionEntry.batch_id) == batch_id,
        col(RecognitionEntry.status) == EntryStatus.DROPPED,
    )
    await session.execute(
        sa.update(CaseClaim)
        .where(col(CaseClaim.case_id).in_(dropped), col(CaseClaim.state) == ClaimState.OPEN)
        .values(state=ClaimState.CLOSED, closed_at=utcnow())
    )


async def _status_counts(session: AsyncSession, batch_id: str) -> dict[EntryStatus, int]:
    rows = await session.execute(
        select(RecognitionEntry.status, sa.func.count())
        .where(col(RecognitionEntry.batch_id) == batch_id)
        .group_by(col(RecognitionEntry.status))
    )
    return {EntryStatus(status): int(n) for status, n in rows}


# ----- starting the cases ---------------------------------------------------------------


async def case_page(
    session: AsyncSession, batch_id: str, start_round: int, after_uscc: str, limit: int
) -> list[RecognitionEntry]:
    """The next firms whose cases a start round starts, by credit code."""
    rows = await session.scalars(
        select(RecognitionEntry)
        .where(
            col(RecognitionEntry.batch_id) == batch_id,
            col(RecognitionEntry.start_round) == start_round,
            col(RecognitionEntry.uscc) > after_uscc,
        )
        .order_by(col(RecognitionEntry.uscc))
        .limit(limit)
    )
    return list(rows)


async def finish_starting(session: AsyncSession, batch_id: str) -> BatchPhase:
    """Every case of the batch has started: the item's period is open for another batch."""
    batch = await get_batch(session, batch_id)
    if batch.phase in (BatchPhase.STARTING, BatchPhase.DEPARTMENT_VERIFICATION):
        batch.phase = BatchPhase.DISBURSING
    batch.open_key = None
    await session.flush()
    return batch.phase


async def abandon(session: AsyncSession, batch_id: str, reason: str) -> None:
    """A batch that could not be identified: failed, with the reason, and its item's
    period open to another batch (no entry was written: identification is one
    transaction)."""
    batch = await session.get(RecognitionBatch, batch_id, populate_existing=True)
    if batch is None:  # never recorded: the request that started it failed
        return
    if batch.identified_at is None:
        batch.phase = BatchPhase.FAILED
        batch.failure = reason[:2000]
        batch.open_key = None
        batch.closed_at = utcnow()
    await session.flush()
