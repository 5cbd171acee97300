"""One case as one story (models.audit.CaseStory), from the workflow's own record: its
final state (the completed workflow's result) or, while it runs, its live state; the
policy version in force; the ledger; the budget system's record of each instruction; the
requests that acted on it and from where; and its workflows' histories, decoded."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError

from core.codec import EncryptionCodec
from domain.audit import histories, trail
from domain.errors import NotFound
from models.audit import CaseStory, LedgerLine
from models.budget import LedgerEntry, LedgerKind
from models.budget_system import InstructionStatus
from models.cases import CaseRecord, CaseState
from models.policy import PolicyItemVersion
from models.registry import mask_account

QUERY_TIMEOUT = timedelta(seconds=5)


class BudgetRecords(Protocol):
    """The budget system's record of one instruction (adapters.budget_system)."""

    async def status(self, idempotency_key: str) -> InstructionStatus | None: ...


async def tell(
    session: AsyncSession,
    client: Client,
    codec: EncryptionCodec,
    budget: BudgetRecords,
    case_id: str,
    *,
    with_histories: bool,
) -> CaseStory:
    record = await session.get(CaseRecord, case_id)
    if record is None:
        raise NotFound(f"case {case_id} not found")
    family = await histories.family(client, case_id)
    state, source = await _state(client, family[0] if family else None, case_id)
    version = await session.scalar(
        select(PolicyItemVersion).where(
            col(PolicyItemVersion.item_code) == record.item_code,
            col(PolicyItemVersion.version) == (state.version if state else record.version),
        )
    )
    ledger = [
        _masked(LedgerLine.model_validate(entry, from_attributes=True))
        for entry in await session.scalars(
            select(LedgerEntry)
            .where(col(LedgerEntry.case_id) == case_id)
            .order_by(col(LedgerEntry.id))
        )
    ]
    records, budget_error = await _budget_records(budget, ledger)
    return CaseStory(
        case_id=case_id,
        category=record.category,
        state=state,
        state_source=source,
        policy_version=version.model_dump(mode="json", warnings=False) if version else None,
        ledger=ledger,
        budget_system=records,
        budget_system_error=budget_error,
        requests=await trail.of_subject(session, case_id),
        workflows=[histories.run_of(h) for h in family],
        histories={h.workflow_id: histories.decoded(codec, h) for h in family}
        if with_histories
        else None,
    )


def _masked(line: LedgerLine) -> LedgerLine:
    """The line with account numbers in its details masked: the full number is read, and
    logged, at /audit/enterprises/{uscc}/accounts (or in the decoded histories)."""
    if not isinstance(line.details, dict):
        return line
    details = {
        key: mask_account(value)
        if "account" in key and isinstance(value, str) and value.isdigit() and len(value) > 8
        else value
        for key, value in line.details.items()
    }
    return line.model_copy(update={"details": details})


async def _state(
    client: Client, history: WorkflowHistory | None, case_id: str
) -> tuple[CaseState | None, str]:
    if history is None:
        return None, "unavailable: no workflow"
    payload = histories.completion_payload(history)
    if payload is not None:
        [state] = await client.data_converter.decode([payload], [CaseState])
        return state, "result"
    if histories.run_of(history).status != "running":
        return None, f"unavailable: the workflow {histories.run_of(history).status}"
    try:
        state = await client.get_workflow_handle(case_id).query(
            "state", result_type=CaseState, rpc_timeout=QUERY_TIMEOUT
        )
    except (RPCError, Exception) as exc:  # a worker that does not answer: say so
        return None, f"unavailable: {type(exc).__name__}: {exc}"[:300]
    return state, "query"


async def _budget_records(
    budget: BudgetRecords, ledger: list[LedgerLine]
) -> tuple[list[InstructionStatus], str | None]:
    keys = [
        line.idempotency_key
        for line in ledger
        if line.kind == LedgerKind.INSTRUCT and line.idempotency_key
    ]
    found: list[InstructionStatus] = []
    try:
        for key in keys:
            status = await budget.status(key)
            if status is not None:
                found.append(status)
    except Exception as exc:  # the budget system is down: the story says so, and goes on
        return found, f"{type(exc).__name__}: {exc}"[:300]
    return found, None
