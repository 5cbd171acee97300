"""Smart review (智审): one review every case kind calls, at its check (an application),
its joint review and settlement (a commitment), or its batch's identification (a
recognition batch, domain/recognition/batches.py).

`plan` reads what the item asks of the review; the caller fetches the data platform's
answers (activities/review.py); `check` records the case's claim and stores its
findings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput
from domain.policy.library import get_item, get_version
from domain.registry.enterprises import known_facts
from domain.review.claims import claim_row, claims_touching, record_claim
from domain.review.duplicates import ClaimRow, DuplicateIndex
from domain.review.evidence import DECLARED, REGISTRY, served
from domain.review.findings import store_findings
from models.review import Dimension, FactValue, FindingView, ReviewChecks, ReviewRequest


def review_checks(stored: Any) -> ReviewChecks:
    """The checks a version stores, or the defaults for one that stores none; stored
    checks that no longer read (a hand-edited row) are a business error, for a person."""
    try:
        return ReviewChecks() if stored is None else ReviewChecks.model_validate(stored)
    except ValidationError as exc:
        raise InvalidInput(
            f"the item's review checks are unreadable: {exc.errors()[0]['msg']}"
        ) from None


def _facts_named(rule: Any) -> Iterator[str]:
    if isinstance(rule, dict):
        fact = rule.get("fact")
        if isinstance(fact, str):
            yield fact
        for value in rule.values():
            yield from _facts_named(value)
    elif isinstance(rule, list):
        for value in rule:
            yield from _facts_named(value)


@dataclass(frozen=True)
class ReviewPlan:
    request: ReviewRequest
    group: str | None
    checks: ReviewChecks
    department_code: str
    region_code: str
    kinds: list[str]  # facts to fetch from the public data platform
    declared: dict[str, tuple[FactValue, str]]  # the firm's figure and where it came from

    def claim(self) -> ClaimRow:
        """What the case claims, as the duplicate check compares it."""
        r = self.request
        return claim_row(
            r.case_id, r.uscc, r.item_code, self.group, r.period, r.amount_fen, r.project
        )

    @property
    def needs_relations(self) -> bool:
        return Dimension.FIRM_GROUP in self.checks.dimensions


async def plan(session: AsyncSession, request: ReviewRequest) -> ReviewPlan:
    version = await get_version(session, request.item_code, request.version)
    item = await get_item(session, request.item_code)
    checks = review_checks(version.review_checks)
    kinds = served([*_facts_named(version.eligibility), *checks.evidence_facts, *request.declared])
    declared: dict[str, tuple[FactValue, str]] = {}
    registry = await known_facts(session, request.uscc)
    for kind in kinds:
        if kind in request.declared:
            declared[kind] = (request.declared[kind], DECLARED)
        elif kind in registry and registry[kind].invalid is None:
            value = registry[kind].value
            if isinstance(value, int | str | bool):
                declared[kind] = (value, REGISTRY)
    return ReviewPlan(
        request=request,
        group=version.exclusivity_group,
        checks=checks,
        department_code=item.department_code,
        # The firm's region, as cases are listed by (finance reads its region's firms).
        region_code=str(registry["region_code"].value)
        if "region_code" in registry
        else item.region_code,
        kinds=kinds,
        declared=declared,
    )


async def record(session: AsyncSession, review: ReviewPlan) -> None:
    """The case's claim, committed before the check, so that of two cases checked at
    once the later sees the earlier."""
    request = review.request
    await record_claim(session, request.category, review.claim(), request.project)


async def check(
    session: AsyncSession, review: ReviewPlan, related: Mapping[str, str]
) -> list[FindingView]:
    """Check the case against every open or paid claim that could fund the same thing;
    store and return its findings."""
    request = review.request
    case = review.claim()
    rows = await claims_touching(
        session,
        usccs=[request.uscc, *related],
        tokens=[*case.invoices, *case.serials],
        excluding=request.case_id,  # DuplicateIndex passes over the case's own claim
    )
    drafts = DuplicateIndex(rows).check(case, review.checks, related)
    return await store_findings(
        session,
        case_id=request.case_id,
        category=request.category,
        item_code=request.item_code,
        department_code=review.department_code,
        region_code=review.region_code,
        uscc=request.uscc,
        period=request.period,
        drafts=drafts,
    )
