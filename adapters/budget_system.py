"""Adapter to the provincial budget system (预算管理一体化系统), over HTTP.

This is the client production uses; tests and the dev stack point it at the
simulator in simulators/budget_system.py.

Receipts are polled, not received by callback: the provincial system sits in the
government network and cannot be assumed to reach our API; a callback can be lost
or delivered twice; and a poll made by a Temporal activity, retried with backoff,
survives any crash of ours. Every instruction carries an idempotency key derived
from the case and instalment, so a retried or duplicated request pays once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from adapters.http import ExternalSystemClient, ExternalSystemRefused, ExternalSystemUnavailable
from models.budget_system import (
    InstructionStatus,
    PaymentInstruction,
    RecoveryClosure,
    RecoveryNotice,
    RecoveryStatus,
)

if TYPE_CHECKING:
    from core.progress import ProgressCallback

STATEMENT_PAGE = 1000  # instructions per statement request


class BudgetSystemUnavailable(ExternalSystemUnavailable):
    """Transient (timeout, connection error, 5xx): safe to retry with the same key."""


class BudgetSystemRefused(ExternalSystemRefused):
    """Permanent: the budget system refused the request (4xx). Retrying will not help."""


def recovery_key(case_id: str) -> str:
    """The idempotency key of a case's recovery order (one per case)."""
    return f"zhida:{case_id}:recovery"


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
        try:
            response = await self._call(
                "GET", f"/v1/payment-instructions/{quote(idempotency_key, safe='')}"
            )
        except BudgetSystemRefused as exc:
            if exc.status_code == 404:
                return None
            raise
        return InstructionStatus.model_validate_json(response.content)

    async def statement(
        self, progress: ProgressCallback | None = None, page_size: int = STATEMENT_PAGE
    ) -> list[InstructionStatus]:
        """Every instruction the system holds, a page at a time; `progress` hears
        ("statement", read, total) after each page."""
        pages = self._pages("/v1/payment-instructions", "statement", progress, page_size)
        return [InstructionStatus.model_validate(item) async for item in pages]

    async def register_recovery(self, notice: RecoveryNotice) -> RecoveryStatus:
        """Register money to come back (idempotent on the notice's key)."""
        return await self._submit("/v1/recoveries", notice, notice.idempotency_key, RecoveryStatus)

    async def recovery(self, idempotency_key: str) -> RecoveryStatus | None:
        """The recovery with its receipts, or None if the system never received it."""
        try:
            response = await self._call("GET", f"/v1/recoveries/{quote(idempotency_key, safe='')}")
        except BudgetSystemRefused as exc:
            if exc.status_code == 404:
                return None
            raise
        return RecoveryStatus.model_validate_json(response.content)

    async def close_recovery(self, idempotency_key: str, reason: str) -> RecoveryStatus:
        """Close a recovery nothing more is owed on (idempotent)."""
        response = await self._call(
            "POST",
            f"/v1/recoveries/{quote(idempotency_key, safe='')}/close",
            json=RecoveryClosure(reason=reason[:256]).model_dump(mode="json"),
        )
        return RecoveryStatus.model_validate_json(response.content)

    async def recovery_statement(
        self, progress: ProgressCallback | None = None, page_size: int = STATEMENT_PAGE
    ) -> list[RecoveryStatus]:
        """Every recovery the system holds with its receipts, a page at a time."""
        pages = self._pages("/v1/recoveries", "recoveries", progress, page_size)
        return [RecoveryStatus.model_validate(item) async for item in pages]

    async def _pages(
        self, path: str, name: str, progress: ProgressCallback | None, page_size: int
    ) -> AsyncIterator[Any]:
        """The items of a paged list (`offset`, `limit`, `X-Total-Count`)."""
        read = 0
        while True:
            response = await self._call("GET", path, params={"offset": read, "limit": page_size})
            page = response.json()
            for item in page:
                yield item
            read += len(page)
            total = response.headers.get("X-Total-Count")
            if progress:
                progress(name, read, int(total) if total else None)
            if len(page) < page_size:
                return
