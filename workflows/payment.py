"""Payment of one approved amount through the budget system, until it is in the account."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from models.case import PaymentInput, PaymentOutcome, PaymentRequest, PaymentResult
    from models.reference import Actor, Role

INSTRUCT = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(minutes=1),
        non_retryable_error_types=["BudgetSystemRefused", "Conflict", "NotFound"],
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
    """Instructs the payment, waits for the bank's receipt and records it.

    A returned payment (退票) is recorded against its instalment; the workflow then
    waits for the firm to confirm a corrected account (update `account_corrected`)
    and pays again under the next instalment's key. Query: `returned_instalments`.
    """

    @workflow.init
    def __init__(self, input: PaymentInput) -> None:
        self._input = input
        self._instalment = input.first_instalment
        self._returned: list[int] = []
        self._awaiting_account = False
        self._account_confirmed = False

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentResult:
        while True:
            request = PaymentRequest(
                case_id=input.case_id,
                instalment=self._instalment,
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
                assert outcome.bank_serial is not None and outcome.paid_at is not None
                await workflow.wait_condition(workflow.all_handlers_finished)
                return PaymentResult(
                    instalment=self._instalment,
                    voucher_no=outcome.voucher_no,
                    bank_serial=outcome.bank_serial,
                    paid_at=outcome.paid_at,
                    returned_instalments=list(self._returned),
                )
            await workflow.execute_activity_method(
                PaymentActivities.record_returned_payment, args=[request, outcome], **LEDGER
            )
            self._returned.append(self._instalment)
            self._awaiting_account, self._account_confirmed = True, False
            await workflow.wait_condition(lambda: self._account_confirmed)
            self._awaiting_account = False
            self._instalment += 1

    @workflow.update
    def account_corrected(self, actor: Actor) -> int:
        self._account_confirmed = True
        return self._instalment + 1

    @account_corrected.validator
    def validate_account_corrected(self, actor: Actor) -> None:
        if actor.role is not Role.ENTERPRISE or actor.enterprise_uscc != self._input.uscc:
            raise ApplicationError("only the firm confirms its own account", type="Forbidden")
        if not self._awaiting_account:
            raise ApplicationError("no returned payment is waiting", type="WrongStage")

    @workflow.query
    def returned_instalments(self) -> list[int]:
        return list(self._returned)

    @workflow.query
    def awaiting_account(self) -> bool:
        return self._awaiting_account
