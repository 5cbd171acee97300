"""Recognition batches (免申即享): start one from the match library or an uploaded list,
follow its progress and its firms, and verify it as a list (名单核定). The firm's own
steps (confirm, correct, decline) are on its case (api/routers/cases.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.access import access
from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalDep, commit_before_temporal
from api.idempotency import IdempotencyKey
from api.pagination import Page, PageDep
from api.params import USCC_PATTERN, ItemCode
from api.updates import send_update
from core.workdays import SHANGHAI
from domain.access import Rule, require_department_staff
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.recognition import batches
from domain.recognition import cases as recognition
from domain.recognition.upload import MAX_UPLOAD_BYTES, read_upload
from models.case_fields import PERIOD_PATTERN
from models.recognition import (
    BatchPhase,
    BatchProgress,
    BatchSource,
    BatchStart,
    BatchSummary,
    DepartmentVerification,
    EntryStatus,
    EntryView,
    FinanceVerification,
    VerificationRequest,
    batch_id_of,
)
from models.reference import Role
from workflows.recognition_batch import RecognitionBatchWorkflow
from workflows.starts import start_recognition_batch

router = APIRouter(tags=["recognition"])

PREFIX = "/api/v1"
BATCHES = PREFIX + "/items/{item_code}/recognition-batches"
BATCH = BATCHES + "/{period}/{number}"
TEMPORAL_RPC = timedelta(seconds=5)
BatchPeriod = Annotated[
    str,
    Path(description="the batch's period (2026, 2026-Q3, 2026-07, once)", pattern=PERIOD_PATTERN),
]
BatchNumber = Annotated[
    int, Path(description="the batch's number within its period", ge=1, le=10_000)
]


def _today() -> datetime:
    return datetime.now(SHANGHAI)


@router.post(
    BATCHES,
    response_model=BatchProgress,
    status_code=status.HTTP_201_CREATED,
    summary="发起认定批次：从政策匹配库取符合条件的企业（按当日数据重新核验）",
    **access(Rule.ITEM_EDIT),
)
async def start_from_library(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: ItemCode,
    body: BatchStart,
    _idempotency: IdempotencyKey,
) -> BatchProgress:
    """Start a batch of the item's eligible firms from the match library; the batch
    re-assesses them on today's facts and freezes the list (its progress shows
    `identifying` until then). Body `item_code` must name the path's item."""
    if body.item_code != item_code:
        raise InvalidInput.field("item_code", "must be the item of the path")
    batch = await batches.start_batch(
        session, user, item_code, body.period, _today().date(), BatchSource.LIBRARY
    )
    return await _start(session, settings, temporal, batch.batch_id)


@router.post(
    BATCHES + "/upload",
    response_model=BatchProgress,
    status_code=status.HTTP_201_CREATED,
    summary="发起认定批次：上传企业名单（CSV 或 XLSX：统一社会信用代码及金额所需数据）",
    **access(Rule.ITEM_EDIT),
)
async def start_from_upload(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: ItemCode,
    period: Annotated[str, Form(pattern=PERIOD_PATTERN, description="the batch's period")],
    file: Annotated[
        UploadFile,
        File(
            description="CSV (UTF-8 or GBK) or XLSX: a column 统一社会信用代码 (or uscc) and "
            "one per figure the item's amount depends on, named by fact kind or label"
        ),
    ],
    _idempotency: IdempotencyKey,
) -> BatchProgress:
    """Every row is checked (the code, the firm in the registry, each figure, the firm
    eligible on today's facts with its figures); one bad row refuses the whole list with
    every problem named, and no batch is started."""
    batch = await batches.start_batch(
        session, user, item_code, period, _today().date(), BatchSource.UPLOAD
    )
    content = await file.read(MAX_UPLOAD_BYTES + 1)
    kinds = await batches.figure_kinds(session, item_code)
    rows = read_upload(content, file.filename, kinds)
    await batches.identify(session, batch.batch_id, _today().date(), rows)
    return await _start(session, settings, temporal, batch.batch_id)


async def _start(
    session: SessionDep, settings: SettingsDep, temporal: TemporalDep, batch_id: str
) -> BatchProgress:
    """Start the batch's workflow, then commit: a batch whose workflow did not start is
    not recorded (the request fails as a whole and may be sent again)."""
    batch = await batches.get_batch(session, batch_id)
    try:
        await start_recognition_batch(
            temporal,
            settings.task_queue,
            batch,
            follow_every_s=settings.recognition_follow_s,
            rpc_timeout=TEMPORAL_RPC,
        )
    except WorkflowAlreadyStartedError:
        # The workflow of a batch whose request failed after starting it, still giving
        # up on the batch it cannot find (about a minute): its number is free after.
        raise Conflict(
            f"batch {batch_id} is still being abandoned by an earlier request; "
            "try again in a minute"
        ) from None
    await commit_before_temporal(session)
    return await recognition.progress(session, batch_id)


@router.get(
    BATCHES,
    response_model=Page[BatchSummary],
    summary="条目的认定批次",
    **access(Rule.ITEM_OVERSIGHT),
)
async def item_batches(
    session: SessionDep,
    user: CurrentUser,
    item_code: ItemCode,
    page: PageDep,
    phase: Annotated[BatchPhase | None, Query()] = None,
) -> Page[BatchSummary]:
    total, items = await recognition.list_batches(
        session, user, item_code, phase, page.offset, page.limit, scoped=False
    )
    return Page.of(total, page, items)


@router.get(
    PREFIX + "/recognition-batches",
    response_model=Page[BatchSummary],
    summary="认定批次（部门、财政看本单位的；审计看全部）",
    **access(Rule.READER),
)
async def all_batches(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    item: Annotated[str | None, Query(max_length=40)] = None,
    phase: Annotated[BatchPhase | None, Query()] = None,
) -> Page[BatchSummary]:
    total, items = await recognition.list_batches(
        session, user, item, phase, page.offset, page.limit
    )
    return Page.of(total, page, items)


@router.get(
    BATCH,
    response_model=BatchProgress,
    summary="认定批次进度：认定、核定、待企业确认、已预留、已支付、退票、放弃、逾期及金额",
    **access(Rule.ITEM_OVERSIGHT),
)
async def batch_progress(
    session: SessionDep,
    user: CurrentUser,
    item_code: ItemCode,
    period: BatchPeriod,
    number: BatchNumber,
) -> BatchProgress:
    return await recognition.progress(session, batch_id_of(item_code, period, number))


@router.get(
    BATCH + "/firms",
    response_model=Page[EntryView],
    summary="认定批次的企业名单（证据、条件结果、核定记录、案件阶段）",
    **access(Rule.ITEM_OVERSIGHT),
)
async def batch_firms(
    session: SessionDep,
    user: CurrentUser,
    item_code: ItemCode,
    period: BatchPeriod,
    number: BatchNumber,
    page: PageDep,
    status: Annotated[EntryStatus | None, Query()] = None,
    region: Annotated[str | None, Query(max_length=16)] = None,
    uscc: Annotated[str | None, Query(min_length=18, max_length=18, pattern=USCC_PATTERN)] = None,
) -> Page[EntryView]:
    total, items = await recognition.entries(
        session,
        batch_id_of(item_code, period, number),
        status,
        region,
        uscc,
        page.offset,
        page.limit,
    )
    return Page.of(total, page, items)


@router.post(
    BATCH + "/department-verification",
    response_model=BatchProgress,
    summary="部门名单核定：全部通过，或除列明企业外通过（转个案审核或剔除，各附理由）",
    **access(Rule.CASE_DECIDE),
)
async def verify_by_department(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: ItemCode,
    period: BatchPeriod,
    number: BatchNumber,
    body: DepartmentVerification,
    request_id: IdempotencyKey,
) -> BatchProgress:
    batch = await batches.get_batch(session, batch_id_of(item_code, period, number))
    require_department_staff(user, batch.department_code)
    batches.require_phase(batch, BatchPhase.DEPARTMENT_VERIFICATION)
    await batches.check_department(session, batch, body)
    await commit_before_temporal(session)
    request = VerificationRequest(actor=user, department=body)
    return await _verify(temporal, batch.batch_id, request, request_id)


@router.post(
    BATCH + "/finance-verification",
    response_model=BatchProgress,
    summary="财政名单核定：核对名单与总额（对照预算额度），通过或退回",
    **access(Rule.CASE_DECIDE),
)
async def verify_by_finance(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    item_code: ItemCode,
    period: BatchPeriod,
    number: BatchNumber,
    body: FinanceVerification,
    request_id: IdempotencyKey,
) -> BatchProgress:
    batch = await batches.get_batch(session, batch_id_of(item_code, period, number))
    if user.role is not Role.FINANCE_CASEWORKER or user.department_code != (
        batch.finance_department_code
    ):
        raise Forbidden(f"the list is verified by finance {batch.finance_department_code}")
    batches.require_phase(batch, BatchPhase.FINANCE_VERIFICATION)
    await batches.check_finance(session, batch, body)
    await commit_before_temporal(session)
    request = VerificationRequest(actor=user, finance=body)
    return await _verify(temporal, batch.batch_id, request, request_id)


async def _verify(
    temporal: TemporalDep, batch_id: str, request: VerificationRequest, request_id: str | None
) -> BatchProgress:
    handle: WorkflowHandle[RecognitionBatchWorkflow, BatchProgress] = (
        temporal.get_workflow_handle_for(RecognitionBatchWorkflow.run, batch_id)
    )
    return await send_update(
        handle, handle.execute_update(RecognitionBatchWorkflow.verify, request, id=request_id)
    )
