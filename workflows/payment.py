"""Payment of one approved amount through the budget system, until it is in the account."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from models.payments import PaymentInput, PaymentOutcome, PaymentRequest, PaymentResult
    from workflows.options import BUDGET_SYSTEM, LEDGER, SETTLEMENT_POLL


@workflow.defn
class PaymentWorkflow:
    """Pays one instalment of a case through the budget system and records how it
    ended: the bank's receipt, or a returned payment (退票). Its id carries the
    instalment (`{case_id}/payment/{instalment}`), as does the idempotency key of the
    instruction; the case workflow decides what happens after a return.
    """

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentResult:
        request = PaymentRequest(
            case_id=input.case_id,
            instalment=input.instalment,
            item_code=input.item_code,
            year=input.year,
            uscc=input.uscc,
            amount_fen=input.amount_fen,
            purpose=input.purpose,
        )
        await workflow.execute_activity_method(
            PaymentActivities.send_instruction, request, **BUDGET_SYSTEM
        )
        outcome: PaymentOutcome = await workflow.execute_activity_method(
            PaymentActivities.await_settlement, request, **SETTLEMENT_POLL
        )
        if outcome.state == "paid":
            await workflow.execute_activity_method(
                PaymentActivities.record_receipt, args=[request, outcome], **LEDGER
            )
        else:
            await workflow.execute_activity_method(
                PaymentActivities.record_returned_payment, args=[request, outcome], **LEDGER
            )
        return PaymentResult(instalment=input.instalment, **outcome.model_dump())
