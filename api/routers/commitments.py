"""Commitment endpoints (承诺制): the letter, committing, and the requests of a case's
life after its joint review: progress, extension, completion and its review, and the
recovery's instalment plan, waiver and receipts check. The joint review, settlement
confirmation, corrections, account and withdrawal use the case endpoints every kind
shares (api/routers/cases.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.esignature import PlatformAcceptance
from api.access import access
from api.audit_trail import about
from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalDep, commit_before_temporal
from api.idempotency import IdempotencyKey
from api.params import ItemCode
from api.routers.cases import CASE, TEMPORAL_RPC, Case, CaseDep
from core.workdays import SHANGHAI
from domain.access import Rule, require_role
from domain.commitment import admission
from domain.errors import Conflict
from models.cases import CaseState
from models.commitment import (
    CommitmentRequest,
    Completion,
    CompletionReview,
    CompletionRuling,
    CompletionSubmission,
    ExtensionAsk,
    ExtensionDecision,
    ExtensionRequest,
    ExtensionRuling,
    InstalmentGrant,
    LetterPublic,
    PlanGrant,
    ProgressReport,
    ProgressUpdate,
    Waiver,
    WaiverRequest,
)
from models.policy import Category
from models.reference import Role
from workflows.commitment import CommitmentWorkflow
from workflows.starts import CommitmentHandle, start_commitment_case

router = APIRouter(prefix="/api/v1", tags=["commitments"])


def _commitment(case: Case, what: str) -> Case:
    if case.category is not Category.COMMITMENT:
        raise Conflict(f"a {case.category.value} case takes no {what}")
    return case


@router.get(
    "/items/{item_code}/commitment-letter",
    response_model=LetterPublic,
    summary="承诺制：查看事项的承诺书（企业签署其 SHA-256）",
    **access(Rule.SIGNED_IN),
)
async def commitment_letter(session: SessionDep, item_code: ItemCode) -> LetterPublic:
    """The letter of the version in force, its SHA-256 (what a firm signs), the targets
    a firm commits to and the prepaid share."""
    return await admission.letter_of(session, item_code, datetime.now(SHANGHAI).date())


@router.post(
    "/commitments",
    response_model=CaseState,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CaseState, "description": "该期间已有进行中或已结算的承诺：返回它"}},
    summary="承诺制：提交项目与承诺指标并签署承诺书",
    **access(Rule.ENTERPRISE),
)
async def commit(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: CurrentUser,
    body: CommitmentRequest,
    request: Request,
    response: Response,
    _idempotency: IdempotencyKey,
) -> CaseState:
    """Commit to a published commitment item for one period with a project and its
    committed targets, signing the letter (its SHA-256 as shown by the letter endpoint).
    The signature records the signer, the time and the request's origin. Committing
    again while a case for the period is open or settled returns it (200)."""
    origin = (
        f"{request.client.host if request.client else 'unknown'}; "
        + (request.headers.get("user-agent", "")[:120])
    )
    today = datetime.now(SHANGHAI).date()
    admitted = await admission.admit_commitment(
        session, user, body, today, origin, PlatformAcceptance()
    )
    commitment = admitted.commitment
    about(request, commitment.case_id)
    handle: CommitmentHandle = temporal.get_workflow_handle_for(
        CommitmentWorkflow.run, commitment.case_id
    )
    if admitted.existing:
        response.status_code = status.HTTP_200_OK
        await commit_before_temporal(session)
        try:
            return await handle.query(CommitmentWorkflow.state, rpc_timeout=TEMPORAL_RPC)
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
    try:
        await start_commitment_case(
            temporal, settings.task_queue, commitment, rpc_timeout=TEMPORAL_RPC
        )
    except WorkflowAlreadyStartedError:
        response.status_code = status.HTTP_200_OK
    await commit_before_temporal(session)
    return await handle.query(CommitmentWorkflow.state, rpc_timeout=TEMPORAL_RPC)


@router.post(
    f"{CASE}/progress",
    response_model=CaseState,
    summary="承诺制：企业报送项目进展",
    **access(Rule.CASE_APPLICANT),
)
async def report_progress(
    case: CaseDep, user: CurrentUser, body: ProgressReport, request_id: IdempotencyKey
) -> CaseState:
    case = _commitment(case, "progress report")
    return await case.update("report_progress", ProgressUpdate(actor=user, report=body), request_id)


@router.post(
    f"{CASE}/extension",
    response_model=CaseState,
    summary="承诺制：企业申请延期（限一次）",
    **access(Rule.CASE_APPLICANT),
)
async def request_extension(
    case: CaseDep, user: CurrentUser, body: ExtensionRequest, request_id: IdempotencyKey
) -> CaseState:
    case = _commitment(case, "extension")
    return await case.update(
        "request_extension", ExtensionAsk(actor=user, request=body), request_id
    )


@router.post(
    f"{CASE}/extension-decision",
    response_model=CaseState,
    summary="承诺制：主管部门决定延期申请（须说明理由）",
    **access(Rule.CASE_DECIDE),
)
async def decide_extension(
    case: CaseDep, user: CurrentUser, body: ExtensionDecision, request_id: IdempotencyKey
) -> CaseState:
    case = _commitment(case, "extension decision")
    return await case.update(
        "decide_extension", ExtensionRuling(actor=user, decision=body), request_id
    )


@router.post(
    f"{CASE}/completion",
    response_model=CaseState,
    summary="承诺制：企业提交完工材料与实际完成指标",
    **access(Rule.CASE_APPLICANT),
)
async def submit_completion(
    case: CaseDep, user: CurrentUser, body: Completion, request_id: IdempotencyKey
) -> CaseState:
    case = _commitment(case, "completion")
    return await case.update(
        "submit_completion", CompletionSubmission(actor=user, completion=body), request_id
    )


@router.post(
    f"{CASE}/completion-review",
    response_model=CaseState,
    summary="承诺制：主管部门验收完工（可更正指标并说明理由）或退回",
    **access(Rule.CASE_DECIDE),
)
async def review_completion(
    case: CaseDep, user: CurrentUser, body: CompletionReview, request_id: IdempotencyKey
) -> CaseState:
    case = _commitment(case, "completion review")
    return await case.update(
        "review_completion", CompletionRuling(actor=user, review=body), request_id
    )


@router.post(
    f"{CASE}/recovery/instalments",
    response_model=CaseState,
    summary="承诺制追回：财政批准分期缴纳（期限前）",
    **access(Rule.CASE_DECIDE),
)
async def grant_instalments(
    case: CaseDep, user: CurrentUser, body: InstalmentGrant, request_id: IdempotencyKey
) -> CaseState:
    require_role(user, Role.FINANCE_CASEWORKER)
    case = _commitment(case, "instalment plan")
    return await case.update("grant_instalments", PlanGrant(actor=user, grant=body), request_id)


@router.post(
    f"{CASE}/recovery/waiver",
    response_model=CaseState,
    summary="承诺制追回：财政负责人核销（须说明理由）",
    **access(Rule.CASE_WAIVE),
)
async def waive(
    case: CaseDep, user: CurrentUser, body: Waiver, request_id: IdempotencyKey
) -> CaseState:
    case = _commitment(case, "waiver")
    return await case.update("waive", WaiverRequest(actor=user, waiver=body), request_id)


@router.post(
    f"{CASE}/recovery/check",
    response_model=CaseState,
    status_code=status.HTTP_202_ACCEPTED,
    summary="承诺制追回：立即向预算系统查询退回款到账情况",
    **access(Rule.CASE_WITHDRAW),
)
async def check_recovery(case: CaseDep, _idempotency: IdempotencyKey) -> CaseState:
    """The case reads the budget system's receipts now rather than at its next date
    (it reads them at least weekly and on every due date anyway)."""
    case = _commitment(case, "recovery check")
    await case.signal("check_recovery")
    return await case.state()
