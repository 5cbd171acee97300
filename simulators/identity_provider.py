"""An OpenID Connect provider stand-in, for the government SSO (浙里办 / 浙政钉) that
production attaches: discovery, a JWKS with RS256 keys, and a token endpoint that signs
what it is asked to (the simulator has no users of its own; tests and demos say who).

    GET  /.well-known/openid-configuration   issuer, jwks_uri, token_endpoint
    GET  /jwks                               the public keys (every key still valid)
    POST /token                              {sub, preferred_username, zhida_role,
                                              zhida_unit, uscc, expires_in, audience}
                                              -> {access_token, token_type, expires_in}
    POST /v1/_simulator/rotate               a new signing key (the old one stays in the
                                              JWKS, as providers publish both a while)
    GET  /v1/_simulator/config               the issuer and current key id

The issuer is the address the provider is reached at.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from jwt.algorithms import RSAAlgorithm
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_AUDIENCE = "zhida"


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sub: str = Field(min_length=1, max_length=128)
    preferred_username: str | None = Field(default=None, max_length=64)
    zhida_role: str | list[str] | None = None
    zhida_unit: str | None = None
    uscc: str | None = None
    expires_in: int = Field(default=3600, ge=-86_400, le=86_400)  # negative: already expired
    audience: str = DEFAULT_AUDIENCE
    extra: dict[str, Any] = Field(default_factory=dict)


class _Keys:
    def __init__(self) -> None:
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.rotate()

    def rotate(self) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys.insert(0, (kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        del self.keys[3:]  # the three newest
        return kid

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, key in self.keys:
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": published}


def _issuer(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def create_app() -> FastAPI:
    app = FastAPI(title="OpenID Connect provider simulator")
    keys = _Keys()

    @app.get("/.well-known/openid-configuration")
    async def discovery(request: Request) -> dict[str, Any]:
        issuer = _issuer(request)
        return {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/jwks",
            "token_endpoint": f"{issuer}/token",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return keys.jwks()

    @app.post("/token")
    async def token(request: Request, body: TokenRequest) -> dict[str, Any]:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": _issuer(request),
            "aud": body.audience,
            "sub": body.sub,
            "iat": now,
            "exp": now + timedelta(seconds=body.expires_in),
            **body.extra,
        }
        for name in ("preferred_username", "zhida_role", "zhida_unit", "uscc"):
            value = getattr(body, name)
            if value is not None:
                claims[name] = value
        kid, key = keys.keys[0]
        signed = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        return {"access_token": signed, "token_type": "Bearer", "expires_in": body.expires_in}

    @app.post("/v1/_simulator/rotate")
    async def rotate() -> dict[str, str]:
        return {"kid": keys.rotate()}

    @app.get("/v1/_simulator/config")
    async def config(request: Request) -> dict[str, Any]:
        return {"issuer": _issuer(request), "kid": keys.keys[0][0], "keys": len(keys.keys)}

    return app
