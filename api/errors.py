"""One renderer for every error: RFC 9457 problem details (`application/problem+json`)
with field paths and the request's correlation id.

It renders the app's own errors, the router's (404, 405), the body limit's (413), the
content-type check's (415), dependencies that are down (503 with `Retry-After`) and
anything unexpected (500, logged with the correlation id the client receives).
"""

from __future__ import annotations

import http
import socket
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.responses import Response
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import AppError

log = structlog.get_logger()

PROBLEM = "application/problem+json"
PROBLEM_TYPES = "https://zhida.example/problems/"
REQUEST_ID_HEADER = "X-Request-ID"
# What a 503 tells the client to wait: as long as the API waits before trying to reach
# Temporal again (api/main.py), so a retry meets a fresh attempt.
RETRY_AFTER_S = 5

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
"""The current request's id, set by RequestContextMiddleware (api/middleware.py)."""

# One title per status: a problem type's title does not change between occurrences.
TITLES: Mapping[int, str] = {
    400: "请求无效",
    401: "未认证",
    403: "无权操作",
    404: "未找到",
    405: "不支持该请求方法",
    409: "与当前状态冲突",
    413: "请求体过大",
    415: "不支持的内容类型",
    422: "输入无效",
    500: "服务器内部错误",
    503: "服务暂不可用",
}
_HTTP_CODES: Mapping[int, str] = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class FieldProblem(BaseModel):
    field: str = Field(description="path of the offending field, e.g. `eligibility.all[1].value`")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    type: str = Field(description="URI of the problem type", examples=[PROBLEM_TYPES + "not_found"])
    title: str = Field(description="short summary of the problem type (Chinese)")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    code: str = Field(description="stable machine-readable code", examples=["invalid_input"])
    errors: list[FieldProblem] | None = Field(
        default=None, description="one entry per offending field (422 and some 409s)"
    )
    correlation_id: str = Field(
        description="this request's id, also in the `X-Request-ID` response header; "
        "quote it when reporting a problem"
    )


def current_correlation_id() -> str:
    return correlation_id.get() or uuid.uuid4().hex


def problem(
    status: int,
    title: str,
    detail: str,
    code: str,
    errors: list[dict[str, str]] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The problem response. Known statuses carry their standard title (TITLES) whatever
    `title` says; a 401 names the bearer scheme and a 503 says when to retry."""
    body = Problem(
        type=PROBLEM_TYPES + code,
        title=TITLES.get(status, title),
        status=status,
        detail=detail,
        code=code,
        errors=[FieldProblem(field=e["field"], message=e["message"]) for e in errors]
        if errors
        else None,
        correlation_id=current_correlation_id(),
    )
    response = JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "[" in str(p) or "function-after" in str(p):
            continue  # pydantic's internal validator labels
        else:
            out += f".{p}" if out else str(p)
    return out or str(loc[0] if loc else "body")


def app_error_response(exc: AppError) -> JSONResponse:
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        exc.code,
        [{"field": e.field, "message": e.message} for e in exc.errors] or None,
    )


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors: list[dict[str, str]] = []
    for e in exc.errors():
        # A body that is not JSON at all: pydantic places it at the byte it gave up on.
        field = "body" if e.get("type") == "json_invalid" else _loc(tuple(e["loc"]))
        error = {"field": field, "message": str(e["msg"]).removeprefix("Value error, ")}
        if error not in errors:  # a path parameter the access rule reads too is checked twice
            errors.append(error)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid input", detail, "invalid_input", errors)


def invalid_body(message: str) -> JSONResponse:
    return problem(
        422,
        "Invalid input",
        f"body: {message}",
        "invalid_input",
        [{"field": "body", "message": message}],
    )


def http_error_response(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors: no route (404), wrong method (405), a body
    that cannot be parsed (400, answered as the 422 it is), and ours (413, 415)."""
    status = exc.status_code
    if status == 400:
        cause = exc.__cause__
        if isinstance(cause, RecursionError):
            return invalid_body("JSON 嵌套层级过深")
        return invalid_body(f"无法解析（{exc.detail}）")
    headers = dict(exc.headers or {})
    detail = str(exc.detail)
    if detail == http.HTTPStatus(status).phrase:  # Starlette's default text
        if status == 404:
            detail = f"没有这个地址：{request.url.path}"
        elif status == 405:
            detail = (
                f"{request.url.path} 不接受 {request.method} 请求；可用：{headers.get('Allow', '')}"
            )
    return problem(
        status,
        http.HTTPStatus(status).phrase,
        detail,
        _HTTP_CODES.get(status, f"http_{status}"),
        headers=headers,
    )


_RPC_DOWN = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)
# PostgreSQL SQLSTATE classes of a server that cannot serve now: connection exception,
# insufficient resources, operator intervention (shutdown, starting up, query cancelled).
_SQLSTATE_DOWN = frozenset({"08", "53", "57"})


def unavailable_dependency(exc: BaseException) -> str | None:
    """Which dependency the exception says is down ("temporal", "database"), if any."""
    if isinstance(exc, RPCError):
        return "temporal" if exc.status in _RPC_DOWN else None
    if isinstance(exc, RPCTimeoutOrCancelledError):
        return "temporal"
    if isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.TimeoutError
        | sa_exc.DisconnectionError,
    ):
        return "database"
    if isinstance(exc, sa_exc.DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        down = exc.connection_invalidated or str(sqlstate or "")[:2] in _SQLSTATE_DOWN
        return "database" if down else None
    # The API talks to nothing else over the network than the database (asyncpg raises
    # these itself while connecting) and Temporal (whose errors are RPCError).
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or type(exc) is OSError:
        return "database"
    return None


# SQLSTATEs of text the database cannot store (a NUL character, say): the input's fault.
_SQLSTATE_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def _unstorable_text(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) if isinstance(exc, sa_exc.DBAPIError) else None
    return getattr(orig, "sqlstate", None) in _SQLSTATE_UNSTORABLE_TEXT


_UNAVAILABLE = {
    "temporal": "流程引擎（Temporal）暂时无法访问，请稍后重试",
    "database": "数据库暂时无法访问，请稍后重试",
}


def _carries_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower().endswith(("/json", "+json"))


def render_exception(request: Request, exc: Exception) -> Response:
    """Any exception as a problem: the known kinds as above, a dependency that is down as
    503, a body nested deeper than Python recurses as 422, and the rest as a logged 500."""
    if isinstance(exc, AppError):
        return app_error_response(exc)
    if isinstance(exc, RequestValidationError):
        return validation_response(exc)
    if isinstance(exc, HTTPException):
        return http_error_response(request, exc)
    dependency = unavailable_dependency(exc)
    if dependency is not None:
        request.state.unavailable = dependency  # the audit trail will not wait for it
        log.warning(
            "dependency.unavailable",
            dependency=dependency,
            error=f"{type(exc).__name__}: {exc}",
            method=request.method,
            path=request.url.path,
        )
        return problem(503, "Service unavailable", _UNAVAILABLE[dependency], "unavailable")
    if _unstorable_text(exc):
        return problem(
            422,
            "Invalid input",
            "输入中含有数据库无法保存的字符（如 NUL，\\u0000）",
            "invalid_input",
        )
    if isinstance(exc, RecursionError) and _carries_json(request):
        return invalid_body("JSON 嵌套层级过深")
    cid = current_correlation_id()
    log.error(
        "request.failed",
        exc_info=exc,
        error=f"{type(exc).__name__}: {exc}",
        method=request.method,
        path=request.url.path,
    )
    return problem(
        500,
        "Internal server error",
        f"服务器内部错误，已记录；请向运维人员提供关联编号 {cid}",
        "internal_error",
    )


async def _handle(request: Request, exc: Exception) -> Response:
    return render_exception(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Render errors inside the middleware stack, so that middleware (the idempotency
    store among them) sees a problem response rather than an exception. What escapes
    these (a failure in middleware itself) RequestContextMiddleware renders."""
    for kind in (
        AppError,
        RequestValidationError,
        HTTPException,
        RPCError,
        RPCTimeoutOrCancelledError,
        sa_exc.SQLAlchemyError,
        OSError,
        RecursionError,
    ):
        app.add_exception_handler(kind, _handle)
