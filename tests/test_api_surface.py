"""The API's surface as a client meets it: every error is problem+json with a
correlation id, bodies are limited and typed, the OpenAPI declares what can happen,
parameters are bounded, the docs work offline, and a dependency that is down is a
prompt 503 with Retry-After."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message

from api.deps import get_session
from api.main import create_app
from core.settings import Environment, Settings
from models.case_fields import PERIOD_PATTERN
from tests.fixtures.api import auth
from tests.fixtures.factories import create_enterprise, create_users, item_payload
from tests.fixtures.temporal import start_time_skipping

PROBLEM = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "correlation_id"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["correlation_id"] == response.headers["x-request-id"]
    return body


@asynccontextmanager
async def client_of(
    app: FastAPI, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def app_on(session: AsyncSession, settings: Settings) -> FastAPI:
    """The app with settings of the test's own, on the test's session (as the `api`
    fixture makes it)."""
    app = create_app(settings)

    async def _session() -> AsyncIterator[AsyncSession]:
        yield session
        await session.commit()

    app.dependency_overrides[get_session] = _session
    return app


@asynccontextmanager
async def api_with(session: AsyncSession, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app_on(session, settings)) as client:
        yield client


def own_settings(tmp_path: Path, **values: Any) -> Settings:
    values.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    values.setdefault("temporal_address", "127.0.0.1:9")
    return Settings(environment=Environment.TEST, **values)


# ----- problem+json everywhere ------------------------------------------------------------


async def test_router_and_auth_errors_are_problems_with_a_correlation_id(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    missing = assert_problem(await api.get("/api/v1/no-such-thing"), 404)
    assert missing["code"] == "not_found"
    wrong_method = await api.delete("/healthz")
    assert_problem(wrong_method, 405)
    assert wrong_method.headers["allow"] == "GET"
    unauthenticated = await api.get("/api/v1/items")
    assert_problem(unauthenticated, 401)
    assert unauthenticated.headers["www-authenticate"] == "Bearer"

    # The client's own request id is used when sane, replaced when not.
    given = await api.get("/api/v1/no-such-thing", headers={"X-Request-ID": "abc-123.4:5"})
    assert assert_problem(given, 404)["correlation_id"] == "abc-123.4:5"
    for insane in ("x" * 200, "a b", "-leading-dash", "é"):
        response = await api.get(
            "/api/v1/no-such-thing", headers=[(b"X-Request-ID", insane.encode())]
        )
        assert assert_problem(response, 404)["correlation_id"] != insane
    # Success responses carry the id too.
    assert (await api.get("/healthz")).headers["x-request-id"]


async def test_an_unexpected_exception_is_a_logged_500_problem(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    app = create_app(own_settings(tmp_path))

    async def broken() -> None:
        raise ZeroDivisionError("a bug")

    app.add_api_route("/broken", broken)
    async with client_of(app) as client:
        capfd.readouterr()
        response = await client.get("/broken", headers={"X-Request-ID": "req-42"})
    body = assert_problem(response, 500)
    assert body["code"] == "internal_error" and "req-42" in body["detail"]
    logged = capfd.readouterr().out
    failure = next(line for line in logged.splitlines() if "request.failed" in line)
    assert "correlation_id=req-42" in failure and "ZeroDivisionError" in failure
    assert "Traceback" in logged


async def test_a_deeply_nested_body_is_a_422_naming_the_body(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    headers = {**auth(settings, "jxj_staff"), "content-type": "application/json"}
    # Deeper than the JSON parser recurses.
    deep_json = '{"materials": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    response = await api.post("/api/v1/items", content=deep_json, headers=headers)
    body = assert_problem(response, 422)
    assert body["errors"] == [{"field": "body", "message": "JSON 嵌套层级过深"}]
    # Not JSON at all, or cut off: the body is named, not the byte the parser stopped at.
    for broken in (b"{bad json", b'{"code": "X', b"\xff\xfe"):
        response = await api.post("/api/v1/items", content=broken, headers=headers)
        assert [e["field"] for e in assert_problem(response, 422)["errors"]] == ["body"]
    # Parsed, but nested deeper than validation or the rule parser goes.
    leaf = json.dumps({"fact": "credit_rating", "op": "in", "value": ["A"]})
    payload = json.dumps({**item_payload(), "eligibility": None}).replace(
        '"eligibility": null', '"eligibility": ' + '{"all": [' * 400 + leaf + "]}" * 400
    )
    response = await api.post("/api/v1/items", content=payload, headers=headers)
    assert_problem(response, 422)


# ----- body size and content type ---------------------------------------------------------


async def test_bodies_over_1_mib_are_413_however_they_arrive(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    headers = {**auth(settings, "jxj_staff"), "content-type": "application/json"}
    big = b'{"x": "' + b"a" * (1024 * 1024) + b'"}'

    # Declared in Content-Length.
    body = assert_problem(await api.post("/api/v1/items", content=big, headers=headers), 413)
    assert body["code"] == "body_too_large" and "1 MiB" in body["detail"]

    # Streamed without a Content-Length (chunked).
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    assert_problem(await api.post("/api/v1/items", content=chunks(), headers=headers), 413)
    # Also where the idempotency store reads the body first, to hash it.
    keyed = {**headers, "Idempotency-Key": "big-1"}
    assert_problem(await api.post("/api/v1/items", content=chunks(), headers=keyed), 413)

    # A Content-Length that lies: the count of what arrives decides.
    app = app_on(session, settings)
    sent: list[Message] = []
    pieces = [big[i : i + 256 * 1024] for i in range(0, len(big), 256 * 1024)]

    async def receive() -> Message:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/items",
        "raw_path": b"/api/v1/items",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"10"),
            *[(k.lower().encode(), v.encode()) for k, v in auth(settings, "jxj_staff").items()],
        ],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    async with client_of(app):  # the app's lifespan
        await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert (b"content-type", PROBLEM.encode()) in sent[0]["headers"]

    # A small body is fine, and the import keeps its own, larger limit.
    assert (
        await api.post("/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff"))
    ).status_code == 201
    two_mib = b'{"uscc": "x"}\n' * (2 * 1024 * 1024 // 14 + 1)
    response = await api.post(
        "/api/v1/imports/enterprises?format=jsonl",
        files={"file": ("a.jsonl", two_mib)},
        headers=auth(settings, "admin"),
    )
    assert response.status_code != 413
    assert_problem(response, 422)  # the rows are invalid, the size is not


async def test_a_json_route_refuses_other_content_types_with_415(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    headers = auth(settings, "jxj_staff")
    text = b'{"code": "X"}'
    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded"):
        response = await api.post(
            "/api/v1/items", content=text, headers={**headers, "content-type": content_type}
        )
        assert assert_problem(response, 415)["code"] == "unsupported_media_type"
    assert_problem(await api.post("/api/v1/items", content=text, headers=headers), 415)
    # JSON with parameters, and +json types, are JSON.
    response = await api.post(
        "/api/v1/items",
        json=item_payload(),
        headers={**headers, "content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.text
    # No body at all is the validation's business: it names what is missing.
    assert assert_problem(await api.post("/api/v1/items", headers=headers), 422)
    # The import takes multipart, and nothing else.
    admin = auth(settings, "admin")
    response = await api.post(
        "/api/v1/imports/enterprises?format=jsonl", json={"rows": []}, headers=admin
    )
    assert_problem(response, 415)
    response = await api.post(
        "/api/v1/imports/enterprises?format=jsonl", files={"file": ("a.jsonl", b"")}, headers=admin
    )
    assert assert_problem(response, 422)["code"] == "import_rejected"  # read, and empty


# ----- the OpenAPI document --------------------------------------------------------------


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_openapi_declares_every_error_as_a_problem(tmp_path: Path) -> None:
    app = create_app(own_settings(tmp_path))
    document = app.openapi()
    schemas = document["components"]["schemas"]
    problem = schemas["Problem"]
    assert set(problem["required"]) == PROBLEM_FIELDS
    assert {"errors"} | PROBLEM_FIELDS == set(problem["properties"])
    assert "HTTPValidationError" not in schemas
    assert "1 MiB" in document["info"]["description"]

    for method, path, operation in _operations(document):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        secured = bool(operation.get("security"))
        has_path_params = any(p["in"] == "path" for p in operation.get("parameters", []))
        write = method in {"post", "put", "patch", "delete"}
        expected = {"503"}
        expected |= {"401", "403"} if secured else set()
        expected |= {"404"} if has_path_params else set()
        expected |= {"409", "413"} if write else set()
        expected |= {"415"} if "requestBody" in operation else set()
        expected |= {"422"} if operation.get("parameters") or "requestBody" in operation else set()
        assert expected <= set(responses), (where, sorted(responses))
        # Only the health check and the public catalogue are open to anyone.
        assert secured == (operation["x-zhida-access"] != "public"), where
        for status, response in responses.items():
            if int(status) < 400 or path == "/healthz":
                continue
            content = response["content"]
            assert list(content) == [PROBLEM], (where, status)
            assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
        if "503" in responses and path != "/healthz":
            assert "Retry-After" in responses["503"]["headers"]
        success = [s for s in responses if s.startswith("2")]
        assert success, where
    import_413 = document["paths"]["/api/v1/imports/enterprises"]["post"]["responses"]["413"]
    assert "201 MiB" in import_413["description"]


async def test_every_route_has_a_summary_of_its_own(tmp_path: Path) -> None:
    app = create_app(own_settings(tmp_path))
    routes = [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.include_in_schema
    ]
    assert len(routes) > 30
    missing = [f"{sorted(r.methods or ())} {r.path}" for r in routes if not r.summary]
    assert missing == []


def _schema(parameter: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = parameter["schema"]
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return dict(option)
    return schema


async def test_openapi_bounds_every_integer_and_shapes_codes(tmp_path: Path) -> None:
    app = create_app(own_settings(tmp_path))
    shapes = {
        "uscc": r"^[0-9A-HJ-NPQRTUWXY]{18}$",
        "item_code": r"^[A-Z0-9][A-Z0-9-]{2,39}$",
        "code": r"^[A-Z0-9][A-Z0-9-]{2,39}$",
        "period": PERIOD_PATTERN,
    }
    for good in ("2026", "2026-Q4", "2026-07", "once"):
        assert re.match(PERIOD_PATTERN, good), good
    for bad in ("2026-13", "2026-Q5", "26", "2026-7", "ONCE", "2026-Q4x"):
        assert not re.match(PERIOD_PATTERN, bad), bad
    bounds = {
        "offset": (0, 1_000_000),
        "limit": (1, 200),
        "version": (1, 100_000),
        "notice_id": (1, 2**31 - 1),
        "year": (2000, 2100),
    }
    seen: set[str] = set()
    for method, path, operation in _operations(app.openapi()):
        for parameter in operation.get("parameters", []):
            if parameter["in"] not in ("path", "query"):
                continue
            name, schema = parameter["name"], _schema(parameter)
            where = f"{method.upper()} {path} {name}"
            seen.add(name)
            if schema.get("type") == "integer":
                assert "minimum" in schema and "maximum" in schema, where
                if name in bounds:
                    assert (schema["minimum"], schema["maximum"]) == bounds[name], where
            if name in shapes and parameter["in"] == "path":
                assert schema.get("pattern") == shapes[name], where
            if name == "uscc":
                assert schema["minLength"] == schema["maxLength"] == 18, where
    assert set(bounds) | {"uscc", "item_code", "code", "period"} <= seen


async def test_out_of_range_parameters_are_422_naming_them(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    firm = await create_enterprise(session)
    await create_users(session, enterprise_uscc=firm.uscc)
    assert (
        await api.post("/api/v1/items", json=item_payload(), headers=auth(settings, "jxj_staff"))
    ).status_code == 201
    staff, qiye = auth(settings, "jxj_staff"), auth(settings, "qiye")
    huge = str(10**20)
    gaps = f"/api/v1/items/TEST-ITEM-01/eligibility/{firm.uscc}/gaps"
    cases: list[tuple[str, dict[str, str], str]] = [
        (f"/api/v1/items?offset={huge}", staff, "offset"),
        ("/api/v1/items?offset=1000001", staff, "offset"),
        ("/api/v1/items?limit=201", staff, "limit"),
        (f"/api/v1/items/TEST-ITEM-01/eligibility/{firm.uscc}?version={huge}", staff, "version"),
        (f"/api/v1/items/TEST-ITEM-01/versions/{2**31}/budget-preview", staff, "version"),
        # A day so far back that a fact's age limit before it is no date (was a 500).
        ("/api/v1/items/TEST-ITEM-01/versions/1/budget-preview?as_of=0001-01-01", staff, "as_of"),
        (f"/api/v1/items/TEST-ITEM-01/eligibility/{firm.uscc}?as_of=0001-01-01", staff, "as_of"),
        (f"{gaps}?as_of=0001-01-01", staff, "as_of"),
        (f"{gaps}?as_of=9999-12-31", staff, "as_of"),
        ("/api/v1/items/TEST-ITEM-01/quota/1999", staff, "year"),
        ("/api/v1/items/test-item-01", staff, "code"),
        ("/api/v1/cases?period=2026-13", auth(settings, "auditor"), "period"),
        (f"/api/v1/enterprises/{firm.uscc.lower()}", staff, "uscc"),
    ]
    for url, headers, field in cases:
        body = assert_problem(await api.get(url, headers=headers), 422)
        assert field in {e["field"] for e in body["errors"]}, (url, body)
    response = await api.post(f"/api/v1/me/notices/{huge}/read", headers=qiye)
    assert assert_problem(response, 422)["errors"][0]["field"] == "notice_id"
    # The check character is still checked, behind the pattern.
    wrong = firm.uscc[:-1] + ("0" if firm.uscc[-1] != "0" else "1")
    body = assert_problem(await api.get(f"/api/v1/enterprises/{wrong}", headers=staff), 422)
    assert body["errors"][0]["message"].startswith("check character is")
    assert len(body["errors"]) == 1  # once, though the access rule reads the code too


# ----- the docs, offline ------------------------------------------------------------------


async def test_docs_and_redoc_load_everything_from_the_app(tmp_path: Path) -> None:
    app = create_app(own_settings(tmp_path))
    expected_types = {
        ".js": "javascript",
        ".css": "text/css",
        ".png": "image/png",
        ".json": "application/json",
    }
    async with client_of(app) as client:
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200
            html = response.text
            assert not re.search(r"(https?:)?//[\w.-]+\.\w", html), (page, html)
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            assets += re.findall(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""", html)
            suffixes = {Path(a).suffix for a in assets}
            assert ".js" in suffixes and ".json" in suffixes, (page, assets)
            for asset in assets:
                fetched = await client.get(asset)
                assert fetched.status_code == 200, asset
                kind = expected_types[Path(asset).suffix]
                assert kind in fetched.headers["content-type"], (asset, fetched.headers)


# ----- a dependency that is down ----------------------------------------------------------


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
    assert elapsed < 3, elapsed


async def _timed(call: Callable[[], Any]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call()
    return response, time.monotonic() - started


REVIEW = "/api/v1/items/TEST-ITEM-01/versions/1/review"  # a route that needs Temporal


async def test_temporal_not_reachable_is_a_prompt_503(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    # The `api` fixture's Temporal is at a closed port.
    await create_users(session)
    headers = auth(settings, "jxj_staff")
    assert (
        await api.post("/api/v1/items", json=item_payload(), headers=headers)
    ).status_code == 201
    for _ in range(2):
        response, elapsed = await _timed(lambda: api.get(REVIEW, headers=headers))
        assert_unavailable(response, elapsed)
        assert "Temporal" in response.json()["detail"]
    assert (await api.get("/healthz")).status_code == 503


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_temporal_that_never_answers_is_a_503_and_not_waited_for_twice(
    session: AsyncSession, settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    await create_users(session)
    headers = auth(settings, "jxj_staff")
    async with silent_server() as port:
        silent = settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
        async with api_with(session, silent) as client:
            created = await client.post("/api/v1/items", json=item_payload(), headers=headers)
            assert created.status_code == 201
            capfd.readouterr()
            first, first_s = await _timed(lambda: client.get(REVIEW, headers=headers))
            assert_unavailable(first, first_s)
            # The next requests do not wait on another attempt.
            for _ in range(3):
                again, again_s = await _timed(lambda: client.get(REVIEW, headers=headers))
                assert_unavailable(again, again_s)
                assert again_s < 0.5, again_s
    assert capfd.readouterr().out.count("temporal.unreachable") == 1


async def test_temporal_gone_after_start_is_a_prompt_503(
    session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    headers = auth(settings, "jxj_staff")
    env = await start_time_skipping()
    try:
        there = settings.model_copy(
            update={
                "temporal_address": env.client.service_client.config.target_host,
                "temporal_namespace": env.client.namespace,
            }
        )
        async with api_with(session, there) as client:
            created = await client.post("/api/v1/items", json=item_payload(), headers=headers)
            assert created.status_code == 201
            # Connected: the version has simply not been submitted.
            assert_problem(await client.get(REVIEW, headers=headers), 404)
            await env.shutdown()
            response, elapsed = await _timed(lambda: client.get(REVIEW, headers=headers))
            assert_unavailable(response, elapsed)
    finally:
        await env.shutdown()


@pytest.mark.parametrize("server", ["closed", "silent"])
async def test_database_down_is_a_prompt_503(tmp_path: Path, server: str) -> None:
    async with silent_server() as silent_port:
        port = 9 if server == "closed" else silent_port
        settings = own_settings(tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{port}/x")
        app = create_app(settings)
        async with client_of(app) as client:
            headers = auth(settings, "admin")
            response, elapsed = await _timed(lambda: client.get("/api/v1/regions", headers=headers))
            assert_unavailable(response, elapsed)
            assert "数据库" in response.json()["detail"]
            # A write answers the same, and /healthz still reports.
            response, elapsed = await _timed(
                lambda: client.post("/api/v1/items", json=item_payload(), headers=headers)
            )
            assert_unavailable(response, elapsed)
            health, elapsed = await _timed(lambda: client.get("/healthz"))
            assert health.status_code == 503 and elapsed < 6
            assert health.json()["database"]["ok"] is False


async def test_nul_characters_are_a_422_not_a_database_error(
    api: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await create_users(session)
    headers = auth(settings, "jxj_staff")
    body = assert_problem(await api.get("/api/v1/items?q=a%00b", headers=headers), 422)
    assert body["errors"] == [{"field": "q", "message": "不能包含 NUL 字符"}]
    # In a body, PostgreSQL refuses to store it (SQLite stores it): never a 500.
    payload = {**item_payload(), "title": "测试\u0000补助"}
    response = await api.post("/api/v1/items", json=payload, headers=headers)
    if response.status_code != 201:
        assert assert_problem(response, 422)["code"] == "invalid_input"
