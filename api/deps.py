"""Request dependencies: settings, one transaction per request, Temporal, current user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Protocol

import jwt
from fastapi import Depends, Request, params
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from temporalio.client import Client

from core.security import user_from_token
from core.settings import Settings
from domain.errors import FieldError, InvalidInput, Unauthenticated, Unavailable
from models.reference import Actor, User


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One request is one transaction: commit on success, roll back on any error. A
    route that goes on to Temporal ends it early, with `commit_before_temporal`. A GET
    only reads: its transaction is read-only and, on SQLite, never waits for the write
    lock (core/db.py); a GET that records something takes `WritingSessionDep`."""
    state = request.app.state
    reads = request.method in ("GET", "HEAD")
    async for session in _transaction(state.read_sessionmaker if reads else state.sessionmaker):
        yield session


async def get_writing_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction, allowed to write whatever the method."""
    async for session in _transaction(request.app.state.sessionmaker):
        yield session


async def _transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def commit_before_temporal(session: AsyncSession) -> None:
    """Commit the request's transaction now, before the route calls Temporal; the one
    place a route commits. Two reasons, one rule:

    - a workflow started, signalled or updated after a write must find it: its
      activities read the database in sessions of their own;
    - a route must not hold a transaction while it waits on a workflow, whose activities
      need the database to move on (on SQLite every transaction holds the one write
      lock: BEGIN IMMEDIATE, core/db.py).

    Whatever the route does afterwards runs in a new transaction, which `get_session`
    commits at the end as usual. Dependencies that read before a Temporal call (the
    case a path names, say) call it too, so such routes hold no transaction at all.
    One route starts before it commits, on purpose: `apply` (api/routers/cases.py),
    whose claim on a period must not stand unless its case runs.
    """
    await session.commit()


@asynccontextmanager
async def recorded(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """The request's session as a unit of work that `commit_before_temporal` ends: for a
    service that writes, then starts a workflow (workflows/registry_import.py)."""
    yield session
    await commit_before_temporal(session)


class _Connection(Protocol):
    async def get(self) -> Client | None: ...


def get_temporal_connection(request: Request) -> _Connection:
    connection: _Connection = request.app.state.temporal
    return connection


async def get_temporal(request: Request) -> Client:
    client = await get_temporal_connection(request).get()
    if client is None:
        raise Unavailable("流程引擎（Temporal）暂时无法连接，请稍后重试")
    return client


async def refuse_nul_in_query(request: Request) -> None:
    """A NUL character in a query parameter is a 422 naming it: PostgreSQL cannot hold
    one in text, and a filter with one can match nothing anyway. (Set for the whole app.)"""
    bad = sorted({name for name, value in request.query_params.multi_items() if "\x00" in value})
    if bad:
        raise InvalidInput(
            "; ".join(f"{name}: 不能包含 NUL 字符" for name in bad),
            [FieldError(name, "不能包含 NUL 字符") for name in bad],
        )


JSON_TYPES = "application/json（或 application/*+json）"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def require_readable_body(request: Request) -> None:
    """415 for a body the route cannot read: a route that takes JSON takes only a JSON
    content type, a form route only a form. Installed for the whole app; FastAPI itself
    would parse nothing and answer a confusing 422."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return
    content_type = request.headers.get("content-type")
    is_form = isinstance(route.body_field.field_info, params.Form)  # File is a Form
    expected = " 或 ".join(FORM_TYPES) if is_form else JSON_TYPES
    if content_type is None:
        if request.headers.get("content-length", "0") == "0" and (
            "transfer-encoding" not in request.headers
        ):
            return  # no body at all: the validation names what is missing
        raise HTTPException(415, f"缺少 Content-Type；此接口接受 {expected}")
    media_type = content_type.partition(";")[0].strip().lower()
    if is_form:
        readable = media_type in FORM_TYPES
    else:
        kind, _, subtype = media_type.partition("/")
        readable = kind == "application" and (subtype == "json" or subtype.endswith("+json"))
    if not readable:
        raise HTTPException(415, f"不支持 Content-Type {media_type}；此接口接受 {expected}")


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
WritingSessionDep = Annotated[AsyncSession, Depends(get_writing_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
TemporalConnectionDep = Annotated[_Connection, Depends(get_temporal_connection)]

_bearer = HTTPBearer(auto_error=False)


async def get_current_user(
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None:
        raise Unauthenticated("a bearer token is required (zhida token --user NAME)")
    try:
        name = user_from_token(settings, credentials.credentials)
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    user = await session.get(User, name)
    if user is None or not user.active:
        raise Unauthenticated(f"user {name} is unknown or inactive")
    return Actor.of(user)


CurrentUser = Annotated[Actor, Depends(get_current_user)]
