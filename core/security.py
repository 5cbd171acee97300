"""Bearer tokens naming a user (HS256 JWT)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

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
    """The user name in a valid token; raises jwt.InvalidTokenError otherwise. A token
    verified once is not verified again until it expires (a client sends the same token
    with every request; decoding it was a twentieth of a request's CPU)."""
    name, expires_at = _verified(settings.token_secret.get_secret_value(), token)
    if time.time() >= expires_at:  # as jwt.decode judges `exp`, without leeway
        raise jwt.ExpiredSignatureError("Signature has expired")
    return name


@lru_cache(maxsize=4096)
def _verified(secret: str, token: str) -> tuple[str, float]:
    """(user, expiry) of a token whose signature and claims hold now; a refusal raises
    and is not kept."""
    claims = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        issuer="zhida",
        options={"require": ["sub", "exp", "iss"]},
    )
    return str(claims["sub"]), float(claims["exp"])
