"""The public pages (/public): the policy catalogue anyone may search, each item's page
at a stable address, and the policy calculator. No sign-in; the pages call the public
API (api/routers/public.py) in-process with no token, so they can show nothing it
does not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from api.web.client import ApiError, FieldMessage, PlatformClient, segment
from api.web.format import FieldInvalid, parse_yuan
from api.web.render import PageRoute, page

router = APIRouter(prefix="/public", route_class=PageRoute, include_in_schema=False)

API = "/api/v1/public"
PAGE_SIZE = 20
FILTERS = ("q", "region_code", "industry_code", "department_code", "category", "level")
VERDICT_TEXT = {
    "eligible": "符合条件",
    "possibly_eligible": "可能符合：尚有条件需补充数据或由主管部门审核",
    "not_eligible": "不符合条件",
}


def _anyone(request: Request) -> PlatformClient:
    return PlatformClient(request, None)


def _filters(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in FILTERS:
        value = request.query_params.get(name, "").strip()
        if value:
            found[name] = value[:100]
    return found


@router.get("")
@router.get("/")
async def start(request: Request) -> Response:
    return RedirectResponse("/public/policies", status_code=303)


@router.get("/policies")
async def catalogue(request: Request) -> Response:
    api = _anyone(request)
    filters = _filters(request)
    offset = request.query_params.get("offset", "0").strip()[:10] or "0"
    facets = await api.get(f"{API}/facets")
    found: Any = None
    refused: ApiError | None = None
    try:
        found = await api.get(
            f"{API}/policies", {**filters, "offset": offset, "limit": str(PAGE_SIZE)}
        )
    except ApiError as error:
        if error.status != 422:
            raise
        refused = error
    return page(
        request,
        "public_policies.html",
        None,
        status=422 if refused else 200,
        public=True,
        facets=facets,
        filters=filters,
        found=found,
        refused=refused,
    )


@router.get("/policies/{code}")
async def policy(request: Request, code: str) -> Response:
    item = await _anyone(request).get(f"{API}/policies/{segment(code)}")
    return page(request, "public_policy.html", None, public=True, item=item, typed={})


def _money(unit: str) -> bool:
    return unit.startswith("分")


def _figures(item: dict[str, Any], typed: dict[str, str]) -> dict[str, str]:
    """The form's figures as the API takes them: money typed in 元 becomes fen."""
    figures: dict[str, str] = {}
    for field in item["inputs"]:
        value = typed.get(field["name"], "")
        if not value:
            continue
        if _money(field["unit"]):
            fen = parse_yuan(value, field["name"], field["label"], positive=False)
            figures[field["name"]] = str(fen)
        else:
            figures[field["name"]] = value
    return figures


@router.get("/policies/{code}/check")
async def check(request: Request, code: str) -> Response:
    api = _anyone(request)
    item = await api.get(f"{API}/policies/{segment(code)}")
    names = {field["name"] for field in item["inputs"]}
    typed = {
        name: value.strip()[:64]
        for name, value in request.query_params.items()
        if name in names and value.strip()
    }
    errors: list[FieldMessage] = []
    answer: Any = None
    try:
        answer = await api.get(f"{API}/policies/{segment(code)}/check", _figures(item, typed))
    except FieldInvalid as invalid:
        errors = [FieldMessage(invalid.field, invalid.message)]
    except ApiError as error:
        if error.status != 422:
            raise
        errors = error.errors or [FieldMessage("", error.detail)]
    labels = {field["name"]: field["label"] for field in item["inputs"]}
    return page(
        request,
        "public_policy.html",
        None,
        status=422 if errors else 200,
        public=True,
        item=item,
        typed=typed,
        answer=answer,
        verdict_text=VERDICT_TEXT,
        errors=[(labels.get(e.field, e.field), e.message) for e in errors],
    )
