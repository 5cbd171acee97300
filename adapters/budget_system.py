"""Adapter to the provincial budget system (预算管理一体化系统), over HTTP.

This is the client production uses; tests and the dev stack point it at the
simulator in simulators/budget_system.py.

Receipts are polled, not received by callback: the provincial system sits in the
government network and cannot be assumed to reach our API; a callback can be lost
or delivered twice; and a poll made by a Temporal activity, retried with backoff,
survives any crash of ours. Every instruction carries an idempotency key derived
from the case and instalment, so a retried or duplicated request pays once; every
recovery order (money a firm pays back) one derived from the case, so a case has one
order and one payment code however often it is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from adapters.http import (
    ExternalSystemClient,
    ExternalSystemRefused,
    ExternalSystemUnavailable,
    Reply,
)
from models.budget_system import (
    InstructionStatus,
    PaymentInstruction,
    RecoveryClosure,
    RecoveryNotice,
    RecoveryStatus,
    recovery_key,
)

__all__ = ["BudgetSystemClient", "payment_key", "recovery_key"]

if TYPE_CHECKING:
    from core.progress import ProgressCallback

STATEMENT_PAGE = 1000  # records per statement request
CLOSE_REASON_MAX = 256  # RecoveryClosure.reason


class BudgetSystemUnavailable(ExternalSystemUnavailable):
    """Transient (timeout, connection error, 5xx): safe to retry with the same key."""


class BudgetSystemRefused(ExternalSystemRefused):
    """Permanent: the budget system refused the request (4xx). Retrying will not help."""


def payment_key(case_id: str, instalment: int) -> str:
    """The idempotency key of one instalment of one case (never from a run id)."""
    return f"zhida:{case_id}:{instalment}"


class BudgetSystemClient(ExternalSystemClient):
    unavailable = BudgetSystemUnavailable
    refused = BudgetSystemRefused

    async def instruct(self, instruction: PaymentInstruction) -> InstructionStatus:
        return await self._submit(
            "/v1/payment-instructions",
            instruction,
            instruction.idempotency_key,
            InstructionStatus,
        )

    async def status(self, idempotency_key: str) -> InstructionStatus | None:
        """The instruction's state, or None if the system never received it."""
        return await self._found(
            f"/v1/payment-instructions/{quote(idempotency_key, safe='')}", InstructionStatus
        )

    async def statement(
        self, progress: ProgressCallback | None = None, page_size: int = STATEMENT_PAGE
    ) -> list[InstructionStatus]:
        """Every instruction the system holds, a page at a time; `progress` hears
        ("statement", read, total) after each page."""
        return await self._every(
            "/v1/payment-instructions", InstructionStatus, "statement", progress, page_size
        )

    async def register_recovery(self, notice: RecoveryNotice) -> RecoveryStatus:
        """Register money to come back; the same notice again is the same order (with
        the same payment code), another notice under its key is refused (409)."""
        return await self._submit("/v1/recoveries", notice, notice.idempotency_key, RecoveryStatus)

    async def recovery(self, idempotency_key: str) -> RecoveryStatus | None:
        """The order with every receipt so far, or None if the system never received it."""
        return await self._found(
            f"/v1/recoveries/{quote(idempotency_key, safe='')}", RecoveryStatus
        )

    async def close_recovery(self, idempotency_key: str, reason: str) -> RecoveryStatus:
        """Close the order: its payment code takes nothing more. Closing a closed order
        leaves it as it was, so a retry after a lost reply is harmless."""
        # Cut, not refused: a long explanation must not keep an order open.
        closure = RecoveryClosure(reason=reason[:CLOSE_REASON_MAX])
        response = await self._call(
            "POST",
            f"/v1/recoveries/{quote(idempotency_key, safe='')}/close",
            json=closure.model_dump(mode="json"),
        )
        return RecoveryStatus.model_validate_json(response.content)

    async def recovery_statement(
        self, progress: ProgressCallback | None = None, page_size: int = STATEMENT_PAGE
    ) -> list[RecoveryStatus]:
        """Every recovery order the system holds, with its receipts, a page at a time;
        `progress` hears ("recoveries", read, total) after each page."""
        return await self._every(
            "/v1/recoveries", RecoveryStatus, "recoveries", progress, page_size
        )

    async def _found(self, path: str, reply: type[Reply]) -> Reply | None:
        """The record at `path`, or None on a 404 (the system never received it)."""
        try:
            response = await self._call("GET", path)
        except BudgetSystemRefused as exc:
            if exc.status_code == 404:
                return None
            raise
        return reply.model_validate_json(response.content)

    async def _every(
        self,
        path: str,
        item: type[Reply],
        phase: str,
        progress: ProgressCallback | None,
        page_size: int,
    ) -> list[Reply]:
        """Every record of a list the system pages by `offset` and `limit`, telling its
        total in `X-Total-Count`; a short page is the last."""
        records: list[Reply] = []
        while True:
            response = await self._call(
                "GET", path, params={"offset": len(records), "limit": page_size}
            )
            page = [item.model_validate(record) for record in response.json()]
            records.extend(page)
            total = response.headers.get("X-Total-Count")
            if progress:
                progress(phase, len(records), int(total) if total else None)
            if len(page) < page_size:
                return records
