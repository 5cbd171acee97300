"""The dashboards (绩效看板): money, warnings, time to money, the quarterly bulletin and
policy effect, each drawn from `/api/v1/dashboard/*` as the signed-in reader sees it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.web import charts
from api.web.client import ApiError, PlatformClient
from api.web.render import PageRoute, page
from api.web.session import signed_in
from core.workdays import SHANGHAI

router = APIRouter(route_class=PageRoute)

FILTERS = ("year", "region_code", "department_code", "category")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def chosen(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The query's filters that are set, as typed: the API checks them and names the
    one it refuses."""
    found = {}
    for name in names:
        value = request.query_params.get(name, "").strip()
        if value:
            found[name] = value[:100]
    return found


async def read(
    api: PlatformClient, path: str, params: dict[str, str]
) -> tuple[Any, ApiError | None]:
    """The API's answer, or the 4xx it refused the filters with (shown beside them)."""
    try:
        return await api.get(path, params), None
    except ApiError as refused:
        if refused.status in (400, 404, 422):
            return None, refused
        raise


async def options(api: PlatformClient) -> dict[str, Any]:
    """What the filter form offers: regions and departments from the reference lists."""
    regions = await api.get("/api/v1/regions")
    departments = await api.get("/api/v1/departments")
    return {
        "regions": regions,
        "departments": [d for d in departments if d["kind"] == "policy"],
        "region_names": {r["code"]: r["name"] for r in regions},
        "department_names": {d["code"]: d["name"] for d in departments},
    }


def _status(refused: ApiError | None) -> int:
    return refused.status if refused else 200


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    api, viewer = await signed_in(request)
    params = chosen(request, FILTERS)
    overview, refused = await read(api, "/api/v1/dashboard/overview", params)
    drawn = {}
    if overview:
        for key in ("by_region", "by_department", "by_category"):
            if overview[key]:
                drawn[key] = charts.money_by(overview[key])
        if overview["by_month"]:
            drawn["by_month"] = charts.paid_by_month(overview["by_month"])
    return page(
        request,
        "dashboard.html",
        viewer,
        _status(refused),
        active="dashboard",
        filters=params,
        refused=refused,
        overview=overview,
        charts=drawn,
        **await options(api),
    )


@router.get("/warnings")
async def warnings(request: Request) -> Response:
    api, viewer = await signed_in(request)
    params = chosen(request, FILTERS)
    found, refused = await read(api, "/api/v1/dashboard/warnings", params)
    return page(
        request,
        "warnings.html",
        viewer,
        _status(refused),
        active="warnings",
        filters=params,
        refused=refused,
        warnings=found,
        **await options(api),
    )


@router.get("/time-to-money")
async def time_to_money(request: Request) -> Response:
    api, viewer = await signed_in(request)
    params = chosen(request, FILTERS)
    speed, refused = await read(api, "/api/v1/dashboard/time-to-money", params)
    chart = None
    target_days = None
    if speed:
        traditional = int(speed["traditional_days"])
        target_days = traditional * (100 - int(speed["target_reduction_pct"])) / 100
        if speed["by_category"]:
            chart = charts.speed_by(speed["by_category"], traditional, target_days)
    return page(
        request,
        "time_to_money.html",
        viewer,
        _status(refused),
        active="time-to-money",
        filters=params,
        refused=refused,
        speed=speed,
        speed_chart=chart,
        target_days=target_days,
        **await options(api),
    )


def _this_quarter() -> dict[str, str]:
    today = datetime.now(SHANGHAI).date()
    return {"year": str(today.year), "quarter": str((today.month - 1) // 3 + 1)}


@router.get("/bulletin")
async def bulletin(request: Request) -> Response:
    api, viewer = await signed_in(request)
    params = {**_this_quarter(), **chosen(request, ("year", "quarter"))}
    standing, refused = await read(api, "/api/v1/dashboard/bulletin", params)
    return page(
        request,
        "bulletin.html",
        viewer,
        _status(refused),
        active="bulletin",
        filters=params,
        refused=refused,
        bulletin=standing,
    )


@router.get("/bulletin.xlsx")
async def bulletin_xlsx(request: Request) -> Response:
    api, _ = await signed_in(request)
    params = {**_this_quarter(), **chosen(request, ("year", "quarter"))}
    answer = await api.get_file("/api/v1/dashboard/bulletin.xlsx", params)
    disposition = answer.headers.get("content-disposition", 'attachment; filename="bulletin.xlsx"')
    return Response(answer.content, media_type=XLSX, headers={"Content-Disposition": disposition})


@router.get("/policy-effect")
async def policy_effect(request: Request) -> Response:
    api, viewer = await signed_in(request)
    params = chosen(request, ("item_code", "year"))
    effect, refused = await read(api, "/api/v1/dashboard/policy-effect", params)
    return page(
        request,
        "policy_effect.html",
        viewer,
        _status(refused),
        active="policy-effect",
        filters=params,
        refused=refused,
        effect=effect,
    )
