"""Who am I, my notices, and the reference lists (regions, departments)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep
from domain import push
from models.notice import Notice, NoticePublic
from models.reference import Actor, Department, DepartmentPublic, Region, RegionPublic

router = APIRouter(prefix="/api/v1", tags=["reference"])


@router.get("/me", response_model=Actor)
async def me(user: CurrentUser) -> Actor:
    return user


@router.get("/me/notices", response_model=list[NoticePublic])
async def my_notices(session: SessionDep, user: CurrentUser) -> list[NoticePublic]:
    rows = await session.scalars(
        select(Notice)
        .where(Notice.recipient == user.name)
        .order_by(col(Notice.id).desc())
        .limit(100)
    )
    return [NoticePublic.model_validate(n, from_attributes=True) for n in rows]


@router.post("/me/notices/{notice_id}/read", response_model=NoticePublic)
async def read_notice(session: SessionDep, user: CurrentUser, notice_id: int) -> NoticePublic:
    """Mark a notice read; reading a pushed policy's notice counts as opening the push."""
    notice = await push.read_notice(session, user.name, notice_id)
    return NoticePublic.model_validate(notice, from_attributes=True)


@router.get("/regions", response_model=list[RegionPublic])
async def regions(session: SessionDep, _: CurrentUser) -> list[RegionPublic]:
    rows = await session.scalars(select(Region).order_by(col(Region.code)))
    return [RegionPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/departments", response_model=list[DepartmentPublic])
async def departments(session: SessionDep, _: CurrentUser) -> list[DepartmentPublic]:
    rows = await session.scalars(select(Department).order_by(col(Department.code)))
    return [DepartmentPublic.model_validate(d, from_attributes=True) for d in rows]
