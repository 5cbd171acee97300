"""The cross-check of three records of the same money: every payment instruction in the
ledger was issued by a payment workflow; every completed payment workflow left its
ledger entries, and the budget system holds each instruction it made, for the same
amount. Differences are printed; none are expected."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio.client import Client, WorkflowExecutionStatus

from domain.audit.story import BudgetRecords
from models.audit import Crosscheck, CrosscheckLine
from models.budget import LedgerEntry, LedgerKind

PAYMENT_WORKFLOW = "PaymentWorkflow"
PAYMENT_SEPARATOR = "/payment/"  # workflows/disbursement.py names a payment so


def _payment_of(workflow_id: str) -> tuple[str, int] | None:
    case_id, sep, instalment = workflow_id.rpartition(PAYMENT_SEPARATOR)
    return (case_id, int(instalment)) if sep and instalment.isdigit() else None


def _item_of(case_id: str) -> str:
    return case_id.split("/")[1] if case_id.count("/") >= 1 else ""


async def crosscheck(
    session: AsyncSession, client: Client, budget: BudgetRecords, item_code: str | None = None
) -> Crosscheck:
    """The differences, over every item or one (`item_code`)."""
    query = sa.select(
        col(LedgerEntry.case_id),
        col(LedgerEntry.instalment),
        col(LedgerEntry.kind),
        col(LedgerEntry.amount_fen),
        col(LedgerEntry.idempotency_key),
    )
    if item_code is not None:
        query = query.where(col(LedgerEntry.item_code) == item_code)
    rows = await session.execute(query)
    kinds: dict[tuple[str, int], set[str]] = {}
    instructed: dict[tuple[str, int], tuple[int, str | None]] = {}
    for case_id, instalment, kind, amount, key in rows:
        kinds.setdefault((case_id, instalment), set()).add(str(kind))
        if kind == LedgerKind.INSTRUCT:
            instructed[(case_id, instalment)] = (int(amount), key)
    payments: dict[tuple[str, int], WorkflowExecutionStatus | None] = {}
    async for execution in client.list_workflows(f"WorkflowType = '{PAYMENT_WORKFLOW}'"):
        payment = _payment_of(execution.id)
        if payment is not None and (item_code is None or _item_of(payment[0]) == item_code):
            payments[payment] = execution.status
    differences = [
        CrosscheckLine(
            case_id=case_id,
            instalment=instalment,
            problem="ledger instruction without a payment workflow",
        )
        for case_id, instalment in sorted(instructed)
        if (case_id, instalment) not in payments
    ]
    for (case_id, instalment), status in sorted(payments.items()):
        if status != WorkflowExecutionStatus.COMPLETED:
            continue
        if not kinds.get((case_id, instalment)):
            differences.append(
                CrosscheckLine(
                    case_id=case_id,
                    instalment=instalment,
                    problem="completed payment workflow without ledger entries",
                )
            )
            continue
        if (case_id, instalment) not in instructed:
            continue  # refused before instructing, or offset in full: no instruction
        amount, key = instructed[(case_id, instalment)]
        record = await budget.status(key) if key else None
        if record is None:
            problem = "instruction without a budget-system record"
        elif record.amount_fen != amount:
            problem = f"amount differs: ledger {amount} fen, budget system {record.amount_fen}"
        else:
            continue
        differences.append(CrosscheckLine(case_id=case_id, instalment=instalment, problem=problem))
    return Crosscheck(
        instructions=len(instructed), payment_workflows=len(payments), differences=differences
    )
