"""Case endpoints: apply, follow, decide, correct, and the inboxes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalDep
from api.pagination import Page, PageDep, PageParams
from api.params import CreditCode
from api.updates import send_update
from core.workdays import SHANGHAI
from domain import budget, cases
from domain.access import require_enterprise_access, require_role, require_staff_or_reader
from domain.errors import NotFound
from models import search_attributes as sa_keys
from models.budget import QuotaPublic
from models.case import (
    ApplicationRequest,
    CaseDecision,
    CaseRecord,
    CaseState,
    CaseSummary,
    DecisionRequest,
    Resubmission,
    ResubmitRequest,
    Withdrawal,
    WithdrawRequest,
    application_case_id,
)
from models.reference import Actor, Role
from workflows.application import ApplicationWorkflow

router = APIRouter(prefix="/api/v1", tags=["cases"])

RequestId = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Used as the Temporal update id: a retry is answered, not applied twice.",
    ),
]
CaseHandle = WorkflowHandle[ApplicationWorkflow, CaseState]
CASE = "/cases/application/{item_code}/{period}/{uscc}"


@router.post("/cases", response_model=CaseState, status_code=status.HTTP_201_CREATED)
async def apply(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: CurrentUser,
    body: ApplicationRequest,
    response: Response,
) -> CaseState:
    """Apply to a published application item; applying twice returns the first case (200)."""
    application = await cases.admit_application(session, user, body, datetime.now(SHANGHAI).date())
    await session.commit()
    try:
        handle = await temporal.start_workflow(
            ApplicationWorkflow.run,
            application,
            id=application.case_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa_keys.KIND, "case"),
                    SearchAttributePair(sa_keys.CATEGORY, "application"),
                    SearchAttributePair(sa_keys.ITEM_CODE, application.item_code),
                    SearchAttributePair(sa_keys.STAGE, "check"),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        handle = temporal.get_workflow_handle_for(ApplicationWorkflow.run, application.case_id)
        response.status_code = status.HTTP_200_OK
    return await handle.query(ApplicationWorkflow.state)


def _case_path(item_code: str, period: str, uscc: str) -> str:
    return application_case_id(item_code, period, uscc)


async def _handle(
    session: AsyncSession, temporal: Client, user: Actor, case_id: str, uscc: str
) -> CaseHandle:
    """The case's workflow. Temporal, not the list projection (which may lag a moment
    behind), says whether it exists."""
    require_enterprise_access(user, uscc)
    await session.commit()  # never hold a transaction while waiting on a workflow
    return temporal.get_workflow_handle_for(ApplicationWorkflow.run, case_id)


@router.get(CASE, response_model=CaseState)
async def get_case(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: str,
    period: str,
    uscc: CreditCode,
) -> CaseState:
    if user.role is not Role.ENTERPRISE:
        require_staff_or_reader(user)
    handle = await _handle(session, temporal, user, _case_path(item_code, period, uscc), uscc)
    try:
        return await handle.query(ApplicationWorkflow.state)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound("case not found") from None
        raise


async def _case(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: str,
    period: str,
    uscc: CreditCode,
) -> CaseHandle:
    return await _handle(session, temporal, user, _case_path(item_code, period, uscc), uscc)


CaseDep = Annotated[CaseHandle, Depends(_case)]


@router.post(f"{CASE}/decisions", response_model=CaseState)
async def decide(
    case: CaseDep, user: CurrentUser, body: CaseDecision, request_id: RequestId = None
) -> CaseState:
    require_role(user, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    request = DecisionRequest(actor=user, decision=body)
    return await send_update(
        case, case.execute_update(ApplicationWorkflow.decide, request, id=request_id)
    )


@router.post(f"{CASE}/resubmit", response_model=CaseState)
async def resubmit(
    case: CaseDep, user: CurrentUser, body: Resubmission, request_id: RequestId = None
) -> CaseState:
    request = ResubmitRequest(actor=user, resubmission=body)
    return await send_update(
        case, case.execute_update(ApplicationWorkflow.resubmit, request, id=request_id)
    )


@router.post(f"{CASE}/account-confirmation", response_model=CaseState)
async def confirm_account(
    case: CaseDep, user: CurrentUser, request_id: RequestId = None
) -> CaseState:
    """After a returned payment (退票) the firm confirms its corrected account; the
    payment is made again under the next instalment."""
    return await send_update(
        case, case.execute_update(ApplicationWorkflow.confirm_account, user, id=request_id)
    )


@router.post(f"{CASE}/withdrawal", response_model=CaseState)
async def withdraw(
    case: CaseDep, user: CurrentUser, body: Withdrawal, request_id: RequestId = None
) -> CaseState:
    """The firm withdraws its application (撤回) before payment, or finance cancels a
    case that cannot be paid (撤销, with a reason). Any budget reservation is released."""
    if user.role is not Role.ENTERPRISE:
        require_role(user, Role.FINANCE_CASEWORKER)
    request = WithdrawRequest(actor=user, withdrawal=body)
    return await send_update(
        case, case.execute_update(ApplicationWorkflow.withdraw, request, id=request_id)
    )


def _summaries(total: int, page: PageParams, rows: list[CaseRecord]) -> Page[CaseSummary]:
    items = [CaseSummary.model_validate(r, from_attributes=True) for r in rows]
    return Page.of(total, page, items)


@router.get("/inbox", response_model=Page[CaseSummary])
async def my_inbox(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[CaseSummary]:
    """Cases waiting on my unit, soonest deadline first."""
    total, items = await cases.inbox(session, user, page.offset, page.limit)
    return _summaries(total, page, items)


@router.get("/my/cases", response_model=Page[CaseSummary])
async def my_cases(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[CaseSummary]:
    total, items = await cases.cases_of_enterprise(session, user, page.offset, page.limit)
    return _summaries(total, page, items)


class QuotaChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quota_fen: int = Field(ge=0, strict=True)


@router.put("/items/{item_code}/quota/{year}", response_model=QuotaPublic)
async def set_quota(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: str,
    year: Annotated[int, Path(ge=2000, le=2100)],
    body: QuotaChange,
) -> QuotaPublic:
    """Set a year's quota; cases waiting for budget on this item try again at once."""
    quota = await budget.adjust_quota(session, user, item_code, year, body.quota_fen)
    waiting = await cases.awaiting_budget(session, item_code)
    await session.commit()
    for case_id in waiting:
        await temporal.get_workflow_handle(case_id).signal(ApplicationWorkflow.budget_added)
    return quota
