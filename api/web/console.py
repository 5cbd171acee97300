"""The caseworker console: the unit's inbox, the case list of readers, a case's page
with the decision form, and recognition batches with their list verification."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.web import forms
from api.web.client import segment
from api.web.dashboards import chosen, read
from api.web.render import PageRoute, page
from api.web.session import Viewer, signed_in

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 50
CASE_FILTERS = (
    "item",
    "category",
    "stage",
    "region",
    "period",
    "overdue",
    "department",
    "item_department",
)
BATCH_FILTERS = ("item", "phase")
FIRM_FILTERS = ("status", "region", "uscc")
# Stages at which a unit decides with `decisions` (a commitment's completion review has
# its own route, not drawn here).
DECIDING = frozenset(
    {"department_review", "finance_review", "joint_review", "settlement_review", "payment_failed"}
)
OPEN_FINDINGS = frozenset({"open", "clearing"})


def paging(request: Request, size: int = PAGE_SIZE) -> dict[str, str]:
    offset = request.query_params.get("offset", "0").strip()[:10] or "0"
    return {"offset": offset, "limit": str(size)}


def case_path(category: str, item: str, period: str, uscc: str) -> str:
    return "/".join(segment(p) for p in (category, item, period, uscc))


@router.get("/inbox")
async def inbox(request: Request) -> Response:
    api, viewer = await signed_in(request)
    cases, refused = await read(api, "/api/v1/inbox", paging(request))
    return page(
        request,
        "inbox.html",
        viewer,
        refused.status if refused else 200,
        active="inbox",
        refused=refused,
        cases=cases,
    )


async def filtered_list(
    request: Request, source: str, names: tuple[str, ...], template: str, key: str
) -> Response:
    """A page listing what one API list answers, narrowed by the filters named."""
    api, viewer = await signed_in(request)
    filters = chosen(request, names)
    found, refused = await read(api, source, {**filters, **paging(request)})
    return page(
        request,
        template,
        viewer,
        refused.status if refused else 200,
        active=key,
        filters=filters,
        refused=refused,
        **{key: found},
    )


@router.get("/cases")
async def case_list(request: Request) -> Response:
    return await filtered_list(request, "/api/v1/cases", CASE_FILTERS, "cases.html", "cases")


def may_decide(viewer: Viewer, case: dict[str, Any]) -> bool:
    """Whether the page draws the decision form: staff of the unit the case waits on,
    at a stage decided by `decisions` (the API has the last word)."""
    units = {case.get("waiting_for_department"), case.get("also_waiting_for_department")}
    return (
        viewer.is_staff
        and case["stage"] in DECIDING
        and viewer.department_code is not None
        and viewer.department_code in units
    )


@router.get("/cases/{category}/{item}/{period}/{uscc}")
async def case_page(request: Request, category: str, item: str, period: str, uscc: str) -> Response:
    api, viewer = await signed_in(request)
    path = case_path(category, item, period, uscc)
    case = await api.get(f"/api/v1/cases/{path}")
    return page(
        request,
        "case.html",
        viewer,
        active="my-cases" if viewer.is_firm else "cases",
        case=case,
        here=f"/ui/cases/{path}",
        may_decide=may_decide(viewer, case),
        open_findings=[f for f in case.get("findings", []) if f["status"] in OPEN_FINDINGS],
        may_confirm=viewer.is_firm
        and case["stage"] == "confirmation"
        and category == "recognition",
        may_confirm_account=viewer.is_firm and case["stage"] == "account_correction",
    )


@router.post("/cases/{category}/{item}/{period}/{uscc}/decision")
async def decide(request: Request, category: str, item: str, period: str, uscc: str) -> Response:
    path = case_path(category, item, period, uscc)
    return await forms.forward(
        request,
        f"/ui/cases/{path}",
        f"/api/v1/cases/{path}/decisions",
        forms.decision,
        "审核决定已提交。",
    )


@router.post("/cases/{category}/{item}/{period}/{uscc}/confirmation")
async def confirm(request: Request, category: str, item: str, period: str, uscc: str) -> Response:
    path = case_path(category, item, period, uscc)
    return await forms.forward(
        request,
        f"/ui/cases/{path}",
        f"/api/v1/cases/{path}/confirmation",
        forms.confirmation,
        "已确认收款账户，资金将拨付至该账户。",
    )


@router.post("/cases/{category}/{item}/{period}/{uscc}/account-confirmation")
async def confirm_account(
    request: Request, category: str, item: str, period: str, uscc: str
) -> Response:
    path = case_path(category, item, period, uscc)
    return await forms.forward(
        request,
        f"/ui/cases/{path}",
        f"/api/v1/cases/{path}/account-confirmation",
        lambda _: None,
        "已确认更正后的收款账户，将重新拨付。",
    )


def batch_path(item: str, period: str, number: str) -> str:
    return f"{segment(item)}/recognition-batches/{segment(period)}/{segment(number)}"


@router.get("/batches")
async def batches(request: Request) -> Response:
    return await filtered_list(
        request, "/api/v1/recognition-batches", BATCH_FILTERS, "batches.html", "batches"
    )


@router.get("/batches/{item}/{period}/{number}")
async def batch(request: Request, item: str, period: str, number: str) -> Response:
    api, viewer = await signed_in(request)
    path = batch_path(item, period, number)
    progress = await api.get(f"/api/v1/items/{path}")
    filters = chosen(request, FIRM_FILTERS)
    firms, refused = await read(
        api, f"/api/v1/items/{path}/firms", {**filters, **paging(request, 100)}
    )
    phase = progress["phase"]
    return page(
        request,
        "batch.html",
        viewer,
        refused.status if refused else 200,
        active="batches",
        progress=progress,
        firms=firms,
        filters=filters,
        refused=refused,
        here=f"/ui/batches/{segment(item)}/{segment(period)}/{segment(number)}",
        department_form=phase == "department_verification"
        and viewer.role in ("department_caseworker", "department_head"),
        finance_form=phase == "finance_verification" and viewer.role == "finance_caseworker",
    )


@router.post("/batches/{item}/{period}/{number}/department-verification")
async def verify_by_department(request: Request, item: str, period: str, number: str) -> Response:
    return await forms.forward(
        request,
        f"/ui/batches/{segment(item)}/{segment(period)}/{segment(number)}",
        f"/api/v1/items/{batch_path(item, period, number)}/department-verification",
        forms.department_verification,
        "部门名单核定已提交。",
    )


@router.post("/batches/{item}/{period}/{number}/finance-verification")
async def verify_by_finance(request: Request, item: str, period: str, number: str) -> Response:
    return await forms.forward(
        request,
        f"/ui/batches/{segment(item)}/{segment(period)}/{segment(number)}",
        f"/api/v1/items/{batch_path(item, period, number)}/finance-verification",
        forms.finance_verification,
        "财政名单核定已提交。",
    )
