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

from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from models.budget_system import InstructionStatus, PaymentInstruction

if TYPE_CHECKING:
    from core.progress import ProgressCallback

STATEMENT_PAGE = 1000  # instructions per statement request


class BudgetSystemUnavailable(Exception):
    """Transient: timeouts, connection errors, 5xx. Safe to retry with the same key."""


class BudgetSystemRefused(Exception):
    """Permanent: the system refused the request (4xx). Retrying will not help."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def payment_key(case_id: str, instalment: int) -> str:
    """The idempotency key of one instalment of one case (never from a run id)."""
    return f"zhida:{case_id}:{instalment}"


class BudgetSystemClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def instruct(self, instruction: PaymentInstruction) -> InstructionStatus:
        response = await self._call(
            "POST",
            "/v1/payment-instructions",
            json=instruction.model_dump(mode="json"),
            headers={"Idempotency-Key": instruction.idempotency_key},
        )
        return InstructionStatus.model_validate_json(response.content)

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
        statement: list[InstructionStatus] = []
        while True:
            response = await self._call(
                "GET",
                "/v1/payment-instructions",
                params={"offset": len(statement), "limit": page_size},
            )
            page = [InstructionStatus.model_validate(item) for item in response.json()]
            statement.extend(page)
            total = response.headers.get("X-Total-Count")
            if progress:
                progress("statement", len(statement), int(total) if total else None)
            if len(page) < page_size:
                return statement

    async def _call(
        self,
        method: str,
        path: str,
        json: object = None,
        headers: dict[str, str] | None = None,
        params: dict[str, int] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, path, json=json, headers=headers, params=params
            )
        except httpx.TransportError as exc:  # includes timeouts
            raise BudgetSystemUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise BudgetSystemUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise BudgetSystemRefused(
                f"{method} {path}: HTTP {response.status_code} {response.text[:200]}",
                response.status_code,
            )
        return response
