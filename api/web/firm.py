"""A firm's own pages: the policies it matches with each condition's reason (政策快享),
its cases and its notices."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.web.console import paging
from api.web.render import PageRoute, page
from api.web.session import signed_in

router = APIRouter(prefix="/my", route_class=PageRoute)


@router.get("/policies")
async def my_policies(request: Request) -> Response:
    api, viewer = await signed_in(request)
    policies = await api.get("/api/v1/my/policies", paging(request))
    return page(request, "my_policies.html", viewer, active="my-policies", policies=policies)


@router.get("/cases")
async def my_cases(request: Request) -> Response:
    api, viewer = await signed_in(request)
    cases = await api.get("/api/v1/my/cases", paging(request))
    return page(request, "my_cases.html", viewer, active="my-cases", cases=cases)


@router.get("/notices")
async def my_notices(request: Request) -> Response:
    api, viewer = await signed_in(request)
    notices = await api.get("/api/v1/me/notices")
    return page(request, "my_notices.html", viewer, active="my-notices", notices=notices)
