"""Request dependencies: settings, one transaction per request, Temporal, current user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Protocol

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.security import user_from_token
from core.settings import Settings
from domain.errors import Unauthenticated, Unavailable
from models.reference import Actor, User


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One request is one transaction: commit on success, roll back on any error."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


class _Connection(Protocol):
    async def get(self) -> Client | None: ...


def get_temporal_connection(request: Request) -> _Connection:
    connection: _Connection = request.app.state.temporal
    return connection


async def get_temporal(request: Request) -> Client:
    client = await get_temporal_connection(request).get()
    if client is None:
        raise Unavailable("Temporal is not reachable")
    return client


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
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
