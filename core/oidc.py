"""Identities from an external OpenID Connect provider (the way Zhejiang's government SSO
is attached): a bearer token signed by one of the provider's keys (its JWKS), for our
audience, not expired, names a user, a role and a unit in its claims.

The signature is checked with the provider's published keys only (RS256 or ES256; never
`none` or a shared secret, so a token forged with the public key as an HMAC secret is
refused). An unknown key id makes the client fetch the JWKS again once (the provider
rotated its keys). A provider that cannot be reached is a 503, not a refusal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from core.settings import Settings

ALGORITHMS = ["RS256", "ES256"]
LEEWAY_S = 30
JWKS_CACHE_S = 300
# An unknown key id fetches the JWKS again (the provider rotated), at most this often: a
# flood of tokens with made-up key ids cannot turn into a flood of fetches.
JWKS_REFRESH_COOLDOWN_S = 2.0
FETCH_TIMEOUT_S = 5


class TokenRefused(Exception):
    """The token is not one of the provider's, or says nothing the platform can use."""


class ProviderUnreachable(Exception):
    """The provider's discovery document or keys could not be fetched."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer, in the platform's terms (the role
    not yet checked against the platform's roles: the caller does that)."""

    name: str
    roles: tuple[str, ...]  # the provider's roles, through the role map, in its order
    unit: str | None
    enterprise_uscc: str | None


def issuer_of(token: str) -> str | None:
    """The `iss` a token claims, unverified: which verifier to hand it to."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        if not settings.oidc_issuer:
            raise ValueError("no OpenID Connect issuer is configured")
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self._jwks_url = settings.oidc_jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._lock = asyncio.Lock()

    async def _keys(self) -> jwt.PyJWKClient:
        async with self._lock:
            if self._client is None:
                url = self._jwks_url or await self._discover()
                self._client = jwt.PyJWKClient(
                    url,
                    cache_keys=True,
                    lifespan=JWKS_CACHE_S,
                    timeout=FETCH_TIMEOUT_S,
                    cooldown_duration=JWKS_REFRESH_COOLDOWN_S,
                )
            return self._client

    async def _discover(self) -> str:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S) as http:
                response = await http.get(url)
                response.raise_for_status()
                document: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnreachable(f"{url}: {exc}") from None
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer asked.
            raise ProviderUnreachable(f"{url} names issuer {document.get('issuer')!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ProviderUnreachable(f"{url} names no jwks_uri")
        return jwks_uri

    async def verify(self, token: str) -> Claims:
        keys = await self._keys()
        try:
            signing_key = await asyncio.to_thread(keys.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise ProviderUnreachable(str(exc)) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise TokenRefused(f"signing key: {exc}") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=ALGORITHMS,
                audience=self.settings.oidc_audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenRefused(str(exc)) from None
        return self._claims(claims)

    def _claims(self, claims: dict[str, Any]) -> Claims:
        s = self.settings
        name = claims.get(s.oidc_user_claim) or claims.get("sub")
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise TokenRefused(f"claim {s.oidc_user_claim}: a user name of 1 to 64 characters")
        roles = claims.get(s.oidc_role_claim)
        given = [roles] if isinstance(roles, str) else roles if isinstance(roles, list) else []
        mapped = [s.oidc_role_map.get(str(r), str(r)) for r in given]
        if not mapped:
            raise TokenRefused(f"claim {s.oidc_role_claim}: no role")
        unit = claims.get(s.oidc_unit_claim)
        uscc = claims.get(s.oidc_enterprise_claim)
        return Claims(
            name=name,
            roles=tuple(mapped),
            unit=unit if isinstance(unit, str) else None,
            enterprise_uscc=uscc if isinstance(uscc, str) else None,
        )
