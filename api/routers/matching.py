"""Match library and push endpoints: policies for a firm, who matches an item, what
stands in a firm's way, a version's budget preview, and the push results."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.pagination import Page, PageDep
from api.params import CreditCode
from domain import match_library, push
from domain.access import require_role
from domain.errors import InvalidInput, NotFound
from domain.rules import Verdict
from models.matching import (
    BudgetPreview,
    GapReport,
    ItemMatchView,
    MatchedFirm,
    PolicyForMe,
    PushStats,
)
from models.reference import Role

router = APIRouter(prefix="/api/v1", tags=["matching and push"])


@router.get("/my/policies", response_model=Page[PolicyForMe])
async def my_policies(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[PolicyForMe]:
    """政策快享: the policies the firm matches, eligible first, with amount and reasons."""
    require_role(user, Role.ENTERPRISE)
    assert user.enterprise_uscc is not None
    total, items = await match_library.policies_for(
        session, user, user.enterprise_uscc, page.offset, page.limit
    )
    return Page.of(total, page, items)


@router.get("/my/policies/{item_code}", response_model=PolicyForMe)
async def my_policy(session: SessionDep, user: CurrentUser, item_code: str) -> PolicyForMe:
    """One matched policy; opening it counts as opening its push."""
    require_role(user, Role.ENTERPRISE)
    assert user.enterprise_uscc is not None
    found = await match_library.policy_for(session, user, user.enterprise_uscc, item_code)
    if found is None:
        raise NotFound(f"policy item {item_code} does not match this firm")
    await push.record_action(session, user.enterprise_uscc, item_code, "opened")
    return found


@router.get("/enterprises/{uscc}/policies", response_model=Page[PolicyForMe])
async def policies_of_firm(
    session: SessionDep, user: CurrentUser, uscc: CreditCode, page: PageDep
) -> Page[PolicyForMe]:
    total, items = await match_library.policies_for(session, user, uscc, page.offset, page.limit)
    return Page.of(total, page, items)


@router.get("/items/{item_code}/eligibility/{uscc}/gaps", response_model=GapReport)
async def gaps(
    session: SessionDep,
    user: CurrentUser,
    item_code: str,
    uscc: CreditCode,
    as_of: date | None = None,
) -> GapReport:
    """What would make the firm eligible: every failing or unknown condition, with
    what it needs and what the data says now."""
    day = as_of or match_library.today_in_shanghai()
    return await match_library.gaps(session, user, item_code, uscc, day)


@router.get("/items/{item_code}/matches", response_model=ItemMatchView)
async def item_matches(session: SessionDep, user: CurrentUser, item_code: str) -> ItemMatchView:
    """Who matches the item: counts by region and verdict, and the eligible total."""
    return await match_library.item_matches(session, user, item_code)


@router.get("/items/{item_code}/matches/firms", response_model=Page[MatchedFirm])
async def matched_firms(
    session: SessionDep,
    user: CurrentUser,
    item_code: str,
    page: PageDep,
    verdict: Annotated[Verdict | None, Query()] = None,
    region: Annotated[str | None, Query(max_length=16)] = None,
) -> Page[MatchedFirm]:
    if verdict is Verdict.NOT_ELIGIBLE:
        raise InvalidInput.field(
            "verdict", "the library keeps eligible and possibly eligible firms"
        )
    total, items = await match_library.matched_firms(
        session, user, item_code, verdict, region, page.offset, page.limit
    )
    return Page.of(total, page, items)


@router.get("/items/{item_code}/versions/{version}/budget-preview", response_model=BudgetPreview)
async def budget_preview(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    item_code: str,
    version: int,
    as_of: date | None = None,
) -> BudgetPreview:
    """Before publishing: how many firms the version matches today and what they would
    receive, against its annual quota."""
    day = as_of or match_library.today_in_shanghai()
    return await match_library.budget_preview(
        session, user, item_code, version, day, settings.match_threads
    )


@router.get("/items/{item_code}/push-stats", response_model=PushStats)
async def push_stats(session: SessionDep, user: CurrentUser, item_code: str) -> PushStats:
    """Pushes of the item and what the firms did; success counts firms that acted."""
    await match_library.require_item_reader(session, user, item_code)
    return await push.push_stats(session, item_code)
