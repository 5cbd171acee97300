"""Who am I, my notices, and the reference lists (regions, departments)."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.access import access
from api.audit_trail import about
from api.deps import CurrentUser, SessionDep
from api.idempotency import IdempotencyKey
from api.params import NoticeId
from domain.access import Rule
from domain.errors import Conflict, NotFound
from domain.matching import push
from models.notices import Notice, NoticePublic
from models.reference import (
    Actor,
    Department,
    DepartmentPublic,
    Region,
    RegionPublic,
    User,
    UserPublic,
)

log = structlog.get_logger()

router = APIRouter(prefix="/api/v1", tags=["reference"])


@router.get("/me", response_model=Actor, summary="当前用户", **access(Rule.SIGNED_IN))
async def me(user: CurrentUser) -> Actor:
    return user


@router.get(
    "/me/notices",
    response_model=list[NoticePublic],
    summary="我的站内通知（最近 100 条）",
    **access(Rule.SIGNED_IN),
)
async def my_notices(session: SessionDep, user: CurrentUser) -> list[NoticePublic]:
    rows = await session.scalars(
        select(Notice)
        .where(Notice.recipient == user.name)
        .order_by(col(Notice.id).desc())
        .limit(100)
    )
    return [NoticePublic.model_validate(n, from_attributes=True) for n in rows]


@router.post(
    "/me/notices/{notice_id}/read",
    response_model=NoticePublic,
    summary="标记通知为已读",
    **access(Rule.SIGNED_IN),
)
async def read_notice(
    session: SessionDep, user: CurrentUser, notice_id: NoticeId, _idempotency: IdempotencyKey
) -> NoticePublic:
    """Mark a notice read; reading a pushed policy's notice counts as opening the push."""
    notice = await push.read_notice(session, user.name, notice_id)
    return NoticePublic.model_validate(notice, from_attributes=True)


@router.get(
    "/regions", response_model=list[RegionPublic], summary="行政区划列表", **access(Rule.SIGNED_IN)
)
async def regions(session: SessionDep, _: CurrentUser) -> list[RegionPublic]:
    rows = await session.scalars(select(Region).order_by(col(Region.code)))
    return [RegionPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get(
    "/departments",
    response_model=list[DepartmentPublic],
    summary="部门列表",
    **access(Rule.SIGNED_IN),
)
async def departments(session: SessionDep, _: CurrentUser) -> list[DepartmentPublic]:
    rows = await session.scalars(select(Department).order_by(col(Department.code)))
    return [DepartmentPublic.model_validate(d, from_attributes=True) for d in rows]


class UserStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Something to read, and nothing PostgreSQL cannot store (NUL).
    reason: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")


class UserStatus(UserPublic):
    active: bool


USER = "/users/{name}"
UserName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^/\x00]+$")]


async def _set_active(
    request: Request, session: AsyncSession, name: str, active: bool, actor: Actor, reason: str
) -> UserStatus:
    about(request, f"user/{name}", {"reason": reason})  # the trail keeps who and why
    user = await session.get(User, name)
    if user is None:
        raise NotFound(f"user {name} not found")
    if name == actor.name and not active:
        raise Conflict("an admin does not deactivate themselves")
    user.active = active
    await session.flush()
    log.info("user.status_changed", user=name, active=active, by=actor.name, reason=reason)
    return UserStatus.model_validate(user, from_attributes=True)


@router.post(
    USER + "/deactivate",
    response_model=UserStatus,
    summary="停用用户（立即生效：其令牌不再被接受）",
    **access(Rule.ADMIN),
)
async def deactivate_user(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    name: UserName,
    body: UserStatusChange,
    _idempotency: IdempotencyKey,
) -> UserStatus:
    """Refuse the user's every request from now on, whatever token it holds (platform
    or identity provider); the reason is in the audit trail's request and the log."""
    return await _set_active(request, session, name, False, user, body.reason)


@router.post(
    USER + "/activate",
    response_model=UserStatus,
    summary="恢复用户",
    **access(Rule.ADMIN),
)
async def activate_user(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    name: UserName,
    body: UserStatusChange,
    _idempotency: IdempotencyKey,
) -> UserStatus:
    return await _set_active(request, session, name, True, user, body.reason)
