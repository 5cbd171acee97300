"""Payment of one approved amount through the budget system, until it is in the account."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from models.cases import PaymentInput, PaymentOutcome, PaymentRequest, PaymentResult

INSTRUCT = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(minutes=1),
        # Only failures before the instruction exists end the payment; see send_instruction.
        non_retryable_error_types=["BudgetSystemRefused", "InvalidInstruction"],
    ),
)
# Polling for the receipt is this activity's retry schedule: every failure means
# "not settled yet" or "unreachable", and both are worth asking again.
POLL = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=1.5,
        maximum_interval=timedelta(minutes=5),
    ),
)
LEDGER = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)


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
            PaymentActivities.send_instruction, request, **INSTRUCT
        )
        outcome: PaymentOutcome = await workflow.execute_activity_method(
            PaymentActivities.await_settlement, request, **POLL
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
