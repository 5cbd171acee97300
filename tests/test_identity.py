"""Production identity: tokens of an external OpenID Connect provider (the simulator, a
real HTTP server with its own RSA keys), mapped to the platform's users; deactivation at
once; the platform's own tokens only where they belong; refusals of forged tokens; the
security headers on every response; production's refusal to start unsafely."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core.db import make_sessionmaker
from core.oidc import JWKS_REFRESH_COOLDOWN_S
from core.security import issue_token
from core.settings import DEV_TOKEN_SECRET, Environment, Settings
from models.reference import User
from seed.reference import ensure_reference_data
from tests.fixtures.factories import create_enterprise, create_users

AUDIENCE = "zhida"


@pytest.fixture
def settings(identity_provider_url: str) -> Settings:
    """The app of `api` (tests/fixtures/api.py), trusting the provider simulator."""
    return Settings(
        environment=Environment.TEST,
        temporal_address="127.0.0.1:9",
        oidc_issuer=identity_provider_url,
        oidc_audience=AUDIENCE,
        oidc_role_map={"经办人": "department_caseworker", "审计": "auditor"},
    )


@pytest.fixture
async def provider(identity_provider_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=identity_provider_url, timeout=5) as http:
        yield http


async def _token(provider: httpx.AsyncClient, **claims: Any) -> dict[str, str]:
    response = await provider.post("/token", json=claims)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _me(api: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await api.get("/api/v1/me", headers=headers)


async def test_a_provider_token_signs_in_and_provisions_the_user_with_role_and_unit(
    api: httpx.AsyncClient, provider: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_users(session)
    headers = await _token(
        provider,
        sub="u-001",
        preferred_username="sso_zhang",
        zhida_role="经办人",
        zhida_unit="330500-JXJ",
    )
    me = await _me(api, headers)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "name": "sso_zhang",
        "role": "department_caseworker",
        "department_code": "330500-JXJ",
        "region_code": "330500",
        "enterprise_uscc": None,
    }
    row = await session.get(User, "sso_zhang")
    assert row is not None and row.active and row.department_code == "330500-JXJ"
    # The provider moves the user to finance: the platform follows on the next sign-in.
    moved = await _token(
        provider,
        sub="u-001",
        preferred_username="sso_zhang",
        zhida_role="finance_caseworker",
        zhida_unit="330500-CZJ",
    )
    assert (await _me(api, moved)).json()["department_code"] == "330500-CZJ"
    await session.refresh(row)
    assert (row.role, row.department_code) == ("finance_caseworker", "330500-CZJ")
    # It reads what a finance caseworker reads.
    inbox = await api.get("/api/v1/inbox", headers=moved)
    assert inbox.status_code == 200


async def test_an_enterprise_signs_in_as_its_firm_only(
    api: httpx.AsyncClient, provider: httpx.AsyncClient, session: AsyncSession
) -> None:
    firm = await create_enterprise(session)
    headers = await _token(provider, sub="qy-9", zhida_role="enterprise", uscc=firm.uscc)
    assert (await _me(api, headers)).json()["enterprise_uscc"] == firm.uscc
    unknown = await _token(provider, sub="qy-8", zhida_role="enterprise", uscc="91330502MA2B3C4D58")
    refused = await _me(api, unknown)
    assert refused.status_code == 401 and "claim uscc" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"zhida_role": "超级用户", "zhida_unit": "330500-JXJ"}, "claim zhida_role"),
        ({"zhida_unit": "330500-JXJ"}, "zhida_role"),
        ({"zhida_role": "department_caseworker", "zhida_unit": "NO-SUCH"}, "claim zhida_unit"),
        ({"zhida_role": "department_caseworker"}, "claim zhida_unit"),
    ],
)
async def test_claims_the_platform_cannot_use_are_refused_by_name(
    api: httpx.AsyncClient,
    provider: httpx.AsyncClient,
    session: AsyncSession,
    claims: dict[str, str],
    named: str,
) -> None:
    await create_users(session)
    refused = await _me(api, await _token(provider, sub="x-1", **claims))
    assert refused.status_code == 401
    assert named in refused.json()["detail"]


async def test_a_first_sign_in_provisions_without_waiting_on_the_request_itself(
    own_engine: AsyncEngine, identity_provider_url: str, provider: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The real app on a database of its own (the `api` fixture runs every session on one
    connection, which hides this): a new user's first request that writes must not wait
    on its own transaction (on SQLite, the write lock until the busy timeout, then 503),
    and what it provisions stands though the route then fails. A browser's first requests
    come several at once: each is answered."""
    from api.main import create_app

    async with make_sessionmaker(own_engine).begin() as session:
        await ensure_reference_data(session)
    settings = Settings(
        environment=Environment.TEST,
        database_url=own_engine.url.render_as_string(hide_password=False),
        var_dir=tmp_path,
        temporal_address="127.0.0.1:9",
        oidc_issuer=identity_provider_url,
        oidc_audience=AUDIENCE,
    )
    app = create_app(settings)
    staff = {"zhida_role": "department_caseworker", "zhida_unit": "330500-JXJ"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api,
    ):
        first = await _token(provider, sub="w-1", **staff)
        read = api.post("/api/v1/me/notices/1/read", headers=first)
        answer = await asyncio.wait_for(read, timeout=10)
        assert answer.status_code == 404, answer.text  # the notice, not the user
        async with make_sessionmaker(own_engine)() as session:
            assert await session.get(User, "w-1") is not None
        several = await _token(provider, sub="w-2", **staff)
        answers = await asyncio.gather(*(_me(api, several) for _ in range(4)))
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]


async def test_a_provider_user_writes_with_an_idempotency_key_and_no_one_else_gets_its_answer(
    api: httpx.AsyncClient, provider: httpx.AsyncClient, session: AsyncSession
) -> None:
    """The key binds to the verified user: sent again, the first answer is replayed; a
    forged token naming the same user with the same key gets nothing replayed."""
    await create_users(session)
    admin = await _token(provider, sub="k-1", preferred_username="sso_admin", zhida_role="admin")
    key = {"Idempotency-Key": "identity-k-1"}
    body = {"reason": "离职"}
    first = await api.post("/api/v1/users/kjj_staff/deactivate", json=body, headers=admin | key)
    assert first.status_code == 200, first.text
    again = await api.post("/api/v1/users/kjj_staff/deactivate", json=body, headers=admin | key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    config = (await provider.get("/v1/_simulator/config")).json()
    forged = jwt.encode(
        {**_claims(config["issuer"], "k-1"), "preferred_username": "sso_admin"},
        "",
        algorithm="none",
        headers={"kid": config["kid"]},
    )
    stolen = await api.post(
        "/api/v1/users/kjj_staff/deactivate", json=body, headers=_bearer(forged) | key
    )
    # The forged token names no verified user: the key is another user's, a 422.
    assert stolen.status_code == 422 and "idempotent-replayed" not in stolen.headers


async def test_expired_foreign_and_forged_tokens_are_refused(
    api: httpx.AsyncClient, provider: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_users(session)
    good = {"sub": "a-1", "zhida_role": "审计"}
    assert (await _me(api, await _token(provider, **good))).status_code == 200
    expired = await _token(provider, **good, expires_in=-120)
    assert (await _me(api, expired)).status_code == 401
    other_audience = await _token(provider, **good, audience="another-app")
    assert (await _me(api, other_audience)).status_code == 401
    # Signed by a key the provider never published, under its current key id.
    config = (await provider.get("/v1/_simulator/config")).json()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = _claims(config["issuer"], "a-1")
    forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": config["kid"]})
    assert (await _me(api, _bearer(forged))).status_code == 401
    # alg none, and HS256 with the provider's public key as the secret.
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": config["kid"]})
    assert (await _me(api, _bearer(unsigned))).status_code == 401
    jwks = (await provider.get("/jwks")).json()["keys"][0]
    public_pem = jwt.algorithms.RSAAlgorithm.from_jwk(jwks).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hmac = _hs256(claims, public_pem, config["kid"])
    assert (await _me(api, _bearer(hmac))).status_code == 401


def _claims(issuer: str, sub: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": sub,
        "zhida_role": "auditor",
        "iat": now,
        "exp": now + timedelta(hours=1),
    }


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, default=lambda d: int(d.timestamp())).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_deactivated_user_is_refused_on_the_very_next_request(
    api: httpx.AsyncClient, provider: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    sso = await _token(provider, sub="u-7", preferred_username="sso_li", zhida_role="auditor")
    platform = {"Authorization": f"Bearer {issue_token(settings, 'jxj_staff')}"}
    admin = {"Authorization": f"Bearer {issue_token(settings, 'admin')}"}
    assert (await _me(api, sso)).status_code == 200
    for name, headers in (("sso_li", sso), ("jxj_staff", platform)):
        off = await api.post(
            f"/api/v1/users/{name}/deactivate", json={"reason": "离职"}, headers=admin
        )
        assert off.status_code == 200 and off.json()["active"] is False, off.text
        assert (await _me(api, headers)).status_code == 401  # the same, still valid token
        on = await api.post(
            f"/api/v1/users/{name}/activate", json={"reason": "复职"}, headers=admin
        )
        assert on.json()["active"] is True
        assert (await _me(api, headers)).status_code == 200
    missing = await api.post("/api/v1/users/nobody/deactivate", json={"reason": "x"}, headers=admin)
    assert missing.status_code == 404
    for empty in ({}, {"reason": "   "}, {"reason": "a\u0000b"}):
        no_reason = await api.post("/api/v1/users/sso_li/deactivate", json=empty, headers=admin)
        assert no_reason.status_code == 422, empty
    trail = await api.get(
        "/api/v1/audit/trail",
        params={"subject": "user/sso_li"},
        headers={"Authorization": f"Bearer {issue_token(settings, 'auditor')}"},
    )
    logged = [(e["path"].rsplit("/", 1)[-1], e["details"]) for e in trail.json()["items"]]
    assert ("deactivate", {"reason": "离职"}) in logged and (
        "activate",
        {"reason": "复职"},
    ) in logged
    itself = await api.post("/api/v1/users/admin/deactivate", json={"reason": "x"}, headers=admin)
    assert itself.status_code == 409
    by_staff = await api.post(
        "/api/v1/users/sso_li/deactivate", json={"reason": "x"}, headers=platform
    )
    assert by_staff.status_code == 403


async def test_the_provider_rotating_its_keys_is_picked_up(
    api: httpx.AsyncClient, provider: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_users(session)
    before = await _token(provider, sub="r-1", zhida_role="auditor")
    assert (await _me(api, before)).status_code == 200
    await provider.post("/v1/_simulator/rotate")
    await asyncio.sleep(
        JWKS_REFRESH_COOLDOWN_S + 0.1
    )  # the fetch just made is not refreshed sooner
    after = await _token(provider, sub="r-1", zhida_role="auditor")
    fresh = await _me(api, after)
    assert fresh.status_code == 200, fresh.text  # a new key id: the JWKS is fetched again
    assert (await _me(api, before)).status_code == 200  # the old key is still published


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_platform_tokens_in_production_and_a_provider_that_is_down(
    session: AsyncSession,
    identity_provider_url: str,
    provider: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    from api.main import create_app
    from tests.fixtures.api import app_on_session

    await create_users(session)
    keys = tmp_path / "keys"
    keys.write_text("k1:" + "A" * 43 + "=\n")
    production = Settings(
        environment=Environment.PRODUCTION,
        temporal_address="127.0.0.1:9",
        token_secret=SecretStr("s" * 40),
        codec_key_file=keys,
        oidc_issuer=identity_provider_url,
        oidc_audience=AUDIENCE,
    )
    async with app_on_session(create_app(production), session) as api:
        platform = {"Authorization": f"Bearer {issue_token(production, 'admin')}"}
        refused = await _me(api, platform)
        assert refused.status_code == 401 and "identity provider" in refused.json()["detail"]
        sso = await _token(provider, sub="p-1", zhida_role="auditor")
        ok = await _me(api, sso)
        assert ok.status_code == 200
        assert ok.headers["strict-transport-security"] == "max-age=31536000"
    down = production.model_copy(
        update={"oidc_jwks_url": f"http://127.0.0.1:{_closed_port()}/jwks"}
    )
    async with app_on_session(create_app(down), session) as api:
        unavailable = await _me(api, await _token(provider, sub="p-1", zhida_role="auditor"))
        assert unavailable.status_code == 503, unavailable.text


async def test_every_response_carries_the_security_headers(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    staff = {"Authorization": f"Bearer {issue_token(settings, 'jxj_staff')}"}
    responses = {
        200: await api.get("/api/v1/regions", headers=staff),
        404: await api.get("/api/v1/items/NO-SUCH-ITEM", headers=staff),
        401: await api.get("/api/v1/regions"),
        422: await api.get("/api/v1/items?limit=0", headers=staff),
    }
    for status, response in responses.items():
        assert response.status_code == status
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", status
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in headers  # not in production
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline'" in policy and "frame-ancestors 'none'" in policy
    asset = await api.get("/static-offline-docs/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_production_refuses_to_start_unsafely(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    safe: dict[str, Any] = {
        "environment": Environment.PRODUCTION,
        "token_secret": SecretStr("s" * 40),
        "codec_key_file": keys,
        "cors_origins": ["https://temporal-ui.internal"],
    }
    Settings(**safe)  # starts
    for change, named in (
        ({"token_secret": SecretStr(DEV_TOKEN_SECRET)}, "ZHIDA_TOKEN_SECRET"),
        ({"codec_key_file": None}, "ZHIDA_CODEC_KEYS"),
        ({"cors_origins": ["*"]}, "ZHIDA_CORS_ORIGINS"),
    ):
        with pytest.raises(ValidationError, match=named):
            Settings(**{**safe, **change})
