"""Bearer tokens naming a user (HS256 JWT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

from core.settings import Settings

ALGORITHM = "HS256"


def issue_token(settings: Settings, user_name: str, now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": user_name,
        "iat": issued,
        "exp": issued + timedelta(hours=settings.token_ttl_hours),
        "iss": "zhida",
    }
    return jwt.encode(claims, settings.token_secret.get_secret_value(), algorithm=ALGORITHM)


def user_from_token(settings: Settings, token: str) -> str:
    """The user name in a valid token; raises jwt.InvalidTokenError otherwise."""
    claims = jwt.decode(
        token,
        settings.token_secret.get_secret_value(),
        algorithms=[ALGORITHM],
        issuer="zhida",
        options={"require": ["sub", "exp", "iss"]},
    )
    return str(claims["sub"])
