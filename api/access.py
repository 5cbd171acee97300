"""Every route declares its access rule, in one visible way:

    @router.get(PATH, response_model=..., **access(Rule.FIRM_READ))

which adds a route dependency that checks the rule (domain/access.py decides) before
the body is read, so a refused write is a 403 and never a 422, and names the rule in
the OpenAPI as `x-zhida-access`. The authorization test walks the OpenAPI: a route
without a rule fails it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_trail import signed_in
from api.deps import (
    CurrentUser,
    SessionDep,
    SettingsDep,
    _bearer,
    get_current_user,
    reading,
)
from api.params import CreditCode
from core.settings import Environment
from domain.access import ACCESS_EXTENSION, Rule, Target, authorize
from models.reference import Actor

# Rules whose target includes the firm in the path (validated as a credit code first).
_FIRM_RULES = frozenset(
    {
        Rule.FIRM_READ,
        Rule.ITEM_FIRM_READ,
        Rule.CASE_APPLICANT,
        Rule.CASE_WITHDRAW,
    }
)


def _item_code(request: Request) -> str | None:
    # The library's routes call the item `code`, the others `item_code`.
    params = request.path_params
    code = params.get("item_code", params.get("code"))
    return None if code is None else str(code)


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _check(rule: Rule) -> Callable[..., Awaitable[None]]:
    if rule is Rule.PUBLIC:

        async def public() -> None:
            return None

        return public

    if rule is Rule.OPS:

        async def ops(
            session: SessionDep,
            settings: SettingsDep,
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        ) -> None:
            client = request.client.host if request.client else None
            if (
                "authorization" not in request.headers  # any credentials at all are checked
                and settings.environment is not Environment.PRODUCTION
                and client in LOOPBACK
            ):
                return  # the embedded stack's Temporal UI, which sends no token
            user = await get_current_user(request, settings, session, credentials)
            await _allowed(request, session, user, rule, Target(None))

        return ops

    if rule in _FIRM_RULES:

        async def about_firm(
            session: SessionDep, user: CurrentUser, request: Request, uscc: CreditCode
        ) -> None:
            await _allowed(request, session, user, rule, Target(_item_code(request), uscc))

        return about_firm

    async def about_item(session: SessionDep, user: CurrentUser, request: Request) -> None:
        await _allowed(request, session, user, rule, Target(_item_code(request)))

    return about_item


async def _allowed(
    request: Request, session: AsyncSession, user: Actor, rule: Rule, target: Target
) -> None:
    """Note who asks, then check the rule, reading beside the request's transaction
    (`api.deps.reading`)."""
    signed_in(request, user)
    async with reading(request, session) as reader:
        await authorize(reader, user, rule, target)


def access(rule: Rule) -> dict[str, Any]:
    """The route decorator arguments that declare and enforce `rule`."""
    return {
        "dependencies": [Depends(_check(rule))],
        "openapi_extra": {ACCESS_EXTENSION: rule.value},
    }
