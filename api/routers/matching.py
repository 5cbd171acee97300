"""Match library and push endpoints: policies for a firm, who matches an item, what
stands in a firm's way, a version's budget preview, and the push results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.access import access
from api.deps import CurrentUser, SessionDep, SettingsDep, WritingSessionDep, bulk_reader_for
from api.pagination import Page, PageDep
from api.params import CreditCode, IsoDate, ItemCode, MatchRunId, VersionNumber
from domain.access import Rule, require_role
from domain.errors import InvalidInput, NotFound
from domain.matching import match_library, push
from models.eligibility import Verdict
from models.matching import (
    BudgetPreview,
    GapReport,
    ItemMatchView,
    MatchedFirm,
    MatchRunView,
    PolicyForMe,
    PushStats,
)
from models.reference import Role

router = APIRouter(prefix="/api/v1", tags=["matching and push"])


@router.get(
    "/my/policies",
    response_model=Page[PolicyForMe],
    summary="我可享受的政策（政策快享）",
    **access(Rule.ENTERPRISE),
)
async def my_policies(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[PolicyForMe]:
    """政策快享: the policies the firm matches, eligible first, with amount and reasons."""
    require_role(user, Role.ENTERPRISE)
    assert user.enterprise_uscc is not None
    total, items = await match_library.policies_for(
        session, user, user.enterprise_uscc, page.offset, page.limit
    )
    return Page.of(total, page, items)


@router.get(
    "/my/policies/{item_code}",
    response_model=PolicyForMe,
    summary="查看一项与我匹配的政策",
    **access(Rule.ENTERPRISE),
)
async def my_policy(
    session: WritingSessionDep, user: CurrentUser, item_code: ItemCode
) -> PolicyForMe:
    """One matched policy; opening it counts as opening its push."""
    require_role(user, Role.ENTERPRISE)
    assert user.enterprise_uscc is not None
    found = await match_library.policy_for(session, user, user.enterprise_uscc, item_code)
    if found is None:
        raise NotFound(f"policy item {item_code} does not match this firm")
    await push.record_action(session, user.enterprise_uscc, item_code, "opened")
    return found


@router.get(
    "/enterprises/{uscc}/policies",
    response_model=Page[PolicyForMe],
    summary="企业匹配到的政策",
    **access(Rule.FIRM_READ),
)
async def policies_of_firm(
    session: SessionDep, user: CurrentUser, uscc: CreditCode, page: PageDep
) -> Page[PolicyForMe]:
    total, items = await match_library.policies_for(session, user, uscc, page.offset, page.limit)
    return Page.of(total, page, items)


@router.get(
    "/items/{item_code}/eligibility/{uscc}/gaps",
    response_model=GapReport,
    summary="企业还差哪些条件",
    **access(Rule.ITEM_FIRM_READ),
)
async def gaps(
    session: SessionDep,
    user: CurrentUser,
    item_code: ItemCode,
    uscc: CreditCode,
    as_of: IsoDate | None = None,
) -> GapReport:
    """What would make the firm eligible: every failing or unknown condition, with
    what it needs and what the data says now."""
    day = as_of or match_library.today_in_shanghai()
    return await match_library.gaps(session, user, item_code, uscc, day)


@router.get(
    "/items/{item_code}/matches",
    response_model=ItemMatchView,
    summary="条目的匹配概况（按地区与结论计数）",
    **access(Rule.ITEM_MATCHES),
)
async def item_matches(
    session: SessionDep, user: CurrentUser, item_code: ItemCode
) -> ItemMatchView:
    """Who matches the item: counts by region and verdict, and the eligible total."""
    return await match_library.item_matches(session, user, item_code)


@router.get(
    "/items/{item_code}/matches/firms",
    response_model=Page[MatchedFirm],
    summary="条目匹配到的企业",
    **access(Rule.ITEM_MATCHES),
)
async def matched_firms(
    session: SessionDep,
    user: CurrentUser,
    item_code: ItemCode,
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


@router.get(
    "/items/{item_code}/versions/{version}/budget-preview",
    response_model=BudgetPreview,
    summary="发布前预估版本的受益企业与金额",
    **access(Rule.ITEM_OVERSIGHT),
)
async def budget_preview(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    item_code: ItemCode,
    version: VersionNumber,
    as_of: IsoDate | None = None,
) -> BudgetPreview:
    """Before publishing: how many firms the version matches today and what they would
    receive, against its annual quota."""
    day = as_of or match_library.today_in_shanghai()
    facts = await bulk_reader_for(request, session)
    return await match_library.budget_preview(
        session, user, item_code, version, day, settings.match_threads, facts
    )


@router.get(
    "/items/{item_code}/push-stats",
    response_model=PushStats,
    summary="条目的推送效果",
    **access(Rule.ITEM_MATCHES),
)
async def push_stats(session: SessionDep, user: CurrentUser, item_code: ItemCode) -> PushStats:
    """Pushes of the item and what the firms did; success counts firms that acted."""
    return await push.push_stats_for(session, user, item_code)


@router.get(
    "/match-runs", response_model=Page[MatchRunView], summary="匹配运行记录", **access(Rule.ADMIN)
)
async def match_runs(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[MatchRunView]:
    """For ops: matching runs, newest first, with how many items and facts each could
    not evaluate (the errors themselves: `GET /match-runs/{run_id}`)."""
    total, items = await match_library.match_runs(session, user, page.offset, page.limit)
    return Page.of(total, page, items)


@router.get(
    "/match-runs/{run_id}",
    response_model=MatchRunView,
    summary="一次匹配运行及其无法评估的条目与企业",
    **access(Rule.ADMIN),
)
async def match_run(
    session: SessionDep,
    user: CurrentUser,
    run_id: MatchRunId,
) -> MatchRunView:
    """For ops: one matching run and every error it recorded: item versions it skipped
    (their library rows kept) and stored facts it read as unknown."""
    return await match_library.match_run(session, user, run_id)
