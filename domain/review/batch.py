"""The duplicate check of many cases at once: a recognition batch's firms against
every open or paid case, and against each other (two related firms of one batch
splitting a project are found too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from domain.review.claims import claims_touching, every_open_claim
from domain.review.duplicates import ClaimRow, DuplicateIndex
from models.review import FindingDraft, ReviewChecks

# Above this many firms one read of every claim is cheaper than a lookup per firm.
WHOLE_TABLE_FROM = 2_000


async def check_batch(
    session: AsyncSession,
    cases: Sequence[ClaimRow],
    checks: ReviewChecks,
    related: Mapping[str, Mapping[str, str]],
) -> dict[str, list[FindingDraft]]:
    """Findings by case id, for the cases that have any. `related` maps a firm to its
    related firms and their relation (from the public data platform)."""
    if len(cases) >= WHOLE_TABLE_FROM:
        rows = await every_open_claim(session)
    else:
        usccs = {c.uscc for c in cases} | {u for r in related.values() for u in r}
        tokens = {t for c in cases for t in (*c.invoices, *c.serials)}
        rows = await claims_touching(session, usccs=usccs, tokens=tokens)
    index = DuplicateIndex(rows)
    known = {r.case_id for r in rows}
    for case in cases:
        if case.case_id not in known:
            index.add(case)
    found: dict[str, list[FindingDraft]] = {}
    for case in cases:
        drafts = index.check(case, checks, related.get(case.uscc))
        if drafts:
            found[case.case_id] = drafts
    return found
