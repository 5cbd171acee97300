"""The web pages (/ui): sign-in, the start page of each role, static files, and the
routers of the dashboards, the caseworker console and the firm's pages."""

from __future__ import annotations

from pathlib import Path

from bokeh.util.paths import bokehjs_path
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from api.web import console, dashboards, firm
from api.web.client import ApiError, PlatformClient
from api.web.render import STATIC_DIR, PageRoute, error_page, page
from api.web.session import (
    acceptable_token,
    forget_token,
    keep_token,
    safe_next,
    same_origin,
    signed_in,
    start_page,
    token_of,
    viewer_of,
)

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)

# The files the pages load: ours, and BokehJS from the bokeh package (no CDN).
STATIC_FILES = {
    "web.css": (STATIC_DIR / "web.css", "text/css; charset=utf-8"),
    "web.js": (STATIC_DIR / "web.js", "text/javascript; charset=utf-8"),
}


def _bokeh_file(name: str) -> Path | None:
    if name not in ("bokeh.min.js", "bokeh.js"):
        return None
    return Path(bokehjs_path()) / "js" / name


@router.get("/static/bokeh/{name}")
async def bokeh_static(request: Request, name: str) -> Response:
    found = _bokeh_file(name)
    if found is None or not found.is_file():
        return error_page(request, 404)
    return FileResponse(
        found,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    if name not in STATIC_FILES:
        return error_page(request, 404)
    path, media_type = STATIC_FILES[name]
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/login")
async def login_form(request: Request) -> Response:
    return page(request, "login.html", None, next=safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the pasted token against the API (who is it?) and keep it in the cookie."""
    if not same_origin(request):
        return error_page(request, 403, "请求来源无法确认（跨站请求），已拒绝。")
    form = await request.form()
    raw = form.get("token")
    token = raw.strip() if isinstance(raw, str) else ""
    token = token.removeprefix("Bearer ").strip()
    target = form.get("next")
    target = safe_next(target if isinstance(target, str) else None)
    if not token or not acceptable_token(token):
        return page(request, "login.html", None, 422, next=target, error="令牌格式不正确")
    try:
        viewer = viewer_of(await PlatformClient(request, token).get("/api/v1/me"))
    except ApiError as refused:
        if refused.status == 503:
            raise
        message = "令牌无效或已过期，或账号已停用" if refused.status == 401 else refused.detail
        return page(request, "login.html", None, 401, next=target, error=message)
    home = start_page(viewer) or "/ui/"
    response = RedirectResponse(target if target != "/ui/" else home, status_code=303)
    keep_token(response, request.app.state.settings, token)
    return response


@router.api_route("/logout", methods=["GET", "POST"])
async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    forget_token(response, request.app.state.settings)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    if token_of(request) is None:
        return RedirectResponse("/ui/login", status_code=303)
    _, viewer = await signed_in(request)
    start = start_page(viewer)
    if start is None:
        return error_page(request, 403, "运维账号没有业务页面；请使用流程引擎界面（Temporal UI）。")
    return RedirectResponse(start, status_code=303)


router.include_router(dashboards.router)
router.include_router(console.router)
router.include_router(firm.router)


@router.api_route("/{rest:path}", methods=["GET", "POST"])
async def not_found(request: Request, rest: str) -> Response:
    return error_page(request, 404)
