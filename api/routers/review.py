"""Duplicate-funding findings (查重发现), listed for departments, finance and auditors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from api.access import access
from api.deps import CurrentUser, SessionDep
from api.pagination import Page, PageDep
from api.params import ITEM_CODE_PATTERN, USCC_PATTERN
from domain.access import Rule
from domain.review import findings
from models.review import Dimension, FindingCount, FindingStatus, FindingView
from models.uscc import validate_uscc

router = APIRouter(prefix="/api/v1", tags=["review"])

ItemFilter = Annotated[str | None, Query(pattern=ITEM_CODE_PATTERN)]
FirmFilter = Annotated[
    str | None,
    Query(min_length=18, max_length=18, pattern=USCC_PATTERN),
    AfterValidator(lambda v: v and validate_uscc(v)),
]


@router.get(
    "/findings",
    response_model=Page[FindingView],
    summary="查重发现列表（按维度、状态、条目、案件、企业筛选）",
    **access(Rule.READER),
)
async def list_findings(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    dimension: Dimension | None = None,
    status: FindingStatus | None = None,
    item_code: ItemFilter = None,
    case_id: Annotated[str | None, Query(max_length=160)] = None,
    uscc: FirmFilter = None,
) -> Page[FindingView]:
    """Findings of the cases the user may read (a department its items', finance its
    region's, auditors all), newest first."""
    total, items = await findings.list_findings(
        session,
        user,
        dimension=dimension,
        status=status,
        item_code=item_code,
        case_id=case_id,
        uscc=uscc,
        offset=page.offset,
        limit=page.limit,
    )
    return Page.of(total, page, items)


@router.get(
    "/findings/summary",
    response_model=list[FindingCount],
    summary="查重发现汇总：各维度、状态的件数与涉及金额",
    **access(Rule.READER),
)
async def findings_summary(
    session: SessionDep, user: CurrentUser, item_code: ItemFilter = None
) -> list[FindingCount]:
    """Counts and money by dimension and status: open and clearing findings are the
    money held at review."""
    return await findings.count_findings(session, user, item_code=item_code)
