"""What each case claims (`FundingClaim`, `FundingToken`), and the claims a check must
see: every open or paid case of the same firms, invoices, serials or places."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, delete, select

from domain.review.duplicates import ClaimRow
from domain.review.projects import Fingerprint, location_key, token
from models.budget import LedgerEntry, LedgerKind
from models.cases import CaseClaim, ClaimState
from models.review import FundingClaim, FundingToken, ProjectClaim, TokenKind

CHUNK = 500


def _chunks(values: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _tokens(values: Iterable[str]) -> frozenset[str]:
    """Normalised, and none that normalises to nothing (e.g. "---")."""
    return frozenset(t for t in (token(v) for v in values) if t)


def claim_row(
    case_id: str,
    uscc: str,
    item_code: str,
    group: str | None,
    period: str,
    amount_fen: int | None,
    project: ProjectClaim | None,
) -> ClaimRow:
    """The check's view of a case under review (not yet in the database, or changed)."""
    return ClaimRow(
        case_id=case_id,
        uscc=uscc,
        item_code=item_code,
        group=group,
        period=period,
        amount_fen=amount_fen,
        project=Fingerprint.of(project.name, project.location, project.investment_fen)
        if project
        else None,
        eligible_cost_fen=project.eligible_cost_fen if project else None,
        invoices=_tokens(project.invoices) if project else frozenset(),
        serials=_tokens(project.equipment_serials) if project else frozenset(),
    )


async def record_claim(
    session: AsyncSession, category: str, row: ClaimRow, project: ProjectClaim | None
) -> None:
    """Write (or rewrite, at a later review) what the case claims, so later checks see it."""
    claim = await session.scalar(select(FundingClaim).where(FundingClaim.case_id == row.case_id))
    if claim is None:
        claim = FundingClaim(
            case_id=row.case_id,
            category=category,
            uscc=row.uscc,
            item_code=row.item_code,
            period=row.period,
        )
        session.add(claim)
    claim.exclusivity_group = row.group
    claim.amount_fen = row.amount_fen
    claim.project_name = project.name if project else None
    claim.location_key = location_key(project.location) if project else None
    claim.investment_fen = project.investment_fen if project else None
    claim.eligible_cost_fen = project.eligible_cost_fen if project else None
    await session.execute(delete(FundingToken).where(col(FundingToken.case_id) == row.case_id))
    tokens = [(TokenKind.INVOICE, t) for t in sorted(row.invoices)] + [
        (TokenKind.SERIAL, t) for t in sorted(row.serials)
    ]
    if tokens:
        await session.execute(
            sa.insert(FundingToken),
            [{"case_id": row.case_id, "kind": k.value, "token": t} for k, t in tokens],
        )
    await session.flush()


async def record_claims(session: AsyncSession, category: str, rows: Sequence[ClaimRow]) -> None:
    """Many new claims at once (a recognition batch's firms; they list no projects)."""
    values = [
        {
            "case_id": r.case_id,
            "category": category,
            "uscc": r.uscc,
            "item_code": r.item_code,
            "exclusivity_group": r.group,
            "period": r.period,
            "amount_fen": r.amount_fen,
        }
        for r in rows
    ]
    for start in range(0, len(values), 2000):
        await session.execute(sa.insert(FundingClaim), values[start : start + 2000])


async def claims_touching(
    session: AsyncSession,
    *,
    usccs: Iterable[str] = (),
    tokens: Iterable[str] = (),
    excluding: str | None = None,
) -> list[ClaimRow]:
    """The open and paid claims of these firms, or listing these invoices or serials,
    but for the claim of case `excluding` (the case being checked: nothing is read when
    no other claim touches it)."""
    case_ids: set[str] = set()
    firms = sorted(set(usccs))
    for chunk in _chunks(firms):
        case_ids.update(
            await session.scalars(
                select(FundingClaim.case_id).where(col(FundingClaim.uscc).in_(chunk))
            )
        )
    for chunk in _chunks(sorted(set(tokens))):
        case_ids.update(
            await session.scalars(
                select(FundingToken.case_id).where(col(FundingToken.token).in_(chunk)).distinct()
            )
        )
    if excluding is not None:
        case_ids.discard(excluding)
    return await load_rows(session, sorted(case_ids)) if case_ids else []


async def load_rows(session: AsyncSession, case_ids: Sequence[str]) -> list[ClaimRow]:
    """The claims of these cases that are open or paid, with what each was paid."""
    claims: dict[str, FundingClaim] = {}
    states: dict[str, str] = {}
    paid: dict[str, int] = defaultdict(int)
    invoices: dict[str, set[str]] = defaultdict(set)
    serials: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(case_ids):
        claims.update(
            (c.case_id, c)
            for c in await session.scalars(
                select(FundingClaim).where(col(FundingClaim.case_id).in_(chunk))
            )
        )
        for case_id, state in await session.execute(
            select(CaseClaim.case_id, CaseClaim.state).where(col(CaseClaim.case_id).in_(chunk))
        ):
            states[case_id] = str(state)
        for case_id, amount in await session.execute(
            select(LedgerEntry.case_id, sa.func.sum(LedgerEntry.amount_fen))
            .where(
                col(LedgerEntry.case_id).in_(chunk),
                col(LedgerEntry.kind) == LedgerKind.RECEIPT,
            )
            .group_by(col(LedgerEntry.case_id))
        ):
            paid[case_id] = int(amount or 0)
        for case_id, kind, value in await session.execute(
            select(FundingToken.case_id, FundingToken.kind, FundingToken.token).where(
                col(FundingToken.case_id).in_(chunk)
            )
        ):
            (invoices if kind == TokenKind.INVOICE else serials)[case_id].add(value)
    rows = []
    for case_id, claim in claims.items():
        state = states.get(case_id, ClaimState.OPEN.value)
        if state == ClaimState.CLOSED.value:
            continue
        rows.append(
            ClaimRow(
                case_id=case_id,
                uscc=claim.uscc,
                item_code=claim.item_code,
                group=claim.exclusivity_group,
                period=claim.period,
                amount_fen=claim.amount_fen,
                paid_fen=paid.get(case_id, 0),
                state="paid" if state == ClaimState.PAID.value else "open",
                project=Fingerprint.stored(
                    claim.project_name, claim.location_key, claim.investment_fen
                )
                if claim.project_name and claim.location_key
                else None,
                eligible_cost_fen=claim.eligible_cost_fen,
                invoices=frozenset(invoices.get(case_id, ())),
                serials=frozenset(serials.get(case_id, ())),
            )
        )
    return rows


async def every_open_claim(session: AsyncSession) -> list[ClaimRow]:
    """Every open or paid claim, in a few whole-table reads (for a batch of many firms:
    cheaper than looking each firm up)."""
    closed = {
        case_id
        for (case_id,) in await session.execute(
            sa.select(col(CaseClaim.case_id)).where(col(CaseClaim.state) == ClaimState.CLOSED)
        )
    }
    paid_states = {
        case_id
        for (case_id,) in await session.execute(
            sa.select(col(CaseClaim.case_id)).where(col(CaseClaim.state) == ClaimState.PAID)
        )
    }
    paid: dict[str, int] = {
        case_id: int(amount or 0)
        for case_id, amount in await session.execute(
            sa.select(col(LedgerEntry.case_id), sa.func.sum(LedgerEntry.amount_fen))
            .where(col(LedgerEntry.kind) == LedgerKind.RECEIPT)
            .group_by(col(LedgerEntry.case_id))
        )
    }
    invoices: dict[str, set[str]] = defaultdict(set)
    serials: dict[str, set[str]] = defaultdict(set)
    for case_id, kind, value in await session.execute(
        sa.select(col(FundingToken.case_id), col(FundingToken.kind), col(FundingToken.token))
    ):
        (invoices if kind == TokenKind.INVOICE else serials)[case_id].add(value)
    rows = []
    for (
        case_id,
        uscc,
        item,
        group,
        period,
        amount,
        name,
        place,
        investment,
        cost,
    ) in await session.execute(
        sa.select(
            col(FundingClaim.case_id),
            col(FundingClaim.uscc),
            col(FundingClaim.item_code),
            col(FundingClaim.exclusivity_group),
            col(FundingClaim.period),
            col(FundingClaim.amount_fen),
            col(FundingClaim.project_name),
            col(FundingClaim.location_key),
            col(FundingClaim.investment_fen),
            col(FundingClaim.eligible_cost_fen),
        )
    ):
        if case_id in closed:
            continue
        rows.append(
            ClaimRow(
                case_id=case_id,
                uscc=uscc,
                item_code=item,
                group=group,
                period=period,
                amount_fen=amount,
                paid_fen=paid.get(case_id, 0),
                state="paid" if case_id in paid_states else "open",
                project=Fingerprint.stored(name, place, investment) if name and place else None,
                eligible_cost_fen=cost,
                invoices=frozenset(invoices.get(case_id, ())),
                serials=frozenset(serials.get(case_id, ())),
            )
        )
    return rows
