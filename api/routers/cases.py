"""Case endpoints: apply, follow, decide, correct, and the inboxes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.access import access
from api.audit_trail import about
from api.case_filters import CaseFiltersDep
from api.deps import (
    CurrentUser,
    SessionDep,
    SettingsDep,
    TemporalDep,
    commit_before_temporal,
    reading,
)
from api.idempotency import IdempotencyKey
from api.pagination import Page, PageDep, PageParams
from api.params import MAX_ROW_ID, CreditCode, ItemCode, Period
from api.updates import send_update
from core.workdays import SHANGHAI
from domain import cases
from domain.access import Rule, require_enterprise_access, require_role, require_staff_or_reader
from domain.errors import Conflict, NotFound
from domain.money import budget
from models.budget import QuotaPublic
from models.cases import (
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
)
from models.money import Fen
from models.policy import Category
from models.recognition import AccountConfirmation, Decline, FirmConfirmation, FirmDecline
from models.reference import Role
from models.review import ClearanceRequest, FindingClearance
from workflows.application import ApplicationWorkflow
from workflows.starts import CaseHandle, start_application_case

router = APIRouter(prefix="/api/v1", tags=["cases"])

CASE = "/cases/{category}/{item_code}/{period}/{uscc}"
TEMPORAL_RPC = timedelta(seconds=2)
CaseCategory = Annotated[
    Category,
    Path(
        description="the case's category (事项类别): `application` (申报), `recognition` "
        "(免申即享) or `commitment` (承诺制)"
    ),
]
CASE_KINDS = frozenset({Category.APPLICATION, Category.RECOGNITION, Category.COMMITMENT})
# The update and query names every case workflow shares (workflows/application.py,
# workflows/recognition.py); a route sends them by name to either kind.
STATE, DECIDE, RESUBMIT = "state", "decide", "resubmit"
CONFIRM_ACCOUNT, WITHDRAW, BUDGET_ADDED = "confirm_account", "withdraw", "budget_added"
CONFIRM, DECLINE = "confirm", "decline"
CLEAR_FINDING = "clear_finding"


@router.post(
    "/cases",
    response_model=CaseState,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CaseState, "description": "该期间已有进行中或已兑付的案件：返回它"}},
    summary="申报（申报即兑付）：提交一个期间的申请",
    **access(Rule.ENTERPRISE),
)
async def apply(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: CurrentUser,
    body: ApplicationRequest,
    response: Response,
    request: Request,
    _idempotency: IdempotencyKey,
) -> CaseState:
    """Apply to a published application item for one period of its scheme. Applying again
    while a case for that period is open or paid returns that case (200); after a case
    closed unpaid (rejected, withdrawn, cancelled) the firm may apply again (201)."""
    admission = await cases.admit_application(session, user, body, datetime.now(SHANGHAI).date())
    application = admission.application
    about(request, application.case_id)
    handle: CaseHandle = temporal.get_workflow_handle_for(
        ApplicationWorkflow.run, application.case_id
    )
    if admission.existing:
        response.status_code = status.HTTP_200_OK
        await commit_before_temporal(session)
        try:
            return await handle.query(ApplicationWorkflow.state, rpc_timeout=TEMPORAL_RPC)
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
        # Claimed but never started (a crash between the two): start it now.
    # Started before the commit, on purpose: the claim is flushed, not committed, so
    # the case counts as applied for only once its workflow runs (a failed start rolls
    # the request back; the workflow's first activity re-claims if this commit were lost).
    try:
        await start_application_case(
            temporal, settings.task_queue, application, rpc_timeout=TEMPORAL_RPC
        )
    except WorkflowAlreadyStartedError:
        response.status_code = status.HTTP_200_OK
        await commit_before_temporal(session)
        return await handle.query(ApplicationWorkflow.state, rpc_timeout=TEMPORAL_RPC)
    await commit_before_temporal(session)
    # Just started: the case as its workflow begins, the `state` a query would answer
    # before the worker's first task, built by the workflow's own class rather than
    # waited for (a query waits for that task: 14 ms at the median under load, 43 at
    # worst, bench/api_load.py).
    return ApplicationWorkflow(application).state()


@dataclass(frozen=True)
class Case:
    category: Category
    handle: WorkflowHandle[Any, Any]

    async def state(self) -> CaseState:
        result: CaseState = await self.handle.query(
            STATE, result_type=CaseState, rpc_timeout=TEMPORAL_RPC
        )
        return result

    async def update(self, name: str, arg: object, request_id: str | None) -> CaseState:
        return await send_update(
            self.handle,
            self.handle.execute_update(name, arg, id=request_id, result_type=CaseState),
        )

    async def signal(self, name: str) -> None:
        await self.handle.signal(name, rpc_timeout=TEMPORAL_RPC)

    def only(self, category: Category, what: str) -> None:
        """A request only one kind of case takes: a 409 saying so for the others."""
        if self.category is not category:
            raise Conflict(f"a {self.category.value} case takes no {what}")


async def _case(
    user: CurrentUser,
    category: CaseCategory,
    session: SessionDep,
    temporal: TemporalDep,
    item_code: ItemCode,
    period: Period,
    uscc: CreditCode,
    request: Request,
) -> Case:
    """The workflow of the case the business key names now (its latest attempt).
    Temporal, not the list projection (which may lag a moment behind), says whether
    it exists. The read's transaction ends here: the route only talks to Temporal."""
    require_enterprise_access(user, uscc)
    async with reading(request, session) as reader:
        case_id = await cases.current_case_id(reader, item_code, period, uscc, category)
    about(request, case_id)
    await commit_before_temporal(session)
    return Case(category, temporal.get_workflow_handle(case_id))


CaseDep = Annotated[Case, Depends(_case)]


@router.get(
    CASE, response_model=CaseState, summary="查看案件的状态与时间线", **access(Rule.ITEM_FIRM_READ)
)
async def get_case(case: CaseDep, user: CurrentUser) -> CaseState:
    if user.role is not Role.ENTERPRISE:
        require_staff_or_reader(user)
    try:
        return await case.state()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise NotFound("case not found") from None
        raise


@router.post(
    f"{CASE}/decisions",
    response_model=CaseState,
    summary="审核决定：通过、驳回或退回补正",
    **access(Rule.CASE_DECIDE),
)
async def decide(
    case: CaseDep, user: CurrentUser, body: CaseDecision, request_id: IdempotencyKey
) -> CaseState:
    require_role(user, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    return await case.update(DECIDE, DecisionRequest(actor=user, decision=body), request_id)


@router.post(
    f"{CASE}/findings/{{finding_id}}/clearance",
    response_model=CaseState,
    summary="排除查重发现：一人提出、另一审核人复核确认（四眼原则）",
    **access(Rule.CASE_DECIDE),
)
async def clear_finding(
    case: CaseDep,
    user: CurrentUser,
    finding_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)],
    body: FindingClearance,
    request_id: IdempotencyKey,
) -> CaseState:
    """A reviewer proposes to clear a duplicate-funding finding, with a reason; it is
    cleared when a second reviewer of the case confirms (the same call, another person).
    To uphold a finding instead, cite it in a decision (`findings`)."""
    require_role(user, Role.DEPARTMENT_CASEWORKER, Role.DEPARTMENT_HEAD, Role.FINANCE_CASEWORKER)
    request = ClearanceRequest(actor=user, finding_id=finding_id, clearance=body)
    return await case.update(CLEAR_FINDING, request, request_id)


@router.post(
    f"{CASE}/resubmit",
    response_model=CaseState,
    summary="企业补正后重新提交",
    **access(Rule.CASE_APPLICANT),
)
async def resubmit(
    case: CaseDep, user: CurrentUser, body: Resubmission, request_id: IdempotencyKey
) -> CaseState:
    if case.category is Category.RECOGNITION:
        raise Conflict("a recognition case takes no resubmission: nothing was applied for")
    request = ResubmitRequest(actor=user, resubmission=body)
    return await case.update(RESUBMIT, request, request_id)


@router.post(
    f"{CASE}/account-confirmation",
    response_model=CaseState,
    summary="退票后企业确认更正的收款账户",
    **access(Rule.CASE_APPLICANT),
)
async def confirm_account(
    case: CaseDep, user: CurrentUser, request_id: IdempotencyKey
) -> CaseState:
    """After a returned payment (退票) the firm confirms its corrected account; the
    payment is made again under the next instalment."""
    return await case.update(CONFIRM_ACCOUNT, user, request_id)


@router.post(
    f"{CASE}/withdrawal",
    response_model=CaseState,
    summary="企业撤回申请，或财政撤销无法兑付的案件",
    **access(Rule.CASE_WITHDRAW),
)
async def withdraw(
    case: CaseDep, user: CurrentUser, body: Withdrawal, request_id: IdempotencyKey
) -> CaseState:
    """The firm withdraws its application (撤回) before payment, or finance cancels a
    case that cannot be paid (撤销, with a reason). Any budget reservation is released."""
    if user.role is not Role.ENTERPRISE:
        require_role(user, Role.FINANCE_CASEWORKER)
    request = WithdrawRequest(actor=user, withdrawal=body)
    return await case.update(WITHDRAW, request, request_id)


@router.post(
    f"{CASE}/confirmation",
    response_model=CaseState,
    summary="免申即享：企业确认或更正收款账户",
    **access(Rule.CASE_APPLICANT),
)
async def confirm(
    case: CaseDep, user: CurrentUser, body: AccountConfirmation, request_id: IdempotencyKey
) -> CaseState:
    """The firm identified for a recognition case confirms the receiving account on
    file, or gives a corrected one (which becomes its default account); then it is paid."""
    case.only(Category.RECOGNITION, "account confirmation before payment")
    return await case.update(
        CONFIRM, FirmConfirmation(actor=user, account=body.account), request_id
    )


@router.post(
    f"{CASE}/decline",
    response_model=CaseState,
    summary="免申即享：企业放弃本次兑付",
    **access(Rule.CASE_APPLICANT),
)
async def decline(
    case: CaseDep, user: CurrentUser, body: Decline, request_id: IdempotencyKey
) -> CaseState:
    """The firm declines the money of a recognition case; any reservation is released."""
    case.only(Category.RECOGNITION, "decline (withdraw the application instead)")
    return await case.update(DECLINE, FirmDecline(actor=user, reason=body.reason), request_id)


def _summaries(total: int, page: PageParams, rows: list[CaseRecord]) -> Page[CaseSummary]:
    items = [CaseSummary.model_validate(r, from_attributes=True) for r in rows]
    return Page.of(total, page, items)


@router.get(
    "/cases",
    response_model=Page[CaseSummary],
    summary="查询案件（按条目、类别、阶段、地区、期间、逾期筛选）",
    **access(Rule.READER),
)
async def list_cases(
    session: SessionDep, user: CurrentUser, page: PageDep, filters: CaseFiltersDep
) -> Page[CaseSummary]:
    """Cases an auditor or admin (all), a department (its items' cases) or finance (its
    region's cases) may read, with filters; newest first."""
    total, items = await cases.list_cases(session, user, filters, page.offset, page.limit)
    return _summaries(total, page, items)


@router.get(
    "/inbox",
    response_model=Page[CaseSummary],
    summary="待本单位处理的案件（最早到期在前）",
    **access(Rule.STAFF),
)
async def my_inbox(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[CaseSummary]:
    """Cases waiting on my unit, soonest deadline first."""
    total, items = await cases.inbox(session, user, page.offset, page.limit)
    return _summaries(total, page, items)


@router.get(
    "/my/cases", response_model=Page[CaseSummary], summary="本企业的案件", **access(Rule.ENTERPRISE)
)
async def my_cases(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[CaseSummary]:
    total, items = await cases.cases_of_enterprise(session, user, page.offset, page.limit)
    return _summaries(total, page, items)


class QuotaChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quota_fen: Fen


QuotaYear = Annotated[int, Path(ge=2000, le=2100, description="a year the item is valid in")]


@router.get(
    "/items/{item_code}/quota/{year}",
    response_model=QuotaPublic,
    summary="查看条目某年度的预算额度（额度、已预留、已支付、可用）",
    **access(Rule.ITEM_OVERSIGHT),
)
async def get_quota(
    session: SessionDep, user: CurrentUser, item_code: ItemCode, year: QuotaYear
) -> QuotaPublic:
    """A year's quota of an item as finance set it: quota, reserved, paid, available
    (404 while finance has not set it)."""
    require_staff_or_reader(user)
    return await budget.quota_status(session, item_code, year)


@router.put(
    "/items/{item_code}/quota/{year}",
    response_model=QuotaPublic,
    summary="财政设置条目某年度的预算额度",
    **access(Rule.ITEM_QUOTA),
)
async def set_quota(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: ItemCode,
    year: QuotaYear,
    body: QuotaChange,
    _idempotency: IdempotencyKey,
) -> QuotaPublic:
    """Finance of the item's region sets a year's quota (only years the item is valid
    in); cases waiting for budget on this item try again at once."""
    quota = await budget.adjust_quota(session, user, item_code, year, body.quota_fen)
    waiting = await cases.awaiting_budget(session, item_code)
    await commit_before_temporal(session)
    for case_id in waiting:
        await temporal.get_workflow_handle(case_id).signal(BUDGET_ADDED, rpc_timeout=TEMPORAL_RPC)
    return quota
