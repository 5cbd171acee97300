"""Pure ASGI middleware: the request's correlation id with the last-resort error
renderer, and the limit on request body size."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import REQUEST_ID_HEADER, correlation_id, http_error_response, render_exception

log = structlog.get_logger()

MAX_BODY_BYTES = 1024 * 1024
# A correlation id we echo: short, and nothing that could split a header or a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode("latin-1")


class RequestContextMiddleware:
    """Gives each request a correlation id: the client's `X-Request-ID` when it is sane
    (1 to 128 letters, digits and `._:-`), else a new one. The id is bound to every log
    line of the request, carried by every problem and returned as `X-Request-ID` on every
    response. An exception that escaped the app's error handlers is rendered here, so
    that no request ends in a bare 500: install this outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = given if given and _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != _REQUEST_ID
                ]
                headers.append((_REQUEST_ID, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        token = correlation_id.set(request_id)
        try:
            with structlog.contextvars.bound_contextvars(correlation_id=request_id):
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception as exc:
                    if started:  # too late for a problem: the server closes the connection
                        log.error("request.failed_while_responding", exc_info=exc)
                        raise
                    response = render_exception(Request(scope), exc)
                    await response(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"请求体超过上限 {describe_size(limit)}")


def describe_size(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} 字节"


class BodyLimitMiddleware:
    """Refuses a request body over its limit with 413 while it streams in: a
    Content-Length over the limit is refused before a byte is read, and a body that runs
    past the limit (whatever Content-Length said, or without one) fails the read that
    crosses it, so no handler ever holds more than the limit.

    `max_bytes` holds for every route but those in `limits`, keyed by (method, path
    template as the OpenAPI spells it: `/api/v1/items/{item_code}/...`)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, limits: Mapping[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = [
            (method, re.compile(_template_pattern(path)), limit)
            for (method, path), limit in (limits or {}).items()
        ]

    def _limit(self, method: str, path: str) -> int:
        for wanted, pattern, limit in self.limits:
            if wanted == method and pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = http_error_response(Request(scope), BodyTooLarge(limit))
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _template_pattern(template: str) -> str:
    """A path template's parameters (`{name}`) as one path segment each."""
    return re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(template))


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# Pages (the offline API docs) load their own scripts and styles, one inline script
# included, and ReDoc runs a worker from a blob; everything else is data, which needs
# nothing at all.
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)
_DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"
_PAGES = ("/docs", "/redoc", "/static-offline-docs")
# The web pages (api/web/): scripts, styles, images and requests from the platform only,
# no inline script. BokehJS styles its charts with <style> elements it creates, which
# needs 'unsafe-inline' for styles (styles only; it needs no eval for our charts). Forms
# post to the pages themselves, and the referrer goes to our own origin only, so that
# their POSTs carry the Origin the CSRF check compares.
_WEB_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_WEB = "/ui"


class SecurityHeadersMiddleware:
    """Headers every response carries, errors included: no content sniffing, no framing,
    no referrer, a content security policy, no caching of API answers (they are personal
    or change), and in production HSTS (the gateway in front speaks TLS)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        web = path == _WEB or path.startswith(_WEB + "/")
        policy = _WEB_POLICY if web else _PAGE_POLICY if path.startswith(_PAGES) else _DATA_POLICY
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin" if web else b"no-referrer"),
            (b"content-security-policy", policy.encode()),
        ]
        if web and not path.startswith(_WEB + "/static/"):
            extra.append((b"cache-control", b"no-store"))  # pages are personal
        if path.startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))
        if self.hsts:
            extra.append((b"strict-transport-security", b"max-age=31536000"))
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)
