"""Templates, and what a page shows when the API said no: a 401 sends the user to sign
in, a 403 is 无权访问, a 503 服务暂不可用, anything else the API's own words. A page
never answers 500 for what a user typed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.errors import RETRY_AFTER_S, correlation_id
from api.web import format as fmt
from api.web.client import ApiError
from api.web.session import (
    Flash,
    Names,
    Viewer,
    drop_flash,
    forget_token,
    navigation,
    new_idempotency_key,
    read_flash,
)
from domain.errors import AppError

log = structlog.get_logger()

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# BokehJS reads a document's models in order (a model's first mention defines it, later
# ones refer to it): the chart JSON keeps Bokeh's key order, where Jinja sorts by default.
templates.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
templates.filters.update(
    yuan=fmt.format_fen,
    wan=fmt.format_wan,
    time=fmt.format_time,
    num=fmt.format_number,
    pct=fmt.format_pct,
    case_page=fmt.case_page,
    value=fmt.format_value,
)
templates.globals.update(
    ROLES=fmt.ROLES,
    CATEGORIES=fmt.CATEGORIES,
    STAGES=fmt.STAGES,
    VERDICTS=fmt.VERDICTS,
    OUTCOMES=fmt.OUTCOMES,
    PHASES=fmt.PHASES,
    ENTRY_STATUSES=fmt.ENTRY_STATUSES,
    EVIDENCE=fmt.EVIDENCE,
    FINDINGS=fmt.FINDINGS,
    label=fmt.label,
    new_key=new_idempotency_key,
)


def page(
    request: Request,
    template: str,
    viewer: Viewer | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page for the signed-in `viewer`, with the outcome of the last form if any."""
    flash = read_flash(request)
    html = templates.get_template(template).render(
        request=request,
        viewer=viewer,
        nav=navigation(viewer) if viewer else [],
        path=request.url.path,
        flash=flash or Flash("", ""),
        has_flash=flash is not None,
        names=getattr(request.state, "names", None) or Names(),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if flash is not None:
        drop_flash(response, request.app.state.settings)
    return response


ERRORS = {
    400: ("请求无效", "请求无法处理。"),
    403: ("无权访问", "当前账号无权查看或办理此项。"),
    404: ("未找到", "所找的页面或对象不存在，或对当前账号不可见。"),
    409: ("状态已变化", "该事项的状态已经变化，请刷新后重试。"),
    422: ("输入有误", "请检查输入。"),
    503: ("服务暂不可用", "数据库或流程引擎暂时无法访问，请稍后重试。"),
}


def error_page(request: Request, status: int, detail: str = "", errors: Any = ()) -> Response:
    title, explanation = ERRORS.get(
        status, ("服务出错", "服务处理时出错，请稍后重试；如仍出错，请把下面的编号告知运维。")
    )
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    response = page(
        request,
        "error.html",
        viewer,
        status=status,
        title=title,
        explanation=explanation,
        detail=detail,
        errors=list(errors),
        correlation=correlation_id.get() or "",
    )
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def sign_in_again(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)
    forget_token(response, request.app.state.settings)
    return response


def answer_api_error(request: Request, error: ApiError) -> Response:
    if error.status == 401:
        return sign_in_again(request)
    if error.status in (403, 404, 409, 503) or 400 <= error.status < 500:
        return error_page(request, error.status, error.detail, error.errors)
    # The API failed (it logged why under the correlation id): the page does not pass
    # the 500 on, it says the service failed.
    log.warning("web.api_failed", status=error.status, correlation=error.correlation)
    return error_page(request, 502, error.detail)


class PageRoute(APIRoute):
    """A route of the pages: what the API refused becomes a page, never a JSON problem,
    and nothing a user sends becomes a 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return answer_api_error(request, error)
            except AppError as error:  # the app-wide checks of every request (NUL in a query)
                return error_page(request, error.status, error.detail, error.errors)
            except RequestValidationError:
                return error_page(request, 422)
            except HTTPException as error:
                return error_page(request, error.status_code, str(error.detail))
            except Exception:
                log.exception("web.page_failed", path=request.url.path)
                return error_page(request, 500)

        return handle
