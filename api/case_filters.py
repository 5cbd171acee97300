"""The case filters as query parameters: one dependency for the routes that list or
export cases (`GET /api/v1/cases`, `GET /api/v1/audit/bundle`), so that both take the same
parameters with the same bounds and the same checks of a range."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from api.params import IsoDate
from domain.cases.projection import CaseFilters
from domain.errors import InvalidInput
from models.case_fields import PERIOD_PATTERN
from models.cases import CaseStage
from models.money import MAX_FEN
from models.policy import Category


async def case_filters(
    item: Annotated[str | None, Query(max_length=40)] = None,
    category: Annotated[Category | None, Query()] = None,
    stage: Annotated[CaseStage | None, Query()] = None,
    region: Annotated[str | None, Query(max_length=16)] = None,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
    overdue: bool | None = None,
    department: Annotated[
        str | None, Query(max_length=32, description="the unit that must act now")
    ] = None,
    item_department: Annotated[
        str | None, Query(max_length=32, description="the department that owns the item")
    ] = None,
    min_amount_fen: Annotated[
        int | None, Query(ge=0, le=MAX_FEN, description="approved amount at least")
    ] = None,
    max_amount_fen: Annotated[
        int | None, Query(ge=0, le=MAX_FEN, description="approved amount at most")
    ] = None,
    paid_from: Annotated[
        IsoDate | None, Query(description="paid on or after this day (Asia/Shanghai)")
    ] = None,
    paid_to: Annotated[
        IsoDate | None, Query(description="paid on or before this day (Asia/Shanghai)")
    ] = None,
    returned: Annotated[
        bool | None, Query(description="the bank returned a payment of the case (退票)")
    ] = None,
    recovered: Annotated[
        bool | None, Query(description="a recovery order was raised (追回)")
    ] = None,
) -> CaseFilters:
    if paid_from and paid_to and paid_from > paid_to:
        raise InvalidInput.field("paid_to", "不能早于 paid_from")
    if (min_amount_fen or 0) > (max_amount_fen if max_amount_fen is not None else MAX_FEN):
        raise InvalidInput.field("max_amount_fen", "不能小于 min_amount_fen")
    return CaseFilters(
        item_code=item,
        category=category.value if category else None,
        stage=stage.value if stage else None,
        region_code=region,
        period=period,
        overdue=overdue,
        waiting_for_department=department,
        item_department=item_department,
        min_amount_fen=min_amount_fen,
        max_amount_fen=max_amount_fen,
        paid_from=paid_from,
        paid_to=paid_to,
        returned=returned,
        recovered=recovered,
    )


CaseFiltersDep = Annotated[CaseFilters, Depends(case_filters)]
