"""Offset pagination shared by list endpoints."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends
from pydantic import BaseModel

from api.params import Limit, Offset

T = TypeVar("T")


class PageParams(BaseModel):
    offset: int
    limit: int


async def page_params(offset: Offset = 0, limit: Limit = 50) -> PageParams:
    return PageParams(offset=offset, limit=limit)


PageDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    total: int
    offset: int
    limit: int
    items: list[T]

    @classmethod
    def of(cls, total: int, page: PageParams, items: list[T]) -> Page[T]:
        return cls(total=total, offset=page.offset, limit=page.limit, items=items)
