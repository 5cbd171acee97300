"""Request dependencies: settings, one transaction per request, Temporal, current user."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

import jwt
from fastapi import Depends, Request, params
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from temporalio.client import Client

from core.db import Reader
from core.oidc import Claims, OidcVerifier, ProviderUnreachable, TokenRefused, issuer_of
from core.security import user_from_token
from core.settings import Environment, Settings
from core.workdays import WorkingCalendar, calendar_from
from domain.errors import FieldError, InvalidInput, Unauthenticated, Unavailable
from models.reference import Actor, Department, Role, User
from models.registry import Enterprise


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_calendar(request: Request) -> WorkingCalendar:
    """The working-day calendar of the settings, built once per app."""
    calendar: WorkingCalendar | None = getattr(request.app.state, "calendar", None)
    if calendar is None:
        calendar = request.app.state.calendar = calendar_from(request.app.state.settings)
    return calendar


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


@asynccontextmanager
async def reading(request: Request, session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A session for reads that need not belong to the request's transaction (who the
    user is, which case a key names): a GET's own, read-only one; for a request that
    may write, a short read-only transaction beside it. On SQLite a request then takes
    the write lock only once it writes: an approval, which only reads before it goes to
    Temporal, takes it never (it was 2 of a case's 18 write transactions, each waiting
    about 0.35 s for the lock under load)."""
    if request.method in ("GET", "HEAD") or not isinstance(session.bind, AsyncEngine):
        yield session  # a GET's own, or a session on one connection (a test's transaction)
        return
    async with request.app.state.read_sessionmaker() as reader:
        yield reader


async def bulk_reader_for(request: Request, session: AsyncSession) -> Reader:
    """Sessions for a read of everything (a version's budget preview, the dashboards'
    figures), which may outlive the request that started it: read-only ones of the API's
    bulk pool (on SQLite, aiosqlite's threads, api/main.py), the request's transaction
    ended first so that its connection goes back to the pool; or the request's session
    where it is on one connection (a test's transaction), whose data only it sees."""
    if isinstance(session.bind, AsyncEngine):
        await session.commit()
        sessionmaker: Reader = request.app.state.bulk_read_sessionmaker
        return sessionmaker
    return lambda: contextlib.nullcontext(session)


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


async def get_temporal_connection(request: Request) -> _Connection:
    connection: _Connection = request.app.state.temporal
    return connection


async def get_temporal(request: Request) -> Client:
    client = await (await get_temporal_connection(request)).get()
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
CalendarDep = Annotated[WorkingCalendar, Depends(get_calendar)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
WritingSessionDep = Annotated[AsyncSession, Depends(get_writing_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
TemporalConnectionDep = Annotated[_Connection, Depends(get_temporal_connection)]

_bearer = HTTPBearer(auto_error=False)


async def get_current_user(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """The signed-in user. A token of the configured OpenID Connect provider is verified
    against its keys and names the user, role and unit (core/oidc.py); the platform's
    own tokens (`zhida token`) are accepted outside production, or in production when no
    provider is configured. Either way the user must not be deactivated in the `user`
    table, checked on every request: deactivation takes effect at once."""
    if credentials is None:
        raise Unauthenticated("a bearer token is required (zhida token --user NAME)")
    token = credentials.credentials
    if settings.oidc_issuer and issuer_of(token) == settings.oidc_issuer.rstrip("/"):
        return await _provider_user(request, session, token)
    if settings.oidc_issuer and settings.environment is Environment.PRODUCTION:
        raise Unauthenticated("sign in through the identity provider (单点登录)")
    try:
        name = user_from_token(settings, token)
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    async with reading(request, session) as reader:
        user = await reader.get(User, name)
    if user is None or not user.active:
        raise Unauthenticated(f"user {name} is unknown or inactive")
    return Actor.of(user)


async def verified_user_name(state: Any, authorization: str | None) -> str:
    """The user an `Authorization: Bearer` header names once its token is verified (the
    platform's signature, or the provider's keys, cached); "" for none or an invalid one.
    For the middleware that must know who sent a request before, or without, the route:
    the idempotency store and the audit trail."""
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not token:
        return ""
    settings: Settings = state.settings
    verifier: OidcVerifier | None = getattr(state, "oidc", None)
    if verifier is not None and issuer_of(token) == verifier.issuer:
        try:
            return (await verifier.verify(token)).name
        except (TokenRefused, ProviderUnreachable):
            return ""
    try:
        return user_from_token(settings, token)
    except jwt.InvalidTokenError:
        return ""


async def _provider_user(request: Request, session: AsyncSession, token: str) -> Actor:
    verifier: OidcVerifier = request.app.state.oidc
    try:
        claims = await verifier.verify(token)
    except TokenRefused as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    except ProviderUnreachable as exc:
        raise Unavailable(f"身份认证服务暂时无法访问，请稍后重试（{exc}）") from None
    async with reading(request, session) as reader:
        actor = await actor_of(reader, claims, request.app.state.settings)
        user = await reader.get(User, actor.name)
    if user is not None and not user.active:
        raise Unauthenticated(f"user {actor.name} is deactivated")
    if user is None or Actor.of(user) != actor:
        await _keep_in_step(request, session, actor)
    return actor


async def _keep_in_step(request: Request, session: AsyncSession, actor: Actor) -> None:
    """Record the provider's word on a user: its first sign-in, or a move to another role
    or unit (the provider is the source of truth for both), in a short transaction of its
    own, so that it stands whatever the route goes on to do. For a GET that is a new
    transaction beside the request's, which only reads. A request that writes commits its
    own instead, which has done nothing yet (the user is resolved, in a read-only
    transaction, before the route runs): a second writer beside it would wait for it
    on SQLite until the busy timeout (then 503). The route then goes on in a new
    transaction, as after `commit_before_temporal`."""
    if request.method not in ("GET", "HEAD"):
        await _record_user(session, actor)
        await session.commit()
        return
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker.begin() as writer:
        await _record_user(writer, actor)


async def _record_user(session: AsyncSession, actor: Actor) -> None:
    """Insert or update the user's row from `actor`; a deactivated row stays as it is and
    refuses. Two first requests of one user may race to insert it (a browser opens with
    several): the one that loses updates the row the other made."""
    row = await session.get(User, actor.name)
    if row is None:
        try:
            async with session.begin_nested():
                session.add(
                    User(
                        name=actor.name,
                        display_name=actor.name,
                        role=actor.role,
                        department_code=actor.department_code,
                        region_code=actor.region_code,
                        enterprise_uscc=actor.enterprise_uscc,
                    )
                )
            return
        except IntegrityError:
            row = await session.get(User, actor.name)
            if row is None:
                raise
    if not row.active:
        raise Unauthenticated(f"user {actor.name} is deactivated")
    row.role = actor.role
    row.department_code = actor.department_code
    row.region_code = actor.region_code
    row.enterprise_uscc = actor.enterprise_uscc
    await session.flush()


async def actor_of(session: AsyncSession, claims: Claims, settings: Settings) -> Actor:
    """The platform's view of a provider's user: a known role, a unit that exists (staff),
    a firm that exists (enterprise). A claim that says otherwise is refused, named."""
    roles = [r for r in claims.roles if r in Role.__members__.values()]
    if not roles:
        raise Unauthenticated(
            f"claim {settings.oidc_role_claim}: none of {list(claims.roles)} is a platform role"
        )
    role = Role(roles[0])
    if role is Role.ENTERPRISE:
        uscc = claims.enterprise_uscc
        if uscc is None or await session.get(Enterprise, uscc) is None:
            raise Unauthenticated(
                f"claim {settings.oidc_enterprise_claim}: no registered firm {uscc!r}"
            )
        return Actor(name=claims.name, role=role, enterprise_uscc=uscc)
    department = await session.get(Department, claims.unit) if claims.unit else None
    if department is None:
        if role in (Role.AUDITOR, Role.ADMIN, Role.OPS) and claims.unit is None:
            return Actor(name=claims.name, role=role)
        raise Unauthenticated(f"claim {settings.oidc_unit_claim}: no department {claims.unit!r}")
    return Actor(
        name=claims.name,
        role=role,
        department_code=department.code,
        region_code=department.region_code,
    )


CurrentUser = Annotated[Actor, Depends(get_current_user)]
