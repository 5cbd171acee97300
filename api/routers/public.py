"""The public catalogue of policy items and the policy calculator: no sign-in, nothing
private (domain/policy/catalogue.py says what is shown), nothing stored. The calculator
is a GET: the figures are query parameters, so it is a read like any other."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, create_model

from api.access import access
from api.deps import SessionDep
from api.pagination import Page, PageDep
from api.params import IsoDate, ItemCode, WrittenDate
from core.workdays import SHANGHAI
from domain.access import Rule
from domain.policy import catalogue
from models.catalogue import CatalogueFacets, PolicyCheck, PublicPolicy, PublicPolicySummary
from models.facts import FACT_KINDS, MAX_TEXT_LENGTH, FactKind, FactType
from models.policy import Category, Level

router = APIRouter(prefix="/api/v1/public", tags=["public"])

# A keyword, a region, a unit or an industry code: short texts.
Keyword = Annotated[str | None, Query(min_length=1, max_length=64, description="关键词")]
Code = Annotated[str | None, Query(min_length=1, max_length=32)]


def _typed(kind: FactKind) -> Any:
    if kind.type is FactType.INT:
        return Annotated[int | None, Field(ge=kind.minimum, le=kind.maximum)]
    if kind.type is FactType.BOOL:
        return bool | None
    if kind.type is FactType.DATE:
        return WrittenDate | None  # its range is the fact's (1900–2099), checked with the rest
    if kind.choices:
        return Literal[kind.choices] | None
    return Annotated[str | None, Field(min_length=1, max_length=MAX_TEXT_LENGTH)]


def _described(kind: FactKind) -> str:
    unit = f"，单位：{kind.unit}" if kind.unit else ""
    choices = f"，可选：{'、'.join(kind.choices)}" if kind.choices else ""
    return f"{kind.label}{unit}{choices}"


Figures: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Figures",
    __config__=ConfigDict(extra="forbid"),
    as_of=(IsoDate | None, Field(default=None, description="按哪一天判断（默认今天）")),
    **{
        kind.name: (_typed(kind), Field(default=None, description=_described(kind)))
        for kind in FACT_KINDS.values()
    },
)


@router.get(
    "/policies",
    response_model=Page[PublicPolicySummary],
    summary="公开的政策事项清单（无需登录）：可按地区、行业、部门、类别、层级和关键词查找",
    **access(Rule.PUBLIC),
)
async def list_policies(
    session: SessionDep,
    page: PageDep,
    q: Keyword = None,
    category: Category | None = None,
    level: Level | None = None,
    department_code: Code = None,
    region_code: Annotated[
        str | None,
        Query(min_length=1, max_length=16, description="企业注册地：列出该地企业可享受的事项"),
    ] = None,
    industry_code: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_TEXT_LENGTH,
            description="企业行业代码（国民经济行业分类）：列出该行业企业可享受的事项",
        ),
    ] = None,
) -> Page[PublicPolicySummary]:
    criteria = catalogue.Search(
        q=q,
        category=category,
        level=level,
        department_code=department_code,
        region_code=region_code,
        industry_code=industry_code,
    )
    today = datetime.now(SHANGHAI).date()
    total, items = await catalogue.search(session, criteria, page.offset, page.limit, today)
    return Page.of(total, page, items)


@router.get(
    "/policies/{code}",
    response_model=PublicPolicy,
    summary="一个公开事项：条件、金额标准、各环节责任单位与时限、联系方式",
    **access(Rule.PUBLIC),
)
async def get_policy(session: SessionDep, code: ItemCode) -> PublicPolicy:
    return await catalogue.policy(session, code)


@router.get(
    "/policies/{code}/check",
    response_model=PolicyCheck,
    summary="政策计算器：按填写的数据判断是否符合、预计金额（不保存任何数据）",
    **access(Rule.PUBLIC),
)
async def check_policy(
    session: SessionDep,
    code: ItemCode,
    figures: Annotated[Figures, Query()],
) -> PolicyCheck:
    typed = figures.model_dump(exclude={"as_of"}, exclude_none=True)
    as_of: date = figures.as_of or datetime.now(SHANGHAI).date()  # type: ignore[attr-defined]
    return await catalogue.check(session, code, typed, as_of)


@router.get(
    "/facets",
    response_model=CatalogueFacets,
    summary="事项清单的查找选项：地区、部门、类别、层级",
    **access(Rule.PUBLIC),
)
async def facets(session: SessionDep) -> CatalogueFacets:
    return await catalogue.facets(session)
