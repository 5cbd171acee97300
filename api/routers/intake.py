"""Policy intake endpoints: the documents harvested from the government portals with
their versions, sources and proposed items; adopting a proposal as a library draft; and
the alerts of amended or repealed documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from api.access import access
from api.deps import CurrentUser, SessionDep
from api.idempotency import IdempotencyKey
from api.pagination import Page, PageDep
from api.params import MAX_ROW_ID, ItemCode
from domain.access import Rule
from domain.policy import intake
from models.policy import ItemDetail, Level

router = APIRouter(prefix="/api/v1/intake", tags=["policy intake"])

DocumentId = Annotated[int, Path(description="harvested document id", ge=1, le=MAX_ROW_ID)]
ProposalId = Annotated[int, Path(description="proposal id", ge=1, le=MAX_ROW_ID)]
AlertId = Annotated[int, Path(description="alert id", ge=1, le=MAX_ROW_ID)]


@router.get(
    "/documents",
    response_model=Page[intake.DocumentSummary],
    summary="归集的政策文件（可按层级、关键词、是否已废止筛选）",
    **access(Rule.READER),
)
async def list_documents(
    session: SessionDep,
    _: CurrentUser,
    page: PageDep,
    level: Level | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    repealed: bool | None = None,
) -> Page[intake.DocumentSummary]:
    total, items = await intake.list_documents(
        session, level=level, q=q, repealed=repealed, offset=page.offset, limit=page.limit
    )
    return Page.of(total, page, items)


@router.get(
    "/documents/{document_id}",
    response_model=intake.DocumentDetail,
    summary="一份政策文件：各版本全文、发布来源、解析出的拟设事项",
    **access(Rule.READER),
)
async def get_document(
    session: SessionDep, _: CurrentUser, document_id: DocumentId
) -> intake.DocumentDetail:
    return await intake.document_detail(session, document_id)


@router.post(
    "/proposals/{proposal_id}/adopt",
    response_model=ItemDetail,
    status_code=status.HTTP_201_CREATED,
    summary="采用解析出的拟设事项，生成政策条目草稿（之后照常修改、提交审批）",
    **access(Rule.ITEM_CREATE),
)
async def adopt_proposal(
    session: SessionDep,
    user: CurrentUser,
    proposal_id: ProposalId,
    body: intake.Adoption,
    _idempotency: IdempotencyKey,
) -> ItemDetail:
    return await intake.adopt(session, user, proposal_id, body)


@router.get(
    "/alerts",
    response_model=Page[intake.AlertView],
    summary="依据文件被修改或废止的事项预警（部门只见本部门的）",
    **access(Rule.READER),
)
async def list_alerts(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    open_only: Annotated[bool, Query(alias="open", description="只看未处理的")] = True,
) -> Page[intake.AlertView]:
    total, items = await intake.list_alerts(
        session, user, open_only=open_only, offset=page.offset, limit=page.limit
    )
    return Page.of(total, page, items)


@router.post(
    "/items/{code}/alerts/{alert_id}/handled",
    response_model=intake.AlertView,
    summary="标记事项的预警已处理（事项已暂停、替换或经核对无需改动）",
    **access(Rule.ITEM_EDIT),
)
async def handle_alert(
    session: SessionDep,
    user: CurrentUser,
    code: ItemCode,
    alert_id: AlertId,
    _idempotency: IdempotencyKey,
) -> intake.AlertView:
    """The item's department (the rule checks the item) marks one of its alerts handled."""
    return await intake.handle_alert(session, user, code, alert_id)
